"""topk-certify: certified top-k radii for Gaussian randomized smoothing.

Jia, Cao, Wang, Gong, "Certified Robustness for Top-k Predictions against Adversarial
Perturbations via Randomized Smoothing", ICLR 2020. The statistics (counting, Clopper-Pearson
bounds, the tight top-k radius) run in a Rust extension; the sampling front
(`sample_counts`, `certify_batch`) needs PyTorch, imported only when those are called.

The names below load on first use, so that the command line starts (and answers Ctrl-C)
before numpy and the extension are imported.
"""

from __future__ import annotations

from ._version import __version__

__all__ = [
    "__version__",
    "CertifyResult",
    "certify_batch",
    "certify_counts",
    "clopper_pearson",
    "count_labels",
    "sample_counts",
    "PredictResult",
    "predict_batch",
    "predict_counts",
]

_HOMES = {
    "CertifyResult": "result",
    "certify_batch": "smoothing",
    "sample_counts": "smoothing",
    "certify_counts": "stats",
    "clopper_pearson": "stats",
    "count_labels": "stats",
    "PredictResult": "result",
    "predict_batch": "smoothing",
    "predict_counts": "stats",
}

# (No `typing` here: importing it alone would double the time before Ctrl-C is handled.)


def __getattr__(name: str) -> object:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'topk_certify' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{home}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

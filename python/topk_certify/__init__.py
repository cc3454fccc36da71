"""topk-certify: certified top-k radii for Gaussian randomized smoothing.

Jia, Cao, Wang, Gong, "Certified Robustness for Top-k Predictions against Adversarial
Perturbations via Randomized Smoothing", ICLR 2020. The statistics (counting, Clopper-Pearson
bounds, the tight top-k radius) run in a Rust extension; the sampling front
(`sample_counts`, `certify_batch`) needs PyTorch, imported only when those are called.
"""

from ._version import __version__
from .result import CertifyResult
from .smoothing import certify_batch, sample_counts
from .stats import certify_counts, clopper_pearson, count_labels

__all__ = [
    "__version__",
    "CertifyResult",
    "certify_batch",
    "certify_counts",
    "clopper_pearson",
    "count_labels",
    "sample_counts",
]

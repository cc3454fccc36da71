"""`CertifySettings`: the keywords of `certify_batch` checked once into one frozen object that
flows down to the sampler and the statistics; the certify job builds the same object."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Dict, Optional, Tuple, Union

from ._checks import (
    check_bool,
    check_int,
    check_optional_int,
    check_seed,
    clean_radii,
    validate_alpha,
    validate_bound,
    validate_k,
    validate_sigma,
)

# certify_batch's defaults, one place for the settings built without them.
DEFAULTS: Dict[str, Any] = {
    "k": 1,
    "n": 100_000,
    "n0": 100,
    "alpha": 0.001,
    "batch_size": 1000,
    "bound": "simuem",
    "num_classes": None,
    "seed": None,
    "progress": False,
    "adaptive": False,
    "radii": None,
    "optimize": True,
    "precision": "fp32",
    "compile": False,
}

# The precisions the model may run at (autocast around its forward pass; the noise stays exact).
PRECISIONS = ("fp32", "bf16", "fp16")


def check_precision(precision: Any) -> str:
    if not isinstance(precision, str):
        raise TypeError(f"precision must be a str, one of {PRECISIONS}; got {type(precision).__name__}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return precision


@dataclass(frozen=True)
class CertifySettings:
    """How to certify: what `certify_batch`'s keywords say, checked.

    ks: the k values; single_k: k was one int (result shapes drop that axis).
    radii: the adaptive run's radii as given (sorted, without repeats), or None for the
        default (resolved once the number of classes is known).
    optimize, precision, compile: how the model is run (smoothing/inference.py): its
        inference form (BatchNorm folded, channels_last), autocast to bf16/fp16, torch.compile.
    """

    ks: Tuple[int, ...]
    single_k: bool
    sigma: float
    n: int
    n0: int
    alpha: float
    batch_size: int
    bound: str
    num_classes: Optional[int]
    seed: Optional[int]
    progress: bool
    adaptive: bool
    radii: Optional[Tuple[float, ...]]
    optimize: bool = True
    precision: str = "fp32"
    compile: bool = False

    @classmethod
    def build(cls, *, sigma: Any, **keywords: Any) -> CertifySettings:
        """Checks every keyword (a TypeError or ValueError naming it) before any work; those
        not given take certify_batch's defaults (DEFAULTS)."""
        unknown = sorted(set(keywords) - set(DEFAULTS))
        if unknown:
            raise TypeError(f"unknown settings {unknown}; the settings are sigma, {', '.join(DEFAULTS)}")
        given = {**DEFAULTS, **keywords}
        sigma = validate_sigma(sigma)
        n = check_int("n", given["n"], 1)
        alpha = validate_alpha(given["alpha"])
        batch_size = check_int("batch_size", given["batch_size"], 1)
        bound = validate_bound(given["bound"])
        ks, single_k = validate_k(given["k"])
        adaptive = check_bool("adaptive", given["adaptive"])
        radii = given["radii"]
        if radii is not None and not adaptive:
            raise ValueError("radii only applies to adaptive certification (adaptive=True)")
        return cls(
            ks=ks,
            single_k=single_k,
            sigma=sigma,
            n=n,
            n0=check_int("n0", given["n0"], 1),
            alpha=alpha,
            batch_size=batch_size,
            bound=bound,
            num_classes=check_optional_int("num_classes", given["num_classes"], 1),
            seed=check_seed(given["seed"]),
            progress=check_bool("progress", given["progress"]),
            adaptive=adaptive,
            radii=None if radii is None else clean_radii(radii),
            optimize=check_bool("optimize", given["optimize"]),
            precision=check_precision(given["precision"]),
            compile=check_bool("compile", given["compile"]),
        )

    @property
    def k(self) -> Union[int, Tuple[int, ...]]:
        """k as the caller gave it: an int, or a tuple of ints."""
        return self.ks[0] if self.single_k else self.ks

    def but(self, **changes: Any) -> CertifySettings:
        """A copy with some fields changed (already checked values only)."""
        return replace(self, **changes)

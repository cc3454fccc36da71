"""The Rust extension. Call it through `topk_certify` (stats.py), which normalises and
checks the arguments; these functions expect what those wrappers pass."""

from typing import List, Tuple

import numpy as np
import numpy.typing as npt

# The extension exports exactly these (pyo3 sets its __all__ from the registered functions).
__all__ = ["certify_counts", "count_labels", "clopper_pearson", "predict_counts", "_mark_forked"]

def certify_counts(
    counts: npt.NDArray[np.integer],
    labels: npt.NDArray[np.int64],
    ks: List[int],
    sigma: float,
    alpha: float,
    bound: str,
) -> npt.NDArray[np.float64]:
    """Radii (E, len(ks)) of each row's label in the top-k, for 2-D counts of any integer
    dtype and strides (read without a copy), computed in parallel with the GIL released."""

def count_labels(labels: npt.NDArray[np.integer], num_classes: int) -> npt.NDArray[np.int64]:
    """(E, num_classes) histograms of a 2-D (E, n) integer label array."""

def clopper_pearson(
    successes: npt.NDArray[np.int64],
    trials: npt.NDArray[np.int64],
    alpha: npt.NDArray[np.float64],
) -> Tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """One-sided (lower, upper) bounds for equal-length 1-D arrays."""

def predict_counts(counts: npt.NDArray[np.integer], k: int, alpha: float) -> npt.NDArray[np.int64]:
    """(E, k) int64: each row's top-k labels by count (ties to the lower label), largest
    first, or a row of -1 where the test at level alpha abstains (k = 1: Cohen et al.'s
    PREDICT; k > 1: the binomial test of the k-th count against the (k+1)-th at
    alpha / (k (C - k))), in parallel with the GIL released."""

def _mark_forked() -> None:
    """Called in a forked child: compute sequentially from now on (rayon's pool is gone)."""

"""Count-based certification: Clopper-Pearson bounds, certified top-k radii, label counts,
and the smoothed classifier's prediction (its top-k set, or an abstention).

Thin wrappers over the Rust extension: they normalise arguments (nested lists, any integer
dtype, float arrays holding integers, broadcasting) and check them with messages that say
what is allowed; the extension does the work with the GIL released. Needs numpy only.
"""

from __future__ import annotations

import os
from typing import Any, Tuple

import numpy as np

from . import _core
from ._checks import (
    KLike,
    as_int_array,
    first_out_of_range,
    is_int,
    scalar,
    validate_alpha,
    validate_bound,
    validate_k,
    validate_sigma,
)

# rayon's thread pool does not survive fork(): a forked child (a DataLoader worker, say)
# computes sequentially instead of deadlocking on the parent's pool.
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_core._mark_forked)


def _labels_for(labels: Any, rows: int, num_classes: int) -> np.ndarray:
    array = as_int_array(labels, "labels", 1)
    if array.shape[0] != rows:
        raise ValueError(f"labels must have one entry per row of counts: got {array.shape[0]} labels for {rows} rows")
    bad = first_out_of_range(array, num_classes)
    if bad is not None:
        raise ValueError(f"labels must be in [0, C) = [0, {num_classes}), got {array[bad]}")
    return np.ascontiguousarray(array, dtype=np.int64)


def certify_counts(
    counts: Any,
    labels: Any,
    *,
    k: KLike,
    sigma: float,
    alpha: float = 0.001,
    bound: str = "simuem",
) -> np.ndarray:
    """Certified l2 radius of each row's label in the smoothed classifier's top-k.

    counts: (E, C) label counts of n noisy forward passes per example (any integer dtype
        or memory layout, or a nested list); labels: (E,) the label to certify per row.
    k: an int, or a sequence of ints for all of them in one pass.
    bound: "simuem" (Bonferroni Clopper-Pearson over the C labels, the paper's default)
        or "binocp" (Cohen-style, one lower bound).
    Returns float64 (E,) for an int k, (E, len(k)) for a sequence; 0.0 = not certified.
    With probability >= 1 - alpha over the noise, each label stays in the top-k of the
    smoothed classifier for every perturbation of l2 norm below its radius.
    """
    array = as_int_array(counts, "counts", 2)
    rows, num_classes = array.shape
    if num_classes < 2:
        raise ValueError(f"counts need at least 2 classes (columns), got {num_classes}")
    label_array = _labels_for(labels, rows, num_classes)
    ks, scalar = validate_k(k, num_classes)
    radii = _core.certify_counts(
        array, label_array, list(ks), validate_sigma(sigma), validate_alpha(alpha), validate_bound(bound)
    )
    return radii.reshape(rows) if scalar else radii


def clopper_pearson(successes: Any, trials: Any, alpha: Any) -> Tuple[np.ndarray, np.ndarray]:
    """One-sided Clopper-Pearson bounds, each at level alpha, broadcasting its arguments.

    lower: the alpha-quantile of Beta(x, n - x + 1) (0 when x = 0);
    upper: the (1 - alpha)-quantile of Beta(x + 1, n - x) (1 when x = n).
    """
    x = as_int_array(successes, "successes")
    n = as_int_array(trials, "trials")
    a = np.asarray(alpha)
    if a.dtype.kind not in "fiu":
        raise TypeError(f"alpha must be numbers in (0, 1), got dtype {a.dtype}")
    a = a.astype(np.float64)
    try:
        x, n, a = np.broadcast_arrays(x, n, a)
    except ValueError:
        raise ValueError(
            f"successes, trials and alpha must broadcast together, got shapes {np.shape(x)}, {np.shape(n)}, {np.shape(a)}"
        ) from None
    if x.size:
        for values, what in ((x, "successes"), (n, "trials")):
            if values.dtype == np.uint64 and values.max() >= 2**63:
                raise ValueError(f"{what} must be below 2**63, got {int(values.max())}")
        if np.any(n < 1):
            raise ValueError(f"trials must be >= 1, got {n[n < 1].ravel()[0]}")
        if np.any((x < 0) | (x > n)):
            raise ValueError("successes must be in [0, trials]")
        if not np.all((a > 0) & (a < 1)):
            raise ValueError("alpha must be in the open interval (0, 1)")
    return _bounds(x, n, a)


def clopper_pearson_unchecked(successes: Any, trials: Any, alpha: Any) -> Tuple[np.ndarray, np.ndarray]:
    """clopper_pearson without its checks, for the package's own arguments that hold them
    already (0 <= successes <= trials, trials >= 1, alpha in (0, 1)): on the few values of a
    stopping rule's look the checks cost ten times the bounds."""
    x, n, a = np.broadcast_arrays(
        np.asarray(successes, dtype=np.int64), np.asarray(trials, dtype=np.int64), np.asarray(alpha, dtype=np.float64)
    )
    return _bounds(x, n, a)


def _bounds(x: np.ndarray, n: np.ndarray, a: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """The Rust core's bounds for arguments broadcast to one shape, in that shape."""
    lower, upper = _core.clopper_pearson(
        np.ascontiguousarray(x, dtype=np.int64).ravel(),
        np.ascontiguousarray(n, dtype=np.int64).ravel(),
        np.ascontiguousarray(a, dtype=np.float64).ravel(),
    )
    return lower.reshape(x.shape), upper.reshape(x.shape)


def count_labels(labels: Any, num_classes: int) -> np.ndarray:
    """Histogram of predicted labels: (n,) -> (num_classes,), (E, n) -> (E, num_classes), int64.

    For users who bring their own predictions (from another framework, say); the
    counting runs in Rust, in parallel across rows.
    """
    if not is_int(num_classes) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    if num_classes >= 2**62:
        raise ValueError(f"num_classes must be below 2**62, got {num_classes}")
    array = as_int_array(labels, "labels")
    if array.ndim == 1:
        return _core.count_labels(array.reshape(1, -1), int(num_classes))[0]
    if array.ndim != 2:
        raise ValueError(f"labels must be 1-D (n,) or 2-D (E, n), got shape {array.shape}")
    return _core.count_labels(array, int(num_classes))


def predict_counts(counts: Any, *, k: int, alpha: float = 0.001) -> Tuple[np.ndarray, np.ndarray]:
    """The smoothed classifier's top-k set of each row of counts, or an abstention.

    counts: (E, C) label counts of n noisy forward passes per example (any integer dtype or
        memory layout, or a nested list), C >= 2.
    k: an int, 1 <= k < C.
    alpha: in (0, 1), the largest allowed probability of returning a wrong set.
    Returns (labels, abstained): labels int64 (E, k), each row the k labels with the largest
    counts (ties to the lower label), largest first, or a row of -1 where the test abstains;
    abstained bool (E,), True for those rows.

    The test (docs/predict.md): for k = 1 Cohen et al.'s PREDICT (abstain when the two-sided
    binomial test of the top two counts at p = 1/2 has a p-value above alpha, as
    scipy.stats.binomtest computes it); for k > 1 the one-sided binomial test of the k-th
    count against the (k+1)-th, given their sum, at level alpha / (k (C - k)) (measured: it
    answered wherever simultaneous Clopper-Pearson bounds did, and more). For each example, the
    probability of returning a set that is not a top-k set of the smoothed classifier is at
    most alpha.
    """
    array = as_int_array(counts, "counts", 2)
    rows, num_classes = array.shape
    if num_classes < 2:
        raise ValueError(f"counts need at least 2 classes (columns), got {num_classes}")
    k = single_k(k, num_classes)
    labels = _core.predict_counts(array, k, validate_alpha(alpha))
    return labels, labels[:, 0] < 0


def single_k(k: Any, num_classes: Any = None) -> int:
    """k as an int, 1 <= k (< C when C is given): a prediction takes one k, not a list."""
    k = scalar(k)
    if not is_int(k):
        raise TypeError(f"k must be one int, 1 <= k < C (one top-k set per example), got {type(k).__name__} {k!r}")
    validate_k(k, num_classes)
    return int(k)

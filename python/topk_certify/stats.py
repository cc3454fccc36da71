"""Count-based certification: Clopper-Pearson bounds, certified top-k radii, label counts.

Thin wrappers over the Rust extension: they normalise arguments (nested lists, any integer
dtype, float arrays holding integers, broadcasting) and check them with messages that say
what is allowed; the extension does the work with the GIL released. Needs numpy only.
"""

from __future__ import annotations

import numbers
import os
from typing import Any, Sequence, Tuple, Union

import numpy as np

from . import _core

# rayon's thread pool does not survive fork(): a forked child (a DataLoader worker, say)
# computes sequentially instead of deadlocking on the parent's pool.
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_core._mark_forked)

BOUNDS = ("simuem", "binocp")

KLike = Union[int, Sequence[int]]


def _scalar(value: Any) -> Any:
    """A 0-d numpy array as its element (np.float64(0.25) and np.array(0.25) alike)."""
    if isinstance(value, np.ndarray) and value.ndim == 0:
        return value[()]
    return value


def validate_sigma(sigma: Any) -> float:
    """sigma as a float, or a clear error: it must be a finite positive number."""
    sigma = _scalar(sigma)
    if isinstance(sigma, (bool, np.bool_)) or not isinstance(sigma, (numbers.Real, np.floating, np.integer)):
        raise TypeError(f"sigma must be a finite positive number, got {type(sigma).__name__} {sigma!r}")
    value = float(sigma)
    if not (np.isfinite(value) and value > 0):
        raise ValueError(f"sigma must be a finite positive number, got {sigma!r}")
    return value


def validate_alpha(alpha: Any) -> float:
    """alpha as a float, or a clear error: it must lie in the open interval (0, 1)."""
    alpha = _scalar(alpha)
    if isinstance(alpha, (bool, np.bool_)) or not isinstance(alpha, (numbers.Real, np.floating, np.integer)):
        raise TypeError(f"alpha must be a number in (0, 1), got {type(alpha).__name__} {alpha!r}")
    value = float(alpha)
    if not (0.0 < value < 1.0):
        raise ValueError(f"alpha must be in the open interval (0, 1), got {alpha!r}")
    return value


def validate_bound(bound: Any) -> str:
    if not isinstance(bound, str) or bound not in BOUNDS:
        raise ValueError(f"bound must be one of {BOUNDS}, got {bound!r}")
    return bound


def _is_int(value: Any) -> bool:
    return isinstance(value, (numbers.Integral, np.integer)) and not isinstance(value, (bool, np.bool_))


def validate_k(k: Any, num_classes: int | None = None) -> Tuple[Tuple[int, ...], bool]:
    """(the k values as a tuple, whether k was a single int). Each needs 1 <= k < C."""
    k = _scalar(k)
    if isinstance(k, np.ndarray) and k.ndim != 1:
        raise TypeError(f"k must be a positive int or a 1-D sequence of ints, got an array of shape {k.shape}")
    if _is_int(k):
        ks, scalar = (int(k),), True
    elif isinstance(k, (Sequence, np.ndarray)) and not isinstance(k, (str, bytes)):
        items = list(k)
        if not items or not all(_is_int(v) for v in items):
            raise TypeError(f"k must be a positive int or a non-empty sequence of ints, got {k!r}")
        ks, scalar = tuple(int(v) for v in items), False
    else:
        raise TypeError(f"k must be a positive int or a non-empty sequence of ints, got {type(k).__name__} {k!r}")
    for value in ks:
        if value < 1:
            raise ValueError(f"k must be >= 1, got {value}")
        if num_classes is not None and value >= num_classes:
            raise ValueError(
                f"k must be < the number of classes C = {num_classes} "
                f"(with k >= C every label is always in the top-k), got k={value}"
            )
    return ks, scalar


def as_int_array(values: Any, name: str, ndim: int | None = None) -> np.ndarray:
    """An integer numpy array of `values`, without a copy when it already is one.

    Float arrays are accepted when every entry is a finite integer; booleans, NaN,
    fractions and non-numeric data are errors that name `name`.
    """
    if isinstance(values, np.ndarray):
        array = values
    else:
        try:
            array = np.asarray(values)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{name} must be a rectangular array of integers: {exc}") from None
        if array.dtype.kind == "f":
            # numpy turns Python ints from 2**63 on into float64, rounding them: keep ints exact.
            exact = np.asarray(values, dtype=object)
            if exact.shape == array.shape and all(_is_int(v) for v in exact.ravel()):
                array = exact
    if ndim is not None and array.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got an array of shape {array.shape}")
    kind = array.dtype.kind
    if kind in "iu":
        if not array.dtype.isnative:
            array = array.astype(array.dtype.newbyteorder("="))
        return array
    if kind == "b":
        raise TypeError(f"{name} must hold integers, got booleans")
    if kind == "f":
        if array.size:
            if not np.all(np.isfinite(array)):
                raise ValueError(f"{name} must be finite integers, got NaN or infinity")
            if not np.all(array == np.floor(array)):
                raise ValueError(f"{name} must be integers, got fractional values")
            if np.max(np.abs(array)) >= 2.0**63:
                raise ValueError(f"{name} must be below 2**63 in magnitude")
        return array.astype(np.int64)
    if kind == "O":
        return _object_ints(array, name, ndim)
    raise TypeError(f"{name} must hold integers, got dtype {array.dtype}")


def _object_ints(array: np.ndarray, name: str, ndim: int | None) -> np.ndarray:
    """An object array (numpy's choice for Python ints beyond int64, or mixed numbers) as
    int64, or uint64 where a value needs it; never through float64, which rounds above 2**53."""
    if not array.size:
        return array.astype(np.int64)
    flat = array.ravel()
    if all(_is_int(v) for v in flat):
        values = [int(v) for v in flat]
        low, high = min(values), max(values)
        if low >= -(2**63) and high < 2**63:
            return np.array(values, dtype=np.int64).reshape(array.shape)
        if low >= 0 and high < 2**64:
            return np.array(values, dtype=np.uint64).reshape(array.shape)
        bad = high if high >= 2**63 else low
        raise ValueError(f"{name} must fit in 64-bit integers, got {bad}")
    try:
        floats = array.astype(np.float64)
    except (TypeError, ValueError, OverflowError):
        raise TypeError(f"{name} must hold integers, got objects of dtype {array.dtype}") from None
    return as_int_array(floats, name, ndim)


def _labels_for(labels: Any, rows: int, num_classes: int) -> np.ndarray:
    array = as_int_array(labels, "labels", 1)
    if array.shape[0] != rows:
        raise ValueError(f"labels must have one entry per row of counts: got {array.shape[0]} labels for {rows} rows")
    if array.size and (array.min() < 0 or array.max() >= num_classes):
        bad = array[(array < 0) | (array >= num_classes)][0]
        raise ValueError(f"labels must be in [0, C) = [0, {num_classes}), got {bad}")
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
    shape = x.shape
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
    lower, upper = _core.clopper_pearson(
        np.ascontiguousarray(x, dtype=np.int64).ravel(),
        np.ascontiguousarray(n, dtype=np.int64).ravel(),
        np.ascontiguousarray(a, dtype=np.float64).ravel(),
    )
    return lower.reshape(shape), upper.reshape(shape)


def count_labels(labels: Any, num_classes: int) -> np.ndarray:
    """Histogram of predicted labels: (n,) -> (num_classes,), (E, n) -> (E, num_classes), int64.

    For users who bring their own predictions (from another framework, say); the
    counting runs in Rust, in parallel across rows.
    """
    if not _is_int(num_classes) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    if num_classes >= 2**62:
        raise ValueError(f"num_classes must be below 2**62, got {num_classes}")
    array = as_int_array(labels, "labels")
    if array.ndim == 1:
        return _core.count_labels(array.reshape(1, -1), int(num_classes))[0]
    if array.ndim != 2:
        raise ValueError(f"labels must be 1-D (n,) or 2-D (E, n), got shape {array.shape}")
    return _core.count_labels(array, int(num_classes))

"""Argument checks shared by every layer: each check written once, with a message that says
what was wrong and what is allowed. numpy only; the bottom of the package."""

from __future__ import annotations

import numbers
from typing import Any, Optional, Sequence, Tuple, Union

import numpy as np

BOUNDS = ("simuem", "binocp")


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type's name when it has none), for the
    one-line errors that quote a failure of the user's code."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


KLike = Union[int, Sequence[int]]


def scalar(value: Any) -> Any:
    """A 0-d numpy array as its element (np.float64(0.25) and np.array(0.25) alike)."""
    if isinstance(value, np.ndarray) and value.ndim == 0:
        return value[()]
    return value


def is_int(value: Any) -> bool:
    """An integer (Python or numpy), not a bool."""
    return isinstance(value, (numbers.Integral, np.integer)) and not isinstance(value, (bool, np.bool_))


INT64_LIMIT = 2**63


def check_int(name: str, value: Any, minimum: int, below: int = INT64_LIMIT) -> int:
    """An int in [minimum, below): counts of samples beyond 64 bits would never finish."""
    if not is_int(value):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}")
    if value >= below:
        raise ValueError(f"{name} must be below 2**63, got {value}")
    return int(value)


def check_optional_int(name: str, value: Any, minimum: int) -> Optional[int]:
    return None if value is None else check_int(name, value, minimum)


def check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
    return value


def check_seed(seed: Any) -> Optional[int]:
    if seed is None:
        return None
    if not is_int(seed):
        raise TypeError(f"seed must be None or an int, got {type(seed).__name__}")
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    return int(seed)


def _real(value: Any) -> bool:
    return not isinstance(value, (bool, np.bool_)) and isinstance(value, (numbers.Real, np.floating, np.integer))


def validate_sigma(sigma: Any) -> float:
    """sigma as a float, or a clear error: it must be a finite positive number."""
    sigma = scalar(sigma)
    if not _real(sigma):
        raise TypeError(f"sigma must be a finite positive number, got {type(sigma).__name__} {sigma!r}")
    value = float(sigma)
    if not (np.isfinite(value) and value > 0):
        raise ValueError(f"sigma must be a finite positive number, got {sigma!r}")
    return value


def validate_alpha(alpha: Any) -> float:
    """alpha as a float, or a clear error: it must lie in the open interval (0, 1)."""
    alpha = scalar(alpha)
    if not _real(alpha):
        raise TypeError(f"alpha must be a number in (0, 1), got {type(alpha).__name__} {alpha!r}")
    value = float(alpha)
    if not (0.0 < value < 1.0):
        raise ValueError(f"alpha must be in the open interval (0, 1), got {alpha!r}")
    return value


def validate_bound(bound: Any) -> str:
    if not isinstance(bound, str) or bound not in BOUNDS:
        raise ValueError(f"bound must be one of {BOUNDS}, got {bound!r}")
    return bound


def validate_k(k: Any, num_classes: Optional[int] = None) -> Tuple[Tuple[int, ...], bool]:
    """(the k values as a tuple, whether k was a single int). Each needs 1 <= k < C."""
    k = scalar(k)
    if isinstance(k, np.ndarray) and k.ndim != 1:
        raise TypeError(f"k must be a positive int or a 1-D sequence of ints, got an array of shape {k.shape}")
    ks: Tuple[int, ...]
    if is_int(k):
        ks, single = (int(k),), True
    elif isinstance(k, (Sequence, np.ndarray)) and not isinstance(k, (str, bytes)):
        items = list(k)
        if not items or not all(is_int(v) for v in items):
            raise TypeError(f"k must be a positive int or a non-empty sequence of ints, got {k!r}")
        ks, single = tuple(int(v) for v in items), False
    else:
        raise TypeError(f"k must be a positive int or a non-empty sequence of ints, got {type(k).__name__} {k!r}")
    for value in ks:
        if value < 1:
            raise ValueError(f"k must be >= 1, got {value}")
        if num_classes is not None:
            check_k_below(value, num_classes)
    return ks, single


def check_k_below(k: int, num_classes: int) -> None:
    if k >= num_classes:
        raise ValueError(
            f"k must be < the number of classes C = {num_classes} "
            f"(with k >= C every label is always in the top-k), got k={k}"
        )


def first_out_of_range(labels: np.ndarray, num_classes: int) -> Optional[int]:
    """The position of the first label outside [0, num_classes), or None."""
    if not labels.size:
        return None
    bad = (labels < 0) | (labels >= num_classes)
    return int(np.argmax(bad)) if bad.any() else None


def as_int_array(values: Any, name: str, ndim: Optional[int] = None) -> np.ndarray:
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
            if exact.shape == array.shape and all(is_int(v) for v in exact.ravel()):
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
        return _float_ints(array, name)
    if kind == "O":
        return _object_ints(array, name, ndim)
    raise TypeError(f"{name} must hold integers, got dtype {array.dtype}")


def _float_ints(array: np.ndarray, name: str) -> np.ndarray:
    if array.size:
        if not np.all(np.isfinite(array)):
            raise ValueError(f"{name} must be finite integers, got NaN or infinity")
        if not np.all(array == np.floor(array)):
            raise ValueError(f"{name} must be integers, got fractional values")
        if np.max(np.abs(array)) >= 2.0**63:
            raise ValueError(f"{name} must be below 2**63 in magnitude")
    return array.astype(np.int64)


def _object_ints(array: np.ndarray, name: str, ndim: Optional[int]) -> np.ndarray:
    """An object array (numpy's choice for Python ints beyond int64, or mixed numbers) as
    int64, or uint64 where a value needs it; never through float64, which rounds above 2**53."""
    if not array.size:
        return array.astype(np.int64)
    flat = array.ravel()
    if all(is_int(v) for v in flat):
        values = [int(v) for v in flat]
        low, high = min(values), max(values)
        dtype = np.int64 if low >= -(2**63) and high < 2**63 else np.uint64
        if dtype is np.int64 or (low >= 0 and high < 2**64):
            exact: np.ndarray = np.array(values, dtype=dtype).reshape(array.shape)
            return exact
        bad = high if high >= 2**63 else low
        raise ValueError(f"{name} must fit in 64-bit integers, got {bad}")
    try:
        floats: np.ndarray = array.astype(np.float64)
    except (TypeError, ValueError, OverflowError):
        raise TypeError(f"{name} must hold integers, got objects of dtype {array.dtype}") from None
    return as_int_array(floats, name, ndim)


def clean_radii(radii: Any) -> Tuple[float, ...]:
    """Radii to decide: finite, >= 0, at least one; sorted, repeats dropped."""
    try:
        values = np.asarray(radii, dtype=np.float64).ravel()
    except (TypeError, ValueError):
        raise TypeError(f"radii must be a sequence of numbers, got {radii!r}") from None
    if values.size == 0:
        raise ValueError("radii must hold at least one radius")
    if not np.all(np.isfinite(values)):
        raise ValueError(f"radii must be finite, got {values.tolist()}")
    if np.any(values < 0):
        raise ValueError(f"radii must be >= 0, got {values.tolist()}")
    return tuple(float(r) for r in np.unique(values))

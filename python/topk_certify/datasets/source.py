"""DataSource: examples read by index, a chunk at a time, with all labels up front."""

from __future__ import annotations

import abc
from typing import Optional, Tuple

import numpy as np

from .errors import DataError

FLOAT_DTYPES = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))


class DataSource(abc.ABC):
    """A labelled data set whose examples are read on demand.

    len(source)           number of examples E
    source.labels         int64 (E,), read-only, all of them (cheap)
    source.sample_shape   shape of one example, e.g. (3, 32, 32)
    source.dtype          numpy float dtype of what read() returns
    source.name           how messages name the data set
    source.read(indices)  array (len(indices), *sample_shape) of that dtype, a fresh copy
    source.check_inputs(indices)  a cheap check that those examples can be read

    Also a context manager; close() releases open files or mappings.
    """

    def __init__(self, name: str, labels: np.ndarray, sample_shape: Tuple[int, ...], dtype: np.dtype):
        self.name = name
        self.labels = labels
        self.labels.setflags(write=False)
        self.sample_shape = tuple(int(n) for n in sample_shape)
        self.dtype = np.dtype(dtype)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def read(self, indices) -> np.ndarray:
        """The examples at `indices` (a 1-D sequence of ints in [0, len)), in that order."""
        index = np.asarray(indices)
        if index.ndim != 1:
            raise ValueError(f"indices must be a 1-D sequence of integers, got shape {index.shape}")
        if index.size == 0:
            return np.empty((0, *self.sample_shape), dtype=self.dtype)
        if index.dtype.kind not in "iu":
            raise TypeError(f"indices must be integers, got dtype {index.dtype}")
        low, high = index.min(), index.max()
        if low < 0 or high >= len(self):
            bad = low if low < 0 else high
            raise ValueError(
                f"index {int(bad)} is out of range for {self.name} ({len(self)} examples: 0 to {len(self) - 1})"
            )
        out = self._read(index.astype(np.int64))
        return np.ascontiguousarray(out, dtype=self.dtype)

    def check_inputs(self, indices) -> None:  # noqa: B027 - optional: most sources are checked when opened
        """Checks, cheaply and before any work, that the examples at `indices` can be read
        (for files: that each opens as what it claims to be); a DataError names the first
        that cannot."""

    @abc.abstractmethod
    def _read(self, index: np.ndarray) -> np.ndarray:
        """The examples at `index` (int64, checked to be in range)."""

    def close(self) -> None:  # noqa: B027 - optional: most sources hold nothing to release
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}: {len(self)} x {self.sample_shape} {self.dtype}>"


class ArraySource(DataSource):
    """Examples in an array (in memory, or a read-only memory map read row by row)."""

    def __init__(self, name: str, x: np.ndarray, labels: np.ndarray):
        dtype = x.dtype.newbyteorder("=")  # big-endian files come back native
        super().__init__(name, labels, x.shape[1:], dtype)
        self._x: Optional[np.ndarray] = x  # None once closed

    def _read(self, index: np.ndarray) -> np.ndarray:
        assert self._x is not None, "read after close"
        return np.array(self._x[index], dtype=self.dtype)

    def close(self) -> None:
        self._x = None


def checked_arrays(name: str, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Validate x (E, ...) floats and y (E,) labels; the labels as int64."""
    return checked_layout(name, tuple(x.shape), x.dtype, y)


def checked_layout(name: str, shape: Tuple[int, ...], dtype: np.dtype, y: np.ndarray) -> np.ndarray:
    """checked_arrays for an x known by its shape and dtype only (not read yet)."""
    dtype = np.dtype(dtype)
    if len(shape) < 1:
        raise DataError(f"{name}: x must be an array (E, ...) of examples, got a scalar")
    if dtype.newbyteorder("=") not in FLOAT_DTYPES:
        raise DataError(
            f"{name}: x must hold floating-point examples (float16, float32 or float64; images scaled to [0, 1]), "
            f"got dtype {dtype}"
        )
    labels = checked_labels(name, y)
    if labels.shape[0] != shape[0]:
        raise DataError(f"{name}: x and y must have the same number of examples, got x {shape} and y {np.shape(y)}")
    if shape[0] == 0:
        raise DataError(f"{name}: holds no examples (x has shape {shape})")
    return labels


def checked_labels(name: str, y) -> np.ndarray:
    """y as int64 (E,): integers, or floats that are whole numbers; never negative."""
    y = np.asarray(y)
    if y.ndim != 1:
        raise DataError(f"{name}: y must be a 1-D array (E,) of labels, got shape {y.shape}")
    if y.dtype.kind == "f":
        if not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
            raise DataError(
                f"{name}: y must hold integer class labels, got {y.dtype} values that are not whole numbers"
            )
    elif y.dtype.kind not in "iu":
        raise DataError(f"{name}: y must hold integer class labels, got dtype {y.dtype}")
    if y.size and y.min() < 0:
        raise DataError(f"{name}: y must hold class labels >= 0, got {y.min()}")
    if y.size and y.dtype.kind in "uf" and y.max() > np.iinfo(np.int64).max:
        raise DataError(f"{name}: y has a label too large for int64 ({y.max()})")
    return y.astype(np.int64)

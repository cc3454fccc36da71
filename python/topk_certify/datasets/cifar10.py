"""The CIFAR-10 test split in torchvision's on-disk format (cifar-10-batches-py/test_batch).

test_batch is a Python 2 pickle of a dict: 'data' uint8 (10000, 3072) with each row the
red, green then blue 32x32 plane, 'labels' a list of ints, plus 'batch_label' and
'filenames'. The uint8 pixels (30 MB) stay in memory; float conversion happens per read.
Nothing is downloaded.
"""

from __future__ import annotations

import os
from typing import Optional

import numpy as np

from .errors import DataError
from .safe_pickle import RefusedGlobal, load_numpy_pickle
from .source import DataSource, checked_labels

FOLDER = "cifar-10-batches-py"
TEST_BATCH = "test_batch"
NUM_CLASSES = 10
SHAPE = (3, 32, 32)


class Cifar10Source(DataSource):
    finite_by_construction = True  # 8-bit pixels scaled to [0, 1]

    def __init__(self, name: str, pixels: np.ndarray, labels: np.ndarray):
        super().__init__(name, labels, SHAPE, np.float32)
        self._pixels: Optional[np.ndarray] = pixels  # None once closed

    def _read(self, index: np.ndarray) -> np.ndarray:
        assert self._pixels is not None, "read after close"
        # As torchvision's CIFAR10 + ToTensor: rows reshaped (3, 32, 32), divided by 255.
        return self._pixels[index].reshape(-1, *SHAPE).astype(np.float32) / np.float32(255)

    def close(self) -> None:
        self._pixels = None


def test_batch_path(root: str) -> str:
    """ROOT/cifar-10-batches-py/test_batch, or ROOT/test_batch when ROOT is that folder."""
    if not os.path.isdir(root):
        raise DataError(f"cifar10:{root}: no such folder")
    for path in (os.path.join(root, FOLDER, TEST_BATCH), os.path.join(root, TEST_BATCH)):
        if os.path.isfile(path):
            return path
    raise DataError(
        f"cifar10:{root}: no {FOLDER}/{TEST_BATCH} there (nor {TEST_BATCH} directly; the folder "
        f"torchvision.datasets.CIFAR10(root, download=True) fills; nothing is downloaded here)"
    )


def open_cifar10(root: str) -> Cifar10Source:
    path = test_batch_path(root)
    try:
        with open(path, "rb") as f:
            batch = load_numpy_pickle(f)
    except RefusedGlobal as exc:
        raise DataError(
            f"{path}: refused: the pickle refers to {exc.qualname}, which a CIFAR-10 batch never holds (it could run code)"
        ) from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    except Exception as exc:  # a damaged pickle fails in many ways; all mean the same here
        raise DataError(f"{path}: not a readable CIFAR-10 python batch ({type(exc).__name__}: {exc})") from None
    if not isinstance(batch, dict):
        raise DataError(f"{path}: expected a pickled dict with 'data' and 'labels', got a {type(batch).__name__}")
    # Python 2 pickles give str keys under latin1 decoding, Python 3 ones may give bytes.
    entries = {(key.decode("latin1") if isinstance(key, bytes) else key): value for key, value in batch.items()}
    missing = [key for key in ("data", "labels") if key not in entries]
    if missing:
        raise DataError(
            f"{path}: the batch has no {' or '.join(map(repr, missing))} (found {sorted(map(str, entries))})"
        )
    pixels = entries["data"]
    if not isinstance(pixels, np.ndarray) or pixels.dtype != np.uint8 or pixels.ndim != 2 or pixels.shape[1] != 3072:
        got = f"{pixels.dtype} {pixels.shape}" if isinstance(pixels, np.ndarray) else type(pixels).__name__
        raise DataError(f"{path}: 'data' must be a uint8 array (N, 3072), got {got}")
    try:
        raw_labels = np.asarray(entries["labels"])
    except (TypeError, ValueError):
        raise DataError(f"{path}: 'labels' must be a list of integers") from None
    labels = checked_labels(path, raw_labels)
    if labels.shape[0] != pixels.shape[0]:
        raise DataError(f"{path}: {pixels.shape[0]} images but {labels.shape[0]} labels")
    if pixels.shape[0] == 0:
        raise DataError(f"{path}: holds no images")
    if labels.max() >= NUM_CLASSES:
        raise DataError(f"{path}: CIFAR-10 labels are 0 to 9, got {labels.max()}")
    return Cifar10Source(f"cifar10:{root}", np.ascontiguousarray(pixels), labels)

"""A .pt/.pth file holding {'x': tensor (E, ...), 'y': tensor (E,)}, loaded whole.

Read with torch.load(weights_only=True): nothing in the file is run.
"""

from __future__ import annotations

import numpy as np

from .errors import DataError
from .source import ArraySource, checked_arrays


def open_torch_file(path: str) -> ArraySource:
    try:
        import torch
    except ImportError:
        raise ImportError(f"{path}: reading a .pt/.pth data file needs PyTorch (pip install torch)") from None
    from ..models.torchfile import load_torch_file

    blob = load_torch_file(path, DataError, "data file")
    if not isinstance(blob, dict):
        raise DataError(f"{path}: expected a dict with tensors 'x' and 'y', got a {type(blob).__name__}")
    missing = [key for key in ("x", "y") if key not in blob]
    if missing:
        found = ", ".join(repr(key) for key in list(blob)[:8])
        raise DataError(
            f"{path}: no {' or '.join(map(repr, missing))} (it needs tensors x and y; found {found or 'nothing'})"
        )
    x = _array(path, "x", blob["x"], torch)
    y = _array(path, "y", blob["y"], torch)
    labels = checked_arrays(path, x, y)
    return ArraySource(path, x, labels)


def _array(path: str, key: str, value, torch) -> np.ndarray:
    if not isinstance(value, torch.Tensor):
        raise DataError(f"{path}: {key!r} must be a tensor, got a {type(value).__name__}")
    if value.layout != torch.strided:
        value = value.to_dense()
    value = value.detach()  # a tensor saved with requires_grad=True
    if value.dtype == torch.bfloat16:
        raise DataError(f"{path}: {key!r} is bfloat16, which numpy cannot hold; save it as float32 (x.float())")
    try:
        return value.numpy()
    except (TypeError, RuntimeError) as exc:
        raise DataError(f"{path}: {key!r} cannot become a numpy array ({exc})") from None

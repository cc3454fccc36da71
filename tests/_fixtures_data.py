"""Data files for tests/test_datasets.py, written in the formats real tools leave on disk.

CIFAR-10's test_batch was written by Python 2's cPickle (protocol 2): str keys and the
pixel buffer as Python 2 byte strings, numpy under `numpy.core.multiarray`. Python 3
cannot write that, so py2_pickle emits those opcodes directly for the few types a batch
holds.
"""

from __future__ import annotations

import struct

import numpy as np


def _py2_str(data: bytes) -> bytes:
    if len(data) < 256:
        return b"U" + bytes([len(data)]) + data  # SHORT_BINSTRING
    return b"T" + struct.pack("<i", len(data)) + data  # BINSTRING


def _int(value: int) -> bytes:
    if 0 <= value < 256:
        return b"K" + bytes([value])  # BININT1
    return b"J" + struct.pack("<i", value)  # BININT


def _tuple(items) -> bytes:
    return b"(" + b"".join(items) + b"t"  # MARK ... TUPLE


def _global(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _uint8_dtype() -> bytes:
    state = _tuple([_int(3), _py2_str(b"|"), b"N", b"N", b"N", _int(-1), _int(-1), _int(0)])
    return _global("numpy", "dtype") + _tuple([_py2_str(b"u1"), b"\x89", b"\x88"]) + b"R" + state + b"b"


def _ndarray(array: np.ndarray) -> bytes:
    assert array.dtype == np.uint8 and array.flags.c_contiguous
    new = _global("numpy.core.multiarray", "_reconstruct")
    new += _tuple([_global("numpy", "ndarray"), _tuple([_int(0)]), _py2_str(b"b")]) + b"R"
    state = _tuple(
        [_int(1), _tuple([_int(n) for n in array.shape]), _uint8_dtype(), b"\x89", _py2_str(array.tobytes())]
    )
    return new + state + b"b"


def _value(value) -> bytes:
    if isinstance(value, bytes):
        return _py2_str(value)
    if isinstance(value, int):
        return _int(value)
    if isinstance(value, list):
        return b"](" + b"".join(_value(v) for v in value) + b"e"  # EMPTY_LIST MARK ... APPENDS
    if isinstance(value, np.ndarray):
        return _ndarray(value)
    raise TypeError(type(value))


def py2_pickle(batch: dict) -> bytes:
    """Protocol-2 pickle of {bytes: bytes | int | list | uint8 ndarray} as Python 2 writes it."""
    items = b"".join(_py2_str(key) + _value(value) for key, value in batch.items())
    return b"\x80\x02}(" + items + b"u."  # PROTO 2, EMPTY_DICT, MARK ... SETITEMS, STOP


def cifar_batch(n: int, seed: int = 0):
    """(data uint8 (n, 3072), labels list) with test_batch's keys and value types."""
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
    labels = [int(v) for v in rng.integers(0, 10, size=n)]
    batch = {
        b"batch_label": b"testing batch 1 of 1",
        b"labels": labels,
        b"data": data,
        b"filenames": [f"img_{i}.png".encode() for i in range(n)],
    }
    return batch, data, labels

"""An .npz archive with arrays x (E, ...) and y (E,), x read lazily where it can be.

np.savez stores members uncompressed: then the rows of x asked for are read straight out
of the zip file (the .npy header is parsed at the member's data offset) into fresh memory,
with positioned reads rather than a memory map, so that a pass over the data set leaves
nothing of it resident: memory does not grow with the data set. Members of
np.savez_compressed, and Fortran-ordered ones, cannot be read by rows and are loaded whole.
y is always loaded whole. Nothing is unpickled (allow_pickle=False; object arrays refused).
"""

from __future__ import annotations

import struct
import zipfile
from typing import Optional, Tuple

import numpy as np
from numpy.lib import format as npy_format

from .errors import DataError
from .source import ArraySource, DataSource, checked_arrays, checked_layout

_LOCAL_HEADER = struct.Struct("<4s2B4HL2L2H")  # a zip member's local file header (30 bytes)
_LOCAL_SIGNATURE = b"PK\x03\x04"


def open_npz(path: str) -> DataSource:
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as f:
            head = f.read(6)
        if head == npy_format.MAGIC_PREFIX:
            raise DataError(
                f"{path}: an .npy file (one array) named .npz; save both arrays with np.savez(path, x=x, y=y)"
            )
        raise DataError(f"{path}: not an .npz archive (not a zip file); save the data with np.savez(path, x=x, y=y)")
    try:
        with zipfile.ZipFile(path) as archive:
            members = {info.filename: info for info in archive.infolist()}
            missing = [key for key in ("x", "y") if key + ".npy" not in members]
            if missing:
                found = sorted(name[:-4] for name in members if name.endswith(".npy"))
                raise DataError(f"{path}: no array {' or '.join(map(repr, missing))} (it needs x and y; found {found})")
            x_info = members["x.npy"]
        with np.load(path, allow_pickle=False) as arrays:
            y = arrays["y"]
            located = _locate(path, x_info)
            if located is None:
                x = arrays["x"]
            else:
                labels = checked_layout(path, located[1], located[2], y)
                return RowFileSource(path, labels, *located)
    except DataError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, struct.error) as exc:
        raise DataError(f"{path}: not a readable .npz ({type(exc).__name__}: {exc})") from None
    labels = checked_arrays(path, x, y)
    return ArraySource(path, x, labels)


class RowFileSource(DataSource):
    """x read by rows from a C-ordered .npy member at `offset` of the file."""

    def __init__(self, path: str, labels: np.ndarray, offset: int, shape: Tuple[int, ...], dtype: np.dtype):
        super().__init__(path, labels, shape[1:], dtype.newbyteorder("="))
        self._path, self._offset, self._stored = path, offset, dtype
        self._row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize

    def _read(self, index: np.ndarray) -> np.ndarray:
        out = np.empty((index.size, *self.sample_shape), dtype=self._stored)
        flat = out.reshape(index.size, -1).view(np.uint8).reshape(index.size, self._row_bytes)
        with open(self._path, "rb", buffering=0) as handle:
            start = 0
            while start < index.size:  # one read for each run of consecutive rows
                end = start + 1
                while end < index.size and index[end] == index[end - 1] + 1:
                    end += 1
                handle.seek(self._offset + int(index[start]) * self._row_bytes)
                if handle.readinto(memoryview(flat[start:end]).cast("B")) != (end - start) * self._row_bytes:
                    raise DataError(f"{self._path}: the file ended before row {int(index[end - 1])} of x")
                start = end
        return out


def _locate(path: str, info: zipfile.ZipInfo) -> Optional[Tuple[int, Tuple[int, ...], np.dtype]]:
    """(data offset, shape, dtype) of x inside the zip, or None where it cannot be read by rows
    (compressed, encrypted, Fortran-ordered, a newer .npy format)."""
    if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 0x1:
        return None
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        header = f.read(_LOCAL_HEADER.size)
        if len(header) != _LOCAL_HEADER.size or header[:4] != _LOCAL_SIGNATURE:
            raise DataError(f"{path}: corrupt zip (no local header for x.npy)")
        name_length, extra_length = _LOCAL_HEADER.unpack(header)[-2:]
        start = info.header_offset + _LOCAL_HEADER.size + name_length + extra_length
        f.seek(start)
        version = npy_format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = npy_format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran, dtype = npy_format.read_array_header_2_0(f)
        else:
            return None
        offset = f.tell()
    if dtype.hasobject:
        raise DataError(f"{path}: x holds Python objects (dtype {dtype}); only numeric arrays are read, never pickles")
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if offset - start + nbytes != info.file_size:
        held = info.file_size - (offset - start)
        raise DataError(f"{path}: corrupt x.npy (its header says {nbytes} bytes of data, the member holds {held})")
    if fortran and len(shape) > 1:
        return None
    return offset, tuple(int(n) for n in shape), dtype

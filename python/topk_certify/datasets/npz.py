"""An .npz archive with arrays x (E, ...) and y (E,), x read lazily where it can be.

np.savez stores members uncompressed: then x is memory-mapped straight out of the zip
file (the .npy header is parsed at the member's data offset) and only the rows asked for
are read. Members of np.savez_compressed cannot be mapped and are loaded whole. y is
always loaded whole. Nothing is unpickled (allow_pickle=False; object arrays refused).
"""

from __future__ import annotations

import struct
import zipfile

import numpy as np
from numpy.lib import format as npy_format

from .errors import DataError
from .source import ArraySource, checked_arrays

_LOCAL_HEADER = struct.Struct("<4s2B4HL2L2H")  # a zip member's local file header (30 bytes)
_LOCAL_SIGNATURE = b"PK\x03\x04"


def open_npz(path: str) -> ArraySource:
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
            x = _mapped(path, x_info)
            if x is None:
                x = arrays["x"]
    except DataError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, struct.error) as exc:
        raise DataError(f"{path}: not a readable .npz ({type(exc).__name__}: {exc})") from None
    labels = checked_arrays(path, x, y)
    return ArraySource(path, x, labels)


def _mapped(path: str, info: zipfile.ZipInfo):
    """x memory-mapped inside the zip, or None where it cannot be (compressed, encrypted, new .npy format)."""
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
    if nbytes == 0:  # an empty map is not allowed; the empty array is refused later anyway
        return np.empty(shape, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=tuple(shape), order="F" if fortran else "C")

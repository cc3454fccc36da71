"""Unpickling numpy data without running code: only the globals a pickled ndarray needs.

A pickle names the functions and classes it calls; this unpickler resolves only those
needed to rebuild plain numpy arrays and refuses every other name, so a crafted file
cannot run code when read.
"""

from __future__ import annotations

import codecs
import pickle
from typing import BinaryIO

import numpy as np

# The array rebuilder under whatever module this numpy keeps it; pickles written by
# numpy 1.x name numpy.core.multiarray, numpy 2.x numpy._core.multiarray.
_reconstruct = np.zeros(0).__reduce__()[0]
_frombuffer = np.zeros(1).__reduce_ex__(5)[0]  # how pickle protocol 5 rebuilds a contiguous array
_LATIN1 = {"latin1", "latin-1", "iso-8859-1", "iso8859-1", "l1"}


def _latin1_encode(text, encoding="utf-8", errors="strict"):
    # Python 3 pickles bytes under protocol 2 as _codecs.encode(str, 'latin1'); any other
    # codec (zlib, bz2, ...) has no business in a data file.
    if not isinstance(text, str) or str(encoding).lower() not in _LATIN1:
        raise pickle.UnpicklingError(f"_codecs.encode with encoding {encoding!r}")
    return codecs.encode(text, "latin1", errors)


def _empty_bytes(*args):
    # Protocol 2 pickles an empty bytes object (an empty array's buffer) as a call of
    # bytes() without arguments; with one (bytes(10**12)) it would allocate: refused.
    if args:
        raise pickle.UnpicklingError("bytes() called with arguments")
    return b""


_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy.core.numeric", "_frombuffer"): _frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _frombuffer,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_encode,
    ("__builtin__", "bytes"): _empty_bytes,
    ("builtins", "bytes"): _empty_bytes,
}


class RefusedGlobal(pickle.UnpicklingError):
    """The pickle names a global outside the allowed set."""

    def __init__(self, module: str, name: str):
        super().__init__(f"{module}.{name}")
        self.qualname = f"{module}.{name}"


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise RefusedGlobal(module, name) from None


def load_numpy_pickle(f: BinaryIO, encoding: str = "latin1"):
    """pickle.load restricted to plain containers, numbers, strings and numpy arrays.

    Raises RefusedGlobal for anything else; `encoding` decodes Python 2 strings, as in
    pickle.load (latin1, as torchvision reads CIFAR batches).
    """
    return _Unpickler(f, encoding=encoding).load()

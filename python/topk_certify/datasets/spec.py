"""open_data: a data source from a spec string."""

from __future__ import annotations

import os
import re

from .errors import DataError
from .source import DataSource

ALLOWED = "cifar10:ROOT, imagenet:DIR, or a .npz / .pt / .pth file with x and y"
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9_+.-]+")  # two letters or more: not a drive letter


def open_data(spec) -> DataSource:
    """`cifar10:ROOT` (the CIFAR-10 test split as torchvision stores it), `imagenet:DIR`
    (an ImageFolder of the validation set) or a `.npz` / `.pt` / `.pth` file."""
    if not isinstance(spec, (str, os.PathLike)):
        raise TypeError(f"a data spec must be a string or a path ({ALLOWED}), got a {type(spec).__name__}")
    spec = os.fspath(spec)
    if isinstance(spec, bytes):
        raise TypeError(f"a data spec must be a string or a path ({ALLOWED}), got bytes")
    scheme, sep, rest = spec.partition(":")
    if sep and scheme in ("cifar10", "imagenet"):
        if not rest:
            raise DataError(f"{spec}: name the folder after the colon ({ALLOWED})")
        if scheme == "cifar10":
            from .cifar10 import open_cifar10

            return open_cifar10(rest)
        from .imagefolder import open_imagefolder

        return open_imagefolder(rest)
    suffix = os.path.splitext(spec)[1].lower()
    if suffix in (".npz", ".pt", ".pth"):
        if not os.path.exists(spec):
            raise DataError(f"{spec}: no such file")
        if not os.path.isfile(spec):
            raise DataError(f"{spec}: not a file")
        if suffix == ".npz":
            from .npz import open_npz

            return open_npz(spec)
        from .torchfile import open_torch_file

        return open_torch_file(spec)
    if suffix == ".npy":
        raise DataError(f"{spec}: an .npy file holds one array; save x and y together with np.savez(path, x=x, y=y)")
    if sep and _SCHEME.fullmatch(scheme) and not os.path.exists(spec):
        raise DataError(f"{spec}: unknown data scheme {scheme!r} (allowed: {ALLOWED})")
    raise DataError(f"{spec}: not a data set this reads (allowed: {ALLOWED})")

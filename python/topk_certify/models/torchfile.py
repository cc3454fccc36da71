"""Telling torch file formats apart, and torch.load that never runs code from the file.

Shared by the checkpoint loader and the `.pt` data source; the caller passes its own
ValueError subclass so each reports in its own terms.
"""

from __future__ import annotations

import os
import pickle
import re
import warnings
import zipfile
from typing import Type

# torch.save's legacy (pre-1.6) format opens with a pickled magic number.
_LEGACY_MAGIC = b"\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19"


def torch_file_kind(path: str) -> str:
    """'torchscript', 'zip' (torch.save since 1.6), 'legacy' (older torch.save) or 'other'.

    Looks only at the zip directory or the first bytes; nothing is unpickled.
    """
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError, ValueError):
            return "other"
        # Entries are `<archive name>/...`; torch.jit.save adds constants.pkl and code/.
        inner = [name.split("/", 1)[1] for name in names if "/" in name]
        if any(name == "constants.pkl" or name.startswith("code/") for name in inner):
            return "torchscript"
        return "zip" if "data.pkl" in inner else "other"
    with open(path, "rb") as f:
        head = f.read(32)
    return "legacy" if head[:1] == b"\x80" and _LEGACY_MAGIC in head else "other"


def is_torchscript(path) -> bool:
    """Whether `path` is a TorchScript archive (for torch.jit.load) rather than a checkpoint."""
    path = os.fspath(path)
    try:
        return os.path.isfile(path) and torch_file_kind(path) == "torchscript"
    except OSError:  # unreadable: the loader it is routed to reports that
        return False


def load_torch_file(path: str, error: Type[ValueError], what: str):
    """torch.load(path, map_location='cpu', weights_only=True), every failure as one-line `error`."""
    import torch

    if not os.path.exists(path):
        raise error(f"{path}: no such file")
    if not os.path.isfile(path):
        raise error(f"{path}: not a file (a {what} is one file written by torch.save)")
    try:
        kind = torch_file_kind(path)
    except OSError as exc:
        raise error(f"{path}: cannot read it ({exc.strerror or exc})") from None
    if kind == "torchscript":
        raise error(f"{path}: a TorchScript archive, not a {what} (load it with torch.jit.load)")
    if kind == "other":
        raise error(f"{path}: not a file written by torch.save (neither its zip format nor its legacy format)")
    try:
        with warnings.catch_warnings():
            # Legacy files pickled with protocol > 2 load fine; torch only notes the protocol.
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        message = str(exc)
        refused = re.search(r"GLOBAL ([\w.]+)", message)
        if refused:
            raise error(
                f"{path}: refused: its pickle refers to {refused.group(1)}, which torch.load(weights_only=True) "
                f"does not load (it could run code); a {what} holds only tensors and plain containers"
            ) from None
        raise error(f"{path}: corrupt or not a {what} ({_detail(message)})") from None
    except Exception as exc:  # torch.load on a damaged file: many exception types, none informative deep down
        raise error(f"{path}: corrupt or not a {what} ({type(exc).__name__}: {_detail(str(exc))})") from None


def _detail(message: str) -> str:
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    for i, line in enumerate(lines):  # torch's weights-only errors put the cause after this marker
        if "WeightsUnpickler error:" in line:
            rest = line.split("WeightsUnpickler error:", 1)[1].strip()
            if rest:
                return rest[:200]
            if i + 1 < len(lines):
                return lines[i + 1][:200]
    return lines[0][:200] if lines else "no details"

"""Replacing a file without ever leaving it torn or empty: the new content goes to a
temporary file in the same folder, is synced, and is moved over the old one by rename."""

from __future__ import annotations

import os
import tempfile
from typing import Sequence


def replace_atomically(path: str, data: bytes) -> None:
    """`path` holds `data` afterwards; a kill at any moment leaves the old or the new file."""
    folder = os.path.dirname(os.path.abspath(path))
    handle, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    try:
        os.chmod(tmp, _mode_for(path))
        with os.fdopen(handle, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    _sync_folder(folder)


def write_lines_atomically(path: str, lines: Sequence[str]) -> None:
    """`path` holds `lines`, each ended by a newline (atomically, as replace_atomically)."""
    replace_atomically(path, "".join(line + "\n" for line in lines).encode("utf-8"))


def _mode_for(path: str) -> int:
    """The replaced file's permissions, or a new file's (what open() would give)."""
    try:
        return os.stat(path).st_mode & 0o7777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def write_text_atomically(path: str, text: str) -> None:
    replace_atomically(path, text.encode("utf-8"))


def _sync_folder(folder: str) -> None:
    """The rename itself is durable only once the folder is synced (where the OS allows it)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)

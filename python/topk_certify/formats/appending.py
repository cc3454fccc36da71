"""A file that grows one line at a time, each line one unbuffered write: a kill leaves at
most one torn line, and a failed write (a full disk) is reported at once, naming the file,
never again at close."""

from __future__ import annotations

from typing import Optional

from .errors import FormatError


class AppendFile:
    def __init__(self, path: str):
        self.path = path
        self._handle: Optional[object] = None

    def open(self, exclusive: bool) -> None:
        """`exclusive`: a new file (FileExistsError if there is one); else append to it."""
        try:
            self._handle = open(self.path, "xb" if exclusive else "ab", buffering=0)
        except FileExistsError:
            raise
        except OSError as exc:
            raise FormatError(f"cannot write {self.path}: {exc.strerror}") from None

    def write_line(self, line: str) -> None:
        assert self._handle is not None, "open the file first"
        data = memoryview(line.encode("utf-8"))
        try:
            while data:
                data = data[self._handle.write(data) :]  # type: ignore[attr-defined]
        except OSError as exc:
            raise FormatError(
                f"cannot write {self.path}: {exc.strerror}; --resume continues from its last row"
            ) from None

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()  # type: ignore[attr-defined]
            self._handle = None

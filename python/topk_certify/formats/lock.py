"""An exclusive lock on a run's output, held for the run: a second run on the same OUT is
refused at once instead of interleaving rows. The lock is `OUT.lock`, held with flock, so
the kernel drops it when its process dies: a lock file left by a killed run is stale and
simply taken over."""

from __future__ import annotations

import os
from typing import Optional

from .errors import FormatError

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: no locking
    fcntl = None  # type: ignore[assignment]

LOCK_SUFFIX = ".lock"


class RunLock:
    def __init__(self, out: str):
        self.out = out
        self.path = out + LOCK_SUFFIX
        self._fd: Optional[int] = None

    def acquire(self) -> None:
        if fcntl is None:
            return
        while self._fd is None:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise FormatError(f"cannot write {self.out}: {exc.strerror} (for its lock {self.path})") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                raise FormatError(
                    f"{self.out} is in use by another run (it holds {os.path.basename(self.path)}); "
                    "wait for it to finish, or choose another -o"
                ) from None
            if self._same_file(fd):
                self._fd = fd
            else:  # the holder removed the file between our open and our lock: try again
                os.close(fd)

    def _same_file(self, fd: int) -> bool:
        try:
            return os.path.samestat(os.fstat(fd), os.stat(self.path))
        except FileNotFoundError:
            return False

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.remove(self.path)  # while still holding it, so no one locks a removed file
        except OSError:
            pass
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

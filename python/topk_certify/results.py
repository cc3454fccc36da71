"""OUT.tsv, the certify job's output: one row per example, appended and flushed as each
example finishes, so that a killed run loses at most the examples in flight.

Resuming keeps every complete line, drops a torn last line (a SIGKILL in the middle of a
write leaves one without its newline) and appends the rest. The run's settings go to a
sidecar `OUT.meta.json`, so that a resume with other settings is refused instead of
mixing two experiments in one table.
"""

from __future__ import annotations

import json
import os
from typing import Dict, List, Optional, Sequence, Set

from .cli import CliError


def meta_path(out: str) -> str:
    return out + ".meta.json"


def _truncate_to_complete_lines(path: str) -> List[str]:
    """The complete lines of `path`; a torn last line (no newline) is cut off the file."""
    with open(path, "rb") as handle:
        data = handle.read()
    end = data.rfind(b"\n") + 1
    if end < len(data):
        with open(path, "r+b") as handle:
            handle.truncate(end)
    return data[:end].decode("utf-8").splitlines()


class AppendOnlyTable:
    """A TSV file with a fixed header whose rows are appended one flush at a time."""

    def __init__(self, path: str, header: Sequence[str]):
        self.path = path
        self.header = list(header)
        self._handle = None

    def existing_rows(self) -> List[List[str]]:
        """Rows already in the file (after cutting a torn last line); checks the header."""
        lines = _truncate_to_complete_lines(self.path)
        if not lines:
            return []
        found = lines[0].split("\t")
        if found != self.header:
            raise CliError(
                f"{self.path} has columns {found}, but this run writes {self.header}: "
                "resume with the same --k and --adaptive, or choose another -o"
            )
        rows = []
        for number, line in enumerate(lines[1:], start=2):
            cells = line.split("\t")
            if len(cells) != len(self.header):
                raise CliError(f"{self.path}:{number}: expected {len(self.header)} tab-separated cells, got {len(cells)}")
            rows.append(cells)
        return rows

    def open(self, fresh: bool) -> None:
        """Starts a new file with its header, or appends to the existing one."""
        try:
            self._handle = open(self.path, "w" if fresh else "a", encoding="utf-8")
        except OSError as exc:
            raise CliError(f"cannot write {self.path}: {exc.strerror}") from None
        if fresh or os.path.getsize(self.path) == 0:
            self.append(self.header)

    def append(self, cells: Sequence[str]) -> None:
        # One write per line and a flush: a kill leaves at most one torn line.
        self._handle.write("\t".join(cells) + "\n")
        self._handle.flush()

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


class CountsLog:
    """The optional counts file (the paper's frequency format), kept in step with OUT."""

    def __init__(self, path: Optional[str], header_line: str):
        self.path = path
        self.header_line = header_line
        self._handle = None

    def open(self, fresh: bool, rows_in_out: int) -> None:
        if self.path is None:
            return
        if not fresh and os.path.exists(self.path):
            lines = _truncate_to_complete_lines(self.path)
            body = [line for line in lines if not line.startswith("#")]
            if len(body) < rows_in_out:
                raise CliError(
                    f"--counts {self.path} has {len(body)} examples but the output has {rows_in_out}: "
                    "it does not belong to this run; choose another --counts file"
                )
            # Counts are written before their OUT row: cut the ones whose row was lost.
            keep = [line for line in lines if line.startswith("#")] + body[:rows_in_out]
            with open(self.path, "w", encoding="utf-8") as handle:
                handle.write("".join(line + "\n" for line in keep))
            mode = "a"
        else:
            mode = "w"
        try:
            self._handle = open(self.path, mode, encoding="utf-8")
        except OSError as exc:
            raise CliError(f"cannot write {self.path}: {exc.strerror}") from None
        if mode == "w":
            self._handle.write(self.header_line)
            self._handle.flush()

    def append(self, line: str) -> None:
        if self._handle is not None:
            self._handle.write(line)
            self._handle.flush()

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def check_meta(out: str, settings: Dict[str, object]) -> None:
    """Refuses to resume a run whose recorded settings differ from these."""
    path = meta_path(out)
    if not os.path.exists(path):
        return
    try:
        with open(path, "r", encoding="utf-8") as handle:
            recorded = json.load(handle)
    except (OSError, ValueError):
        return
    changed = [key for key, value in settings.items() if key in recorded and recorded[key] != value]
    if changed:
        detail = ", ".join(f"{key}: {recorded[key]!r} then, {settings[key]!r} now" for key in changed)
        raise CliError(f"cannot resume {out} with other settings ({detail}); use the same options or another -o")


def write_meta(out: str, settings: Dict[str, object]) -> None:
    path = meta_path(out)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(settings, handle, indent=1, sort_keys=True)
    os.replace(tmp, path)


def done_indices(rows: List[List[str]]) -> Set[int]:
    try:
        return {int(row[0]) for row in rows}
    except ValueError:
        raise CliError("the existing output has a row whose idx is not an integer") from None

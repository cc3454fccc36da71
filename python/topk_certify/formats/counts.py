"""The paper's frequency format, in both directions: one example a line, C label counts,
then the label to certify (the authors' `cifar0.25.txt`).

One strict grammar: fields are ASCII digits separated by spaces or tabs; lines starting
with '#' are comments; a UTF-8 byte order mark is tolerated. topk-certify writes one first
line `# topk-certify counts ...` with key=value fields saying how the counts were drawn; a
file with two such headers (files concatenated) is refused, and `adaptive=1` marks counts
whose sample size was chosen by looking at them, which fixed-n bounds must not be applied to.

`CountsWriter` keeps the certify job's counts file in step with its OUT table.
"""

from __future__ import annotations

import os
import re
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from .appending import AppendFile
from .atomic import write_lines_atomically, write_text_atomically
from .errors import FormatError

HEADER_PREFIX = "# topk-certify counts"
_SEPARATOR = re.compile(r"[ \t]+")
_DIGITS = re.compile(r"[0-9]+")


class CountsFileError(FormatError):
    """A counts file that cannot be read; the message names the file and line."""


def _read_lines(path: str | os.PathLike[str]) -> List[str]:
    name = os.fspath(path)
    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:
            return handle.read().split("\n")
    except UnicodeDecodeError:
        raise CountsFileError(f"{name}: not a text file (it is not UTF-8)") from None
    except OSError as exc:
        raise CountsFileError(f"cannot read counts file {name!r}: {exc.strerror}") from None


def _parse_line(name: str, number: int, text: str) -> List[int]:
    fields = _SEPARATOR.split(text)
    if not all(_DIGITS.fullmatch(field) for field in fields):
        raise CountsFileError(
            f"{name}:{number}: expected whitespace-separated integers (C counts, then the label), got {text[:60]!r}"
        )
    if len(fields) < 3:
        raise CountsFileError(f"{name}:{number}: a line needs at least 2 counts and a label, got {len(fields)} numbers")
    return [int(field) for field in fields]


def _parse(name: str, lines: Iterable[str]) -> Tuple[List[List[int]], Dict[str, str]]:
    rows: List[List[int]] = []
    meta: Dict[str, str] = {}
    headers = 0
    for number, line in enumerate(lines, start=1):
        text = line.strip(" \t\r")
        if not text:
            continue
        if text.startswith("#"):
            if text.startswith(HEADER_PREFIX):
                headers += 1
                if headers > 1:
                    raise CountsFileError(
                        f"{name}:{number}: a second '{HEADER_PREFIX}' header: the file joins counts of "
                        "different runs, whose bounds differ; keep one run per file"
                    )
                meta.update(_parse_fields(text[len(HEADER_PREFIX) :].split()))
            continue
        values = _parse_line(name, number, text)
        if rows and len(values) != len(rows[0]):
            raise CountsFileError(
                f"{name}:{number}: expected {len(rows[0]) - 1} counts and a label like the first line, got {len(values)} numbers"
            )
        rows.append(values)
    return rows, meta


def read_counts_file(path: str | os.PathLike[str]) -> Tuple[np.ndarray, np.ndarray, Dict[str, str]]:
    """(counts int64 (E, C), labels int64 (E,), header fields) from a frequency-format file."""
    name = os.fspath(path)
    rows, meta = _parse(name, _read_lines(path))
    if not rows:
        return np.zeros((0, 0), dtype=np.int64), np.zeros(0, dtype=np.int64), meta
    try:
        table = np.array(rows, dtype=np.int64)
    except OverflowError:
        raise CountsFileError(f"{name}: counts must fit in 64-bit integers") from None
    return table[:, :-1], table[:, -1], meta


def _parse_fields(tokens: Iterable[str]) -> Dict[str, str]:
    fields = {}
    for token in tokens:
        key, sep, value = token.partition("=")
        if sep:
            fields[key] = value
    return fields


def format_header(**fields: object) -> str:
    return HEADER_PREFIX + " " + " ".join(f"{k}={v}" for k, v in fields.items()) + "\n"


def format_counts_line(counts: np.ndarray, label: int) -> str:
    return " ".join(str(int(c)) for c in counts) + f" {int(label)}\n"


def write_counts_file(path: str | os.PathLike[str], counts: np.ndarray, labels: np.ndarray, **fields: object) -> None:
    """Writes counts in the frequency format (atomically), with a header line of `fields` if any."""
    lines = [format_header(**fields)] if fields else []
    lines += [format_counts_line(row, label) for row, label in zip(np.asarray(counts), np.asarray(labels))]
    write_text_atomically(os.fspath(path), "".join(lines))


class CountsWriter:
    """The certify job's counts file, one line per OUT row, written before its row (a kill
    never leaves a row without its counts)."""

    def __init__(self, path: str, fields: Dict[str, object]):
        self.path = path
        self.header = format_header(**fields)
        self.fields = {key: str(value) for key, value in fields.items()}
        self._keep: Optional[List[str]] = None
        self._file = AppendFile(path)

    def check_resumable(self, expected: Sequence[Tuple[int, Optional[int]]]) -> np.ndarray:
        """Checks, reading only, that the file is this run's and holds a line for each OUT row:
        `expected` gives each row's (label, samples used; None = the run's fixed n). Returns
        those lines, int64 (rows, C + 1): C counts, then the label."""
        lines = _read_lines(self.path)
        torn = lines.pop() != ""  # the last line has no newline: an interrupted write
        if not lines or not lines[0].startswith(HEADER_PREFIX):
            raise CountsFileError(
                f"--counts {self.path} does not start with a '{HEADER_PREFIX}' header: it is not this run's counts "
                "file; choose another --counts file"
            )
        rows, meta = _parse(self.path, lines)
        if meta != self.fields:
            what = "has no topk-certify header" if not meta else f"was written with {meta}"
            raise CountsFileError(
                f"--counts {self.path} {what}, not this run's settings {self.fields}: it is not this run's counts "
                "file; choose another --counts file"
            )
        if len(rows) < len(expected):
            raise CountsFileError(
                f"--counts {self.path} has {len(rows)} examples but the output has {len(expected)}: "
                "it does not belong to this run; choose another --counts file"
            )
        n = int(self.fields["n"])
        for number, (row, (label, used)) in enumerate(zip(rows, expected), start=1):
            if row[-1] != label or sum(row[:-1]) != (n if used is None else used):
                raise CountsFileError(
                    f"--counts {self.path}: example {number} does not match row {number} of the output "
                    "(another label or sample size): it does not belong to this run; choose another --counts file"
                )
        body = [line for line in lines if line.strip(" \t\r") and not line.startswith("#")]
        # Counts are written before their OUT row: the ones whose row was lost are dropped.
        self._keep = None
        if torn or len(body) != len(expected):
            self._keep = [line for line in lines if line.startswith("#")] + body[: len(expected)]
        width = len(rows[0]) if rows else 0
        try:
            table: np.ndarray = np.array(rows[: len(expected)], dtype=np.int64).reshape(len(expected), width)
        except OverflowError:
            raise CountsFileError(f"--counts {self.path}: counts must fit in 64-bit integers") from None
        return table

    def is_unstarted(self) -> bool:
        """Whether the file holds this run's header (or a part of it) and nothing else, what a
        run killed while creating its files leaves: no data, so a fresh start may replace it."""
        try:
            with open(self.path, encoding="utf-8") as handle:
                text = handle.read(len(self.header) + 1)
        except (OSError, UnicodeDecodeError):
            return False
        return self.header.startswith(text)

    def create(self, replace: bool = False) -> None:
        if replace:  # an unstarted file of this run (is_unstarted): written over atomically
            write_text_atomically(self.path, self.header)
            self._file.open(exclusive=False)
            return
        try:
            self._file.open(exclusive=True)
        except FileExistsError:
            raise CountsFileError(f"--counts {self.path} already exists: choose another --counts file") from None
        self.append(self.header)

    def reopen(self) -> None:
        """Continues the file checked by `check_resumable` (rewritten atomically first if it
        holds lines beyond the output's rows)."""
        if self._keep is not None:
            write_lines_atomically(self.path, self._keep)
        self._file.open(exclusive=False)

    def append(self, line: str) -> None:
        self._file.write_line(line)

    def close(self) -> None:
        self._file.close()

"""The paper's frequency format: one example a line, C whitespace-separated label counts,
then the label to certify (`shared/reference/cifar0.25.txt`).

Lines starting with '#' are comments. topk-certify writes one first line
`# topk-certify counts ...` with key=value fields saying how the counts were drawn;
`adaptive=1` marks counts whose sample size was chosen by looking at them, which the
fixed-n bounds of `topk-certify radius` must not be applied to.
"""

from __future__ import annotations

import os
from typing import Dict, Iterable, List, Tuple

import numpy as np

HEADER_PREFIX = "# topk-certify counts"


class CountsFileError(ValueError):
    """A counts file that cannot be read; the message names the file and line."""


def read_counts_file(path: str | os.PathLike) -> Tuple[np.ndarray, np.ndarray, Dict[str, str]]:
    """(counts int64 (E, C), labels int64 (E,), header fields) from a frequency-format file."""
    rows: List[List[int]] = []
    meta: Dict[str, str] = {}
    width = None
    try:
        handle = open(path, "r", encoding="utf-8")
    except OSError as exc:
        raise CountsFileError(f"cannot read counts file {os.fspath(path)!r}: {exc.strerror}") from None
    with handle:
        try:
            lines = handle.readlines()
        except UnicodeDecodeError:
            raise CountsFileError(f"{os.fspath(path)}: not a text file (it is not UTF-8)") from None
        for number, line in enumerate(lines, start=1):
            text = line.strip()
            if not text:
                continue
            if text.startswith("#"):
                if text.startswith(HEADER_PREFIX):
                    meta.update(_parse_fields(text[len(HEADER_PREFIX):].split()))
                continue
            fields = text.split()
            try:
                values = [int(v) for v in fields]
            except ValueError:
                raise CountsFileError(
                    f"{os.fspath(path)}:{number}: expected whitespace-separated integers (C counts, then the label), got {text[:60]!r}"
                ) from None
            if len(values) < 3:
                raise CountsFileError(f"{os.fspath(path)}:{number}: a line needs at least 2 counts and a label, got {len(values)} numbers")
            if width is None:
                width = len(values)
            elif len(values) != width:
                raise CountsFileError(
                    f"{os.fspath(path)}:{number}: expected {width - 1} counts and a label like the first line, got {len(values)} numbers"
                )
            rows.append(values)
    if not rows:
        return np.zeros((0, 0), dtype=np.int64), np.zeros(0, dtype=np.int64), meta
    try:
        table = np.array(rows, dtype=np.int64)
    except OverflowError:
        raise CountsFileError(f"{os.fspath(path)}: counts must fit in 64-bit integers") from None
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


def write_counts_file(path: str | os.PathLike, counts: np.ndarray, labels: np.ndarray, **fields: object) -> None:
    """Writes counts in the frequency format, with a header line of `fields` if any."""
    with open(path, "w", encoding="utf-8") as out:
        if fields:
            out.write(format_header(**fields))
        for row, label in zip(np.asarray(counts), np.asarray(labels)):
            out.write(format_counts_line(row, label))

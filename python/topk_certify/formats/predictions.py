"""The predict OUT.tsv, in both directions: one row per example, `idx label predict correct
time`, the columns of Cohen et al.'s `predict.py`.

- `idx`: the example's 0-based row in the data; `label`: its true label.
- `predict`: the smoothed classifier's top-k set as comma-separated labels, largest count
  first (`3` for k = 1, `3,5,0` for k = 3), or `-1` where the test abstained.
- `correct`: 1 when the true label is in the set, else 0 (0 for an abstention).
- `time`: seconds for that example (`0.0123`); Cohen's `H:MM:SS.ffffff` is read too.

Lines starting with `#` are comments (their `key=value` tokens are kept as metadata, with the
run's `OUT.meta.json` sidecar when there is one). Writing: `row_cells` makes one row for
`table.TableWriter` (header `COLUMNS`); reading: `load_predictions`. Errors are
`PredictionsFormatError`, naming the file and line.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .errors import FormatError
from .table import read_meta

__all__ = [
    "COLUMNS",
    "ABSTAIN",
    "PredictionsFormatError",
    "Predictions",
    "row_cells",
    "load_predictions",
    "is_predictions",
]

COLUMNS = ("idx", "label", "predict", "correct", "time")
ABSTAIN = -1
_REQUIRED = ("idx", "label", "predict", "correct")


class PredictionsFormatError(FormatError):
    """A file that cannot be read as predict output (the message names file and line)."""


# -- writing --------------------------------------------------------------------------------


def format_set(predicted: Sequence[int]) -> str:
    """The `predict` cell: the labels comma-separated, or -1 when every entry is -1 (an
    abstention, as `PredictResult.labels` marks it)."""
    values = [int(v) for v in predicted]
    if not values:
        raise ValueError("a predicted set needs at least one label (or -1 for an abstention)")
    if all(v == ABSTAIN for v in values):
        return str(ABSTAIN)
    if any(v < 0 for v in values) or len(set(values)) != len(values):
        raise ValueError(f"a predicted set is distinct labels >= 0, or all -1 for an abstention, got {values}")
    return ",".join(str(v) for v in values)


def row_cells(idx: int, label: int, predicted: Sequence[int], seconds: float) -> List[str]:
    """One row's cells (COLUMNS): `correct` is 1 when `label` is in the set."""
    cell = format_set(predicted)
    correct = cell != str(ABSTAIN) and int(label) in (int(v) for v in predicted)
    return [str(int(idx)), str(int(label)), cell, "1" if correct else "0", f"{float(seconds):.4f}"]


# -- reading --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Predictions:
    """One predict OUT file, parsed.

    Attributes:
        path: the file read.
        idx: int64 (E,), the examples' idx column.
        labels: int64 (E,), the true labels.
        predicted: int64 (E, k), each row's set in file order, or a row of -1 (abstained).
        k: the set size, or None when every row abstained (then `predicted` is (E, 1)).
        correct: bool (E,), the true label is in the set (False where abstained).
        abstained: bool (E,).
        time: float64 (E,) seconds per example, or None.
        meta, notes: as in `table.Results`.
    """

    path: str
    idx: np.ndarray
    labels: np.ndarray
    predicted: np.ndarray
    k: Optional[int]
    correct: np.ndarray
    abstained: np.ndarray
    time: Optional[np.ndarray] = None
    meta: Dict[str, object] = field(default_factory=dict)
    notes: Tuple[str, ...] = ()

    @property
    def num_examples(self) -> int:
        return int(self.idx.shape[0])


def _header(path: str) -> Optional[List[str]]:
    """The first line that is neither empty nor a comment, split at tabs (None: no such line)."""
    with open(path, encoding="utf-8", newline="") as handle:
        for line in handle:
            line = line.rstrip("\r\n")
            if line.strip() and not line.startswith("#"):
                return [name.strip() for name in line.split("\t")]
    return None


def is_predictions(path: str) -> bool:
    """Whether the file's header is predict output's: a `predict` column and no radius
    (Cohen et al.'s certify.py writes `predict` beside a `radius`: that is certify output).
    Raises OSError or UnicodeDecodeError as `open` and reading do."""
    header = _header(os.fspath(path))
    return header is not None and "predict" in header and not any(name.startswith("radius") for name in header)


def _lines(path: str, text: str) -> Tuple[List[Tuple[int, str]], List[str], Dict[str, object]]:
    """(numbered lines that are not comments or blank, notes, metadata of the comments)."""
    lines = text.split("\n")
    notes: List[str] = []
    if lines and lines[-1] == "":
        lines.pop()
    elif lines and lines[-1].strip():
        notes.append(
            f"{path}: ignored line {len(lines)}, which has no newline at the end (an interrupted run's unfinished row)"
        )
        lines.pop()
    meta: Dict[str, object] = read_meta(path) or {}
    kept = []
    for number, line in enumerate(lines, start=1):
        line = line.rstrip("\r")
        if line.startswith("#"):
            for token in line.lstrip("#").split():
                key, sep, value = token.partition("=")
                if sep and key:
                    meta[key] = value
        elif line.strip():
            kept.append((number, line))
    return kept, notes, meta


def load_predictions(path: str) -> Predictions:
    """Reads one predict OUT file (see the module docstring).

    A final line without a newline (a killed run's) is skipped and reported in `notes`.
    Raises OSError when the file cannot be read, PredictionsFormatError for anything
    malformed: no header or a column of COLUMNS missing from it, a row with the wrong number
    of fields, an idx or label that is not an integer >= 0, an idx twice, a set that is not
    distinct labels >= 0 or -1, sets of different sizes, a `correct` that is not 0 or 1 or
    disagrees with the set, no complete rows.
    """
    path = os.fspath(path)
    with open(path, encoding="utf-8", newline="") as handle:
        text = handle.read()
    lines, notes, meta = _lines(path, text)
    if not lines:
        raise PredictionsFormatError(f"{path} is empty: expected the header {' '.join(COLUMNS)}")
    header_line, header_text = lines[0]
    header = [name.strip() for name in header_text.split("\t")]
    missing = [name for name in _REQUIRED if name not in header]
    if missing:
        raise PredictionsFormatError(
            f"{path}:{header_line}: not predict output: no {', '.join(missing)} column(s) in the header "
            f"({' '.join(header)[:80]}); expected {' '.join(COLUMNS)}"
        )
    if len(lines) == 1:
        raise PredictionsFormatError(f"{path} has no finished rows (only a header)")
    return _parse_rows(path, header, lines[1:], meta, notes)


def _parse_rows(
    path: str, header: List[str], rows: List[Tuple[int, str]], meta: Dict[str, object], notes: List[str]
) -> Predictions:
    column = {name: header.index(name) for name in header}
    count = len(rows)
    idx: np.ndarray = np.empty(count, dtype=np.int64)
    labels: np.ndarray = np.empty(count, dtype=np.int64)
    sets: List[Optional[List[int]]] = []
    times: Optional[np.ndarray] = np.empty(count) if "time" in column else None
    first_seen: Dict[int, int] = {}
    for row, (number, line) in enumerate(rows):
        where = f"{path}:{number}"
        fields = line.split("\t")
        if len(fields) != len(header):
            raise PredictionsFormatError(
                f"{where}: expected {len(header)} tab-separated fields as in the header, got {len(fields)}"
            )
        idx[row] = _parse_count(fields[column["idx"]], "idx", where)
        first = first_seen.setdefault(int(idx[row]), number)
        if first != number:
            raise PredictionsFormatError(f"{where}: idx {idx[row]} appears twice (first on line {first})")
        labels[row] = _parse_count(fields[column["label"]], "label", where)
        predicted = _parse_set(fields[column["predict"]], where)
        _check_correct(fields[column["correct"]], int(labels[row]), predicted, where)
        sets.append(predicted)
        if times is not None:
            seconds = _parse_seconds(fields[column["time"]])
            if seconds is None:
                times = None  # time is informational only
            else:
                times[row] = seconds
    k, predicted_array = _stack_sets(path, rows, sets)
    abstained = predicted_array[:, 0] == ABSTAIN
    correct = (predicted_array == labels[:, None]).any(axis=1) & ~abstained
    return Predictions(
        path=path, idx=idx, labels=labels, predicted=predicted_array, k=k, correct=correct,
        abstained=abstained, time=times, meta=meta, notes=tuple(notes),
    )  # fmt: skip


def _parse_count(text: str, name: str, where: str) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        raise PredictionsFormatError(f"{where}: {name} must be an integer >= 0, got {text.strip()!r}") from None
    if value < 0:
        raise PredictionsFormatError(f"{where}: {name} must be an integer >= 0, got {value}")
    return value


def _parse_set(text: str, where: str) -> Optional[List[int]]:
    """The labels of a `predict` cell, or None for -1 (an abstention)."""
    text = text.strip()
    if text == str(ABSTAIN):
        return None
    try:
        values = [int(part) for part in text.split(",")]
    except ValueError:
        values = []
    if not values or any(v < 0 for v in values) or len(set(values)) != len(values):
        raise PredictionsFormatError(
            f"{where}: predict must be distinct labels >= 0 separated by commas, or -1 for an abstention, got {text!r}"
        )
    return values


def _check_correct(text: str, label: int, predicted: Optional[List[int]], where: str) -> None:
    text = text.strip()
    if text not in ("0", "1"):
        raise PredictionsFormatError(f"{where}: correct must be 0 or 1, got {text!r}")
    expected = predicted is not None and label in predicted
    if (text == "1") != expected:
        shown = "-1 (abstained)" if predicted is None else ",".join(map(str, predicted))
        raise PredictionsFormatError(
            f"{where}: correct is {text}, but label {label} is {'' if expected else 'not '}in the set {shown}"
        )


def _stack_sets(
    path: str, rows: List[Tuple[int, str]], sets: List[Optional[List[int]]]
) -> Tuple[Optional[int], np.ndarray]:
    sizes = {len(s) for s in sets if s is not None}
    if len(sizes) > 1:
        size = len(next(s for s in sets if s is not None))
        number = next(rows[i][0] for i, s in enumerate(sets) if s is not None and len(s) != size)
        raise PredictionsFormatError(
            f"{path}:{number}: every predicted set must have the same size; this one has a different size than "
            f"the first set ({size})"
        )
    k = sizes.pop() if sizes else None
    out: np.ndarray = np.full((len(sets), k or 1), ABSTAIN, dtype=np.int64)
    for row, values in enumerate(sets):
        if values is not None:
            out[row] = values
    return k, out


def _parse_seconds(text: str) -> Optional[float]:
    """Seconds as a number, or Cohen's str(timedelta) `H:MM:SS[.ffffff]`; None if neither."""
    text = text.strip()
    try:
        if ":" in text:
            hours, minutes, seconds = text.split(":")
            value = int(hours) * 3600 + int(minutes) * 60 + float(seconds)
        else:
            value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) and value >= 0 else None

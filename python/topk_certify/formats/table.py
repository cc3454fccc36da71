"""OUT.tsv, the certify job's output, in both directions, with its OUT.meta.json sidecar.

One row per example, appended and flushed as each example finishes, so that a killed run
loses at most the examples in flight: `idx`, `label`, one `radius@K` column per k,
`n` (samples used; adaptive runs only), `time`. Lines starting with `#` are comments.

Writing: `TableWriter` starts a file with its header or continues one; a torn last line (a
kill in the middle of a write leaves one without its newline) is dropped by rewriting the
complete lines to a temporary file and renaming it over OUT, never by truncating in place.
The run's settings go to the sidecar, so a resume with other settings is refused instead of
mixing two experiments in one table.

Reading: `load_results` parses a file for analysis (`Results`).
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

import numpy as np

from .appending import AppendFile
from .atomic import write_lines_atomically, write_text_atomically
from .errors import FormatError

META_SUFFIX = ".meta.json"
_RADIUS_COLUMN = re.compile(r"^radius@([0-9]+)$")


class ResultsFormatError(FormatError):
    """An OUT file that cannot be read as certify output (the message names file and line)."""


def columns(ks: Sequence[int], adaptive: bool) -> List[str]:
    return ["idx", "label"] + [f"radius@{k}" for k in ks] + (["n"] if adaptive else []) + ["time"]


# -- the sidecar ----------------------------------------------------------------------------


def meta_path(out: str) -> str:
    return out + META_SUFFIX


def read_meta(out: str) -> Optional[Dict[str, object]]:
    """The settings recorded beside OUT, or None when there is no readable sidecar."""
    try:
        with open(meta_path(out), encoding="utf-8") as handle:
            meta = json.load(handle)
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def write_meta(out: str, settings: Dict[str, object]) -> None:
    try:
        write_text_atomically(meta_path(out), json.dumps(settings, indent=1, sort_keys=True))
    except OSError as exc:
        raise FormatError(f"cannot write {meta_path(out)}: {exc.strerror}") from None


META_VERSION = 2  # meta written before it recorded every key, the model and the examples: 1
# How a resume names a changed key whose value says little by itself.
_CHANGED = {"model_sha256": "the model changed (its weights, buffers or TorchScript file differ from the run's)"}


def _same(a: object, b: object) -> bool:
    """Equal as JSON (so True is not 1, and a tuple is its list)."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def check_meta(out: str, settings: Dict[str, object], progress: Sequence[str] = ()) -> Dict[str, object]:
    """Refuses to resume OUT unless its sidecar holds exactly the keys of `settings`, with the
    same values except for the `progress` keys (which the caller checks). Returns the sidecar."""
    recorded = read_meta(out)
    name = os.path.basename(meta_path(out))
    if recorded is None:
        raise FormatError(
            f"cannot resume {out}: it has no readable {name} beside it, so it is "
            "not a certify run's output (or was copied without it); choose another -o"
        )
    version = recorded.get("version")
    if "version" in recorded and not _same(version, settings.get("version")):
        raise FormatError(
            f"cannot resume {out}: its {name} has version {version!r}, this topk-certify writes "
            f"{settings.get('version')!r}; finish it with the version that started it, or start another -o"
        )
    missing, unknown = sorted(set(settings) - set(recorded)), sorted(set(recorded) - set(settings))
    if missing or unknown:
        detail = "; ".join(f"{what} {keys}" for what, keys in (("missing", missing), ("unknown", unknown)) if keys)
        raise FormatError(f"cannot resume {out}: {name} is not this run's meta ({detail}); choose another -o")
    changed = [key for key in settings if key not in progress and not _same(recorded[key], settings[key])]
    if changed:
        named = [_CHANGED[key] for key in changed if key in _CHANGED]
        detail = ", ".join(
            f"{key}: {recorded[key]!r} then, {settings[key]!r} now" for key in changed if key not in _CHANGED
        )
        raise FormatError(
            f"cannot resume {out}: "
            + "; ".join(named + ([f"other settings ({detail})"] if detail else []))
            + "; use the same options or another -o"
        )
    return recorded


# -- lines ----------------------------------------------------------------------------------


def read_complete_lines(path: str) -> Tuple[List[str], bool]:
    """(the complete lines of `path`, whether a torn last line follows them). Reads only."""
    with open(path, "rb") as handle:
        data = handle.read()
    end = data.rfind(b"\n") + 1
    try:
        text = data[:end].decode("utf-8")
    except UnicodeDecodeError:
        raise FormatError(f"{path} is not a UTF-8 text file") from None
    return text.splitlines(), end < len(data)


def done_indices(path: str, rows: List[List[str]]) -> Set[int]:
    done: Set[int] = set()
    for number, row in enumerate(rows, start=2):
        try:
            idx = int(row[0])
        except ValueError:
            raise FormatError(f"{path}:{number}: idx {row[0]!r} is not an integer") from None
        if idx in done:
            raise FormatError(f"{path}:{number}: idx {idx} appears twice")
        done.add(idx)
    return done


class TableWriter:
    """A TSV file with a fixed header whose rows are appended one flush at a time."""

    def __init__(self, path: str, header: Sequence[str]):
        self.path = path
        self.header = list(header)
        self._file = AppendFile(path)

    def existing_rows(self) -> Tuple[List[List[str]], bool]:
        """(rows already in the file, whether it ends in a torn line); checks the header.
        Nothing is written."""
        lines, torn = read_complete_lines(self.path)
        if not lines:
            if self._is_torn_header():  # a kill while the header was written
                return [], True
            raise FormatError(f"{self.path} has no header line: it is not a certify run's output; choose another -o")
        found = lines[0].split("\t")
        if found != self.header:
            raise FormatError(
                f"{self.path} has columns {found}, but this run writes {self.header}: "
                "resume with the same --k and --adaptive, or choose another -o"
            )
        rows = []
        for number, line in enumerate(lines[1:], start=2):
            cells = line.split("\t")
            if len(cells) != len(self.header):
                raise FormatError(
                    f"{self.path}:{number}: expected {len(self.header)} tab-separated cells, got {len(cells)}"
                )
            rows.append(cells)
        return rows, torn

    def _is_torn_header(self) -> bool:
        with open(self.path, "rb") as handle:
            data = handle.read(4096)
        return ("\t".join(self.header) + "\n").encode("utf-8").startswith(data)

    def create(self) -> None:
        """A new file holding the header; refused if the file appeared meanwhile."""
        try:
            self._file.open(exclusive=True)
        except FileExistsError:
            raise FormatError(
                f"{self.path} already exists: pass --resume to continue that run, or choose another -o"
            ) from None
        self.append(self.header)

    def reopen(self, rows: List[List[str]], torn: bool) -> None:
        """Continues the existing file after its `rows` (dropping a torn last line first)."""
        if torn:
            # the complete lines, rewritten atomically: the old file is never cut
            write_lines_atomically(self.path, ["\t".join(self.header)] + ["\t".join(row) for row in rows])
        self._file.open(exclusive=False)

    def append(self, cells: Sequence[str]) -> None:
        self._file.write_line("\t".join(cells) + "\n")

    def close(self) -> None:
        self._file.close()


# -- reading for analysis -------------------------------------------------------------------


@dataclass(frozen=True)
class Results:
    """One OUT file, parsed.

    Attributes:
        path: the file read.
        ks: the k of each radius@K column, in file order.
        radius: float64 (E, len(ks)); radius[e, m] is example e's radius@ks[m] (0 = not certified).
        idx: int64 (E,), the examples' idx column (0..E-1 when the file has none).
        labels: int64 (E,) or None (no label column).
        n: int64 (E,) samples used per example (adaptive runs), or None.
        time: float64 (E,) seconds per example, or None.
        meta: the run's settings: `key=value` pairs of `#` comment lines, and the sidecar
            `OUT.meta.json` that `certify` writes (its `n` is the per-example budget).
        notes: things the reader skipped (e.g. a torn last line), one sentence each.
    """

    path: str
    ks: Tuple[int, ...]
    radius: np.ndarray
    idx: np.ndarray
    labels: Optional[np.ndarray] = None
    n: Optional[np.ndarray] = None
    time: Optional[np.ndarray] = None
    meta: Dict[str, object] = field(default_factory=dict)
    notes: Tuple[str, ...] = ()

    @property
    def num_examples(self) -> int:
        return int(self.radius.shape[0])

    @property
    def name(self) -> str:
        """The file name without directory and extension."""
        base = os.path.basename(self.path)
        stem, ext = os.path.splitext(base)
        return stem if ext.lower() in (".tsv", ".txt", ".csv") and stem else base


def _parse_meta(comment: str, meta: Dict[str, object]) -> None:
    for token in comment.lstrip("#").split():
        key, sep, value = token.partition("=")
        if sep and key:
            meta[key] = value


def _split_lines(path: str, text: str) -> Tuple[List[str], List[str]]:
    """(the lines before a torn last one, notes about what was skipped)."""
    lines = text.split("\n")
    notes: List[str] = []
    if lines and lines[-1] == "":
        lines.pop()  # the file ends with a newline: nothing after it
    elif lines:
        torn = lines.pop()
        if torn.strip():
            notes.append(
                f"{path}: ignored line {len(lines) + 1}, which has no newline at the end "
                "(an interrupted run's unfinished row)"
            )
    return lines, notes


def _header_and_rows(
    path: str, lines: List[str], meta: Dict[str, object], torn: bool
) -> Tuple[List[str], int, List[Tuple[int, List[str]]]]:
    header: Optional[List[str]] = None
    header_line = 0
    rows: List[Tuple[int, List[str]]] = []
    for number, line in enumerate(lines, start=1):
        line = line.rstrip("\r")
        if not line.strip():
            continue
        if line.startswith("#"):
            _parse_meta(line, meta)
        elif header is None:
            header, header_line = [name.strip() for name in line.split("\t")], number
        else:
            rows.append((number, line.split("\t")))
    if header is None:
        if torn:
            raise ResultsFormatError(f"{path}: its only line (the header) is incomplete")
        raise ResultsFormatError(f"{path} is empty: expected a header with radius@K columns")
    return header, header_line, rows


def _radius_columns(path: str, header: List[str], header_line: int) -> List[Tuple[int, int]]:
    """(k, column) of every radius@K column."""
    k_columns: List[Tuple[int, int]] = []
    for column, name in enumerate(header):
        match = _RADIUS_COLUMN.match(name)
        if match:
            k = int(match.group(1))
            if any(k == seen for seen, _ in k_columns):
                raise ResultsFormatError(f"{path}:{header_line}: column radius@{k} appears twice")
            k_columns.append((k, column))
    if not k_columns:
        hint = ""
        if "radius" in header:
            hint = " (a single-k `radius` output names its column `radius`: rename it radius@K)"
        raise ResultsFormatError(
            f"{path}:{header_line}: no radius@K columns in the header ({' '.join(header)[:80]}){hint}"
        )
    return k_columns


def load_results(path: str) -> Results:
    """Reads one OUT file (see the module docstring).

    A final line without a trailing newline (what a run killed mid-write leaves) is skipped
    and reported in `notes`. Raises OSError when the file cannot be read, ResultsFormatError
    (a ValueError, naming the file and line) for anything malformed: no header, no radius@K
    column, a row with the wrong number of fields, a radius that is not a finite number >= 0,
    an idx that is not an int or appears twice, no complete rows.
    """
    path = os.fspath(path)
    with open(path, encoding="utf-8", newline="") as handle:
        text = handle.read()
    lines, notes = _split_lines(path, text)
    meta: Dict[str, object] = read_meta(path) or {}
    header, header_line, rows = _header_and_rows(path, lines, meta, bool(notes))
    k_columns = _radius_columns(path, header, header_line)
    if not rows:
        raise ResultsFormatError(f"{path} has no finished rows (only a header)")
    parsed = _parse_rows(path, header, k_columns, rows)
    return Results(
        path=path, ks=tuple(k for k, _ in k_columns), radius=parsed["radius"], idx=parsed["idx"],
        labels=parsed["labels"], n=parsed["n"], time=parsed["time"], meta=meta, notes=tuple(notes),
    )  # fmt: skip


def _parse_rows(
    path: str, header: List[str], k_columns: List[Tuple[int, int]], rows: List[Tuple[int, List[str]]]
) -> Dict[str, Any]:
    def column_of(name: str) -> Optional[int]:
        return header.index(name) if name in header else None

    idx_col, label_col, n_col, time_col = (column_of(c) for c in ("idx", "label", "n", "time"))
    count = len(rows)
    radius: np.ndarray = np.empty((count, len(k_columns)), dtype=np.float64)
    idx: np.ndarray = np.arange(count, dtype=np.int64)
    labels: Optional[np.ndarray] = np.empty(count, dtype=np.int64) if label_col is not None else None
    n: Optional[np.ndarray] = np.empty(count, dtype=np.int64) if n_col is not None else None
    times: Optional[np.ndarray] = np.empty(count) if time_col is not None else None
    seen: Dict[int, int] = {}
    for row, (number, fields) in enumerate(rows):
        where = f"{path}:{number}"
        if len(fields) != len(header):
            raise ResultsFormatError(
                f"{where}: expected {len(header)} tab-separated fields as in the header, got {len(fields)}"
            )
        if idx_col is not None:
            idx[row] = _parse_int(fields[idx_col], "idx", where)
            first = seen.setdefault(int(idx[row]), number)
            if first != number:
                raise ResultsFormatError(f"{where}: idx {idx[row]} appears twice (first on line {first})")
        if labels is not None and label_col is not None:
            labels[row] = _parse_int(fields[label_col], "label", where)
        if n is not None and n_col is not None:
            n[row] = _parse_int(fields[n_col], "n", where)
        for m, (k, column) in enumerate(k_columns):
            radius[row, m] = _parse_radius(fields[column], f"radius@{k}", where)
        if times is not None and time_col is not None:
            try:
                times[row] = float(fields[time_col])
            except ValueError:
                times = None  # time is informational only
    return {"radius": radius, "idx": idx, "labels": labels, "n": n, "time": times}


def _parse_int(text: str, name: str, where: str) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        raise ResultsFormatError(f"{where}: {name} must be an integer >= 0, got {text.strip()!r}") from None
    if value < 0:
        raise ResultsFormatError(f"{where}: {name} must be an integer >= 0, got {value}")
    return value


def _parse_radius(text: str, name: str, where: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not (math.isfinite(value) and value >= 0.0):
        raise ResultsFormatError(f"{where}: {name} must be a finite number >= 0, got {text.strip()!r}")
    return value

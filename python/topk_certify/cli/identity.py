"""A run's identity is its content: fingerprints of the examples it certified.

Each example's digest covers its idx, its label and the bytes of `x` as read for the model
(dtype and shape included). The digests are grouped, in the order of the run's selection,
into chunks of CHUNK examples; the meta records one digest per chunk (the last one of the
examples written so far, possibly partial) and how many examples they cover. The job records
a round's examples before it appends their rows, so every row of OUT is covered; a resume
reads those examples again (reading only), recomputes the chunks and refuses a mismatch.
"""

from __future__ import annotations

import hashlib
from typing import Callable, Dict, List, Sequence

import numpy as np

from .errors import CliError

CHUNK = 256  # examples per recorded digest: a 50,000-example run keeps 196 of them
READ_STEP = 64  # examples read at a time when a resume checks them (bounded memory)


def example_digests(indices: Sequence[int], labels: np.ndarray, x: np.ndarray) -> List[bytes]:
    """One 16-byte digest per example: idx, label, and x's dtype, shape and bytes."""
    x = np.ascontiguousarray(x)
    shape = ",".join(str(int(d)) for d in x.shape[1:])
    head = f"{x.dtype.str}|{shape}|".encode("ascii")
    out = []
    for row, idx in enumerate(indices):
        h = hashlib.sha256(head + f"{int(idx)}|{int(labels[row])}|".encode("ascii"))
        h.update(x[row : row + 1].data)  # the row's bytes, not copied (SHA-256: hardware-assisted)
        out.append(h.digest()[:16])
    return out


def _chunk_digest(digests: Sequence[bytes]) -> str:
    return hashlib.sha256(b"".join(digests)).hexdigest()[:32]


class ExampleLog:
    """The digests of the examples a run has certified (or is about to write), in order."""

    def __init__(self, digests: Sequence[bytes] = ()):
        self._done: List[str] = []  # digests of the complete chunks
        self._partial: List[bytes] = []
        self.count = 0
        self.add(digests)

    def add(self, digests: Sequence[bytes]) -> None:
        for digest in digests:
            self._partial.append(digest)
            self.count += 1
            if len(self._partial) == CHUNK:
                self._done.append(_chunk_digest(self._partial))
                self._partial = []

    def as_meta(self) -> Dict[str, object]:
        chunks = self._done + ([_chunk_digest(self._partial)] if self._partial else [])
        return {"chunk": CHUNK, "count": self.count, "digests": chunks}


def _recorded(out: str, recorded: object, done: int) -> Dict[str, object]:
    """The meta's `examples` entry, checked for shape."""
    ok = isinstance(recorded, dict) and set(recorded) == {"chunk", "count", "digests"}
    if ok:
        assert isinstance(recorded, dict)
        count, digests = recorded["count"], recorded["digests"]
        ok = (
            recorded["chunk"] == CHUNK
            and isinstance(count, int)
            and isinstance(digests, list)
            and all(isinstance(d, str) for d in digests)
            and len(digests) == -(-count // CHUNK)
        )
    if not ok:
        raise CliError(f"cannot resume {out}: its meta's record of the examples is not this run's; choose another -o")
    assert isinstance(recorded, dict)
    if recorded["count"] < done:
        raise CliError(
            f"cannot resume {out}: it has {done} rows but its meta covers only {recorded['count']} examples: "
            "not this run's meta; choose another -o"
        )
    return recorded


def verify_examples(
    out: str, recorded: object, done: int, selected: Sequence[int], digests_of: Callable[[List[int]], List[bytes]]
) -> ExampleLog:
    """Recomputes the digests of the examples the meta covers (reading them again) and
    refuses a mismatch naming the first chunk that differs. Returns the log of the `done`
    examples, which the run continues."""
    entry = _recorded(out, recorded, done)
    count = int(entry["count"])  # type: ignore[call-overload]
    if count > len(selected):
        raise CliError(f"cannot resume {out}: its meta covers {count} examples, the selection has {len(selected)}")
    expected = entry["digests"]
    assert isinstance(expected, list)
    digests: List[bytes] = []
    for start in range(0, count, CHUNK):
        chunk: List[bytes] = []
        end = min(start + CHUNK, count)
        for step in range(start, end, READ_STEP):
            chunk += digests_of(list(selected[step : min(step + READ_STEP, end)]))
        if _chunk_digest(chunk) != expected[start // CHUNK]:
            first, last = selected[start], selected[end - 1]
            raise CliError(
                f"cannot resume {out}: the data changed: the examples idx {first} to {last} (x or label) differ "
                "from those the run certified; use the same data or another -o"
            )
        digests += chunk
    return ExampleLog(digests[:done])


def _radius_cell(out: str, row: Sequence[str], column: int, number: int) -> float:
    try:
        return float(row[column])
    except ValueError:
        raise CliError(f"{out}:{number}: {row[column]!r} is not a radius") from None


def verify_radii(
    out: str, rows: List[List[str]], header: Sequence[str], counts: np.ndarray, settings, num_classes: int
) -> None:
    """A fixed-n run's rows against its counts file: each row's radii recomputed from its
    counts line (the radii are a function of the counts and the settings) must be the
    row's own, to the bit. `counts` holds one line (C counts, then the label) per row."""
    from ..stats import certify_counts

    if not rows:
        return
    if counts.shape[1] - 1 != num_classes:
        raise CliError(
            f"cannot resume {out}: its counts lines hold {counts.shape[1] - 1} counts but the model has "
            f"{num_classes} classes: the counts file is not this run's; choose another -o"
        )
    s = settings
    radii = certify_counts(counts[:, :-1], counts[:, -1], k=list(s.ks), sigma=s.sigma, alpha=s.alpha, bound=s.bound)
    for m, k in enumerate(s.ks):
        column = list(header).index(f"radius@{k}")
        for i, row in enumerate(rows):
            written = _radius_cell(out, row, column, i + 2)
            if written != radii[i, m]:
                raise CliError(
                    f"cannot resume {out}: row {i + 1} (idx {row[0]}) has radius@{k} {written!r} but its counts "
                    f"line gives {float(radii[i, m])!r}: the output or the counts file was edited; choose another -o"
                )

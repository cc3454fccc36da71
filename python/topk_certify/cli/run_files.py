"""The files of one certify run: OUT.tsv, its meta sidecar, the optional counts file and
the lock. Everything is checked, reading only, before the first byte is written; then
they are created together (or continued, on resume).

A resume continues only the same run: a run of the same kind (certify or predict), every meta key the run writes, with the same values
(settings, data path and labels, the model's fingerprint); the examples already written,
read again and compared with their recorded digests; the rows a prefix of the selection;
and, for a fixed-n run with a counts file, each row's radii recomputed from its counts line.
Each round's example digests go to the meta before its rows are appended, so every row is
covered by the record."""

from __future__ import annotations

import os
from typing import Callable, Dict, List, Optional, Sequence, Set

import numpy as np

from ..formats import table
from ..formats.counts import CountsWriter
from ..formats.lock import RunLock
from .errors import CliError
from .identity import ExampleLog

# A meta written before runs recorded their kind is a certify run's: only certify wrote them.
KIND_BEFORE_KINDS = "certify"


def same_file(a: str, b: str) -> bool:
    if os.path.exists(a) and os.path.exists(b):
        return os.path.samefile(a, b)
    return os.path.realpath(a) == os.path.realpath(b)


class RunFiles:
    """Opened by the writing rank only."""

    def __init__(
        self,
        out: str,
        header: Sequence[str],
        meta: Dict[str, object],
        counts: Optional[CountsWriter],
        selected: Sequence[int] = (),
        check_examples: Optional[Callable[[object, int], ExampleLog]] = None,
        check_radii: Optional[Callable[[List[List[str]], Sequence[str], np.ndarray], None]] = None,
    ):
        self.out = out
        self.table = table.TableWriter(out, header)
        self.meta = meta
        self.counts = counts
        self.lock = RunLock(out)
        self.selected = list(selected)
        self._check_examples = check_examples
        self._check_radii = check_radii
        self.log = ExampleLog()
        self.meta["examples"] = self.log.as_meta()

    def check_paths(self) -> None:
        if self.counts is not None and same_file(self.counts.path, self.out):
            raise CliError(f"--counts and -o name the same file ({self.out}): give the counts their own file")
        for flag, path in (("-o", self.out), ("--counts", None if self.counts is None else self.counts.path)):
            if path is not None and os.path.exists(path) and not os.path.isfile(path):
                raise CliError(f"{flag} {path} is not a regular file: choose a file path for the run to own")

    def open(self, resume: bool) -> Set[int]:
        """Locks OUT, checks every file, then creates or continues them. Returns the idx of
        the examples already done."""
        self.check_paths()
        self.lock.acquire()
        try:
            if os.path.exists(self.out):
                return self._continue(resume)
            self._create()
            return set()
        except BaseException:
            self.lock.release()
            raise

    def _continue(self, resume: bool) -> Set[int]:
        if not resume:
            raise CliError(f"{self.out} already exists: pass --resume to continue that run, or choose another -o")
        recorded = table.check_meta(self.out, self._meta_to_match(), progress=("examples",))
        rows, torn = self.table.existing_rows()
        done = table.done_indices(self.out, rows)
        if done != set(self.selected[: len(done)]):
            raise CliError(
                f"cannot resume {self.out}: its rows are not the first {len(done)} examples of this run's selection; "
                "choose another -o"
            )
        if self.counts is not None:
            if not os.path.exists(self.counts.path):
                raise CliError(
                    f"--counts {self.counts.path} does not exist but {self.out} does: a counts file can only be "
                    "written from the start of a run (resume without --counts, or start another -o)"
                )
            counts_rows = self.counts.check_resumable(_expected_counts(rows, self.table.header))
            if self._check_radii is not None:
                self._check_radii(rows, self.table.header, counts_rows)
        if self._check_examples is not None:
            self.log = self._check_examples(recorded["examples"], len(rows))
        self.meta["examples"] = self.log.as_meta()
        # All checked: from here on, writing.
        if self.counts is not None:
            self.counts.reopen()
        self.table.reopen(rows, torn)
        return done

    def _meta_to_match(self) -> Dict[str, object]:
        """The meta a resume must find: a run of another kind is refused by name first (its
        settings would all differ); a meta from before kinds were recorded is a certify run's."""
        recorded = table.read_meta(self.out)
        if recorded is None or "kind" not in self.meta:
            return self.meta  # check_meta names what is missing
        kind, theirs = self.meta["kind"], recorded.get("kind", KIND_BEFORE_KINDS)
        if theirs != kind:
            raise CliError(
                f"cannot resume {self.out}: it is the output of a {theirs} run, not of a {kind} run; "
                f"run {theirs} to continue it, or choose another -o"
            )
        if "kind" not in recorded:
            return {key: value for key, value in self.meta.items() if key != "kind"}
        return self.meta

    def _create(self) -> None:
        leftover = self.counts is not None and os.path.exists(self.counts.path)
        if self.counts is not None and leftover and not self.counts.is_unstarted():
            raise CliError(
                f"--counts {self.counts.path} already exists and {self.out} does not: choose another --counts file "
                "(an existing one is only continued, with --resume, beside its own output)"
            )
        # Meta, counts, OUT, in this order: a kill at any moment leaves either no OUT (a
        # rerun starts afresh, taking over a counts file holding only this run's header) or
        # an OUT whose meta is there (a rerun resumes). If a file cannot be written, no OUT
        # is left behind.
        created: List[str] = []
        try:
            table.write_meta(self.out, self.meta)
            created.append(table.meta_path(self.out))
            if self.counts is not None:
                self.counts.create(replace=leftover)
                created.append(self.counts.path)
            self.table.create()
            created.append(self.out)
        except BaseException:
            self.close()
            for path in created:
                os.remove(path)
            raise

    def append_round(self, finished: Sequence[tuple]) -> None:
        """Appends a round's (row cells, counts line, example digest) items: their digests
        first (the meta rewritten atomically), so that every row of OUT is covered."""
        if not finished:
            return
        self.log.add([digest for _, _, digest in finished])
        self.meta["examples"] = self.log.as_meta()
        table.write_meta(self.out, self.meta)
        for cells, counts_line, _ in finished:
            if self.counts is not None:
                self.counts.append(counts_line)  # before its row: a kill never leaves a row without counts
            self.table.append(cells)

    def close(self) -> None:
        self.table.close()
        if self.counts is not None:
            self.counts.close()
        self.lock.release()


def _expected_counts(rows: List[List[str]], header: Sequence[str]):
    """(label, samples used or None) of each OUT row, for checking the counts file."""
    n_column = header.index("n") if "n" in header else None
    try:
        return [(int(row[1]), None if n_column is None else int(row[n_column])) for row in rows]
    except ValueError:
        raise CliError("the existing output has a row whose label or n is not an integer") from None

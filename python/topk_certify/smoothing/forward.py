"""The model's forward pass as the sampler runs it (internal): a batch that does not fit in
memory is run in smaller pieces of the same rows, and what the model does beyond returning
logits (exiting, answering on another device) becomes a clear error or is undone.

Splitting changes only how many rows one call sees, never the rows themselves: the noise is
drawn before, into the batch, so the counts are those of the unsplit batch.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch

from .._checks import first_line

_FAILED_BATCH = "_topk_certify_batch_rows"
# After this many passes at a reduced size, the next pass tries twice the rows again.
GROW_BACK_AFTER = 8


class ModelExit(RuntimeError):
    """The model's forward pass called sys.exit (a SystemExit would end the whole program
    silently, with the model's exit code)."""

    def __init__(self, code: object):
        super().__init__(f"the model called sys.exit({code!r})")
        self.code = code


class OutOfMemoryOnOneRow(RuntimeError):
    """Even one row at a time, the model runs out of memory."""


def mark_model_failure(exc: BaseException, rows: int) -> None:
    """Tags an exception raised by the model itself with the batch it failed on (the caller
    keeps the exception's own type; the command line names the stage)."""
    try:
        setattr(exc, _FAILED_BATCH, rows)
    except (AttributeError, TypeError):
        pass


def model_failure_rows(exc: BaseException) -> Optional[int]:
    """The batch size the model failed on, when `exc` came from the model's forward pass."""
    return getattr(exc, _FAILED_BATCH, None)


def _out_of_memory_types() -> tuple:
    found = {getattr(torch, "OutOfMemoryError", None), getattr(torch.cuda, "OutOfMemoryError", None)}
    return tuple(t for t in found if t is not None)


OUT_OF_MEMORY = _out_of_memory_types()


class SplittingForward:
    """Calls `model` on batches, in pieces of at most `fit` rows once a batch ran out of
    memory; `fit` halves on every out-of-memory error and doubles back after GROW_BACK_AFTER
    passes that fitted, up to the full batch."""

    def __init__(self, model: Callable, device: torch.device, full: int):
        self.model = model
        self.device = device
        self.full = full
        self.fit = full
        self._fitted = 0  # passes that fitted since the last change of `fit`

    def __call__(self, batch: torch.Tensor):
        rows = batch.shape[0]
        while True:
            try:
                out = self._run_in_pieces(batch)
            except OUT_OF_MEMORY as exc:
                self._shrink(exc, rows)
                continue
            self._grow_back()
            return out

    def _run_in_pieces(self, batch: torch.Tensor):
        if batch.shape[0] <= self.fit:
            return self._call(batch)
        outs = [self._call(batch[start : start + self.fit]) for start in range(0, batch.shape[0], self.fit)]
        if not all(isinstance(out, torch.Tensor) for out in outs):
            return outs[0]  # not logits: the caller's output check says so
        return torch.cat([out.to(outs[0].device) for out in outs])

    def _call(self, batch: torch.Tensor):
        try:
            out = self.model(batch)
        except SystemExit as exc:
            error = ModelExit(exc.code)
            mark_model_failure(error, batch.shape[0])
            raise error from None
        if isinstance(out, torch.Tensor) and out.device != self.device and out.device.type != "meta":
            out = out.to(self.device)  # counted where the counts are
        return out

    def _shrink(self, exc: BaseException, rows: int) -> None:
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        if min(self.fit, rows) <= 1:
            error = OutOfMemoryOnOneRow(
                f"out of memory on {self.device} even for a single input ({first_line(exc)}); "
                "a smaller batch_size (--batch-size) cannot help: free memory on the device or run the model elsewhere"
            )
            mark_model_failure(error, 1)
            raise error from None
        self.fit = max(1, min(self.fit, rows) // 2)
        self._fitted = 0

    def _grow_back(self) -> None:
        if self.fit >= self.full:
            return
        self._fitted += 1
        if self._fitted >= GROW_BACK_AFTER:
            self.fit = min(self.full, 2 * self.fit)
            self._fitted = 0

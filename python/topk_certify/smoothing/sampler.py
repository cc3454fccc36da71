"""Gaussian noise sampling in packed forward batches, one random stream per example (internal).

The public front (`api.py`, `certify.py`) turns its arguments into *requests*: "count the next m noisy
samples of example e for purpose p". `NoiseSampler.run` packs the requests, in order, into
forward batches of exactly `batch_size` rows (several examples share a batch when m is small;
one example's last partial batch is filled with the next example's samples), runs the model,
and counts the argmax labels of each request (on the device; on the CPU with count_labels).

Reproducibility. Every (example, purpose) pair owns a stream: a `torch.Generator` on the
device, seeded with a 63-bit hash of (seed, index of the example, purpose). A stream draws its
noise in blocks of `batch_size` samples, the last one shorter so that exactly `total` samples
are drawn, block j being the j-th draw of its generator. Forward batches are cut from these
blocks (a block may straddle two batches: its drawn rows wait for the next batch; or two
requests: between requests the stream keeps only its generator's state from before the block
and draws the block again for its next part, so memory does not grow with the examples in
flight). So the noise of
an example depends on (seed, index, purpose, batch_size, total) and on nothing else: not on
the other examples of the call, their order, how requests split the stream into rounds
(adaptive rounds take "the next m samples" of a stream), or the process.
(Bitwise equality across processes needs the same torch build, the same device model and the
same batch size: CPU and CUDA generators give different streams, and CUDA's random kernels size
their launch by the GPU's number of multiprocessors, so two GPU models draw different streams.)

Exactness. The noise is drawn and added in float32 at least (float64 for float64 inputs), and
the noisy batch is cast once to the dtype the model takes: the cast is part of the base
classifier, so the sampled points are exactly x + N(0, sigma^2 I) in that precision.

torch is imported at module level here; the rest of the front imports this module only inside
its functions, so that `import topk_certify` works without torch.
"""

from __future__ import annotations

import os
from typing import Callable, Dict, Iterable, Iterator, List, NamedTuple, Optional, Sequence, Set, Tuple

import numpy as np
import torch

from .._checks import first_line
from ..stats import count_labels
from . import inputs
from .forward import ModelExit, SplittingForward, mark_model_failure, model_failure_rows

__all__ = [
    "NoiseSampler",
    "SELECT",
    "ESTIMATE",
    "ModelExit",
    "fresh_seed",
    "stream_seed",
    "model_failure_rows",
    "copy_to_host",
]

# Purpose ids enter the seed hash: never renumber them, or seeded results change.
SELECT = 0  # the n0 samples that choose the candidate labels (prediction mode)
ESTIMATE = 1  # the n samples whose counts give the bounds

_MASK63 = (1 << 63) - 1

# What `_stage` hands `_finish`: the finished requests, their counts on their way to the host,
# and the CUDA event that marks the copy (None off CUDA).
_Staged = Tuple[List["_Done"], torch.Tensor, Optional[torch.cuda.Event]]


class _Done(NamedTuple):
    """A request whose samples have all been counted."""

    tag: int
    example: int
    row: int  # its row of the counts table
    samples: int  # how many samples it asked for: its counts (with the non-finite column) sum to this


class CountsInvariantError(RuntimeError):
    """Counts that do not add up to the samples drawn: a bug or a device fault, never a certificate."""


def copy_to_host(counts: torch.Tensor, cuda=None) -> Tuple[torch.Tensor, Optional[object]]:
    """(host copy of `counts`, event marking its arrival, or None when the copy is done).

    On CUDA the copy is queued, without waiting, on the current stream of the GPU that holds
    the counts (which need not be the current GPU), and the event is recorded on that same
    stream: an event recorded on the current device's stream would not wait for it.
    """
    if counts.device.type != "cuda":
        return counts.cpu(), None
    cuda = torch.cuda if cuda is None else cuda
    stream = cuda.current_stream(counts.device)
    host = counts.to("cpu", non_blocking=True)
    event = cuda.Event()
    event.record(stream)
    return host, event


def fresh_seed() -> int:
    """A random 63-bit root seed (for seed=None: fresh randomness on every call)."""
    return int.from_bytes(os.urandom(8), "little") & _MASK63


def stream_seed(seed: int, index: int, purpose: int) -> int:
    """The 63-bit seed of the noise stream of (example index, purpose) under a root seed.

    numpy's SeedSequence (a well-mixed hash made for exactly this): streams of different
    examples, purposes or seeds are independent for every practical purpose.
    """
    state = np.random.SeedSequence(entropy=seed, spawn_key=(index, purpose)).generate_state(2, dtype=np.uint32)
    return (int(state[0]) | (int(state[1]) << 32)) & _MASK63


class _Stream:
    """The noise of one example for one purpose: blocks drawn from its own generator."""

    __slots__ = ("generator", "block", "undrawn", "partial", "drawn")

    def __init__(self, seed: int, total: int, block: int, device: torch.device):
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(seed)
        self.block = block
        self.undrawn = total  # samples not yet drawn from the generator
        # A block partly used: (generator state before it, its size, rows of it used).
        self.partial: Optional[Tuple[torch.Tensor, int, int]] = None
        self.drawn: Optional[torch.Tensor] = None  # that block's rows, kept while its request lasts

    def available(self) -> int:
        return self.undrawn + (0 if self.partial is None else self.partial[1] - self.partial[2])

    def close(self) -> None:
        """Frees the generator; the stream can never be drawn again (a fresh stream of the
        same seed would repeat its noise)."""
        self.generator = None
        self.undrawn = 0
        self.partial = None
        self.drawn = None


class _Request:
    """A request being packed into batches: the samples of its stream still to place."""

    __slots__ = ("tag", "example", "stream", "samples", "left", "row")

    def __init__(self, tag: int, example: int, stream: _Stream, samples: int, row: int):
        self.tag = tag  # its ordinal in the requests
        self.example = example
        self.stream = stream
        self.samples = samples
        self.left = samples  # samples not yet placed in a batch
        self.row = row  # its row of the counts table

    def done(self) -> _Done:
        return _Done(self.tag, self.example, self.row, self.samples)


class NoiseSampler:
    """Counts the base classifier's labels on x + N(0, sigma^2 I), in packed forward batches.

    Args:
        model: callable mapping a (batch, *x.shape[1:]) tensor to logits (batch, C).
        x: (E, ...) tensor already on the device. The noise is drawn on its device in float32,
            or float64 when x is float64 (never in half precision: the Gaussian must be exact).
        sigma: noise level.
        batch_size: rows per forward pass (the last pass of a `run` may be shorter).
        seed: root seed (an int; see `fresh_seed`).
        indices: E non-negative ints, the example numbers that key the streams.
        totals: {purpose: samples}: how many samples a stream of that purpose draws in all
            (its blocks are min(batch_size, what is left of total)). A request never asks
            a stream for more than it has left.
        num_classes: width of the counts; None = the model's output width.
        on_num_classes: called once with the counts width after the first forward pass
            (lets the caller validate labels and k before the long loop).
        input_dtype: the dtype the model takes (default: a half-precision model's own, else
            x's): each noisy batch is cast to it once, just before the forward pass.

    The model is called as is: the caller sets eval mode and inference mode. A batch that
    runs out of memory is run in smaller pieces of the same rows (`forward.SplittingForward`).
    `forward_rows` counts the rows the model has run (padding would be included; there is none).
    Callers that stop an example early `release` it, so its drawn noise is freed.
    """

    def __init__(
        self,
        model: Callable,
        x: torch.Tensor,
        *,
        sigma: float,
        batch_size: int,
        seed: int,
        indices: Sequence[int],
        totals: dict,
        num_classes: Optional[int] = None,
        on_num_classes: Optional[Callable[[int], None]] = None,
        input_dtype: Optional[torch.dtype] = None,
    ):
        self.model = model
        self.input_dtype = inputs.input_dtype(torch, model, x) if input_dtype is None else input_dtype
        self.x = x.to(torch.promote_types(x.dtype, torch.float32))
        self.sigma = float(sigma)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.indices = [int(i) for i in indices]
        self.totals = dict(totals)
        self.num_classes = num_classes
        self._on_num_classes = on_num_classes
        self._model_width: Optional[int] = None
        self._streams: Dict[Tuple[int, int], _Stream] = {}
        self._released: Set[int] = set()
        self._buf: Optional[torch.Tensor] = None
        self._scratch: Optional[torch.Tensor] = None  # the block of the request being placed
        self._counts: Optional[torch.Tensor] = None  # (rows, C + 1) int64 on the device
        self._free_rows: List[int] = []
        self._next_row = 0
        self._ones: Optional[torch.Tensor] = None
        self.forward_rows = 0
        self.forward = SplittingForward(model, x.device, self.batch_size)
        # Where to count: see _forward_and_count (tests flip it to cover both paths).
        self.count_on_host = x.device.type == "cpu"

    # -- noise ------------------------------------------------------------------------------

    def _stream(self, example: int, purpose: int) -> _Stream:
        key = (example, purpose)
        stream = self._streams.get(key)
        if stream is None:
            seed = stream_seed(self.seed, self.indices[example], purpose)
            stream = _Stream(seed, self.totals[purpose], self.batch_size, self.x.device)
            if example in self._released:
                stream.close()
            self._streams[key] = stream
        return stream

    def release(self, example: int) -> None:
        """Frees the noise drawn for `example` and not used (an example that stopped): its
        streams are closed for good, so memory does not grow with the examples that stopped."""
        self._released.add(example)
        for purpose in self.totals:
            stream = self._streams.pop((example, purpose), None)
            if stream is not None:
                stream.close()

    def live_streams(self) -> int:
        """Streams that hold a generator or drawn rows (what `release` frees)."""
        return sum(s.generator is not None for s in self._streams.values())

    def _draw(self, stream: _Stream, example: int, out: torch.Tensor) -> torch.Tensor:
        """Fill `out` (a whole block) with x[example] + sigma * noise, in place.

        normal_ then add_ (not a fused multiply-add) so that every element is rounded the
        same way whatever the vectorization and threading split: bitwise reproducible.
        """
        out.normal_(0.0, self.sigma, generator=stream.generator)
        out.add_(self.x[example])  # broadcast: x is never copied per sample
        return out

    def _fill(self, stream: _Stream, example: int, start: int, rows: int) -> None:
        """Write the stream's next `rows` samples into the batch buffer at `start`."""
        buf = self._buf
        assert buf is not None  # run allocates it before the first batch
        while rows:
            if stream.partial is None:
                size = min(stream.block, stream.undrawn)
                stream.undrawn -= size
                if size <= rows:  # the whole block lands in this batch: draw it in place
                    self._draw(stream, example, buf[start : start + size])
                    start += size
                    rows -= size
                    continue
                stream.partial = (stream.generator.get_state(), size, 0)
            state, size, used = stream.partial
            if stream.drawn is None:
                stream.drawn = self._redraw(stream, example, state, size)
            use = min(rows, size - used)
            buf[start : start + use].copy_(stream.drawn[used : used + use])
            stream.partial = (state, size, used + use) if used + use < size else None
            if stream.partial is None:
                stream.drawn = None
            start += use
            rows -= use

    def _redraw(self, stream: _Stream, example: int, state: torch.Tensor, size: int) -> torch.Tensor:
        """The block drawn from `state` (again, for a block its last request left partly
        used); the generator ends after it, as after the first draw. Into one scratch buffer
        for all streams: one request is placed at a time, and a stream lets go of its block
        when its request is placed (allocating a block per draw instead fragments the heap)."""
        if self._scratch is None:
            assert self._buf is not None
            self._scratch = torch.empty_like(self._buf)
        stream.generator.set_state(state)
        return self._draw(stream, example, self._scratch[:size])

    # -- counting ---------------------------------------------------------------------------

    def _row(self) -> int:
        return self._free_rows.pop() if self._free_rows else self._take_new_row()

    def _take_new_row(self) -> int:
        self._next_row += 1
        return self._next_row - 1

    def _ensure_counts(self, width: int) -> torch.Tensor:
        """The counts table, `width` columns, with a row for every request handed one."""
        if self._counts is None:
            self._counts = torch.zeros((max(64, self._next_row), width), dtype=torch.int64, device=self.x.device)
        elif self._counts.shape[0] < self._next_row:
            grown = torch.zeros(
                (max(2 * self._counts.shape[0], self._next_row), width),
                dtype=torch.int64,
                device=self.x.device,
            )
            grown[: self._counts.shape[0]] = self._counts
            self._counts = grown
        return self._counts

    def _check_output(self, out, rows: int) -> None:
        if not isinstance(out, torch.Tensor):
            raise TypeError(
                "the model must return a tensor of logits of shape (batch, num_classes), "
                f"it returned a {type(out).__name__}"
            )
        if out.ndim != 2 or out.shape[0] != rows or out.shape[1] < 1:
            raise ValueError(
                "the model must return logits of shape (batch, num_classes): on a batch of "
                f"{rows} inputs of shape {tuple(self.x.shape[1:])} it returned shape "
                f"{tuple(out.shape)}"
            )
        width = out.shape[1]
        if self._model_width is None:
            self._check_first_width(width)
        elif width != self._model_width:
            raise ValueError(f"the model's output width changed from {self._model_width} to {width}")

    def _check_first_width(self, width: int) -> None:
        """num_classes, when given, is the model's output width: a wider table would count
        classes the model never outputs (and predict them), a narrower one cannot hold its labels."""
        if self.num_classes is not None and width != self.num_classes:
            relation = "smaller" if width > self.num_classes else "larger"
            raise ValueError(
                f"num_classes={self.num_classes} is {relation} than the model's output width {width}: "
                "num_classes must equal it (or be left None)"
            )
        self._model_width = width
        self.num_classes = width
        if self._on_num_classes is not None:
            self._on_num_classes(self.num_classes)

    def _forward(self, rows: int):
        assert self._buf is not None  # run allocates it before the first batch
        batch = self._buf[:rows]
        if batch.dtype != self.input_dtype:
            batch = batch.to(self.input_dtype)  # part of the base classifier: the noise stays exact
        try:
            return self.forward(batch)
        except Exception as exc:
            if model_failure_rows(exc) is None:
                if not self.forward_rows:
                    self._explain_first_failure(exc, batch)
                mark_model_failure(exc, rows)
            raise

    def _forward_and_count(self, rows: int, segments: List[Tuple[int, int, int]]) -> None:
        out = self._forward(rows)
        self._check_output(out, rows)
        assert self.num_classes is not None and self._buf is not None  # set by _check_output and run
        width = self.num_classes + 1  # last column: samples with a non-finite output
        self.forward_rows += rows
        counts = self._ensure_counts(width)
        labels = out.argmax(1)  # ties: the lowest index
        # Rows with a NaN or infinite logit go to the extra column; reported per example
        # when its counts come back, so the device is never synchronized per batch.
        labels.masked_fill_(~torch.isfinite(out).all(1), self.num_classes)
        if self.count_on_host:
            # On the CPU: one count_labels call (Rust) per batch, segments told apart by an
            # offset of segment * width. Measured (benches/bench_sampling.py --counting,
            # 2 threads): 1000 labels, 10 classes, in 10 segments: 3.8 us per batch against
            # 30 us for an index_add_ per segment and 47 us for a torch.bincount per
            # segment; in one segment all three take 4-5 us. Either way it is noise next to
            # a forward pass of a CNN, but it matters for tiny models.
            lengths = [b - a for _, a, b in segments]
            flat = labels.numpy() + np.repeat(np.arange(len(segments)) * width, lengths)
            per_segment = count_labels(flat, len(segments) * width)
            rows_of = [row for row, _, _ in segments]  # distinct: one segment per request
            counts.numpy()[rows_of] += per_segment.reshape(len(segments), width)
            return
        # On an accelerator: count on the device, one index_add_ into the flattened table at
        # row * width + label. No sync (torch.bincount syncs on CUDA: it reads the largest
        # label to size its output).
        if self._ones is None:
            self._ones = torch.ones(self._buf.shape[0], dtype=torch.int64, device=labels.device)
        lengths = [b - a for _, a, b in segments]
        offsets: np.ndarray = np.repeat(np.array([row for row, _, _ in segments], dtype=np.int64) * width, lengths)
        flat = labels + torch.from_numpy(offsets).to(labels.device, non_blocking=True)
        counts.view(-1).index_add_(0, flat, self._ones[:rows])

    def _explain_first_failure(self, exc: Exception, batch: torch.Tensor) -> None:
        """On the first forward pass, a failure that comes from how the model was called, not
        from the model, is said plainly: an input of another dtype than the model's parameters
        (float64 data into a float32 model, say), or a model without parameters (so its device
        could not be seen) that expects its inputs on another device."""
        if not isinstance(exc, RuntimeError):
            return
        first = first_line(exc)
        params = getattr(self.model, "parameters", None)
        tensors = list(params()) if callable(params) else []
        dtypes = {p.dtype for p in tensors if p.is_floating_point()}
        if dtypes and batch.dtype not in dtypes:
            names = ", ".join(sorted(str(d).replace("torch.", "") for d in dtypes))
            have = str(batch.dtype).replace("torch.", "")
            raise TypeError(
                f"x is {have} but the model's parameters are {names}, and the model failed on it ({first}); "
                f"pass x in the model's dtype (e.g. x.to({next(iter(sorted(dtypes, key=str)))})) or convert the model"
            ) from exc
        if not tensors and "device" in first.lower():
            raise ValueError(
                f"the model failed on inputs on {batch.device} ({first}); it has no parameters that tell its "
                "device, so pass device= (e.g. device='cuda:0') where it runs"
            ) from exc

    def _stage(self, done: List[_Done]) -> Optional[_Staged]:
        """Start bringing the counts of requests finished in this batch to the host.

        On CUDA the copy is queued (into pinned memory) behind this batch and an event
        marks it; `_finish` waits on it only after the next batch is queued, so the GPU is
        never idle while the host waits. Their counts rows are free for reuse at once
        (the device runs everything in order).
        """
        if not done:
            return None
        counts = self._counts
        assert counts is not None  # a request finished, so a batch was counted
        rows = [d.row for d in done]
        where = torch.tensor(rows, dtype=torch.int64).to(counts.device, non_blocking=True)
        stacked = counts.index_select(0, where)
        counts.index_fill_(0, where, 0)
        self._free_rows.extend(rows)
        host, event = copy_to_host(stacked)
        return done, host, event

    def _finish(self, staged: Optional[_Staged]) -> List[Tuple[int, np.ndarray]]:
        """(tag, counts) of staged requests; an error if an example saw non-finite outputs."""
        if staged is None:
            return []
        done, host, event = staged
        if event is not None:
            event.synchronize()
        result = []
        for request, counts in zip(done, host.numpy()):
            where = f"example {request.example}"
            if self.indices[request.example] != request.example:
                where += f" (index {self.indices[request.example]})"
            total = int(counts.sum())
            if total != request.samples:
                raise CountsInvariantError(
                    f"internal error: the counts of {where} add up to {total} but {request.samples} samples were "
                    "drawn; no certificate is issued from them (please report this, with the device and torch version)"
                )
            bad = int(counts[-1])
            if bad:
                raise ValueError(f"the model's output is NaN or infinite on {bad} noisy sample(s) of {where}")
            result.append((request.tag, counts[:-1].copy()))
        return result

    # -- the loop ---------------------------------------------------------------------------

    def run(
        self,
        requests: Iterable[Tuple[int, int, int]],
        on_batch: Optional[Callable[[int], None]] = None,
    ) -> Iterator[Tuple[int, np.ndarray]]:
        """Count the requests, packed into full forward batches.

        Args:
            requests: iterable of (example, purpose, m): the next m samples of that stream.
                Consumed lazily, in order.
            on_batch: called with the number of rows after each forward pass.

        Yields:
            (ordinal of the request in `requests`, int64 counts of shape (C,)) as requests
            finish, in order (those finished in one forward batch come after the next batch
            is queued: see `_stage`).
        """
        if self._buf is None:
            # No batch is larger than all the samples the streams hold: a huge batch_size on a
            # small call allocates only what it can use (the batches themselves are the same).
            rows = min(self.batch_size, self.x.shape[0] * sum(self.totals.values()))
            self._buf = torch.empty((rows, *self.x.shape[1:]), dtype=self.x.dtype, device=self.x.device)
            self.forward.full = self.forward.fit = rows
        buf = self._buf
        pending = iter(enumerate(requests))
        current: Optional[_Request] = None
        staged: Optional[_Staged] = None  # requests finished in the previous batch, on their way to the host
        while True:
            filled = 0
            segments: List[Tuple[int, int, int]] = []  # (counts row, first, end) in the batch
            finished: List[_Done] = []
            while filled < buf.shape[0]:
                if current is None:
                    nxt = next(pending, None)
                    if nxt is None:
                        break
                    tag, (example, purpose, m) = nxt
                    stream = self._stream(example, purpose)
                    if not 0 < m <= stream.available():
                        raise ValueError(
                            f"request for {m} samples of example {example}, purpose {purpose}: "
                            f"the stream has {stream.available()} left"
                        )
                    current = _Request(tag, example, stream, m, self._row())
                rows = min(buf.shape[0] - filled, current.left)
                self._fill(current.stream, current.example, filled, rows)
                segments.append((current.row, filled, filled + rows))
                filled += rows
                current.left -= rows
                if current.left == 0:
                    current.stream.drawn = None  # its next request draws the block again
                    if current.stream.available() == 0:  # exhausted: free its generator, but keep
                        current.stream.close()  # the stream so it is never drawn again
                    finished.append(current.done())
                    current = None
            if filled == 0:
                break
            self._forward_and_count(filled, segments)
            if on_batch is not None:
                on_batch(filled)
            previous, staged = staged, self._stage(finished)
            yield from self._finish(previous)
        yield from self._finish(staged)

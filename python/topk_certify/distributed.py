"""One certification run across processes, GPUs and machines, launched by torchrun.

Without torchrun (no WORLD_SIZE in the environment, or 1) everything here is trivial and
torch.distributed is never touched. Under torchrun every rank certifies a disjoint share
of the examples on its own device (cuda:LOCAL_RANK where there are GPUs, else the CPU),
and rank 0 writes all rows, in example order, as each round completes.

Work goes in rounds: round j hands rank r the r-th slice of `chunk` examples of the j-th
window of world_size * chunk examples still to do, then gathers the rows to rank 0.
Because every example's noise depends only on (seed, its index, batch_size), the output
equals a single process's, whatever the world size. A rank that dies breaks the next
collective (torchrun then stops the others); an error on one rank is agreed on by all of them
(`together`, `gather_in_order`), so every rank ends with the same message instead of waiting
in a collective that will never complete. `--resume` continues from every row rank 0 wrote.

For users with their own loop: `shard(indices, rank, world_size)` gives a rank its
share and `gather_results(result, group_indices)` collects `CertifyResult`s on rank 0.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Callable, Iterator, List, Optional, Sequence, Tuple, TypeVar

import numpy as np

T = TypeVar("T")
# A last resort against a rank that hangs without dying: no collective waits longer.
TIMEOUT_ENV = "TOPK_CERTIFY_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 1800.0


def _timeout() -> timedelta:
    try:
        return timedelta(seconds=float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT_S)))
    except ValueError:
        return timedelta(seconds=DEFAULT_TIMEOUT_S)


def world_size_from_env() -> int:
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


class AgreedError(Exception):
    """An error raised on one rank and so on every rank: the message is that rank's."""


@dataclass
class _Single:
    """The context of a plain single-process run."""

    rank: int = 0
    world_size: int = 1
    device: Optional[object] = None

    @property
    def is_writer(self) -> bool:
        return True

    def together(self, work: Callable[[], T]) -> T:
        """Runs `work` on every rank and returns this rank's result; if it fails on any rank,
        it fails on every rank (with the first failing rank's message), so no rank is left
        waiting in a collective."""
        return work()

    def from_writer(self, work: Callable[[], T]) -> T:
        """As `together`, but every rank gets the writer's (rank 0's) result."""
        return work()

    def rounds(self, todo: Sequence[int], chunk: int) -> Iterator[List[int]]:
        for start in range(0, len(todo), chunk):
            yield list(todo[start : start + chunk])

    def gather_in_order(self, work: Callable[[], list]) -> list:
        """Every rank's `work()` items on the writer, in rank order (an error on any rank is
        an error on all, as in `together`)."""
        return work()


def rank_device(torch, device: str = "auto"):
    """This rank's device for a `--device` name: `auto`/`cuda` give cuda:LOCAL_RANK when there
    are GPUs (auto: else the CPU), `cuda:N` and `cpu` are taken as they are."""
    if device == "cpu" or (device == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if device in ("auto", "cuda"):
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device(device)


def _supports_device_id(torch) -> bool:
    """init_process_group(device_id=...) exists from torch 2.3 on."""
    import inspect

    return "device_id" in inspect.signature(torch.distributed.init_process_group).parameters


class _Torchrun(_Single):
    """The context of one rank under torchrun (torch.distributed initialised here). The
    backend follows the rank's device: NCCL for a GPU (made the current one), gloo for the CPU."""

    def __init__(self, device_name: str = "auto"):
        import torch
        import torch.distributed as dist

        self.dist = dist
        device = rank_device(torch, device_name)
        backend = "nccl" if device.type == "cuda" else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            if backend == "nccl" and _supports_device_id(torch):
                dist.init_process_group(backend, device_id=device, timeout=_timeout())
            else:
                dist.init_process_group(backend, timeout=_timeout())
        # Objects travel over a gloo group even when compute uses NCCL: no GPU copies.
        self.objects = dist.new_group(backend="gloo", timeout=_timeout()) if backend == "nccl" else None
        self.failed = False
        super().__init__(rank=dist.get_rank(), world_size=dist.get_world_size(), device=device)

    @property
    def is_writer(self) -> bool:
        return self.rank == 0

    def _all_gather(self, item) -> list:
        boxes: list = [None] * self.world_size
        self.dist.all_gather_object(boxes, item, group=self.objects)
        return boxes

    def _agree(self, work: Callable[[], T]) -> List[tuple]:
        """Every rank's (ok, value or message), after running `work` here; raises on every
        rank when it failed on any."""
        mine: Tuple[bool, object]
        try:
            mine = (True, work())
        except Exception as exc:  # sent to every rank, raised on every rank below
            error: Optional[Exception] = exc
            mine = (False, " ".join(str(exc).split()) or type(exc).__name__)
        else:
            error = None
        boxes = self._all_gather(mine)
        failed = [(rank, box[1]) for rank, box in enumerate(boxes) if not box[0]]
        if failed:
            self.failed = True
            if error is not None and failed[0][0] == self.rank:
                raise error
            rank, message = failed[0]
            raise AgreedError(message if rank == 0 else f"rank {rank}: {message}")
        return boxes

    def together(self, work: Callable[[], T]) -> T:
        value: list = []
        self._agree(lambda: value.append(work()))
        return value[0]

    def from_writer(self, work: Callable[[], T]) -> T:
        return self._agree(work)[0][1]

    def rounds(self, todo: Sequence[int], chunk: int) -> Iterator[List[int]]:
        window = chunk * self.world_size
        for base in range(0, len(todo), window):
            start = base + self.rank * chunk
            yield list(todo[start : min(start + chunk, base + window, len(todo))])

    def gather_in_order(self, work: Callable[[], list]) -> list:
        boxes = self._agree(work)
        if self.rank != 0:
            return []
        return [item for _, items in boxes for item in items]  # rank order is example order

    def close(self) -> None:
        if self.dist.is_initialized():
            if not self.failed:  # after a failure a rank may be gone: no barrier to wait in
                self.dist.barrier(group=self.objects)
            self.dist.destroy_process_group()


_CONTEXT: Optional[_Single] = None


def context(device: str = "auto") -> _Single:
    """This process's context: torchrun's when launched by it, else a single process.
    `device` is the command line's --device (it decides the backend: gloo for the CPU)."""
    global _CONTEXT
    if _CONTEXT is None:
        _CONTEXT = _Torchrun(device) if world_size_from_env() > 1 else _Single()
    return _CONTEXT


def shutdown(failed: bool = False) -> None:
    """Ends the run's context; after a failure (`failed`) without waiting for other ranks."""
    global _CONTEXT
    if isinstance(_CONTEXT, _Torchrun):
        _CONTEXT.failed = _CONTEXT.failed or failed
        _CONTEXT.close()
    _CONTEXT = None


def shard(indices: Sequence[int], rank: int, world_size: int, chunk: int = 1) -> List[int]:
    """The examples of `indices` that rank `rank` of `world_size` certifies: interleaved
    chunks, so that every rank gets a similar mix of easy and hard examples.

    Pass the result as `certify_batch(..., indices=...)` (with the matching rows of x) so
    the noise is that of a single-process run.
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    out: List[int] = []
    for base in range(rank * chunk, len(indices), chunk * world_size):
        out.extend(int(i) for i in indices[base : base + chunk])
    return out


_OBJECT_GROUPS: dict = {}


def _objects_group(dist):
    """A gloo group for Python objects: under NCCL, objects would be staged on the current
    GPU, which is cuda:0 on every rank unless the caller set the device."""
    if dist.get_backend() == "gloo":
        return None
    key = id(dist.group.WORLD)
    if key not in _OBJECT_GROUPS:
        _OBJECT_GROUPS[key] = dist.new_group(backend="gloo")
    return _OBJECT_GROUPS[key]


def gather_results(result, indices: Sequence[int], dst: int = 0):
    """On rank `dst`: one CertifyResult for all ranks' examples, in index order (None on
    the others). `indices` are the example indices this rank certified (its `shard`); a
    rank whose shard is empty (fewer examples than ranks) passes result=None. Every rank
    calls it; the objects travel over gloo whatever the process group's backend."""
    import torch.distributed as dist

    indices = list(map(int, indices))
    if result is None and indices:
        raise ValueError(f"result is None but this rank certified {len(indices)} examples")
    payload = (indices, result)
    received: Optional[List[Any]] = [None] * dist.get_world_size() if dist.get_rank() == dst else None
    dist.gather_object(payload, received, dst=dst, group=_objects_group(dist))
    if received is None:
        return None
    # A rank whose shard was empty (fewer examples than ranks) sends None.
    boxes = [(ix, r) for ix, r in received if r is not None]
    if not boxes:
        return None
    order = np.argsort(np.concatenate([np.asarray(ix, dtype=np.int64) for ix, _ in boxes]), kind="stable")
    parts = [r for _, r in boxes]
    fields = {}
    for name in ("radius", "counts", "labels", "n_used"):
        values = [getattr(r, name) for r in parts]
        if all(v is not None for v in values):
            fields[name] = np.concatenate(values)[order]
    first = parts[0]
    return dataclasses.replace(first, **fields)

"""The slices of a CPU batch run side by side, each on a Python thread of its own with its
share of torch's threads (internal).

Torch runs one pass on all its intra-op threads, and a CIFAR ResNet's narrow convolutions
(16-64 channels) keep two threads busy only about 1.5 times as much as one. The slices of a
batch are independent passes (each row's logits are its own, which the probe checks on
slices), so the pool runs them at once, one thread each: 1.18x on ResNet-20 and ResNet-110
on two cores, 1.03x on ResNet-50, whose wide convolutions already keep both threads busy.
The convolutions release the GIL; the Python between them is short.

Torch's thread count is per thread once a thread has used it, but setting it also sets the
count that new threads start from. So each worker sets its own count while the caller waits,
and the caller then sets the process's count back to what it was.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, List, Optional, Sequence

import torch

MAX_WORKERS = 4  # more Python threads would contend for the GIL between operators
START_TIMEOUT_S = 60.0


class SlicePool:
    """Runs `run(part)` for the parts of a batch on as many workers as the caller's torch
    threads allow (at most MAX_WORKERS), in order, under the caller's grad mode."""

    def __init__(self) -> None:
        self._executor: Optional[ThreadPoolExecutor] = None
        self._threads = 0  # the caller's torch threads the executor was made for
        self._pid = 0

    def workers(self) -> int:
        """Workers for the calling thread's torch threads (1: run the parts in turn)."""
        return max(1, min(torch.get_num_threads(), MAX_WORKERS))

    def map(self, run: Callable[[torch.Tensor], Any], parts: Sequence[torch.Tensor]) -> List[Any]:
        executor = self._executor_for(torch.get_num_threads()) if len(parts) > 1 else None
        if executor is None:
            return [run(part) for part in parts]
        inference, grad = torch.is_inference_mode_enabled(), torch.is_grad_enabled()

        def in_callers_mode(part: torch.Tensor) -> Any:
            with torch.inference_mode(inference), torch.set_grad_enabled(grad):
                return run(part)

        futures: List[Future] = [executor.submit(in_callers_mode, part) for part in parts]
        try:
            return [future.result() for future in futures]
        except BaseException:  # an error or Ctrl-C: the parts not yet started never run
            for future in futures:
                future.cancel()
            raise

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        self._executor = None

    def _executor_for(self, threads: int) -> Optional[ThreadPoolExecutor]:
        if threads < 2:
            return None
        if self._executor is not None and self._threads == threads and self._pid == os.getpid():
            return self._executor
        if self._pid == os.getpid():
            self.close()  # torch's thread count changed; after a fork the old threads are gone
        self._executor = _start(threads)
        self._threads, self._pid = threads, os.getpid()
        return self._executor


def _start(threads: int) -> Optional[ThreadPoolExecutor]:
    """Workers with threads // workers torch threads each, the process's count left as it was;
    None when they did not all start (the parts then run in turn)."""
    workers = min(threads, MAX_WORKERS)
    started = threading.Barrier(workers + 1, timeout=START_TIMEOUT_S)
    executor = ThreadPoolExecutor(
        workers, thread_name_prefix="topk-certify-slice", initializer=_init, initargs=(threads // workers, started)
    )
    for _ in range(workers):  # no worker is idle until all have started, so each submit starts one
        executor.submit(_nothing)
    try:
        started.wait()
    except threading.BrokenBarrierError:
        executor.shutdown(wait=False, cancel_futures=True)
        return None
    finally:
        torch.set_num_threads(threads)
    return executor


def _init(threads: int, started: threading.Barrier) -> None:
    torch.get_num_threads()  # a thread takes the process's count at its first use: before ours
    torch.set_num_threads(threads)
    try:
        started.wait()
    except threading.BrokenBarrierError:
        pass


def _nothing() -> None:
    pass

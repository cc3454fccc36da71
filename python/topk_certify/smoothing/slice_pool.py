"""The slices of a CPU batch run side by side, each on a Python thread of its own with its
share of torch's threads (internal).

Torch runs one pass on all its intra-op threads, and a CIFAR ResNet's narrow convolutions
(16-64 channels) keep two threads busy only about 1.5 times as much as one. The slices of a
batch are independent passes (each row's logits are its own, which the probe checks on
slices), so the pool runs them at once, one thread each: 1.18x on ResNet-20 and ResNet-110
on two cores, 1.03x on ResNet-50, whose wide convolutions already keep both threads busy.
The convolutions release the GIL; the Python between them is short.

Torch's thread count is per thread once a thread has used it, but setting it also sets the
count that new threads start from. So each worker sets its own count while the pool waits
for all of them, and the pool then sets the count that new threads start from back to what
it was (from a short-lived thread, so that no running thread's own count changes). A thread
whose first use of torch falls inside that window keeps the workers' count: torch offers no
way to set one thread's count alone.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch

MAX_WORKERS = 4  # more Python threads would contend for the GIL between operators
START_TIMEOUT_S = 60.0


class SlicePool:
    """Runs `run(part)` for the parts of a batch on as many workers as the caller's torch
    threads allow (at most MAX_WORKERS), in order, under the caller's grad mode. Safe to
    share between threads: each torch thread count keeps its own workers."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._executors: Dict[int, Optional[ThreadPoolExecutor]] = {}  # None: they did not start
        self._pid = os.getpid()

    def workers(self) -> int:
        """Workers for the calling thread's torch threads (1: run the parts in turn)."""
        return _workers_for(torch.get_num_threads())

    def map(self, run: Callable[[torch.Tensor], Any], parts: Sequence[torch.Tensor]) -> List[Any]:
        executor = self._executor_for(torch.get_num_threads()) if len(parts) > 1 and _plain_mode() else None
        if executor is None:
            return [run(part) for part in parts]
        inference, grad = torch.is_inference_mode_enabled(), torch.is_grad_enabled()

        def in_callers_mode(part: torch.Tensor) -> Any:
            with torch.inference_mode(inference), torch.set_grad_enabled(grad):
                return run(part)

        futures: List[Future] = []
        try:
            for part in parts:
                futures.append(executor.submit(in_callers_mode, part))
        except RuntimeError:  # shut down (the interpreter exits): the parts run in turn, here
            _cancel(futures)
            return [run(part) for part in parts]
        try:
            return [future.result() for future in futures]
        except BaseException:  # an error or Ctrl-C: the parts not yet started never run
            _cancel(futures)
            raise

    def close(self) -> None:
        with self._lock:
            executors, self._executors = self._executors, {}
        for executor in executors.values():
            if executor is not None:
                executor.shutdown(wait=False, cancel_futures=True)

    def _executor_for(self, threads: int) -> Optional[ThreadPoolExecutor]:
        if threads < 2:
            return None
        with self._lock:
            if self._pid != os.getpid():  # a forked child: the parent's threads are not here
                self._executors, self._pid = {}, os.getpid()
            if threads not in self._executors:
                self._executors[threads] = _start(threads)
            return self._executors[threads]


def _cancel(futures: List[Future]) -> None:
    for future in futures:
        future.cancel()


def _workers_for(threads: int) -> int:
    return max(1, min(threads, MAX_WORKERS))


def _plain_mode() -> bool:
    """No autocast of the caller's around the call: autocast is per thread, and the workers
    would run without it (the runner's own precision is set inside each part)."""
    try:
        return not torch.is_autocast_enabled("cpu")
    except TypeError:  # torch before 2.4
        return not torch.is_autocast_cpu_enabled()


class _Start:
    """What the workers of one start share: their count of torch threads, in turn, until the
    start ends (after which a late worker sets nothing)."""

    def __init__(self, threads: int, workers: int) -> None:
        self.counts = [threads // workers + (i < threads % workers) for i in range(workers)]
        self.lock = threading.Lock()
        self.over = False
        self.started = threading.Barrier(workers + 1, timeout=START_TIMEOUT_S)

    def take_count(self) -> Optional[int]:
        with self.lock:
            return None if self.over else self.counts.pop()

    def end(self) -> None:
        with self.lock:
            self.over = True


def _start(threads: int) -> Optional[ThreadPoolExecutor]:
    """Workers sharing `threads` torch threads, the count new threads start from left as it
    was; None when they did not all start (the parts then run in turn)."""
    workers = _workers_for(threads)
    start = _Start(threads, workers)
    before = _in_new_thread(torch.get_num_threads)
    executor = ThreadPoolExecutor(
        workers, thread_name_prefix="topk-certify-slice", initializer=_init, initargs=(start,)
    )
    ok = False
    try:
        for _ in range(workers):  # no worker is idle until all have started, so each submit starts one
            executor.submit(_nothing)
        start.started.wait()
        ok = True
    except threading.BrokenBarrierError:
        pass
    finally:  # also on Ctrl-C: no worker sets its count after this
        start.end()
        start.started.abort()
        _in_new_thread(lambda: torch.set_num_threads(before))
        if not ok:
            executor.shutdown(wait=False, cancel_futures=True)
    return executor if ok else None


def _init(start: _Start) -> None:
    torch.get_num_threads()  # a thread takes the process's count at its first use: before ours
    count = start.take_count()
    if count is not None:
        torch.set_num_threads(count)
    try:
        start.started.wait()
    except threading.BrokenBarrierError:
        pass


def _in_new_thread(function: Callable[[], Any]) -> Any:
    """function() on a short-lived thread: torch's thread count there is the process's."""
    result: List[Any] = []
    thread = threading.Thread(target=lambda: result.append(function()), name="topk-certify-threads")
    thread.start()
    thread.join()
    return result[0]


def _nothing() -> None:
    pass

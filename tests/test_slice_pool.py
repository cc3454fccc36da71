"""The slices of a CPU batch run side by side on the pool's workers (smoothing/slice_pool.py)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import topk_certify  # noqa: E402
from test_inference import ConvBN, _randomize_batchnorms  # noqa: E402
from topk_certify.settings import CertifySettings  # noqa: E402
from topk_certify.smoothing import inference  # noqa: E402
from topk_certify.smoothing.slice_pool import MAX_WORKERS, SlicePool  # noqa: E402


@pytest.fixture(autouse=True)
def _two_threads():
    """Two torch threads in the test's thread (the pool's workers follow them), restored after."""
    threads = torch.get_num_threads()
    inference.clear_cache()
    torch.set_num_threads(2)
    yield
    inference.clear_cache()
    torch.set_num_threads(threads)


def _runner(model, x, monkeypatch, rows_per_slice: int):
    monkeypatch.setattr(inference, "CPU_SLICE_BYTES", rows_per_slice * 8 * 6 * 6 * 4)  # ConvBN's widest
    runner = inference.runner_for(model, x, CertifySettings.build(sigma=0.5, n=250, batch_size=100))
    assert isinstance(runner, inference.Runner) and runner.slice_rows == rows_per_slice
    return runner


def test_slices_run_on_the_workers_with_a_thread_each_and_count_as_whole_batches(monkeypatch):
    model, x = _randomize_batchnorms(ConvBN()).eval(), torch.rand(3, 3, 6, 6)
    runner = _runner(model, x, monkeypatch, 20)
    seen = []
    core = runner.core

    def core_seen(batch):
        seen.append((threading.current_thread().name, torch.get_num_threads(), batch.shape[0]))
        return core(batch)

    monkeypatch.setattr(runner, "core", core_seen)
    kw = dict(sigma=0.5, n=250, batch_size=100, seed=4)
    counts = topk_certify.sample_counts(model, x, **kw)
    np.testing.assert_array_equal(counts, topk_certify.sample_counts(model, x, optimize=False, **kw))
    assert sum(rows for _, _, rows in seen) == 3 * 250 and max(rows for _, _, rows in seen) == 20
    assert {name.rsplit("_", 1)[0] for name, _, _ in seen} == {"topk-certify-slice"}
    assert len({name for name, _, _ in seen}) == 2 and {threads for _, threads, _ in seen} == {1}
    # the process's count is as it was: in this thread and for a thread started now
    assert torch.get_num_threads() == 2
    started = []
    thread = threading.Thread(target=lambda: started.append(torch.get_num_threads()))
    thread.start()
    thread.join()
    assert started == [2]


def test_a_short_batch_is_cut_so_that_every_worker_has_a_slice(monkeypatch):
    runner = _runner(_randomize_batchnorms(ConvBN()).eval(), torch.rand(2, 3, 6, 6), monkeypatch, 20)
    assert runner._slice_size(100) == 20 and runner._slice_size(30) == 15 and runner._slice_size(1) == 1
    torch.set_num_threads(1)  # one torch thread: the slices run in turn, at full size
    assert runner._slice_size(30) == 20 and runner._slice_size(7) == 7
    batch = torch.rand(30, 3, 6, 6)
    with torch.inference_mode():
        np.testing.assert_array_equal(runner(batch).numpy(), runner.core(batch).numpy())


def test_one_torch_thread_runs_the_slices_in_the_calling_thread(monkeypatch):
    torch.set_num_threads(1)
    names = []
    pool = SlicePool()
    pool.map(lambda part: names.append(threading.current_thread().name), torch.arange(4).split(1))
    assert pool.workers() == 1 and names == [threading.current_thread().name] * 4


def test_the_parts_run_at_the_same_time_in_order_and_in_the_callers_grad_mode():
    both = threading.Barrier(2, timeout=30)  # broken, with an error, unless two parts run at once
    modes = []

    def run(part):
        modes.append((torch.is_inference_mode_enabled(), torch.is_grad_enabled()))
        both.wait()
        return part * 10

    pool = SlicePool()
    try:
        with torch.no_grad():
            out = pool.map(run, torch.arange(4).split(1))
        assert [int(t) for t in out] == [0, 10, 20, 30]
        with torch.inference_mode():
            pool.map(run, torch.arange(2).split(1))
    finally:
        pool.close()
    assert modes == [(False, False)] * 4 + [(True, False)] * 2


def test_an_error_in_a_slice_is_raised_and_the_slices_not_started_never_run():
    ran = []

    def run(part):
        ran.append(int(part))
        if int(part) == 0:
            raise ValueError("slice 0 failed")
        time.sleep(0.2)
        return part

    pool = SlicePool()
    with pytest.raises(ValueError, match="slice 0 failed"):
        pool.map(run, torch.arange(12).split(1))
    time.sleep(0.5)  # the slice a worker had begun ends; none after it starts
    pool.close()
    assert len(ran) < 12


def test_a_new_torch_thread_count_gets_workers_for_it():
    pool = SlicePool()
    names = set()
    try:
        pool.map(lambda part: names.add(threading.current_thread().name), torch.arange(8).split(1))
        assert pool.workers() == 2
        torch.set_num_threads(3)
        seen = []
        barrier = threading.Barrier(min(3, MAX_WORKERS), timeout=30)

        def run(part):
            seen.append((threading.current_thread().name, torch.get_num_threads()))
            barrier.wait()

        pool.map(run, torch.arange(3).split(1))
        assert pool.workers() == 3 and len({name for name, _ in seen}) == 3
        assert {threads for _, threads in seen} == {1} and torch.get_num_threads() == 3
    finally:
        pool.close()


def _map_in_child(pool: SlicePool, queue) -> None:
    both = threading.Barrier(2, timeout=30)  # broken unless two of the child's workers run at once
    names = pool.map(lambda part: both.wait() or threading.current_thread().name, torch.arange(2).split(1))
    queue.put(len(set(names)))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # 3.12+ warns about fork() in threaded processes
def test_a_forked_child_starts_workers_of_its_own():
    import multiprocessing as mp

    pool = SlicePool()
    try:
        pool.map(lambda part: part, torch.arange(4).split(1))  # the parent's workers exist
        ctx = mp.get_context("fork")
        queue = ctx.Queue()
        child = ctx.Process(target=_map_in_child, args=(pool, queue))
        child.start()
        child.join(timeout=60)
        if child.is_alive():
            child.kill()
            pytest.fail("the forked child hung on the parent's workers")
        assert child.exitcode == 0 and queue.get(timeout=5) == 2
    finally:
        pool.close()


def _count_in_new_thread() -> int:
    seen = []
    thread = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
    thread.start()
    thread.join()
    return seen[0]


def test_the_count_new_threads_start_from_is_put_back_even_where_the_callers_own_differs():
    setter = threading.Thread(target=lambda: torch.set_num_threads(3))  # the process's count: 3
    setter.start()
    setter.join()
    assert torch.get_num_threads() == 2 and _count_in_new_thread() == 3
    pool = SlicePool()
    try:
        pool.map(lambda part: part, torch.arange(4).split(1))  # 2 workers, for this thread's 2
    finally:
        pool.close()
    assert torch.get_num_threads() == 2 and _count_in_new_thread() == 3


def test_threads_sharing_a_pool_with_other_counts_each_get_every_part():
    pool = SlicePool()
    errors, results = [], {}

    def caller(threads: int) -> None:
        torch.set_num_threads(threads)
        try:
            for _ in range(10):
                out = pool.map(lambda part: part * 2, torch.arange(6).split(1))
                results.setdefault(threads, []).append([int(t) for t in out])
        except BaseException as exc:  # noqa: BLE001 (the test reports any)
            errors.append(exc)

    callers = [threading.Thread(target=caller, args=(t,)) for t in (2, 3)]
    try:
        for c in callers:
            c.start()
        for c in callers:
            c.join(timeout=60)
    finally:
        pool.close()
    assert not errors
    assert all(out == [0, 2, 4, 6, 8, 10] for outs in results.values() for out in outs)
    assert sorted(len(outs) for outs in results.values()) == [10, 10]


def test_workers_that_did_not_start_are_not_waited_for_again(monkeypatch):
    from topk_certify.smoothing import slice_pool

    starts = []
    monkeypatch.setattr(slice_pool, "_start", lambda threads: starts.append(threads))  # None: not started
    pool = SlicePool()
    names = [pool.map(lambda part: threading.current_thread().name, torch.arange(3).split(1)) for _ in range(3)]
    assert starts == [2] and names == [[threading.current_thread().name] * 3] * 3


def test_under_the_callers_autocast_the_parts_run_in_the_calling_thread():
    pool = SlicePool()
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            names = pool.map(lambda part: threading.current_thread().name, torch.arange(3).split(1))
    finally:
        pool.close()
    assert names == [threading.current_thread().name] * 3


def test_the_threads_are_shared_out_among_the_workers():
    from topk_certify.smoothing.slice_pool import _Start

    assert sorted(_Start(6, 4).counts) == [1, 1, 2, 2] and _Start(2, 2).counts == [1, 1]
    assert sorted(_Start(9, 4).counts) == [2, 2, 2, 3]


def test_ctrl_c_while_the_workers_start_leaves_the_count_new_threads_start_from(monkeypatch):
    from topk_certify.smoothing import slice_pool

    init = slice_pool._init
    monkeypatch.setattr(slice_pool, "_init", lambda start: time.sleep(0.3) or init(start))  # late workers

    class Interrupted(threading.Barrier):
        def wait(self, timeout=None):
            if threading.current_thread() is threading.main_thread():
                raise KeyboardInterrupt
            return super().wait(timeout)

    monkeypatch.setattr(slice_pool.threading, "Barrier", Interrupted)
    with pytest.raises(KeyboardInterrupt):
        slice_pool._start(2)
    time.sleep(0.8)  # the late workers have run their start by now, and set nothing
    assert _count_in_new_thread() == 2 and torch.get_num_threads() == 2

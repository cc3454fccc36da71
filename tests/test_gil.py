"""certify_counts releases the GIL while Rust works: other Python threads keep running."""

import threading
import time

import numpy as np

import topk_certify


def _ticks_during(call) -> int:
    ticks, stop = [0], threading.Event()

    def spin():
        while not stop.is_set():
            ticks[0] += 1

    thread = threading.Thread(target=spin)
    thread.start()
    time.sleep(0.05)
    before = ticks[0]
    call()
    after = ticks[0]
    stop.set()
    thread.join()
    return after - before


def test_other_threads_run_during_certify_counts():
    counts = np.tile(np.array([[90_000, 6_000, 3_000, 1_000]]), (400_000, 1))
    labels = np.zeros(len(counts), dtype=np.int64)
    start = time.perf_counter()
    ticks = _ticks_during(lambda: topk_certify.certify_counts(counts, labels, k=[1, 2], sigma=0.5))
    elapsed = time.perf_counter() - start
    assert elapsed > 0.05, "the call was too short to tell"
    # Holding the GIL for the whole call would leave the spinning thread at ~0 ticks.
    assert ticks > 1000, ticks

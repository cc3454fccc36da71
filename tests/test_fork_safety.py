"""A forked child (a DataLoader worker, say) must not deadlock on the parent's rayon pool."""

from __future__ import annotations

import multiprocessing as mp
import sys

import numpy as np
import pytest

import topk_certify


def _child(queue) -> None:
    counts = np.tile(np.array([[900, 60, 40]]), (5000, 1))
    radius = topk_certify.certify_counts(counts, np.zeros(5000, dtype=np.int64), k=1, sigma=0.5)
    queue.put(float(radius[0]))


@pytest.mark.skipif(sys.platform == "win32", reason="fork is POSIX")
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # 3.12+ warns about fork() in threaded processes
def test_forked_child_computes_after_the_parent_used_the_pool():
    counts = np.tile(np.array([[900, 60, 40]]), (20000, 1))
    expect = topk_certify.certify_counts(counts, np.zeros(20000, dtype=np.int64), k=1, sigma=0.5)[0]
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_child, args=(queue,))
    child.start()
    child.join(timeout=60)
    if child.is_alive():
        child.kill()
        pytest.fail("the forked child hung on the parent's thread pool")
    assert child.exitcode == 0
    assert queue.get(timeout=5) == expect


NO_HOOK = """
import os, numpy as np, multiprocessing as mp
os.register_at_fork = lambda **kw: None  # the package's at-fork hook is never installed
import topk_certify
def child(q):
    c = np.tile(np.array([[900, 60, 40]]), (5000, 1))
    q.put(float(topk_certify.certify_counts(c, np.zeros(5000, dtype=np.int64), k=1, sigma=0.5)[0]))
c = np.tile(np.array([[900, 60, 40]]), (20000, 1))
topk_certify.certify_counts(c, np.zeros(20000, dtype=np.int64), k=1, sigma=0.5)
ctx = mp.get_context("fork"); q = ctx.Queue(); p = ctx.Process(target=child, args=(q,)); p.start(); p.join(5)
print("hung" if p.is_alive() else "finished"); p.kill()
"""


@pytest.mark.skipif(sys.platform == "win32", reason="fork is POSIX")
def test_the_fork_test_would_catch_a_missing_hook():
    """Test of the test: without the hook the same child hangs on the dead pool."""
    import subprocess

    run = subprocess.run([sys.executable, "-c", NO_HOOK], capture_output=True, text=True, timeout=60)
    assert run.stdout.strip() == "hung", run.stdout + run.stderr

"""The adaptive sampling loop (internal; the statistics are in `adaptive.py`).

Every example advances through the stages of a fixed schedule. Requests "the next m
samples of example e" go to the NoiseSampler lazily: the next stage of an example whose
last stage came back, else a new example. So forward batches stay full while examples
at different stages share them, and an example that stops simply issues no more
requests. Each decision depends on the example's own counts only, and its noise on
(seed, its index, batch_size) only (the sampler's streams), so radius and n_used do not
depend on how examples are grouped or ordered.
"""

from __future__ import annotations

from collections import deque
from typing import Callable, Optional, Sequence

import numpy as np

from .. import adaptive


def run(
    sampler,
    *,
    candidates: np.ndarray,
    ks: Sequence[int],
    sigma: float,
    n: int,
    alpha: float,
    bound: str,
    radii,
    purpose: int,
    on_batch: Optional[Callable[[int], None]] = None,
):
    """Adaptive counts and radii for every example.

    candidates: (E, K) labels to certify per example (K = 1 with true labels).
    radii: the sorted radii to decide, or a callable returning them (called at the first
        decision, when the sampler's first forward pass has told the number of classes).
    Returns (radius (E, K, len(ks)), counts (E, C), n_used (E,)).
    """
    num_examples, width = candidates.shape
    schedule = adaptive.make_schedule(n, alpha)
    sizes = schedule.sizes
    stage = np.zeros(num_examples, dtype=np.int64)  # the stage each example is sampling
    best = np.zeros((num_examples, width, len(ks)))
    counts: list = [None] * num_examples
    queue: deque = deque()
    started = [0]

    def requests(issued: list):
        while True:
            if queue:
                e = queue.popleft()
            elif started[0] < num_examples:
                e = started[0]
                started[0] += 1
            else:
                return
            s = int(stage[e])
            issued.append(e)
            yield e, purpose, sizes[s] - (sizes[s - 1] if s else 0)

    radii_now = [radii if not callable(radii) else None]

    def decide(e: int) -> bool:
        """Updates the radii of example e after its current stage; True when it stops."""
        if radii_now[0] is None:
            radii_now[0] = radii()
        assert radii_now[0] is not None, "the radii are known once the first forward pass ran"
        best[e], stop = adaptive.step(
            counts[e], candidates[e], best[e], int(stage[e]), schedule, radii_now[0], ks, sigma, bound
        )
        return stop

    while True:
        issued: list = []
        for tag, row in sampler.run(requests(issued), on_batch=on_batch):
            e = issued[tag]
            counts[e] = row if counts[e] is None else counts[e] + row
            if not decide(e):
                stage[e] += 1
                queue.append(e)
            else:  # stopped: the noise its stream drew ahead is never used
                sampler.release(e)
        if not queue:
            break
    n_used = np.array([sizes[s] for s in stage], dtype=np.int64)
    return best, np.stack(counts).astype(np.int64), n_used

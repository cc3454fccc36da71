"""Adaptive certification: stop sampling an example once more samples cannot change its
outcome at the requested radii (the procedure and its validity: docs/adaptive.md).

This module holds the statistics, with no torch: the stage schedule, the spending of
alpha over the stages, and the stopping rule. `smoothing.certify_batch(adaptive=True)`
drives the sampler with it.

- Stages: every example's samples are looked at only after n_1 < n_2 < ... < n_S = n
  cumulative samples, a schedule fixed before any sampling (geometric, ratio ~1.5).
- Alpha spending: stage s computes its bounds at level alpha_s, with sum_s alpha_s =
  alpha (half of alpha for the last stage, the rest shared by the earlier ones). By the
  union bound, with probability >= 1 - alpha every bound of every stage holds at once,
  whenever the example stops; so the largest radius certified at any stage it reached
  is valid. (Peeking with fixed-n bounds at level alpha at every stage is not.)
- Stopping (for each requested k): settled when the radius certified so far exceeds the
  largest requested radius, or when even an optimistic projection of the counts to the
  full budget n (the label's probability at its upper confidence bound, the others at
  their lower ones, at level `futility`) would not certify the next requested radius
  above the current radius. The example stops when every k is settled. The stopping
  rule affects only how many samples are spent, never validity.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np

from .stats import certify_counts, clopper_pearson

FIRST_STAGE = 128
GROWTH = 1.3
FINAL_SHARE = 0.4  # of alpha, for the look at the full budget
FUTILITY = 0.2  # one-sided level of the optimistic projection (benches/bench_adaptive.py)
WEIGHT_POWER = 1.0  # early looks get alpha in proportion to their size


@dataclass(frozen=True)
class Schedule:
    """Cumulative sample sizes at which an example is looked at, and each look's alpha."""

    sizes: Tuple[int, ...]
    alphas: Tuple[float, ...]

    def __post_init__(self):
        assert len(self.sizes) == len(self.alphas) and all(np.diff(self.sizes) > 0)


def make_schedule(n: int, alpha: float, first: Optional[int] = None, growth: Optional[float] = None) -> Schedule:
    """Geometric stages from `first` to `n`; alpha/2 at n, alpha/2 shared by the others."""
    first = FIRST_STAGE if first is None else first
    growth = GROWTH if growth is None else growth
    sizes = []
    size = float(min(first, n))
    while size < n:
        sizes.append(int(round(size)))
        size *= growth
    if sizes and n - sizes[-1] < 0.25 * sizes[-1]:
        sizes.pop()  # no look just before the last: it would cost alpha for little
    sizes.append(int(n))
    if len(sizes) == 1:
        return Schedule((int(n),), (alpha,))
    weights = np.asarray(sizes[:-1], dtype=np.float64) ** WEIGHT_POWER
    early = alpha * (1.0 - FINAL_SHARE) * weights / weights.sum()
    return Schedule(tuple(sizes), tuple(early.tolist() + [alpha * FINAL_SHARE]))


def max_certifiable_radius(n: int, num_classes: int, k: int, sigma: float, alpha: float, bound: str) -> float:
    """The radius of an example whose n samples all fall on its label: nothing is ever
    certified beyond it with budget n at this level."""
    counts = np.zeros((1, num_classes), dtype=np.int64)
    counts[0, 0] = n
    return float(certify_counts(counts, [0], k=k, sigma=sigma, alpha=alpha, bound=bound)[0])


def resolve_radii(radii: Optional[Sequence[float]], *, n: int, num_classes: int, ks: Sequence[int],
                  sigma: float, alpha: float, bound: str) -> np.ndarray:
    """The radii to decide, sorted and without repeats. Default: 0, 0.25, 0.5, ... up to
    the largest radius budget n can certify (at the last stage's level) for the largest k."""
    schedule = make_schedule(n, alpha)
    reach = max(max_certifiable_radius(n, num_classes, k, sigma, schedule.alphas[-1], bound) for k in ks)
    if reach <= 0.0:
        raise ValueError(
            f"adaptive certification with n={n} samples cannot certify anything at alpha={alpha} "
            f"with {num_classes} classes (even all n samples on one label give radius 0): raise n"
        )
    if radii is None:
        return np.arange(0.0, reach, 0.25)
    try:
        values = np.asarray(radii, dtype=np.float64).ravel()
    except (TypeError, ValueError):
        raise TypeError(f"radii must be a sequence of numbers, got {radii!r}") from None
    if values.size == 0:
        raise ValueError("radii must hold at least one radius")
    if not np.all(np.isfinite(values)):
        raise ValueError(f"radii must be finite, got {values.tolist()}")
    if np.any(values < 0):
        raise ValueError(f"radii must be >= 0, got {values.tolist()}")
    return np.unique(values)  # sorted, repeats dropped


def optimistic_counts(counts: np.ndarray, labels: np.ndarray, n: int, level: float) -> np.ndarray:
    """Counts at the full budget n if the label's probability were at its upper confidence
    bound and every other label's at its lower one (level `level` each)."""
    used = counts.sum(axis=1, keepdims=True)
    lower, upper = clopper_pearson(counts, np.broadcast_to(used, counts.shape), level)
    probs = lower.copy()
    rows = np.arange(counts.shape[0])
    probs[rows, labels] = upper[rows, labels]
    # The others share what the label leaves, in proportion to their lower bounds.
    rest = 1.0 - probs[rows, labels]
    others = probs.copy()
    others[rows, labels] = 0.0
    total = others.sum(axis=1)
    scale = np.where(total > 0, np.minimum(1.0, rest / np.where(total > 0, total, 1.0)), 0.0)
    others *= scale[:, None]
    projected = np.floor(others * n).astype(np.int64)
    projected[rows, labels] = n - projected.sum(axis=1)
    return projected


def settled(radius_so_far: np.ndarray, projected_radius: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """Whether more samples can no longer change the outcome at `radii`, per entry.

    Settled when the radius so far exceeds every requested radius, or when the projected
    radius at the full budget does not exceed the next requested radius at or above the
    radius so far (so no requested radius can be crossed)."""
    top = radii[-1]
    # The next requested radius that the example is not yet certified beyond.
    nxt_index = np.searchsorted(radii, radius_so_far, side="left")
    beyond = nxt_index >= radii.size
    nxt = radii[np.minimum(nxt_index, radii.size - 1)]
    return (radius_so_far > top) | beyond | (projected_radius <= nxt)

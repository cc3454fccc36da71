"""Adaptive certification: stop sampling an example once more samples cannot change its
outcome at the requested radii (the procedure and its validity: docs/adaptive.md).

This module holds the statistics, with no torch: the stage schedule, the spending of
alpha over the stages, and the stopping rule (`step`, a pure function of an example's
counts that the sampling loop calls after each of its stages).

- Stages: every example's samples are looked at only after n_1 < n_2 < ... < n_S = n
  cumulative samples, a schedule fixed before any sampling (geometric, ratio 1.3).
- Alpha spending: stage s computes its bounds at level alpha_s, with sum_s alpha_s =
  alpha (FINAL_SHARE of it for the last stage, the rest shared by the earlier ones). By
  the union bound, with probability >= 1 - alpha every bound of every stage holds at once,
  whenever the example stops; so the largest radius certified at any stage it reached
  is valid. (Peeking with fixed-n bounds at level alpha at every stage is not.)
- Stopping (for each candidate and k): settled when the radius so far exceeds the largest
  requested radius, or when the next requested radius is out of reach: an optimistic
  projection of the k + 1 numbers Theorem 1 uses (the label's lower bound, the top-k other
  labels' upper bounds) to the full budget does not certify it, or (from PREDICTIVE_FROM
  samples on) the full budget certifies it with a small predictive probability, drawn
  jointly for the label and the others from a posterior of the counts. The example stops
  when every k of every candidate is settled. The stopping rule affects only how many
  samples are spent, never validity.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np

from ._checks import clean_radii
from .stats import certify_counts, clopper_pearson_unchecked

# Chosen on the tuning split of benches/bench_adaptive.py; docs/adaptive.md names the changes
# made after a look at the reported split (the predictive check's pseudo-counts and tempering,
# then its level: 0.05 with growth 0.3 replaced 0.03 with growth 0.5 on tuning-split numbers).
FIRST_STAGE = 128
GROWTH = 1.3
FINAL_SHARE = 0.7  # of alpha, for the look at the full budget
WEIGHT_POWER = 1.0  # early looks get alpha in proportion to their size
FUTILITY = 0.05  # one-sided level of the label's optimistic bound
OTHERS_LEVEL = 0.2  # one-sided level of the other labels' pessimistic bounds, before selection
# Out of reach: the full budget certifies it with a predictive probability below
# PREDICTIVE_CHANCE * (samples used / PREDICTIVE_FROM) ** PREDICTIVE_GROWTH.
PREDICTIVE_CHANCE = 0.05
PREDICTIVE_GROWTH = 0.3
PREDICTIVE_FROM = 1500  # samples before the predictive check is used (with fewer it is overconfident)
PREDICTIVE_WEIGHT = 0.5  # the label's posterior parameters times this: the same mean, a wider spread
# The same for the other labels: untempered (tempered, the k-th largest of many similar tail
# labels' draws came out above the full budget's, and the top-5 chance too low).
PREDICTIVE_OTHERS_WEIGHT = 1.0
PREDICTIVE_DRAWS = 1000  # draws of the posterior predictive
PREDICTIVE_SEED = 20_200  # a fixed seed: the rule is a pure function of the counts
PREDICTIVE_OTHERS = 20  # other labels modelled beyond the top k; the rest is lumped and never competes
# Posterior pseudo-counts: the label gets Jeffreys' 1/2, every other label little (with 1/2, a
# 10-class example's unseen labels would each take half a sample of mass, and a 1000-class tail
# label seen once would count as one and a half).
PRIOR_LABEL, PRIOR_OTHERS = 0.5, 0.02


@dataclass(frozen=True)
class Settings:
    """The stopping rule's levels (they decide how many samples are spent, never validity)."""

    futility: float = FUTILITY  # the label's optimistic (upper) bound
    others_level: float = OTHERS_LEVEL  # the other labels' pessimistic (lower) bounds
    selection: bool = True  # widen the others' bounds for the labels that compete for the top k
    predictive_chance: float = PREDICTIVE_CHANCE  # 0 turns the predictive check off
    predictive_growth: float = PREDICTIVE_GROWTH
    predictive_from: int = PREDICTIVE_FROM
    predictive_weight: float = PREDICTIVE_WEIGHT
    predictive_others_weight: float = PREDICTIVE_OTHERS_WEIGHT
    predictive_draws: int = PREDICTIVE_DRAWS

    def chance_at(self, used: int) -> float:
        """The predictive level at a look of `used` samples."""
        return self.predictive_chance * (used / self.predictive_from) ** self.predictive_growth


DEFAULT_SETTINGS = Settings()


@dataclass(frozen=True)
class Schedule:
    """Cumulative sample sizes at which an example is looked at, and each look's alpha."""

    sizes: Tuple[int, ...]
    alphas: Tuple[float, ...]

    def __post_init__(self) -> None:
        assert len(self.sizes) == len(self.alphas) and all(b > a for a, b in zip(self.sizes, self.sizes[1:]))


def make_schedule(n: int, alpha: float, first: Optional[int] = None, growth: Optional[float] = None) -> Schedule:
    """Geometric stages from `first` to `n`; FINAL_SHARE of alpha at n, the rest shared by the others."""
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
    counts: np.ndarray = np.zeros((1, num_classes), dtype=np.int64)
    counts[0, 0] = n
    return float(certify_counts(counts, [0], k=k, sigma=sigma, alpha=alpha, bound=bound)[0])


def resolve_radii(
    radii: Optional[Sequence[float]],
    *,
    n: int,
    num_classes: int,
    ks: Sequence[int],
    sigma: float,
    alpha: float,
    bound: str,
) -> np.ndarray:
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
    return np.asarray(clean_radii(radii))


def _ndtr(x: np.ndarray) -> np.ndarray:
    """The standard normal CDF (numpy has no erfc; the arrays here hold k + 1 values)."""
    return _elementwise(lambda v: 0.5 * math.erfc(-v / math.sqrt(2.0)), x)


def _elementwise(function, x: np.ndarray) -> np.ndarray:
    """function of each value of x, as float64 of x's shape (np.vectorize builds a ufunc at
    every call, which costs more than the few values here)."""
    values = np.asarray(x, dtype=np.float64)
    return np.array([function(v) for v in values.ravel().tolist()], dtype=np.float64).reshape(values.shape)


def _ndtri(p: np.ndarray) -> np.ndarray:
    """The standard normal quantile: Acklam's rational approximation and one Halley step
    (relative error ~1e-15; plenty for a stopping rule, which never touches validity)."""
    a = (
        -3.969683028665376e01,
        2.209460984245205e02,
        -2.759285104469687e02,
        1.383577518672690e02,
        -3.066479806614716e01,
        2.506628277459239e00,
    )
    b = (
        -5.447609879822406e01,
        1.615858368580409e02,
        -1.556989798598866e02,
        6.680131188771972e01,
        -1.328068155288572e01,
    )
    c = (
        -7.784894002430293e-03,
        -3.223964580411365e-01,
        -2.400758277161838e00,
        -2.549732539343734e00,
        4.374664141464968e00,
        2.938163982698783e00,
    )
    d = (7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e00, 3.754408661907416e00)

    def one(q: float) -> float:
        if q <= 0.0:
            return -math.inf
        if q >= 1.0:
            return math.inf
        if q < 0.02425 or q > 1 - 0.02425:
            s = math.sqrt(-2 * math.log(min(q, 1 - q)))
            x = (((((c[0] * s + c[1]) * s + c[2]) * s + c[3]) * s + c[4]) * s + c[5]) / (
                (((d[0] * s + d[1]) * s + d[2]) * s + d[3]) * s + 1
            )
            x = x if q < 0.5 else -x
        else:
            s = q - 0.5
            r = s * s
            x = (
                (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5])
                * s
                / (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1)
            )
        e = 0.5 * math.erfc(-x / math.sqrt(2.0)) - q
        u = e * math.sqrt(2 * math.pi) * math.exp(x * x / 2)
        return x - u / (1 + x * u / 2)

    return _elementwise(one, p)


def reaches(pl: float, p_sets: np.ndarray, radius: float, sigma: float) -> bool:
    """Whether bounds pl (label) and pS_t (t = 1..k, Theorem 1's sets) certify beyond
    `radius`: some t with Phi(Phi^-1(pl) - r/sigma) > Phi(Phi^-1(pS_t) + r/sigma) / t."""
    if pl <= 0.0:
        return False
    t = np.arange(1, len(p_sets) + 1)
    left = _ndtr(_ndtri(np.array(pl)) - radius / sigma)
    right = _ndtr(_ndtri(np.asarray(p_sets)) + radius / sigma) / t
    return bool(np.any(left > right))


def _predictive(count: np.ndarray, used: int, n: int, bound: np.ndarray) -> np.ndarray:
    """Optimistic count at the full budget n: the used samples' count plus the remaining
    n - used at a probability beyond the estimate by the confidence bound's margin, widened
    by sqrt(n / (n - used)) because the remaining draws add their own binomial spread to
    the uncertainty of the probability (the predictive variance is (n - used) p (1 - p) n / used)."""
    if used >= n:
        return count.astype(np.float64)
    estimate = count / used
    widen = math.sqrt(n / (n - used))
    p = np.clip(estimate + (bound - estimate) * widen, 0.0, 1.0)
    return count + (n - used) * p


def projected_bounds(
    counts: np.ndarray, label: int, top: int, n: int, alpha_final: float, bound: str, settings: Settings
) -> Tuple[float, np.ndarray]:
    """(pl, the top-k others' upper bounds, largest first) that the full budget n would give
    at the last look's level if the label came out at its optimistic count and the other
    labels at their pessimistic ones. Only these k + 1 numbers enter Theorem 1: the mass
    spread over the other labels is never given to the label (projecting a count table
    would do so, and a long tail holds much mass that no lower bound sees)."""
    used = int(counts.sum())
    num_classes = counts.shape[0]
    level = alpha_final / num_classes if bound == "simuem" else alpha_final
    _, up = clopper_pearson_unchecked(counts[label], used, settings.futility)
    final_label = int(round(float(_predictive(np.array(counts[label]), used, n, up))))
    pl = float(clopper_pearson_unchecked(final_label, n, level)[0])
    if bound != "simuem":
        return pl, np.full(top, 1.0 - pl)
    others = np.delete(counts, label)
    largest = others[np.argsort(-others, kind="stable")[:top]]
    lo, _ = clopper_pearson_unchecked(largest, used, settings.others_level)
    if settings.selection and lo[-1] > 0:
        # The largest of several similar counts overstates its probability: bound the
        # order statistics over every label that could be among the top k (its upper bound
        # reaches the k-th largest lower bound), Bonferroni-style.
        _, up = clopper_pearson_unchecked(others, used, settings.others_level)
        rivals = max(int(np.count_nonzero(up >= lo[-1])), 1)
        lo, _ = clopper_pearson_unchecked(largest, used, settings.others_level / rivals)
    final_others = np.rint(np.maximum(0.0, _predictive(largest, used, n, lo))).astype(np.int64)
    _, ub = clopper_pearson_unchecked(np.minimum(final_others, n), n, level)
    return pl, np.minimum(ub, 1.0 - pl)


def projected_reach(
    counts: np.ndarray,
    label: int,
    ks: Sequence[int],
    targets: np.ndarray,
    n: int,
    alpha_final: float,
    sigma: float,
    bound: str,
    settings: Settings,
) -> np.ndarray:
    """Per k: whether the optimistic projection (`projected_bounds`) certifies beyond targets[k]."""
    pl, ub = projected_bounds(counts, label, max(ks), n, alpha_final, bound, settings)
    out: np.ndarray = np.empty(len(ks), dtype=bool)
    for j, k in enumerate(ks):
        kept = ub[:k]  # largest first: S_t is the t smallest of these
        if bound == "simuem":
            p_sets = np.minimum(np.cumsum(kept[::-1]), 1.0 - pl)
        else:
            p_sets = np.full(k, 1.0 - pl)  # binocp: every other label at 1 - pl
        out[j] = reaches(pl, p_sets, float(targets[j]), sigma)
    return out


def predictive_radii(
    counts: np.ndarray,
    label: int,
    ks: Sequence[int],
    n: int,
    alpha_final: float,
    sigma: float,
    bound: str,
    draws: int,
    weight: float = PREDICTIVE_WEIGHT,
    others_weight: float = PREDICTIVE_OTHERS_WEIGHT,
) -> np.ndarray:
    """(draws, len(ks)) radii that the full budget n would give at the last look's level,
    drawn jointly from the posterior predictive of the counts: label probabilities from the
    normalised Gamma draws of a Dirichlet posterior over the label, the largest other labels
    and the rest lumped together, then the remaining n - used samples from them. The label
    and its rivals move together (what one gains another loses), and the top k others at n
    are whichever labels come out largest, so the largest of several similar labels is not
    taken at its own estimate. Each part is tempered by its own weight (a Gamma's shape and
    rate times w keep its mean and multiply its variance by 1 / w): the label by `weight`
    (the plain posterior under-predicted the chance of certifying on the tuning split), the
    others by `others_weight` (widening many similar tail labels lifts the k-th largest of
    their draws above what the full budget gives, so the chance at top-5 came out too low).
    Deterministic (a fixed seed): a pure function of the counts, which it does not modify."""
    used = int(counts.sum())
    num_classes = counts.shape[0]
    others = np.delete(np.arange(num_classes), label)
    kept = others[np.argsort(-counts[others], kind="stable")[: max(ks) + PREDICTIVE_OTHERS]]
    seen = counts[np.concatenate([[label], kept])].astype(np.float64)
    lumped = others.size - kept.size  # labels not modelled one by one
    rng = np.random.default_rng(PREDICTIVE_SEED)
    mass: np.ndarray = np.empty((draws, seen.size + 1))
    mass[:, 0] = rng.standard_gamma((seen[0] + PRIOR_LABEL) * weight, size=draws) / weight
    shapes = (seen[1:] + PRIOR_OTHERS) * others_weight
    mass[:, 1:-1] = rng.standard_gamma(shapes, size=(draws, kept.size)) / others_weight
    rest = (used - seen.sum() + PRIOR_OTHERS * lumped) * others_weight
    mass[:, -1] = rng.standard_gamma(rest, size=draws) / others_weight if lumped else 0.0
    probs = mass[:, :-1] / mass.sum(axis=1, keepdims=True)
    table: np.ndarray = np.zeros((draws, num_classes), dtype=np.int64)
    table[:, : seen.size] = seen.astype(np.int64) + rng.poisson((n - used) * probs)
    if lumped:  # the lumped rest spread evenly over the labels not kept: it stays out of the top k
        left = np.maximum(n - table.sum(axis=1), 0)
        table[:, seen.size :] = (left // lumped)[:, None]
        table[:, seen.size] += left % lumped
    labels: np.ndarray = np.zeros(draws, dtype=np.int64)
    return certify_counts(table, labels, k=list(ks), sigma=sigma, alpha=alpha_final, bound=bound)


def next_radii(radius_so_far: np.ndarray, radii: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """(the smallest requested radius at or above each radius so far, whether none is left:
    the radius so far exceeds every requested one). Certified at r means radius > r."""
    index = np.searchsorted(radii, radius_so_far, side="left")
    done: np.ndarray = np.asarray(index >= radii.size)
    return radii[np.minimum(index, radii.size - 1)], done


def open_radii(
    counts: np.ndarray,
    label: int,
    best: np.ndarray,
    stage: int,
    schedule: Schedule,
    radii: np.ndarray,
    ks: Sequence[int],
    sigma: float,
    bound: str,
    settings: Settings,
) -> Tuple[np.ndarray, np.ndarray]:
    """(per k the next requested radius above best, whether more samples could still certify
    it). Open when the optimistic projection (`projected_reach`) certifies it and, from
    settings.predictive_from samples on, the full budget certifies it with a predictive
    probability (`predictive_radii`) of at least settings.predictive_chance. The others are
    settled: more samples would not change the outcome there."""
    targets, done = next_radii(best, radii)
    n, alpha_final = schedule.sizes[-1], schedule.alphas[-1]
    if done.all():
        return targets, ~done
    open_ = ~done & projected_reach(counts, label, ks, targets, n, alpha_final, sigma, bound, settings)
    if open_.any() and settings.predictive_chance > 0 and schedule.sizes[stage] >= settings.predictive_from:
        level = settings.chance_at(schedule.sizes[stage])
        # A quarter of the draws first: most chances are far from the level either way (each
        # solve costs microseconds, which a cheap model's forward passes do not dwarf).
        for draws in (max(1, settings.predictive_draws // 4), settings.predictive_draws):
            radii_drawn = predictive_radii(
                counts,
                label,
                ks,
                n,
                alpha_final,
                sigma,
                bound,
                draws,
                settings.predictive_weight,
                settings.predictive_others_weight,
            )
            chance = (radii_drawn > targets[None, :]).mean(axis=0)
            if not np.any(open_ & (chance > level / 2) & (chance < 2 * level)):
                break
        open_ &= chance >= level
    return targets, open_


def step(
    counts: np.ndarray,
    candidates: np.ndarray,
    best: np.ndarray,
    stage: int,
    schedule: Schedule,
    radii: np.ndarray,
    ks: Sequence[int],
    sigma: float,
    bound: str,
    settings: Optional[Settings] = None,
) -> Tuple[np.ndarray, bool]:
    """One look at one example: (its best radii so far (K, len(ks)), whether it stops).

    counts: (C,) the example's counts over its first schedule.sizes[stage] samples;
    candidates: (K,) the labels to certify; best: (K, len(ks)) the best radii of the
    earlier looks. The look certifies at its own level alpha_s (that is all validity needs);
    the example stops at the last look, or once no requested radius is open (`open_radii`)
    for any candidate and any k: the remaining samples would not change its outcome."""
    settings = DEFAULT_SETTINGS if settings is None else settings
    ks = list(ks)
    rows = np.repeat(counts[None, :], len(candidates), axis=0)
    now = certify_counts(rows, candidates, k=ks, sigma=sigma, alpha=schedule.alphas[stage], bound=bound)
    best = np.maximum(best, now)
    if stage == len(schedule.sizes) - 1:
        return best, True
    for c, label in enumerate(candidates):
        _, open_ = open_radii(counts, int(label), best[c], stage, schedule, radii, ks, sigma, bound, settings)
        if open_.any():
            return best, False
    return best, True

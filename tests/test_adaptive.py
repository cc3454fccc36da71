"""Adaptive certification: validity under optional stopping, and the rule.

The coverage tests drive the real adaptive loop (`smoothing.adaptive_loop.run`) with a fake
sampler whose counts are exact multinomial draws from known smoothed probabilities, so
thousands of examples take seconds; the torch path is tested in test_adaptive_torch.py.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binom, norm

from topk_certify import adaptive
from topk_certify.smoothing import adaptive_loop as _adaptive_sampling
from topk_certify.stats import certify_counts


class ExactSampler:
    """Stands in for NoiseSampler: request (e, purpose, m) -> multinomial(m, probs[e]),
    from a generator per example, so results do not depend on request order."""

    def __init__(self, probs: np.ndarray, seed: int):
        self.probs = probs
        self.rngs = [np.random.default_rng([seed, e]) for e in range(len(probs))]
        self.forward_rows = 0

    def run(self, requests, on_batch=None):
        for tag, (e, _purpose, m) in enumerate(requests):
            self.forward_rows += m
            yield tag, self.rngs[e].multinomial(m, self.probs[e]).astype(np.int64)

    def release(self, e):
        self.rngs[e] = None  # a stopped example is never sampled again


def binary_probs(p_label: np.ndarray) -> np.ndarray:
    return np.stack([p_label, 1.0 - p_label], axis=1)


def run_adaptive(probs, labels, *, n, alpha, sigma=1.0, ks=(1,), bound="binocp", radii=None, seed=0):
    radii_arr = adaptive.resolve_radii(
        radii, n=n, num_classes=probs.shape[1], ks=ks, sigma=sigma, alpha=alpha, bound=bound
    )
    sampler = ExactSampler(probs, seed)
    best, counts, n_used = _adaptive_sampling.run(
        sampler,
        candidates=np.asarray(labels)[:, None],
        ks=ks,
        sigma=sigma,
        n=n,
        alpha=alpha,
        bound=bound,
        radii=radii_arr,
        purpose=1,
    )
    return best[:, 0, :], counts, n_used, sampler.forward_rows


COVERAGE_ALPHA = 0.2
COVERAGE_EXAMPLES = 1500


def overstated_fraction(radius: np.ndarray, p_label: np.ndarray, sigma: float) -> float:
    # k = 1, binocp: the exact certified radius of the smoothed classifier is sigma Phi^-1(p).
    exact = sigma * norm.ppf(p_label)
    return float(np.mean(radius > exact * (1 + 1e-12)))


def allowed(alpha: float, examples: int) -> float:
    """alpha plus a binomial margin: exceeded with probability < 1e-4 when the true rate is alpha."""
    return binom.ppf(1 - 1e-4, examples, alpha) / examples


@pytest.fixture(scope="module")
def coverage_probs():
    rng = np.random.default_rng(12345)
    return rng.uniform(0.6, 0.995, COVERAGE_EXAMPLES)


def test_fixed_n_coverage(coverage_probs):
    n = 2000
    rng = np.random.default_rng(7)
    counts = rng.binomial(n, coverage_probs)
    radius = certify_counts(
        np.stack([counts, n - counts], 1),
        np.zeros(COVERAGE_EXAMPLES, dtype=np.int64),
        k=1,
        sigma=1.0,
        alpha=COVERAGE_ALPHA,
        bound="binocp",
    )
    assert overstated_fraction(radius, coverage_probs, 1.0) <= allowed(COVERAGE_ALPHA, COVERAGE_EXAMPLES)


def test_adaptive_coverage_holds_under_optional_stopping(coverage_probs):
    radius, _, n_used, _ = run_adaptive(
        binary_probs(coverage_probs), np.zeros(COVERAGE_EXAMPLES, dtype=np.int64), n=20_000, alpha=COVERAGE_ALPHA
    )
    assert overstated_fraction(radius[:, 0], coverage_probs, 1.0) <= allowed(COVERAGE_ALPHA, COVERAGE_EXAMPLES)
    assert n_used.min() < 20_000  # it did stop early, so the stopping time mattered


def test_the_coverage_test_catches_peeking(coverage_probs, monkeypatch):
    """Test of the test: the same loop with fixed-n bounds at level alpha at every look
    (no alpha spending) overstates the radius far more often than alpha."""
    honest = adaptive.make_schedule

    def peeking(n, alpha, *args, **kwargs):
        schedule = honest(n, alpha, *args, **kwargs)
        return adaptive.Schedule(schedule.sizes, (alpha,) * len(schedule.sizes))

    monkeypatch.setattr(adaptive, "make_schedule", peeking)
    radius, _, _, _ = run_adaptive(
        binary_probs(coverage_probs), np.zeros(COVERAGE_EXAMPLES, dtype=np.int64), n=20_000, alpha=COVERAGE_ALPHA
    )
    assert overstated_fraction(radius[:, 0], coverage_probs, 1.0) > allowed(COVERAGE_ALPHA, COVERAGE_EXAMPLES)


def test_schedule_spends_exactly_alpha():
    for n, alpha in [(100_000, 1e-3), (1000, 0.2), (129, 0.01), (5, 0.1)]:
        schedule = adaptive.make_schedule(n, alpha)
        assert schedule.sizes[-1] == n
        assert all(np.diff(schedule.sizes) > 0)
        assert sum(schedule.alphas) == pytest.approx(alpha, rel=1e-12)
        assert all(a > 0 for a in schedule.alphas)


def test_n_used_and_rows_add_up():
    rng = np.random.default_rng(3)
    p = rng.dirichlet(np.ones(5) * 0.3, 60)
    labels = p.argmax(1)
    radius, counts, n_used, rows = run_adaptive(p, labels, n=30_000, alpha=1e-3, sigma=0.5, ks=(1, 2), bound="simuem")
    assert n_used.max() <= 30_000 and n_used.min() >= 1
    assert n_used.sum() == rows
    np.testing.assert_array_equal(counts.sum(1), n_used)
    assert radius.shape == (60, 2)
    assert np.all(radius[:, 0] <= radius[:, 1] + 1e-12)  # top-2 is easier than top-1


def test_stops_early_on_settled_examples():
    # A sure label (all mass) settles once it is certified beyond the largest radius; a hopeless
    # label (1% when another has 99%) settles at the first look.
    probs = np.array([[1.0, 0.0, 0.0], [0.01, 0.99, 0.0]])
    radius, _, n_used, _ = run_adaptive(
        probs, np.array([0, 0]), n=100_000, alpha=1e-3, sigma=1.0, bound="simuem", radii=[0.0, 0.5, 1.0]
    )
    assert radius[0, 0] > 1.0 and n_used[0] < 20_000
    assert radius[1, 0] == 0.0 and n_used[1] == adaptive.make_schedule(100_000, 1e-3).sizes[0]


def test_reproducible_and_independent_of_order():
    rng = np.random.default_rng(5)
    p = rng.dirichlet(np.ones(4), 20)
    labels = p.argmax(1)
    a = run_adaptive(p, labels, n=20_000, alpha=1e-3, ks=(1, 2), bound="simuem", seed=9)
    b = run_adaptive(p, labels, n=20_000, alpha=1e-3, ks=(1, 2), bound="simuem", seed=9)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[2], b[2])


@pytest.mark.parametrize(
    "radii, error, match",
    [
        ([0.5, float("nan")], ValueError, "finite"),
        ([-0.1, 0.5], ValueError, ">= 0"),
        ([], ValueError, "at least one"),
        ("abc", TypeError, "numbers"),
    ],
)
def test_bad_radii_are_refused(radii, error, match):
    with pytest.raises(error, match=match):
        adaptive.resolve_radii(radii, n=1000, num_classes=3, ks=[1], sigma=0.5, alpha=1e-3, bound="simuem")


def test_unsorted_radii_are_cleaned():
    got = adaptive.resolve_radii(
        [0.5, 0.0, 0.25, 0.5], n=1000, num_classes=3, ks=[1], sigma=0.5, alpha=1e-3, bound="simuem"
    )
    np.testing.assert_array_equal(got, [0.0, 0.25, 0.5])


def test_too_small_n_is_refused():
    with pytest.raises(ValueError, match="cannot certify anything"):
        adaptive.resolve_radii(None, n=3, num_classes=10, ks=[1], sigma=0.5, alpha=1e-3, bound="simuem")


def test_default_radii_reach_what_n_can_certify():
    radii = adaptive.resolve_radii(None, n=100_000, num_classes=10, ks=[1], sigma=0.25, alpha=1e-3, bound="simuem")
    reach = adaptive.max_certifiable_radius(100_000, 10, 1, 0.25, 0.4e-3, "simuem")
    assert radii[0] == 0.0 and np.all(np.diff(radii) == 0.25)
    assert radii[-1] < reach <= radii[-1] + 0.25


def test_coverage_holds_whatever_the_stopping_rule(coverage_probs, monkeypatch):
    """The worst stopping rule reports the largest radius of every look (the best radius only
    grows, so no stopping time reports more): coverage must hold for it too, so it holds for
    every rule, the one in adaptive.step included."""
    honest = adaptive.step

    def never_stop_early(*args, **kwargs):
        best, _ = honest(*args, **kwargs)
        return best, args[3] == len(args[4].sizes) - 1

    monkeypatch.setattr(adaptive, "step", never_stop_early)
    radius, _, n_used, _ = run_adaptive(
        binary_probs(coverage_probs), np.zeros(COVERAGE_EXAMPLES, dtype=np.int64), n=20_000, alpha=COVERAGE_ALPHA
    )
    assert np.all(n_used == 20_000)
    assert overstated_fraction(radius[:, 0], coverage_probs, 1.0) <= allowed(COVERAGE_ALPHA, COVERAGE_EXAMPLES)


def tail_example(num_classes: int, label_p: float, top: list) -> np.ndarray:
    """The label (column 0) at label_p, the given next labels, the rest spread evenly."""
    rest = 1.0 - label_p - sum(top)
    tail = num_classes - 1 - len(top)
    return np.array([label_p, *top, *([rest / tail] * tail)])


def test_hopeless_many_class_example_stops_early():
    # 1000 classes: the label at 0.2 against a runner-up at 0.35, and 30% of the mass in a
    # flat tail that no lower bound sees. Top-1 is certified at no radius.
    probs = np.stack([tail_example(1000, 0.2, [0.35, 0.1, 0.05])] * 20)
    radius, _, n_used, _ = run_adaptive(
        probs, np.zeros(20, dtype=np.int64), n=100_000, alpha=1e-3, sigma=0.5, bound="simuem", radii=[0.0, 0.25, 0.5]
    )
    assert np.all(radius[:, 0] == 0.0)
    assert n_used.max() <= 1000


def test_the_hopeless_example_fools_a_count_table_projection():
    """Test of the test above: projecting a whole count table to the full budget (the label
    at its upper bound, the others at their lower ones, the label taking what is left) hands
    the tail's mass to the label and certifies the hopeless example, so it would never stop."""
    from topk_certify.stats import clopper_pearson

    p = tail_example(1000, 0.2, [0.35, 0.1, 0.05])
    counts = np.random.default_rng(0).multinomial(128, p)
    lower, upper = clopper_pearson(counts, 128, 0.2)
    projected = np.floor(lower * 100_000).astype(np.int64)
    projected[0] = 0
    projected[0] = 100_000 - projected.sum()
    assert certify_counts(projected[None], [0], k=1, sigma=0.5, alpha=1e-3)[0] > 0.0
    # The rule's projection of the same counts reaches nothing.
    schedule = adaptive.make_schedule(100_000, 1e-3)
    assert not adaptive.projected_reach(
        counts, 0, [1], np.array([0.0]), 100_000, schedule.alphas[-1], 0.5, "simuem", adaptive.DEFAULT_SETTINGS
    )[0]


def test_a_clearly_certified_many_class_example_is_not_stopped_short():
    # Spread mass, but the label clearly certified beyond 0.2 (top-1) and 0.3 (top-3) at the
    # full budget (its radii there are about 0.31 and 0.43): every run must get past them.
    probs = np.stack([tail_example(1000, 0.5, [0.1, 0.08, 0.06])] * 40)
    radius, _, n_used, _ = run_adaptive(
        probs,
        np.zeros(40, dtype=np.int64),
        n=100_000,
        alpha=1e-3,
        sigma=0.5,
        ks=(1, 3),
        bound="simuem",
        radii=[0.0, 0.2, 0.3, 0.5, 0.75],
    )
    assert np.all(radius[:, 0] > 0.2)
    assert np.all(radius[:, 1] > 0.3)
    assert n_used.max() < 100_000  # and it saved samples: 0.3 (top-1) and 0.5 (top-3) are out of reach


def test_reaches_agrees_with_the_solver():
    """The stopping rule's Theorem 1 check, against the Rust solver on the same bounds:
    certified beyond r (reaches) exactly when the solver's radius exceeds r."""
    from topk_certify.stats import clopper_pearson

    rng = np.random.default_rng(11)
    sigma, alpha, n = 0.5, 1e-3, 5000
    checked = 0
    for _ in range(300):
        num_classes = int(rng.integers(3, 30))
        counts = rng.multinomial(n, rng.dirichlet(np.full(num_classes, 0.4)))
        label = int(np.argmax(counts)) if rng.random() < 0.7 else int(rng.integers(num_classes))
        k = int(rng.integers(1, num_classes))
        radius = certify_counts(counts[None], [label], k=k, sigma=sigma, alpha=alpha)[0]
        lo, up = clopper_pearson(counts, n, alpha / num_classes)
        pl = float(lo[label])
        ub = np.minimum(np.sort(np.delete(up, label))[::-1][:k], 1.0 - pl)
        p_sets = np.minimum(np.cumsum(ub[::-1]), 1.0 - pl)
        for r in (0.0, radius * 0.999, radius * 1.001, radius + 0.1):
            if abs(r - radius) < 1e-9 and r > 0:
                continue
            assert adaptive.reaches(pl, p_sets, r, sigma) == (radius > r), (counts, label, k, r, radius)
            checked += 1
    assert checked > 1000


def test_normal_quantile():
    from scipy.special import ndtr, ndtri

    q = np.concatenate([np.logspace(-300, -1, 200), np.linspace(0.01, 0.99, 99)])
    np.testing.assert_allclose(adaptive._ndtri(q), ndtri(q), rtol=1e-12, atol=1e-12)
    near_one = 1 - np.logspace(-15, -1, 50)  # q itself carries a relative error of 1e-16 / (1 - q)
    np.testing.assert_allclose(adaptive._ndtri(near_one), ndtri(near_one), rtol=1e-8)
    x = np.linspace(-30, 8, 200)
    np.testing.assert_allclose(adaptive._ndtr(x), ndtr(x), rtol=1e-12)


def test_step_is_pure_and_stops_at_the_last_look():
    schedule = adaptive.make_schedule(10_000, 1e-3)
    counts = np.array([600, 300, 100])
    best = np.zeros((1, 1))
    radii = np.array([0.0, 0.5])
    new, stop = adaptive.step(counts, np.array([0]), best, len(schedule.sizes) - 1, schedule, radii, [1], 0.5, "simuem")
    assert stop and np.all(best == 0)  # the input is not modified
    earlier, _ = adaptive.step(counts, np.array([0]), new, 0, schedule, radii, [1], 0.5, "simuem")
    assert np.all(earlier >= new)  # the best radius never shrinks


def expected_radius(p: np.ndarray, n: int, ks, sigma: float, alpha: float) -> np.ndarray:
    """Radii of the label (column 0) at the counts n p, rounded."""
    counts = np.rint(p * n).astype(np.int64)
    counts[0] += n - counts.sum()
    return certify_counts(counts[None], [0], k=list(ks), sigma=sigma, alpha=alpha)[0]


def test_predictive_radii_are_a_pure_function_of_the_counts():
    counts = np.array([3000, 1500, 400, 100])
    a = adaptive.predictive_radii(counts, 0, [1, 2], 100_000, 7e-4, 0.25, "simuem", 500)
    b = adaptive.predictive_radii(counts.copy(), 0, [1, 2], 100_000, 7e-4, 0.25, "simuem", 500)
    assert a.shape == (500, 2)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(counts, [3000, 1500, 400, 100])  # the input is not modified


@pytest.mark.parametrize("num_classes", [10, 1000])
def test_predictive_radii_centre_on_the_radius_of_the_full_budget(num_classes):
    # 5,000 samples of a label at 0.6 against 0.2, 0.1 and 0.06: the predicted radius at
    # 100,000 samples spreads around the radius of the expected counts there, by less than
    # 0.05 either way in 90% of the draws (its own spread at 100,000 samples is about 0.01).
    p = tail_example(num_classes, 0.6, [0.2, 0.1, 0.06])
    counts = np.random.default_rng(1).multinomial(5000, p)
    ks = [1, 3]
    target = expected_radius(p, 100_000, ks, 0.25, 7e-4)
    draws = adaptive.predictive_radii(counts, 0, ks, 100_000, 7e-4, 0.25, "simuem", 1000)
    lo, hi = np.quantile(draws, [0.05, 0.95], axis=0)
    assert np.all(lo > target - 0.05) and np.all(hi < target + 0.05), (lo, hi, target)
    assert np.all(lo < target + 0.01) and np.all(hi > target - 0.01)


def test_predictive_chance_is_calibrated():
    """Over streams of one example, the predicted chance that the full budget certifies beyond
    r, averaged, is the frequency with which it does (the rule's level is a probability)."""
    p = np.array([0.62, 0.33, 0.05])
    n, used, sigma, level = 20_000, 8000, 0.25, 7e-4
    rng = np.random.default_rng(4)
    r = float(expected_radius(p, n, [1], sigma, level)[0])  # the median final radius: chance about 1/2
    chances, hits = [], []
    for _ in range(200):
        first = rng.multinomial(used, p)
        draws = adaptive.predictive_radii(first, 0, [1], n, level, sigma, "simuem", 400)
        chances.append(float((draws[:, 0] > r).mean()))
        final = first + rng.multinomial(n - used, p)
        hits.append(certify_counts(final[None], [0], k=1, sigma=sigma, alpha=level)[0] > r)
    assert 0.25 < np.mean(hits) < 0.75  # the test is at the uncertain point
    assert abs(np.mean(chances) - np.mean(hits)) < 0.1
    # and the chance tells the streams apart: higher where the full budget did certify
    assert np.mean(np.array(chances)[np.array(hits)]) > np.mean(np.array(chances)[~np.array(hits)]) + 0.2


def test_the_predictive_check_stops_what_the_projection_keeps_sampling():
    # 100 classes, top-3 at radius 0: the label at 0.026 is third, just above 0.024 and 0.021,
    # too close for 100,000 samples to certify. The optimistic projection alone keeps such an
    # example for tens of thousands of samples; the predictive check stops it once the chance
    # that the full budget certifies it is below its level. It only adds stops: no example
    # runs longer with it, and on these streams none loses a radius.
    probs = np.stack([tail_example(100, 0.026, [0.70, 0.038, 0.024, 0.021, 0.018])] * 10)
    kwargs = dict(n=100_000, alpha=1e-3, sigma=0.5, ks=(3,), bound="simuem", radii=[0.0, 0.5])
    radius, _, n_used, _ = run_adaptive(probs, np.zeros(10, dtype=np.int64), **kwargs)
    off = adaptive.Settings(predictive_chance=0.0)
    honest = adaptive.step
    try:
        adaptive.step = lambda *args: honest(*args, settings=off)
        radius_off, _, n_off, _ = run_adaptive(probs, np.zeros(10, dtype=np.int64), **kwargs)
    finally:
        adaptive.step = honest
    assert np.all(radius == 0.0) and np.all(radius_off == 0.0)
    assert np.all(n_used <= n_off)
    assert n_used.sum() < 0.7 * n_off.sum(), (n_used, n_off)


def test_open_radii_names_the_unsettled_k():
    # The label at 0.55 against 0.4 after the first look that uses the predictive check: the
    # full budget certifies top-1 to about 0.085 (sigma 0.5), so 0.05 is open and 0.2 is
    # settled; top-2, already certified beyond every requested radius, is settled.
    schedule = adaptive.make_schedule(100_000, 1e-3)
    settings = adaptive.DEFAULT_SETTINGS
    stage = next(s for s, size in enumerate(schedule.sizes) if size >= settings.predictive_from)
    p = np.array([0.55, 0.4, 0.05])
    counts = np.rint(p * schedule.sizes[stage]).astype(np.int64)
    final = expected_radius(p, 100_000, [1], 0.5, schedule.alphas[-1])[0]
    assert 0.06 < final < 0.11
    radii = np.array([0.0, 0.05, 0.2, 1.0])
    for best_top1, target, is_open in [(0.01, 0.05, True), (0.1, 0.2, False)]:
        best = np.array([best_top1, 1.5])
        targets, open_ = adaptive.open_radii(counts, 0, best, stage, schedule, radii, [1, 2], 0.5, "simuem", settings)
        assert targets[0] == target and open_[0] == is_open
        assert not open_[1]


def test_open_radii_the_predictive_check_settles_what_the_projection_leaves_open():
    # The 100-class example above (top-3 at radius 0, out of reach of 100,000 samples) at the
    # expected counts of 24,326 samples: the optimistic projection still holds radius 0 open,
    # the predictive chance (about 0.08) is below the level there (about 0.12).
    schedule = adaptive.make_schedule(100_000, 1e-3)
    stage = schedule.sizes.index(24_326)
    counts = np.rint(tail_example(100, 0.026, [0.70, 0.038, 0.024, 0.021, 0.018]) * 24_326).astype(np.int64)
    radii = np.array([0.0, 0.5])
    args = (counts, 0, np.zeros(1), stage, schedule, radii, [3], 0.5, "simuem")
    _, open_off = adaptive.open_radii(*args, adaptive.Settings(predictive_chance=0.0))
    _, open_on = adaptive.open_radii(*args, adaptive.DEFAULT_SETTINGS)
    assert open_off[0] and not open_on[0]
    # Below predictive_from samples the check is not used: the projection alone decides.
    early = adaptive.Settings(predictive_from=30_000)
    assert adaptive.open_radii(*args, early)[1][0]


def flat_tail_example(label_p: float) -> np.ndarray:
    """1000 classes: four labels above the label (column 0), then 995 tail labels sharing the
    rest evenly (about 0.00013 each), so the 5th other label is one of many equal ones."""
    return tail_example(1000, label_p, [0.55, 0.2, 0.08, 0.04])


def streams_closed_before_certified(p: np.ndarray, settings: adaptive.Settings, streams: int) -> int:
    """Over sample streams of p: how many the rule settles at top-5, radius 0, from
    predictive_from samples on, at a look before any look certifies the label there."""
    schedule = adaptive.make_schedule(100_000, 1e-3)
    radii = np.array([0.0, 0.25, 0.5])
    closed = 0
    for seed in range(streams):
        rng = np.random.default_rng(seed)
        counts, drawn, best = np.zeros(p.size, dtype=np.int64), 0, np.zeros(2)
        for s, size in enumerate(schedule.sizes[:-1]):
            counts += rng.multinomial(size - drawn, p)
            drawn = size
            now = certify_counts(counts[None], [0], k=[1, 5], sigma=0.5, alpha=schedule.alphas[s])[0]
            best = np.maximum(best, now)
            if best[1] > 0.0:
                break
            if size >= settings.predictive_from:
                _, open_ = adaptive.open_radii(counts, 0, best, s, schedule, radii, [1, 5], 0.5, "simuem", settings)
                if not open_[1]:
                    closed += 1
                    break
    return closed


def test_the_predictive_check_keeps_a_flat_tail_top5_example_that_the_full_budget_certifies():
    # The label at 0.004 is 5th, far above the flat tail: the full budget certifies it at
    # top-5 beyond radius 0.1 on every one of 30 streams (its radius there is about 0.12). At
    # 1,765 samples it has about 7 samples and the tail labels 0-2 each.
    p = flat_tail_example(0.004)
    schedule = adaptive.make_schedule(100_000, 1e-3)
    full = np.random.default_rng(0).multinomial(100_000, p, size=30)
    radius = certify_counts(full, np.zeros(30, dtype=np.int64), k=5, sigma=0.5, alpha=schedule.alphas[-1])
    assert radius.min() > 0.1
    # The rule settles radius 0 before certifying it on at most 2 of 20 streams.
    assert streams_closed_before_certified(p, adaptive.DEFAULT_SETTINGS, 20) <= 2
    # Test of the test: the others' draws tempered as the label's (the earlier form) widen
    # every tail label, lift the largest of them and settle many streams short.
    tempered = adaptive.Settings(predictive_others_weight=0.5, predictive_chance=0.06, predictive_growth=0.3)
    assert streams_closed_before_certified(p, tempered, 20) >= 5


def test_untempered_others_raise_the_flat_tail_top5_chance():
    # The same example at 1,765 samples: the predicted chance that the full budget certifies
    # top-5 at radius 0 is higher with the others untempered, stream by stream on average.
    p = flat_tail_example(0.004)
    gains = []
    for seed in range(10):
        counts = np.random.default_rng(seed).multinomial(1765, p)
        chance = [
            float(
                (adaptive.predictive_radii(counts, 0, [5], 100_000, 7e-4, 0.5, "simuem", 1000, 0.5, w)[:, 0] > 0).mean()
            )
            for w in (0.5, 1.0)
        ]
        gains.append(chance[1] - chance[0])
    assert np.mean(gains) > 0.02 and min(gains) > -0.02, gains


@pytest.mark.parametrize("others_weight", [0.5, 1.0, 2.0])
def test_predictive_chance_grows_with_the_label_count(others_weight):
    # Samples moved from the runner-up to the label never lower the predicted chance of
    # certifying (beyond the draws' own noise); the chance falls as the radius grows (the
    # same draws), and goes from near 0 to near 1 across the grid.
    chances = []
    for label_count in range(4600, 5800, 100):  # the runner-up from 5,000 down to 3,900
        counts = np.array([label_count, 9600 - label_count, 600, 300, 100])
        draws = adaptive.predictive_radii(counts, 0, [1, 2], 100_000, 7e-4, 0.25, "simuem", 1000, 0.5, others_weight)
        by_radius = [(draws > r).mean(axis=0) for r in (0.0, 0.1, 0.2)]
        assert np.all(by_radius[0] >= by_radius[1]) and np.all(by_radius[1] >= by_radius[2])
        chances.append(by_radius[0][0])
    assert np.all(np.diff(chances) > -0.03), chances
    assert chances[0] < 0.05 and chances[-1] > 0.95, chances


def test_the_predictive_level_grows_with_the_samples():
    settings = adaptive.DEFAULT_SETTINGS
    sizes = adaptive.make_schedule(100_000, 1e-3).sizes
    levels = [settings.chance_at(size) for size in sizes if size >= settings.predictive_from]
    assert np.all(np.diff(levels) > 0)
    assert settings.chance_at(settings.predictive_from) == pytest.approx(settings.predictive_chance)
    assert levels[-1] < 0.5  # even at the last looks, a chance of a half keeps a radius open

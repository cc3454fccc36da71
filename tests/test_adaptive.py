"""Adaptive certification (issue 7): validity under optional stopping, and the rule.

The coverage tests drive the real adaptive loop (`_adaptive_sampling.run`) with a fake
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


def binary_probs(p_label: np.ndarray) -> np.ndarray:
    return np.stack([p_label, 1.0 - p_label], axis=1)


def run_adaptive(probs, labels, *, n, alpha, sigma=1.0, ks=(1,), bound="binocp", radii=None, seed=0):
    radii_arr = adaptive.resolve_radii(radii, n=n, num_classes=probs.shape[1], ks=ks, sigma=sigma, alpha=alpha, bound=bound)
    sampler = ExactSampler(probs, seed)
    best, counts, n_used = _adaptive_sampling.run(
        sampler, candidates=np.asarray(labels)[:, None], ks=ks, sigma=sigma, n=n, alpha=alpha,
        bound=bound, radii=radii_arr, purpose=1,
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
    radius = certify_counts(np.stack([counts, n - counts], 1), np.zeros(COVERAGE_EXAMPLES, dtype=np.int64),
                            k=1, sigma=1.0, alpha=COVERAGE_ALPHA, bound="binocp")
    assert overstated_fraction(radius, coverage_probs, 1.0) <= allowed(COVERAGE_ALPHA, COVERAGE_EXAMPLES)


def test_adaptive_coverage_holds_under_optional_stopping(coverage_probs):
    radius, _, n_used, _ = run_adaptive(binary_probs(coverage_probs), np.zeros(COVERAGE_EXAMPLES, dtype=np.int64),
                                        n=20_000, alpha=COVERAGE_ALPHA)
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
    radius, _, _, _ = run_adaptive(binary_probs(coverage_probs), np.zeros(COVERAGE_EXAMPLES, dtype=np.int64),
                                   n=20_000, alpha=COVERAGE_ALPHA)
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
    radius, _, n_used, _ = run_adaptive(probs, np.array([0, 0]), n=100_000, alpha=1e-3, sigma=1.0,
                                        bound="simuem", radii=[0.0, 0.5, 1.0])
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
    [([0.5, float("nan")], ValueError, "finite"), ([-0.1, 0.5], ValueError, ">= 0"), ([], ValueError, "at least one"),
     ("abc", TypeError, "numbers")],
)
def test_bad_radii_are_refused(radii, error, match):
    with pytest.raises(error, match=match):
        adaptive.resolve_radii(radii, n=1000, num_classes=3, ks=[1], sigma=0.5, alpha=1e-3, bound="simuem")


def test_unsorted_radii_are_cleaned():
    got = adaptive.resolve_radii([0.5, 0.0, 0.25, 0.5], n=1000, num_classes=3, ks=[1], sigma=0.5, alpha=1e-3, bound="simuem")
    np.testing.assert_array_equal(got, [0.0, 0.25, 0.5])


def test_too_small_n_is_refused():
    with pytest.raises(ValueError, match="cannot certify anything"):
        adaptive.resolve_radii(None, n=3, num_classes=10, ks=[1], sigma=0.5, alpha=1e-3, bound="simuem")


def test_default_radii_reach_what_n_can_certify():
    radii = adaptive.resolve_radii(None, n=100_000, num_classes=10, ks=[1], sigma=0.25, alpha=1e-3, bound="simuem")
    reach = adaptive.max_certifiable_radius(100_000, 10, 1, 0.25, 0.4e-3, "simuem")
    assert radii[0] == 0.0 and np.all(np.diff(radii) == 0.25)
    assert radii[-1] < reach <= radii[-1] + 0.25

"""certify_batch(adaptive=True) through the real sampler and a torch model."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm

torch = pytest.importorskip("torch")

import topk_certify  # noqa: E402

SIGMA = 0.5
THRESHOLDS = torch.tensor([-0.6, -0.2, 0.3, 0.9])  # 5 intervals of x[0]: labels 0..4


class IntervalClassifier(torch.nn.Module):
    """Label = which interval x[0] falls in; counts the rows it runs."""

    def __init__(self):
        super().__init__()
        self.rows = 0

    def forward(self, x):
        self.rows += x.shape[0]
        label = torch.bucketize(x[:, 0].contiguous(), THRESHOLDS.to(x.dtype))
        return torch.nn.functional.one_hot(label, 5).to(x.dtype)


def exact_probs(x0: float) -> np.ndarray:
    edges = np.concatenate([[-np.inf], THRESHOLDS.numpy(), [np.inf]])
    return np.diff(norm.cdf((edges - x0) / SIGMA))


def exact_topk(x0: float, k: int) -> set:
    return set(np.argsort(-exact_probs(x0), kind="stable")[:k])


def inputs(num: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = np.zeros((num, 3), dtype=np.float32)
    x[:, 0] = rng.uniform(-1.2, 1.5, num)
    x[:, 1:] = rng.normal(size=(num, 2))
    labels = np.array([int(np.argmax(exact_probs(v))) for v in x[:, 0]])
    return x, labels


@pytest.mark.parametrize("bound", ["simuem", "binocp"])
def test_adaptive_radii_are_sound_for_top_k(bound):
    x, labels = inputs(16)
    model = IntervalClassifier()
    res = topk_certify.certify_batch(
        model,
        x,
        labels,
        k=[1, 2, 3],
        sigma=SIGMA,
        n=20_000,
        alpha=1e-6,
        batch_size=4000,
        bound=bound,
        seed=1,
        adaptive=True,
    )
    assert res.radius.shape == (16, 3)
    assert (res.radius > 0).any()
    for e in range(16):
        for j, k in enumerate([1, 2, 3]):
            r = res.radius[e, j]
            if r <= 0:
                continue
            # Only x[0] matters: the worst perturbations shift it by up to r either way.
            for shift in np.linspace(-r, r, 201)[1:-1]:
                assert labels[e] in exact_topk(x[e, 0] + shift, k), (e, k, r, shift)


def test_n_used_is_bounded_and_adds_up_to_the_rows_run():
    x, labels = inputs(24, seed=2)
    model = IntervalClassifier()
    res = topk_certify.certify_batch(
        model,
        x,
        labels,
        k=[1, 3],
        sigma=SIGMA,
        n=20_000,
        batch_size=3000,
        seed=3,
        adaptive=True,
        radii=[0.0, 0.25, 0.5],
    )
    assert res.n_used.dtype == np.int64 and res.n_used.shape == (24,)
    assert res.n_used.max() <= 20_000 and res.n_used.min() >= 1
    assert int(res.n_used.sum()) == model.rows
    np.testing.assert_array_equal(res.counts.sum(1), res.n_used)
    assert res.n_used.sum() < 24 * 20_000  # it saved samples


def test_prediction_mode_accounts_for_selection_samples():
    x, labels = inputs(10, seed=4)
    model = IntervalClassifier()
    res = topk_certify.certify_batch(
        model, x, k=2, sigma=SIGMA, n=10_000, n0=200, batch_size=2000, seed=5, adaptive=True
    )
    assert res.labels.shape == (10, 2) and res.radius.shape == (10, 2)
    assert int(res.n_used.sum()) + 10 * 200 == model.rows  # n_used excludes the n0 selection samples
    for e in range(10):
        p = np.sort(exact_probs(x[e, 0]))[::-1]
        assert labels[e] in res.labels[e]
        if p[0] - p[1] > 0.3:  # selection with n0 = 200 cannot miss such a margin
            assert res.labels[e, 0] == labels[e]


def test_adaptive_is_reproducible_and_independent_of_grouping():
    x, labels = inputs(12, seed=6)
    kw = dict(k=[1, 2], sigma=SIGMA, n=8000, batch_size=1000, seed=11, adaptive=True)
    whole = topk_certify.certify_batch(IntervalClassifier(), x, labels, **kw)
    again = topk_certify.certify_batch(IntervalClassifier(), x, labels, **kw)
    np.testing.assert_array_equal(whole.radius, again.radius)
    np.testing.assert_array_equal(whole.n_used, again.n_used)
    order = np.array([7, 2, 11, 0, 5])
    part = topk_certify.certify_batch(IntervalClassifier(), x[order], labels[order], indices=order, **kw)
    np.testing.assert_array_equal(part.radius, whole.radius[order])
    np.testing.assert_array_equal(part.n_used, whole.n_used[order])


def test_fixed_mode_reports_n_for_every_example():
    x, labels = inputs(4, seed=8)
    res = topk_certify.certify_batch(IntervalClassifier(), x, labels, k=1, sigma=SIGMA, n=500, seed=1)
    np.testing.assert_array_equal(res.n_used, [500] * 4)


def test_bad_adaptive_arguments():
    x, labels = inputs(2)
    with pytest.raises(ValueError, match="finite"):
        topk_certify.certify_batch(
            IntervalClassifier(), x, labels, sigma=SIGMA, n=1000, adaptive=True, radii=[0.1, np.inf]
        )
    with pytest.raises(ValueError, match="cannot certify anything"):
        topk_certify.certify_batch(IntervalClassifier(), x, labels, sigma=SIGMA, n=2, adaptive=True)
    with pytest.raises(ValueError, match="adaptive"):
        topk_certify.certify_batch(IntervalClassifier(), x, labels, sigma=SIGMA, n=1000, radii=[0.5])

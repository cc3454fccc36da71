"""Base classifiers whose smoothed probabilities are known exactly, and the multinomial test.

The helpers here are imported by the other tests/test_smoothing_*.py files (conftest.py puts
tests/ on sys.path). The tests in this file check that `sample_counts` draws exactly the
multinomial those probabilities say (a chi-square test), with tests of the test: a sampler
with the wrong noise level and one that reuses its noise both fail it.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

import topk_certify as tc


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """One torch thread: these models are tiny, and on a busy 2-core machine two threads
    of tiny parallel ops spend their time waiting for each other (100x slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class IntervalClassifier(torch.nn.Module):
    """Label j when the first coordinate x0 of the (flattened) input lies in [t_j, t_{j+1}).

    With t_0 = -inf < t_1 < ... < t_{C-1} < t_C = +inf, the smoothed probabilities at x are
    exact: p_j = Phi((t_{j+1} - x0) / sigma) - Phi((t_j - x0) / sigma). Only x0 matters, so
    the worst l2 perturbation of norm r shifts x0 by +-r.
    """

    def __init__(self, thresholds):
        super().__init__()
        thresholds = np.asarray(thresholds, dtype=np.float64)
        assert np.all(np.diff(thresholds) > 0)
        self.register_buffer("thresholds", torch.as_tensor(thresholds, dtype=torch.float32))
        self.num_classes = len(thresholds) + 1

    def forward(self, z):
        first = z.reshape(z.shape[0], -1)[:, 0].contiguous()
        labels = (first[:, None] >= self.thresholds.to(z.dtype)).sum(dim=1)
        return torch.nn.functional.one_hot(labels, self.num_classes).to(z.dtype)

    def probabilities(self, x0, sigma) -> np.ndarray:
        """Exact smoothed probabilities, (len(x0), C) for an array of first coordinates."""
        x0 = np.atleast_1d(np.asarray(x0, dtype=np.float64))[:, None]
        t = self.thresholds.double().numpy()
        edges = np.concatenate([[-np.inf], t, [np.inf]])[None, :]
        cdf = stats.norm.cdf((edges - x0) / sigma)
        return np.diff(cdf, axis=1)

    @classmethod
    def with_probabilities(cls, p, sigma) -> IntervalClassifier:
        """The interval classifier whose smoothed probabilities at x0 = 0 are p."""
        cum = np.cumsum(np.asarray(p, dtype=np.float64))[:-1]
        return cls(sigma * stats.norm.ppf(cum))


class LinearBinary(torch.nn.Module):
    """sign(w.x + b) as two logits; its distance to the boundary is |w.x + b| / ||w||."""

    def __init__(self, w, b):
        super().__init__()
        self.w = torch.nn.Parameter(torch.as_tensor(w, dtype=torch.float32))
        self.b = torch.nn.Parameter(torch.as_tensor(float(b)))

    def forward(self, z):
        v = z.reshape(z.shape[0], -1) @ self.w + self.b
        return torch.stack([-v, v], dim=1)


class Recorder(torch.nn.Module):
    """Wraps a model; records each forward batch (its size, a copy of it, the modes)."""

    def __init__(self, inner, keep_inputs=False):
        super().__init__()
        self.inner = inner
        self.keep_inputs = keep_inputs
        self.sizes: list = []
        self.inputs: list = []
        self.training_seen: list = []
        self.inference_seen: list = []

    def forward(self, z):
        self.sizes.append(int(z.shape[0]))
        self.training_seen.append(self.training)
        self.inference_seen.append(torch.is_inference_mode_enabled())
        if self.keep_inputs:
            self.inputs.append(z.detach().clone())
        return self.inner(z)

    def rows(self) -> torch.Tensor:
        return torch.cat(self.inputs)


def chi_square_pvalue(counts, p) -> float:
    """p-value of counts (E, C) against independent multinomials with probabilities p (E, C)."""
    counts = np.asarray(counts, dtype=np.float64)
    expected = counts.sum(axis=1, keepdims=True) * np.asarray(p)
    assert expected.min() >= 5, "chi-square needs expected counts >= 5"
    statistic = ((counts - expected) ** 2 / expected).sum()
    return float(stats.chi2.sf(statistic, df=counts.shape[0] * (counts.shape[1] - 1)))


THRESHOLDS = [-1.0, -0.5, 0.0, 0.5, 1.0]
SIGMA = 0.6
X0 = np.linspace(-0.8, 0.8, 8)


def _points(x0, dims=3):
    x = torch.zeros(len(x0), dims)
    x[:, 0] = torch.as_tensor(x0, dtype=torch.float32)
    x[:, 1:] = torch.linspace(-1, 1, len(x0))[:, None]  # ignored by the classifier
    return x


def test_interval_probabilities_sum_to_one_and_with_probabilities_inverts():
    model = IntervalClassifier(THRESHOLDS)
    assert np.allclose(model.probabilities(X0, SIGMA).sum(axis=1), 1.0)
    p = [0.1, 0.4, 0.2, 0.3]
    model = IntervalClassifier.with_probabilities(p, 0.5)
    assert np.allclose(model.probabilities(0.0, 0.5), p, atol=1e-6)


def test_counts_follow_the_exact_multinomial():
    model = IntervalClassifier(THRESHOLDS)
    counts = tc.sample_counts(model, _points(X0), sigma=SIGMA, n=20_000, batch_size=1000, seed=11)
    assert counts.dtype == np.int64 and counts.shape == (len(X0), 6)
    assert (counts.sum(axis=1) == 20_000).all()
    assert chi_square_pvalue(counts, model.probabilities(X0, SIGMA)) > 1e-4


def test_examples_get_independent_noise():
    # 32 copies of one input: if they shared noise, the summed counts would be 32 times
    # one multinomial draw, far too dispersed for a multinomial of 32 n draws.
    model = IntervalClassifier(THRESHOLDS)
    x = _points(np.full(32, 0.3))
    counts = tc.sample_counts(model, x, sigma=SIGMA, n=2000, batch_size=300, seed=3)
    p = model.probabilities([0.3], SIGMA)
    assert chi_square_pvalue(counts.sum(axis=0, keepdims=True), p) > 1e-4
    assert chi_square_pvalue(counts, np.repeat(p, 32, axis=0)) > 1e-4


def test_the_chi_square_test_rejects_a_wrong_noise_level():
    model = IntervalClassifier(THRESHOLDS)
    counts = tc.sample_counts(model, _points(X0), sigma=1.1 * SIGMA, n=20_000, seed=11)
    assert chi_square_pvalue(counts, model.probabilities(X0, SIGMA)) < 1e-4


def test_the_chi_square_test_rejects_reused_noise():
    # A sampler that drew n / 10 noise samples and used each 10 times.
    model = IntervalClassifier(THRESHOLDS)
    counts = 10 * tc.sample_counts(model, _points(X0), sigma=SIGMA, n=2_000, seed=11)
    assert chi_square_pvalue(counts, model.probabilities(X0, SIGMA)) < 1e-4


def test_the_chi_square_test_rejects_examples_sharing_noise():
    model = IntervalClassifier(THRESHOLDS)
    one = tc.sample_counts(model, _points([0.3]), sigma=SIGMA, n=2000, seed=3)
    assert chi_square_pvalue(32 * one, model.probabilities([0.3], SIGMA)) < 1e-4


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_noise_is_standard_normal_times_sigma_in_the_input_dtype(dtype):
    recorder = Recorder(IntervalClassifier(THRESHOLDS), keep_inputs=True)
    x = torch.zeros(2, 4000, dtype=dtype)
    x[1] = 5.0
    tc.sample_counts(recorder, x, sigma=0.3, n=50, batch_size=64, seed=0)
    rows = recorder.rows()
    assert rows.dtype == dtype
    noise = torch.cat([rows[:50] - 0.0, rows[50:] - 5.0]).double().numpy().ravel()
    # Kolmogorov-Smirnov against N(0, 0.3^2) on 400,000 values.
    assert stats.kstest(noise, stats.norm(scale=0.3).cdf).pvalue > 1e-4
    assert stats.kstest(noise, stats.norm(scale=0.33).cdf).pvalue < 1e-4  # the test has teeth

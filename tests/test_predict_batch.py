"""predict_batch: the smoothed classifier's top-k sets on a torch model whose smoothed
probabilities are known exactly, with seeded noise; PredictResult; bad keywords."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import topk_certify as tc
from test_smoothing_models import (
    IntervalClassifier,
    Recorder,
    one_torch_thread,  # noqa: F401 (autouse fixture)
)

THRESHOLDS = [-1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5]  # 8 classes, intervals 0.5 wide
SIGMA = 0.5


def points(x0) -> torch.Tensor:
    x = torch.zeros(len(x0), 3)
    x[:, 0] = torch.as_tensor(np.asarray(x0), dtype=torch.float32)
    x[:, 1:] = 0.25  # ignored by the classifier
    return x


def is_top_k_set(p: np.ndarray, labels: np.ndarray) -> bool:
    inside = np.zeros(p.size, dtype=bool)
    inside[labels] = True
    return bool(p[inside].min() >= p[~inside].max())


def wrong_rate(model, x, result) -> float:
    p = model.probabilities(x[:, 0].double().numpy(), SIGMA)
    answered = ~result.abstained
    return sum(not is_top_k_set(pe, row) for pe, row in zip(p[answered], result.labels[answered])) / len(x)


@pytest.mark.parametrize("k", [1, 2])
def test_wrong_sets_stay_within_alpha_where_the_smoothed_classifier_nearly_ties(k):
    """k = 1: points near a threshold, where the two labels beside it nearly tie; k = 2: points
    near an interval's centre, where its two neighbours nearly tie for the second place."""
    rng = np.random.default_rng(k)
    centres = np.array(THRESHOLDS) if k == 1 else np.array(THRESHOLDS[:-1]) + 0.25
    x0 = rng.choice(centres[1:-1], size=400) + rng.uniform(-0.01, 0.01, size=400)
    x0[::3] = rng.choice(centres[1:-1], size=134) + rng.uniform(-0.2, 0.2, size=134)  # farther
    x0[::10] = rng.choice(centres[1:-1], size=40)  # exact ties too: either set is right
    model = IntervalClassifier(THRESHOLDS)
    x = points(x0)
    result = tc.predict_batch(model, x, k=k, sigma=SIGMA, n=400, alpha=0.2, seed=3)
    assert result.labels.shape == (400, k) and result.counts.shape == (400, 8)
    limit = 0.2 + 3 * np.sqrt(0.2 * 0.8 / 400)
    assert wrong_rate(model, x, result) <= limit
    assert (~result.abstained).sum() >= 50  # not vacuous
    # The check has teeth: the counts' raw top-k (no test) fails it on the same samples.
    raw = np.argsort(-result.counts, axis=1, kind="stable")[:, :k]
    p = model.probabilities(x[:, 0].double().numpy(), SIGMA)
    assert np.mean([not is_top_k_set(pe, row) for pe, row in zip(p, raw)]) > limit


def test_clear_points_are_answered_with_the_right_set():
    model = IntervalClassifier(THRESHOLDS)
    x0 = np.array(THRESHOLDS[:-1]) + 0.25  # interval centres: label j + 1 on top
    result = tc.predict_batch(model, points(x0), k=1, sigma=0.2, n=2000, alpha=0.001, seed=0)
    assert not result.abstained.any()
    assert result.labels[:, 0].tolist() == list(range(1, 7))
    assert result.contains(np.arange(1, 7)).all()
    assert not result.contains(np.arange(6)).any()


def test_seeded_noise_is_certify_batchs_and_the_labels_are_predict_counts():
    model = IntervalClassifier(THRESHOLDS)
    x = points(np.linspace(-1.2, 1.2, 9))
    one = tc.predict_batch(model, x, k=2, sigma=SIGMA, n=700, alpha=0.01, batch_size=256, seed=11)
    two = tc.predict_batch(model, x, k=2, sigma=SIGMA, n=700, alpha=0.01, batch_size=256, seed=11)
    assert np.array_equal(one.counts, two.counts) and np.array_equal(one.labels, two.labels)
    certified = tc.certify_batch(model, x, np.zeros(9, dtype=int), sigma=SIGMA, n=700, batch_size=256, seed=11)
    assert np.array_equal(one.counts, certified.counts)
    labels, abstained = tc.predict_counts(one.counts, k=2, alpha=0.01)
    assert np.array_equal(one.labels, labels) and np.array_equal(one.abstained, abstained)
    assert (one.counts.sum(axis=1) == 700).all()
    # A subset keyed by its indices draws the same noise as the whole call.
    part = tc.predict_batch(
        model, x[3:6], k=2, sigma=SIGMA, n=700, alpha=0.01, batch_size=256, seed=11, indices=[3, 4, 5]
    )
    assert np.array_equal(part.counts, one.counts[3:6])
    other = tc.predict_batch(model, x, k=2, sigma=SIGMA, n=700, alpha=0.01, batch_size=256, seed=12)
    assert not np.array_equal(other.counts, one.counts)


def test_the_model_is_run_as_certify_batch_runs_it():
    # A Conv-BN model: the default inference form (BN folded, channels_last) predicts what
    # the module as given predicts on the same noise; fp16 cannot run on the CPU.
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3),
        torch.nn.BatchNorm2d(4),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(4 * 4 * 4, 5),
    ).eval()
    net[1].running_mean.uniform_(-0.5, 0.5)
    net[1].running_var.uniform_(0.5, 2.0)
    x = torch.rand(4, 1, 6, 6, generator=torch.Generator().manual_seed(2))
    kwargs = dict(k=2, sigma=0.3, n=400, alpha=0.05, batch_size=128, seed=3)
    given = tc.predict_batch(net, x, optimize=False, **kwargs)
    optimized = tc.predict_batch(net, x, **kwargs)
    assert np.abs(given.counts - optimized.counts).sum() <= 2  # rounding may move a near tie
    with pytest.raises(ValueError, match="fp16"):
        tc.predict_batch(net, x, precision="fp16", **kwargs)


def test_the_result_is_frozen_and_read_only():
    model = IntervalClassifier(THRESHOLDS)
    result = tc.predict_batch(model, points([0.25, 0.0]), k=1, sigma=0.2, n=500, alpha=0.01, seed=0)
    assert isinstance(result, tc.PredictResult)
    assert (result.k, result.sigma, result.alpha, result.n) == (1, 0.2, 0.01, 500)
    # 0.25 is label 4's centre; 0.0 is the threshold between labels 3 and 4: a tie, abstain.
    assert result.labels.tolist() == [[4], [-1]] and result.abstained.tolist() == [False, True]
    assert result.abstention_rate == 0.5
    for name in ("labels", "counts", "abstained"):
        with pytest.raises(ValueError):
            getattr(result, name)[0] = 0
    with pytest.raises(AttributeError):
        result.k = 2  # type: ignore[misc]
    text = repr(result)
    assert "2 examples, 8 classes, top-1 sets" in text and "abstained 1 (50.0%)" in text
    with pytest.raises(ValueError, match="one per example"):
        result.contains([1, 2, 3])


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(k=[1, 2]), TypeError, "one int"),
        (dict(k=0), ValueError, "k must be >= 1"),
        (dict(k=2.0), TypeError, "one int"),
        (dict(alpha=0.0), ValueError, "alpha must be in the open interval"),
        (dict(alpha=1.5), ValueError, "alpha must be in the open interval"),
        (dict(sigma=-1.0), ValueError, "sigma must be a finite positive number"),
        (dict(n=0), ValueError, "n must be at least 1"),
        (dict(batch_size=0), ValueError, "batch_size must be at least 1"),
        (dict(seed=-1), ValueError, "seed must be non-negative"),
        (dict(progress="yes"), TypeError, "progress must be a bool"),
    ],
)
def test_bad_keywords_are_refused_before_sampling(kwargs, error, message):
    model = Recorder(IntervalClassifier(THRESHOLDS))
    settings = dict(k=1, sigma=SIGMA, n=100, alpha=0.01, seed=0)
    settings.update(kwargs)
    with pytest.raises(error, match=message):
        tc.predict_batch(model, points([0.0, 0.5]), **settings)
    assert model.sizes == []


def test_k_at_or_above_the_classes_is_refused_after_one_batch():
    model = Recorder(IntervalClassifier(THRESHOLDS))
    with pytest.raises(ValueError, match="k must be < the number of classes C = 8"):
        tc.predict_batch(model, points(np.zeros(50)), k=8, sigma=SIGMA, n=1000, batch_size=100, seed=0)
    assert len(model.sizes) == 1  # stopped at the first forward pass, not after 50,000 samples


def test_bad_inputs_are_refused():
    model = IntervalClassifier(THRESHOLDS)
    with pytest.raises(ValueError, match="no examples"):
        tc.predict_batch(model, points([])[:0], sigma=SIGMA, n=10)
    x = points([0.0, 0.5])
    x[1, 2] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        tc.predict_batch(model, x, sigma=SIGMA, n=10)

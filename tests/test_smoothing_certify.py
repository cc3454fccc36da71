"""certify_batch: soundness on exact classifiers, tightness, prediction mode, result, modes."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

import topk_certify as tc
from test_smoothing_models import (
    IntervalClassifier,
    LinearBinary,
    Recorder,
    one_torch_thread,  # noqa: F401 (autouse fixture)
)

# -- soundness --------------------------------------------------------------------------------


def _exit_distance(model, x0, label, k, sigma, reach=6.0, step=2e-4):
    """Exact distance from x0 to the nearest shift of the first coordinate that takes `label`
    out of the smoothed top-k (inf when none within `reach`); a grid of `step`."""
    shifts = np.arange(-reach, reach + step / 2, step)
    p = model.probabilities(x0 + shifts, sigma)
    above = (p > p[:, [label]] + 1e-12).sum(axis=1)  # labels strictly more likely
    out = np.abs(shifts[above >= k])
    return out.min() if out.size else np.inf


@pytest.mark.parametrize("bound", ["simuem", "binocp"])
def test_certified_radii_are_sound_on_the_interval_classifier(bound):
    sigma, ks = 0.5, (1, 2, 3)
    model = IntervalClassifier([-1.2, -0.6, -0.1, 0.3, 1.0])  # 6 classes
    x0 = np.linspace(-1.8, 1.6, 18)
    labels = np.tile(np.arange(6), len(x0))  # every label of every point
    points = np.repeat(x0, 6)
    x = torch.zeros(len(points), 3)
    x[:, 0] = torch.as_tensor(points, dtype=torch.float32)
    result = tc.certify_batch(model, x, labels, k=ks, sigma=sigma, n=20_000, alpha=1e-6, bound=bound, seed=0)
    assert result.radius.shape == (len(points), 3)
    checked = 0
    tightness = []
    for e in range(len(points)):
        for m, k in enumerate(ks):
            radius = result.radius[e, m]
            if radius == 0:
                continue
            exact = _exit_distance(model, float(x[e, 0]), labels[e], k, sigma)
            # No perturbation of norm < R takes the label out of the exact top-k.
            assert radius <= exact, (e, k, radius, exact)
            checked += 1
            tightness.append(radius / exact)
    assert checked >= 30  # not vacuous: many labels certified, for every k
    assert (result.radius > 0).sum(axis=0).min() >= 5
    # And the check has teeth: radii 1.5 times larger would break it for several of them.
    assert np.sum(np.array(tightness) > 1 / 1.5) >= 5


@pytest.mark.parametrize("bound", ["simuem", "binocp"])
def test_linear_classifier_radius_is_close_to_the_distance(bound):
    rng = np.random.default_rng(0)
    w = rng.normal(size=10)
    model = LinearBinary(w, 0.3)
    direction = w / np.linalg.norm(w)
    distance = np.array([0.25, 0.5, 0.8])
    x0 = rng.normal(size=10)
    x0 -= (x0 @ w + 0.3) / np.linalg.norm(w) * direction  # on the boundary
    x = torch.as_tensor(x0 + distance[:, None] * direction, dtype=torch.float32)
    result = tc.certify_batch(model, x, [1, 1, 1], sigma=0.5, n=100_000, bound=bound, seed=1)
    assert (result.radius <= distance).all()
    assert (result.radius >= 0.95 * distance).all(), result.radius / distance
    # The radius on the other side is 0: that label is not the top-1.
    other = tc.certify_batch(model, x, [0, 0, 0], sigma=0.5, n=1000, bound=bound, seed=1)
    assert (other.radius == 0).all()


# -- prediction mode --------------------------------------------------------------------------


P = [0.03, 0.45, 0.05, 0.3, 0.15, 0.02]  # top-3: labels 1, 3, 4


def test_prediction_returns_the_top_candidates_and_their_radii():
    sigma = 0.5
    model = Recorder(IntervalClassifier.with_probabilities(P, sigma))
    x = torch.zeros(4, 2)
    x[:, 1] = torch.arange(4.0)  # ignored by the classifier
    result = tc.certify_batch(model, x, k=3, sigma=sigma, n=5000, n0=1000, seed=0)
    assert result.predicted
    assert result.labels.shape == (4, 3) and result.radius.shape == (4, 3)
    assert (result.labels == [1, 3, 4]).all()
    for j in range(3):
        expected = tc.certify_counts(result.counts, result.labels[:, j], k=3, sigma=sigma)
        assert np.array_equal(result.radius[:, j], expected)
    assert (result.radius[:, :2] > 0).all()
    assert (result.counts.sum(axis=1) == 5000).all() and (result.n_used == 5000).all()
    assert sum(model.sizes) == 4 * (1000 + 5000)


def test_prediction_ties_go_to_the_lower_label():
    def always_two(z):
        logits = torch.zeros(z.shape[0], 6)
        logits[:, 2] = 1.0
        return logits

    result = tc.certify_batch(always_two, torch.zeros(2, 3), k=3, sigma=1.0, n=100, n0=10, seed=0)
    assert (result.labels == [2, 0, 1]).all()


def test_prediction_with_a_sequence_of_k():
    sigma, ks = 0.5, (1, 3)
    model = IntervalClassifier.with_probabilities(P, sigma)
    result = tc.certify_batch(model, torch.zeros(3, 2), k=ks, sigma=sigma, n=4000, n0=500, seed=1)
    assert result.labels.shape == (3, 3) and result.radius.shape == (3, 2, 3)
    for m, k in enumerate(ks):
        for j in range(3):
            expected = tc.certify_counts(result.counts, result.labels[:, j], k=k, sigma=sigma)
            assert np.array_equal(result.radius[:, m, j], expected)
    fractions = result.fraction_certified()
    assert fractions.shape == (2,)
    top3_set = result.radius[:, 1, :3].min(axis=1)
    assert np.array_equal(fractions[1], (top3_set > 0).mean())


def test_given_labels_with_a_sequence_of_k_matches_one_k_at_a_time():
    sigma = 0.5
    model = IntervalClassifier.with_probabilities(P, sigma)
    x = torch.zeros(6, 2)
    labels = np.arange(6)
    many = tc.certify_batch(model, x, labels, k=[1, 2, 4], sigma=sigma, n=3000, seed=2)
    assert many.radius.shape == (6, 3)
    for m, k in enumerate([1, 2, 4]):
        one = tc.certify_batch(model, x, labels, k=k, sigma=sigma, n=3000, seed=2)
        assert one.radius.shape == (6,)
        assert np.array_equal(many.radius[:, m], one.radius)
        assert np.array_equal(one.radius, tc.certify_counts(one.counts, labels, k=k, sigma=sigma))


def test_labels_may_be_a_list_an_array_or_a_tensor():
    model = IntervalClassifier([0.0])
    x = torch.ones(2, 1)
    results = [
        tc.certify_batch(model, x, labels, sigma=0.5, n=200, seed=0)
        for labels in ([1, 1], np.array([1, 1], dtype=np.int32), torch.tensor([1, 1]))
    ]
    assert all(np.array_equal(r.radius, results[0].radius) for r in results)
    assert np.array_equal(results[0].labels, [1, 1]) and results[0].labels.dtype == np.int64


# -- the result -------------------------------------------------------------------------------


def test_the_result_is_frozen_and_read_only_with_a_readable_repr():
    model = IntervalClassifier([0.0, 1.0])
    result = tc.certify_batch(model, torch.zeros(5, 2), [1] * 5, k=(1, 2), sigma=0.5, n=500, seed=0)
    with pytest.raises(AttributeError):
        result.radius = None
    with pytest.raises(ValueError):
        result.radius[0, 0] = 1.0
    text = repr(result)
    assert "5 examples" in text and "3 classes" in text and "k=1" in text and "k=2" in text
    assert "%" in text and "n_used=500" in text
    assert "[" not in text and "array" not in text  # a summary, no array dumps
    assert len(text) < 600 and all(len(line) < 100 for line in text.splitlines())
    assert result.radius.dtype == np.float64 and result.counts.dtype == np.int64
    assert result.n_used.dtype == np.int64 and result.n_used.shape == (5,)


def test_fraction_certified():
    result = tc.CertifyResult(
        radius=np.array([0.0, 0.3, 0.6, 1.0]),
        counts=np.zeros((4, 3), dtype=np.int64),
        labels=np.zeros(4, dtype=np.int64),
        k=1,
        n_used=np.full(4, 10),
        sigma=0.5,
        alpha=0.001,
        bound="simuem",
    )
    assert result.fraction_certified() == 0.75
    assert result.fraction_certified(0.5) == 0.5
    assert "75.0%" in repr(result)


# -- modes, progress --------------------------------------------------------------------------


class _Flagged(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.head = torch.nn.Linear(2, 3)
        self.frozen = torch.nn.BatchNorm1d(2)
        self.seen = []
        self.fail_on = None

    def forward(self, z):
        self.seen.append((self.training, self.head.training, torch.is_inference_mode_enabled()))
        if len(self.seen) == self.fail_on:
            raise RuntimeError("boom")
        return self.head(z)


def test_eval_and_inference_mode_during_the_call_and_flags_restored_after():
    model = _Flagged()
    model.train()
    model.frozen.eval()  # mixed flags must come back as they were
    tc.certify_batch(model, torch.zeros(2, 2), [0, 1], sigma=1.0, n=300, batch_size=100, seed=0)
    assert model.seen and all(s == (False, False, True) for s in model.seen)
    assert model.training and model.head.training and not model.frozen.training


def test_flags_are_restored_after_an_exception():
    model = _Flagged()
    model.train()
    model.fail_on = 2
    with pytest.raises(RuntimeError, match="boom"):
        tc.sample_counts(model, torch.zeros(2, 2), sigma=1.0, n=300, batch_size=100)
    assert model.training and model.head.training and model.frozen.training
    assert not torch.is_inference_mode_enabled()


def test_progress_bar(capsys):
    model = IntervalClassifier([0.0])
    tc.certify_batch(model, torch.zeros(3, 1), sigma=1.0, n=500, n0=10, batch_size=100, progress=True)
    err = capsys.readouterr().err
    assert "samples" in err and "examples/s" in err and "1.53k" in err


def test_progress_without_tqdm_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm", None)
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    recorder = Recorder(IntervalClassifier([0.0]))
    with pytest.raises(ImportError, match="tqdm"):
        tc.certify_batch(recorder, torch.zeros(1, 1), [0], sigma=1.0, n=10, progress=True)
    assert recorder.sizes == []  # before any sampling
    tc.certify_batch(recorder, torch.zeros(1, 1), [0], sigma=1.0, n=10)  # fine without

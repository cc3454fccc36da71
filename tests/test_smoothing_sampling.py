"""Sampling: packed forward batches, seeds, independence from grouping, modes, devices."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import topk_certify as tc
from test_smoothing_models import (
    IntervalClassifier,
    LinearBinary,
    Recorder,
    one_torch_thread,  # noqa: F401 (autouse fixture)
)
from topk_certify.smoothing import sampler as _sampler

THRESHOLDS = [-1.0, -0.3, 0.2, 0.9]


def _x(num, dims=5, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(num, dims, generator=generator)


def _rows_per_example(recorder, order, per_example):
    """Recorded forward inputs split into consecutive runs of `per_example` rows."""
    rows = recorder.rows()
    assert rows.shape[0] == len(order) * per_example
    return {e: rows[j * per_example : (j + 1) * per_example] for j, e in enumerate(order)}


# -- packing ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "num, n, batch_size, expected",
    [
        (25, 100, 1000, [1000, 1000, 500]),  # ten examples per forward pass
        (3, 250, 100, [100] * 7 + [50]),  # a partial batch is topped up by the next example
        (4, 30, 100, [100, 20]),  # blocks of 30 straddle batches
        (1, 2500, 1000, [1000, 1000, 500]),
        (2, 7, 1, [1] * 14),
    ],
)
def test_forward_batches_are_full_except_the_last(num, n, batch_size, expected):
    recorder = Recorder(IntervalClassifier(THRESHOLDS))
    counts = tc.sample_counts(recorder, _x(num), sigma=0.5, n=n, batch_size=batch_size, seed=0)
    assert recorder.sizes == expected
    assert (counts.sum(axis=1) == n).all()


def test_prediction_mode_packs_selection_and_certification_samples():
    recorder = Recorder(IntervalClassifier(THRESHOLDS))
    result = tc.certify_batch(recorder, _x(3), k=1, sigma=0.5, n=70, n0=30, batch_size=50, seed=0)
    assert recorder.sizes == [50] * 6  # 3 * (30 + 70) rows
    assert (result.counts.sum(axis=1) == 70).all()  # the selection samples are not reused
    assert (result.n_used == 70).all()


# -- seeds ------------------------------------------------------------------------------------


def test_a_seed_reproduces_and_another_seed_differs():
    model = IntervalClassifier(THRESHOLDS)
    x = _x(6)
    first = tc.sample_counts(model, x, sigma=1.0, n=3000, batch_size=512, seed=7)
    again = tc.sample_counts(model, x, sigma=1.0, n=3000, batch_size=512, seed=7)
    other = tc.sample_counts(model, x, sigma=1.0, n=3000, batch_size=512, seed=8)
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)


def test_without_a_seed_every_call_draws_fresh_noise():
    recorder = Recorder(IntervalClassifier(THRESHOLDS), keep_inputs=True)
    x = _x(2)
    tc.sample_counts(recorder, x, sigma=1.0, n=100, seed=None)
    tc.sample_counts(recorder, x, sigma=1.0, n=100, seed=None)
    first, second = recorder.inputs
    assert not torch.equal(first, second)


def test_the_same_stream_feeds_sample_counts_and_both_certify_modes():
    model = IntervalClassifier(THRESHOLDS)
    x = _x(5)
    counts = tc.sample_counts(model, x, sigma=0.5, n=900, batch_size=256, seed=4)
    given = tc.certify_batch(model, x, [0] * 5, sigma=0.5, n=900, batch_size=256, seed=4)
    predicted = tc.certify_batch(model, x, sigma=0.5, n=900, n0=64, batch_size=256, seed=4)
    assert np.array_equal(counts, given.counts)
    assert np.array_equal(counts, predicted.counts)


def test_selection_noise_is_a_different_stream_than_certification_noise():
    recorder = Recorder(IntervalClassifier(THRESHOLDS), keep_inputs=True)
    x = torch.zeros(1, 3)
    tc.certify_batch(recorder, x, sigma=1.0, n=200, n0=200, batch_size=400, seed=1)
    rows = recorder.rows()
    selection, certification = rows[:200], rows[200:]
    # Not the same draws, nor shifted copies of each other.
    assert not torch.isin(certification[:, 0], selection[:, 0]).any()


def test_examples_with_the_same_input_get_different_noise():
    recorder = Recorder(IntervalClassifier(THRESHOLDS), keep_inputs=True)
    tc.sample_counts(recorder, torch.zeros(2, 3), sigma=1.0, n=50, seed=0)
    rows = recorder.rows()
    assert not torch.equal(rows[:50], rows[50:])


# -- independence from grouping ---------------------------------------------------------------


GROUPINGS = [
    (100, 1000),  # ten examples per forward pass
    (30, 100),  # a block of one example split over two forward passes
    (250, 100),  # blocks 100, 100, 50; the 50 share a pass with the next example
    (1000, 300),  # n not a multiple of batch_size
    (400, 400),  # one block per pass
]


@pytest.mark.parametrize("n, batch_size", GROUPINGS)
def test_noise_depends_on_seed_index_and_batch_size_only(n, batch_size):
    x = _x(10)
    everything = Recorder(IntervalClassifier(THRESHOLDS), keep_inputs=True)
    all_counts = tc.sample_counts(everything, x, sigma=0.5, n=n, batch_size=batch_size, seed=5)
    all_rows = _rows_per_example(everything, range(10), n)

    for order in ([3, 1], list(range(10))[::-1], [9], [2, 2, 7]):
        part = Recorder(IntervalClassifier(THRESHOLDS), keep_inputs=True)
        counts = tc.sample_counts(part, x[order], sigma=0.5, n=n, batch_size=batch_size, seed=5, indices=order)
        rows = _rows_per_example(part, list(range(len(order))), n)
        for j, e in enumerate(order):
            assert np.array_equal(counts[j], all_counts[e])
            assert torch.equal(rows[j], all_rows[e])


def test_certified_radii_do_not_depend_on_grouping():
    model = IntervalClassifier(THRESHOLDS)
    x = _x(8)
    labels = np.arange(8) % 5
    kwargs = dict(k=(1, 2), sigma=0.5, n=500, batch_size=1000, seed=9)
    full = tc.certify_batch(model, x, labels, **kwargs)
    order = [6, 0, 3]
    part = tc.certify_batch(model, x[order], labels[order], indices=order, **kwargs)
    assert np.array_equal(part.radius, full.radius[order])
    predicted_full = tc.certify_batch(model, x, k=(1, 2), sigma=0.5, n=500, n0=50, seed=9)
    predicted_part = tc.certify_batch(model, x[order], k=(1, 2), sigma=0.5, n=500, n0=50, seed=9, indices=order)
    assert np.array_equal(predicted_part.labels, predicted_full.labels[order])
    assert np.array_equal(predicted_part.radius, predicted_full.radius[order])


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 300),
    batch_size=st.integers(1, 400),
    subset=st.lists(st.integers(0, 5), min_size=1, max_size=6),
)
def test_counts_of_any_subset_match_the_full_call(n, batch_size, subset):
    model = IntervalClassifier(THRESHOLDS)
    x = _x(6)
    full = tc.sample_counts(model, x, sigma=0.7, n=n, batch_size=batch_size, seed=2)
    part = tc.sample_counts(model, x[subset], sigma=0.7, n=n, batch_size=batch_size, seed=2, indices=subset)
    assert np.array_equal(part, full[subset])


def test_the_sampler_draws_the_next_m_samples_of_a_stream_whatever_the_rounds():
    # Adaptive certification draws rounds of samples per example: the samples
    # must be the same as one fixed-size draw, however the rounds cut the stream.
    x = _x(3)
    recorder = Recorder(IntervalClassifier(THRESHOLDS), keep_inputs=True)

    def sampler():
        return _sampler.NoiseSampler(
            recorder,
            x,
            sigma=0.5,
            batch_size=64,
            seed=3,
            indices=[0, 1, 2],
            totals={_sampler.ESTIMATE: 300},
        )

    with torch.inference_mode():
        one = sampler()
        whole = dict(one.run([(e, _sampler.ESTIMATE, 300) for e in range(3)]))
    reference = _rows_per_example(recorder, range(3), 300)

    recorder.inputs.clear()
    rounds = sampler()
    sizes = {0: [10, 90, 200], 1: [300], 2: [1, 63, 64, 100, 72]}
    total = {e: np.zeros_like(whole[e]) for e in range(3)}
    with torch.inference_mode():
        for r in range(5):
            requests = [(e, _sampler.ESTIMATE, sizes[e][r]) for e in (2, 0, 1) if r < len(sizes[e])]
            for tag, counts in rounds.run(requests):
                total[requests[tag][0]] += counts
    rows = recorder.rows()
    assert rounds.forward_rows == 900 == rows.shape[0]
    for e in range(3):
        assert np.array_equal(total[e], whole[e])
        mine = torch.cat([rows[(rows - reference[e][j]).abs().sum(1) == 0] for j in range(300)])
        assert torch.equal(mine, reference[e])  # the same 300 rows, in the same order


@pytest.mark.parametrize("n, batch_size", [(100, 1000), (250, 100)])
def test_counting_on_the_host_and_on_the_device_agree(n, batch_size):
    x = _x(7)
    results = []
    for on_host in (True, False):
        sampler = _sampler.NoiseSampler(
            IntervalClassifier(THRESHOLDS),
            x,
            sigma=0.8,
            batch_size=batch_size,
            seed=3,
            indices=range(7),
            totals={_sampler.ESTIMATE: n},
        )
        sampler.count_on_host = on_host
        with torch.inference_mode():
            results.append(dict(sampler.run([(e, _sampler.ESTIMATE, n) for e in range(7)])))
    for e in range(7):
        assert np.array_equal(results[0][e], results[1][e])
        assert results[0][e].sum() == n and (results[0][e] > 0).sum() > 1


def test_a_request_beyond_the_stream_is_refused():
    x = _x(1)
    sampler = _sampler.NoiseSampler(
        IntervalClassifier(THRESHOLDS),
        x,
        sigma=0.5,
        batch_size=8,
        seed=0,
        indices=[0],
        totals={_sampler.ESTIMATE: 10},
    )
    with torch.inference_mode():
        with pytest.raises(ValueError, match="has 10 left"):
            list(sampler.run([(0, _sampler.ESTIMATE, 11)]))
        list(sampler.run([(0, _sampler.ESTIMATE, 10)]))
        # An exhausted stream is never restarted (that would reuse its noise).
        with pytest.raises(ValueError, match="has 0 left"):
            list(sampler.run([(0, _sampler.ESTIMATE, 1)]))


def test_stream_seeds_are_distinct_and_stable():
    seeds = {_sampler.stream_seed(s, i, p) for s in range(3) for i in range(50) for p in (0, 1)}
    assert len(seeds) == 300
    assert all(0 <= s < 2**63 for s in seeds)
    # Pinned: changing the hash silently would change every seeded result.
    assert _sampler.stream_seed(0, 0, _sampler.ESTIMATE) == 5674686527938357681
    assert _sampler.stream_seed(12345, 7, _sampler.SELECT) == 3185783120907669403


# -- inputs: numpy, dtypes, devices -----------------------------------------------------------


def test_numpy_input_takes_the_model_dtype_and_tensor_input_keeps_its_own():
    recorder = Recorder(LinearBinary(np.ones(4), 0.0), keep_inputs=True)
    x = np.zeros((2, 4))  # float64
    numpy_counts = tc.sample_counts(recorder, x, sigma=1.0, n=20, seed=0)
    assert recorder.inputs[-1].dtype == torch.float32
    tensor_counts = tc.sample_counts(recorder, torch.zeros(2, 4), sigma=1.0, n=20, seed=0)
    assert np.array_equal(numpy_counts, tensor_counts)
    model64 = Recorder(LinearBinary(np.ones(4), 0.0).double(), keep_inputs=True)
    tc.sample_counts(model64, torch.zeros(2, 4, dtype=torch.float64), sigma=1.0, n=20, seed=0)
    assert model64.inputs[-1].dtype == torch.float64


def test_read_only_numpy_input_is_accepted():
    x = np.zeros((2, 3), dtype=np.float32)
    x.setflags(write=False)
    counts = tc.sample_counts(IntervalClassifier(THRESHOLDS), x, sigma=1.0, n=10, seed=0)
    assert counts.shape == (2, 5)


def test_image_shaped_inputs_and_a_function_as_model():
    def model(z):  # no parameters: the CPU
        return z.mean(dim=(2, 3))

    x = torch.zeros(3, 4, 5, 5)
    x[:, 2] = 1.0
    counts = tc.sample_counts(model, x, sigma=0.1, n=100, batch_size=64, seed=0)
    assert counts.shape == (3, 4) and (counts[:, 2] == 100).all()


def test_num_classes_must_be_the_model_width():
    counts = tc.sample_counts(IntervalClassifier(THRESHOLDS), _x(2), sigma=1.0, n=10, num_classes=5)
    assert counts.shape == (2, 5) and (counts.sum(1) == 10).all()
    # Wider counts would hold classes the model never outputs (and prediction would name them).
    with pytest.raises(ValueError, match="num_classes=9 is larger than the model's output width 5"):
        tc.sample_counts(IntervalClassifier(THRESHOLDS), _x(2), sigma=1.0, n=10, num_classes=9)
    with pytest.raises(ValueError, match="num_classes=9 is larger"):
        tc.certify_batch(IntervalClassifier(THRESHOLDS), _x(2), k=1, sigma=1.0, n=10, n0=5, num_classes=9)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_noise_is_drawn_on_the_device_and_does_not_depend_on_grouping():
    model = IntervalClassifier(THRESHOLDS).cuda()
    recorder = Recorder(model, keep_inputs=True)
    x = _x(6)  # on the host: moved
    full = tc.sample_counts(recorder, x, sigma=0.5, n=300, batch_size=128, seed=1)
    assert recorder.inputs[0].device.type == "cuda"
    part = tc.sample_counts(model, x[[4, 2]], sigma=0.5, n=300, batch_size=128, seed=1, indices=[4, 2])
    assert np.array_equal(part, full[[4, 2]])
    explicit = tc.sample_counts(model, x, sigma=0.5, n=300, batch_size=128, seed=1, device="cuda")
    assert np.array_equal(explicit, full)

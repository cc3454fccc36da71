"""Bad input to sample_counts / certify_batch: a clear ValueError or TypeError, early.

"Up front" errors are checked with a recording model that must not have run at all; errors
that need the model's output (its shape, its width when num_classes is not given) come after
the first forward pass, before any other.
"""

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


def _model():
    return Recorder(IntervalClassifier([-0.5, 0.0, 0.5]))  # 4 classes


X = torch.zeros(3, 2)
OK = dict(sigma=0.5, n=100, batch_size=50, seed=0)


def _with(**changes):
    return {**OK, **changes}


UP_FRONT = [
    # (arguments of certify_batch, error type, message pattern)
    (dict(sigma=0.0), ValueError, "sigma"),
    (dict(sigma=-1.0), ValueError, "sigma"),
    (dict(sigma=float("nan")), ValueError, "sigma"),
    (dict(sigma=float("inf")), ValueError, "sigma"),
    (dict(sigma="0.5"), TypeError, "sigma"),
    (dict(n=0), ValueError, "n must be at least 1"),
    (dict(n=10.0), TypeError, "n must be an int"),
    (dict(batch_size=0), ValueError, "batch_size"),
    (dict(batch_size=True), TypeError, "batch_size"),
    (dict(alpha=0.0), ValueError, "alpha"),
    (dict(alpha=1.0), ValueError, "alpha"),
    (dict(bound="cohen"), ValueError, "bound"),
    (dict(k=0), ValueError, "k"),
    (dict(k=[]), TypeError, "k"),
    (dict(k=1.5), TypeError, "k"),
    (dict(k=4, num_classes=4), ValueError, "k must be < the number of classes"),
    (dict(k=(1, 5), num_classes=4), ValueError, "k must be < the number of classes"),
    (dict(num_classes=0), ValueError, "num_classes"),
    (dict(seed=-1), ValueError, "seed"),
    (dict(seed=1.0), TypeError, "seed"),
    (dict(indices=[0, 1]), ValueError, "indices"),
    (dict(indices=[0, -1, 2]), ValueError, "indices"),
    (dict(progress="yes"), TypeError, "progress"),
    (dict(device="meta"), ValueError, "move the model"),
]


@pytest.mark.parametrize("changes, error, match", UP_FRONT)
def test_bad_arguments_are_refused_before_sampling(changes, error, match):
    model = _model()
    with pytest.raises(error, match=match):
        tc.certify_batch(model, X, [0, 1, 2], **_with(**changes))
    assert model.sizes == []


@pytest.mark.parametrize(
    "changes, error, match",
    [(dict(n0=0), ValueError, "n0"), (dict(n0=2.5), TypeError, "n0")],
)
def test_bad_n0_is_refused_in_both_modes(changes, error, match):
    """n0 is used only in prediction mode, but a bad one is a mistake in either mode."""
    model = _model()
    for labels in (None, [0, 1, 2]):
        with pytest.raises(error, match=match):
            tc.certify_batch(model, X, labels, **_with(**changes))
    assert model.sizes == []


@pytest.mark.parametrize(
    "changes, error, match",
    [
        (dict(sigma=0), ValueError, "sigma"),
        (dict(n=-5), ValueError, "n must be"),
        (dict(batch_size=0), ValueError, "batch_size"),
        (dict(num_classes=2.0), TypeError, "num_classes"),
        (dict(device="meta"), ValueError, "move the model"),
    ],
)
def test_sample_counts_bad_arguments(changes, error, match):
    model = _model()
    with pytest.raises(error, match=match):
        tc.sample_counts(model, X, **_with(**changes))
    assert model.sizes == []


@pytest.mark.parametrize(
    "x, error, match",
    [
        (torch.tensor(1.0), ValueError, "batch dimension"),
        (torch.zeros(0, 2), ValueError, "no examples"),
        ([[0.0, 0.0]], TypeError, "torch.Tensor or a numpy.ndarray"),
        (torch.zeros(2, 2, dtype=torch.int64), TypeError, "floating"),
        (np.zeros((2, 2), dtype=np.uint8), TypeError, "floating"),
    ],
)
def test_bad_x(x, error, match):
    model = _model()
    with pytest.raises(error, match=match):
        tc.certify_batch(model, x, **OK)
    with pytest.raises(error, match=match):
        tc.sample_counts(model, x, **OK)
    assert model.sizes == []


@pytest.mark.parametrize(
    "labels, error, match",
    [
        ([0, 1], ValueError, r"shape \(3,\)"),
        ([[0, 1, 2]], ValueError, r"shape \(3,\)"),
        ([0, -1, 2], ValueError, "non-negative"),
        ([0.5, 1, 2], ValueError, "integers"),
        (["a", "b", "c"], TypeError, "integers"),
    ],
)
def test_bad_labels_up_front(labels, error, match):
    model = _model()
    with pytest.raises(error, match=match):
        tc.certify_batch(model, X, labels, **OK)
    assert model.sizes == []


def test_labels_out_of_range():
    model = _model()
    with pytest.raises(ValueError, match=r"labels\[1\] = 4"):
        tc.certify_batch(model, X, [0, 4, 1], num_classes=4, **OK)
    assert model.sizes == []  # num_classes given: checked up front
    with pytest.raises(ValueError, match=r"labels\[1\] = 4"):
        tc.certify_batch(model, X, [0, 4, 1], **OK)
    assert model.sizes == [50]  # the output width is known after one forward pass


def test_k_at_least_the_model_width_after_one_forward_pass():
    model = _model()
    with pytest.raises(ValueError, match="k must be < the number of classes"):
        tc.certify_batch(model, X, k=4, **OK)
    assert model.sizes == [50]


def test_num_classes_below_the_model_width():
    model = _model()
    with pytest.raises(ValueError, match="num_classes=3 is smaller than the model's output"):
        tc.sample_counts(model, X, num_classes=3, **OK)
    assert model.sizes == [50]


@pytest.mark.parametrize(
    "output, error, match",
    [
        (lambda z: z[:, 0], ValueError, r"shape \(batch, num_classes\).*returned shape \(50,\)"),
        (lambda z: z[:1], ValueError, r"returned shape \(1, 2\)"),
        (lambda z: (z, z), TypeError, "returned a tuple"),
        (lambda z: z[:, :0], ValueError, r"returned shape \(50, 0\)"),
        (lambda z: z.reshape(z.shape[0], 1, -1), ValueError, r"returned shape \(50, 1, 2\)"),
    ],
)
def test_model_output_not_batch_by_classes(output, error, match):
    calls = []

    def model(z):
        calls.append(z.shape[0])
        return output(z)

    with pytest.raises(error, match=match):
        tc.certify_batch(model, X, [0, 1, 0], **OK)
    assert calls == [50]  # found on the first forward pass


def test_non_finite_outputs_name_the_example():
    def model(z):
        logits = torch.stack([z[:, 0], -z[:, 0]], dim=1)
        logits[z[:, 1] > 50] = float("nan")
        return logits

    x = torch.zeros(5, 2)
    x[3, 1] = 100.0
    with pytest.raises(ValueError, match="NaN or infinite on 100 noisy sample.* example 3"):
        tc.certify_batch(model, x, [0] * 5, **OK)
    with pytest.raises(ValueError, match=r"example 0 \(index 3\)"):
        tc.sample_counts(model, x[3:4], indices=[3], **OK)

    def infinite(z):
        logits = torch.zeros(z.shape[0], 3)
        logits[0, 1] = float("inf")
        return logits

    with pytest.raises(ValueError, match="NaN or infinite"):
        tc.sample_counts(infinite, X, **OK)


def test_model_not_callable():
    with pytest.raises(TypeError, match="callable"):
        tc.sample_counts("resnet", X, **OK)


def test_the_package_imports_without_torch_and_says_what_is_missing():
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import topk_certify as tc\n"
        "assert tc.certify_counts([[5, 1]], [0], k=1, sigma=1.0) >= 0\n"
        "try:\n"
        "    tc.sample_counts(None, None, sigma=1.0, n=1)\n"
        "except ImportError as error:\n"
        "    assert 'topk-certify[torch]' in str(error), error\n"
        "else:\n"
        "    raise AssertionError('no ImportError')\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_input_dtype_other_than_the_models_says_so():
    # float64 data into a float32 model fails in its first layer: a TypeError that says
    # which dtypes met, not torch's bare "mat1 and mat2 must have the same dtype".
    model = torch.nn.Linear(2, 3)
    with pytest.raises(TypeError, match=r"x is float64 but the model's parameters are float32"):
        tc.certify_batch(model, torch.zeros(2, 2, dtype=torch.float64), [0, 1], **OK)
    # The same data as a numpy array is converted to the model's dtype and runs.
    result = tc.certify_batch(model, np.zeros((2, 2)), [0, 1], **OK)
    assert result.counts.sum(axis=1).tolist() == [100, 100]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_device_without_a_gpu_is_a_value_error():
    with pytest.raises(ValueError, match="no CUDA GPU"):
        tc.sample_counts(_model(), X, device="cuda", **OK)
    with pytest.raises(ValueError, match="device must be"):
        tc.sample_counts(_model(), X, device="gpu", **OK)

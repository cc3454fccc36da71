"""The model's inference form (smoothing/inference.py): BatchNorm folding, channels_last,
reduced precision and compilation, each checked against the module as given."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import topk_certify  # noqa: E402
from topk_certify.settings import CertifySettings  # noqa: E402
from topk_certify.smoothing import inference  # noqa: E402
from topk_certify.smoothing import sampler as _sampler  # noqa: E402


@pytest.fixture(autouse=True)
def _fresh_cache():
    inference.clear_cache()
    yield
    inference.clear_cache()


def _randomize_batchnorms(model: nn.Module, seed: int = 0) -> nn.Module:
    """Running statistics and affine parameters far from the identity, as after training."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                shape = m.running_mean.shape
                m.running_mean.copy_(torch.rand(shape, generator=generator) - 0.5)
                m.running_var.copy_(torch.rand(shape, generator=generator) * 2 + 0.2)
                if m.affine:
                    m.weight.copy_(torch.rand(shape, generator=generator) + 0.5)
                    m.bias.copy_(torch.rand(shape, generator=generator) - 0.5)
    return model


class ConvBN(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8 * 6 * 6, 5)

    def forward(self, x):
        return self.fc(torch.relu(self.bn(self.conv(x))).flatten(1))


class LinearBN(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.fc1 = nn.Linear(12, 16, bias=False)
        self.bn = nn.BatchNorm1d(16)
        self.fc2 = nn.Linear(16, 4)

    def forward(self, x):
        return self.fc2(torch.relu(self.bn(self.fc1(x))))


class LeadingBN(nn.Module):
    """A BatchNorm on the input itself (nothing before it to fold into), then one after a ReLU."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(2)
        self.bn0 = nn.BatchNorm2d(3)
        self.conv = nn.Conv2d(3, 6, 3)
        self.bn1 = nn.BatchNorm2d(6)
        self.fc = nn.Linear(6 * 4 * 4, 3)

    def forward(self, x):
        return self.fc(self.bn1(torch.relu(self.conv(self.bn0(x)))).flatten(1))


def _settings(**keywords):
    keywords.setdefault("batch_size", 64)
    return CertifySettings.build(sigma=0.5, n=keywords.pop("n", 256), **keywords)


def _logits(model, batch):
    training = model.training
    model.eval()
    with torch.inference_mode():
        out = model(batch)
    model.train(training)
    return out


CASES = [
    (ConvBN, (3, 6, 6), 1, 0),  # (model, input shape, BatchNorms folded, BatchNorms left)
    (LinearBN, (12,), 1, 0),
    (LeadingBN, (3, 6, 6), 0, 2),
]


@pytest.mark.parametrize("make, shape, folded, left", CASES)
def test_the_inference_form_gives_the_modules_logits(make, shape, folded, left):
    model = _randomize_batchnorms(make())
    x = torch.rand(4, *shape)
    form = inference.inference_form(model, x)
    assert form is not None  # folded, or channels_last for the 4-D convolution

    def norms(m):
        return [b for b in m.modules() if isinstance(b, nn.modules.batchnorm._BatchNorm)]

    assert (len(norms(form)), len(norms(model))) == (left, folded + left)
    runner = inference.runner_for(model, x, _settings())
    assert isinstance(runner, inference.Runner) and runner.core is not model
    batch = inference.probe_batch(x, 0.5, 50)
    expected = _logits(model, batch)
    with torch.inference_mode():
        got = runner(batch)
    scale = expected.abs().max()
    assert float((got - expected).abs().max() / scale) < 1e-5
    assert torch.equal(got.argmax(1), expected.argmax(1))


def test_a_linear_layer_on_a_sequence_is_not_folded_into_the_batchnorm_of_another_axis():
    # BatchNorm1d on (N, L, F) normalizes the L axis, not the linear layer's F outputs.
    class Sequence(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(5, 5)
            self.bn = nn.BatchNorm1d(5)

        def forward(self, x):
            return self.bn(self.fc(x)).sum(2)

    model = _randomize_batchnorms(Sequence())
    x = torch.rand(3, 5, 5)
    assert inference.inference_form(model, x) is None


def test_the_users_module_is_untouched():
    model = _randomize_batchnorms(ConvBN())
    model.train()
    model.fc.eval()  # a mix of flags, each restored
    state = {k: v.clone() for k, v in model.state_dict().items()}
    attributes = dict(vars(model))
    x = torch.rand(5, 3, 6, 6)
    topk_certify.certify_batch(model, x, [0, 1, 2, 3, 4], sigma=0.5, n=200, batch_size=64, seed=1)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert all(
        p.is_contiguous() and not p.is_contiguous(memory_format=torch.channels_last)
        for p in model.parameters()
        if p.ndim == 4
    )
    assert [m.training for m in model.modules()] == [True, True, True, False]
    assert vars(model).keys() == attributes.keys() and all(vars(model)[k] is v for k, v in attributes.items())


class CountingConvBN(ConvBN):
    """Counts the rows it sees in an attribute: a traced copy would not."""

    def __init__(self):
        super().__init__()
        self.rows = 0

    def forward(self, x):
        self.rows += x.shape[0]
        return super().forward(x)


def test_a_module_that_counts_its_calls_runs_as_given_and_counts_every_row():
    model = _randomize_batchnorms(CountingConvBN())
    x = torch.rand(3, 3, 6, 6)
    assert inference.inference_form(model, x) is None
    result = topk_certify.certify_batch(model, x, [0, 1, 2], sigma=0.5, n=300, batch_size=128, seed=0)
    assert model.rows == 3 * 300
    assert result.counts.sum() == 3 * 300


class Branchy(ConvBN):
    def forward(self, x):
        if x.sum() > 0:  # data-dependent control flow: symbolic tracing fails
            return super().forward(x)
        return super().forward(-x)


def test_a_model_that_cannot_be_traced_runs_as_given():
    model = _randomize_batchnorms(Branchy())
    x = torch.rand(4, 3, 6, 6)
    assert inference.inference_form(model, x) is None
    runner = inference.runner_for(model, x, _settings())
    assert runner is model
    optimized = topk_certify.certify_batch(model, x, [0, 1, 2, 3], sigma=0.5, n=200, batch_size=64, seed=3)
    plain = topk_certify.certify_batch(model, x, [0, 1, 2, 3], sigma=0.5, n=200, batch_size=64, seed=3, optimize=False)
    np.testing.assert_array_equal(optimized.counts, plain.counts)


def test_hooks_torchscript_and_plain_callables_run_as_given():
    x = torch.rand(2, 3, 6, 6)
    hooked = _randomize_batchnorms(ConvBN())
    seen = []
    hooked.bn.register_forward_hook(lambda module, args, out: seen.append(out.shape[0]))
    assert inference.inference_form(hooked, x) is None
    topk_certify.certify_batch(hooked, x, [0, 1], sigma=0.5, n=100, batch_size=64, seed=0)
    assert sum(seen) == 2 * 100  # the hook saw every row (no probe: the module runs as given)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # recent torch deprecates TorchScript
        scripted = torch.jit.script(_randomize_batchnorms(ConvBN()))
    assert inference.inference_form(scripted, x) is None
    assert inference.inference_form(lambda z: z.flatten(1)[:, :3], x) is None


def test_nothing_to_fold_and_no_4d_convolution_is_not_copied():
    model = nn.Sequential(nn.Linear(12, 8), nn.ReLU(), nn.Linear(8, 3))
    x = torch.rand(2, 12)
    assert inference.inference_form(model, x) is None
    assert inference.runner_for(model, x, _settings()) is model


class LayoutSensitive(ConvBN):
    """Its logits depend on the memory format of its input, which the inference form changes."""

    def __init__(self):
        super().__init__()
        self.register_buffer("shift", torch.tensor([0.0, 0.0, 0.0, 0.0, 1e3]))

    def forward(self, x):
        return super().forward(x) + self.shift * (x.stride(1) == 1)


def test_the_probe_falls_back_to_the_module_as_given_and_warns_once():
    model = _randomize_batchnorms(LayoutSensitive())
    x = torch.rand(4, 3, 6, 6)
    labels = [0, 1, 2, 3]
    with pytest.warns(inference.OptimizeFallbackWarning, match="label 4 instead of"):
        optimized = topk_certify.certify_batch(model, x, labels, sigma=0.5, n=200, batch_size=64, seed=5)
    plain = topk_certify.certify_batch(model, x, labels, sigma=0.5, n=200, batch_size=64, seed=5, optimize=False)
    np.testing.assert_array_equal(optimized.counts, plain.counts)
    again = topk_certify.certify_batch(model, x, labels, sigma=0.5, n=200, batch_size=64, seed=5)  # no warning
    np.testing.assert_array_equal(again.counts, plain.counts)


def test_a_logit_beyond_the_tolerance_falls_back_even_with_equal_labels():
    class Shifted(LayoutSensitive):
        def __init__(self):
            super().__init__()
            self.shift.fill_(0.5)  # every logit moves by the same amount: labels stay

    model = _randomize_batchnorms(Shifted())
    x = torch.rand(2, 3, 6, 6)
    with pytest.warns(inference.OptimizeFallbackWarning, match="a logit off by"):
        runner = inference.runner_for(model, x, _settings())
    assert runner is model


def _bare_counts(model, x, seed, n, batch_size, sigma):
    """Today's sampling written out: each example's stream in blocks of batch_size (n a
    multiple of it, so that blocks are the forward batches), x + noise, argmax."""
    counts = []
    model.eval()
    with torch.inference_mode():
        for e in range(x.shape[0]):
            generator = torch.Generator().manual_seed(_sampler.stream_seed(seed, e, _sampler.ESTIMATE))
            labels = []
            for _ in range(n // batch_size):
                block = torch.empty(batch_size, *x.shape[1:]).normal_(0.0, sigma, generator=generator)
                labels.append(model(block.add_(x[e])).argmax(1))
            counts.append(torch.bincount(torch.cat(labels), minlength=5).numpy())
    return np.stack(counts)


def test_seeded_results_with_optimize_false_equal_todays():
    model = _randomize_batchnorms(ConvBN())
    x = torch.rand(3, 3, 6, 6)
    result = topk_certify.certify_batch(model, x, [0, 1, 2], sigma=0.5, n=256, batch_size=64, seed=11, optimize=False)
    np.testing.assert_array_equal(result.counts, _bare_counts(model, x, 11, 256, 64, 0.5))
    counts = topk_certify.sample_counts(model, x, sigma=0.5, n=256, batch_size=64, seed=11, optimize=False)
    np.testing.assert_array_equal(counts, result.counts)


def test_the_default_keeps_the_labels_of_a_cohen_architecture():
    from topk_certify.models.architectures import build_model

    model = _randomize_batchnorms(build_model("cifar_resnet20"), seed=4)
    x = torch.rand(2, 3, 32, 32)
    runner = inference.runner_for(model, x, _settings(batch_size=100))
    assert isinstance(runner.core, torch.fx.GraphModule) and runner.channels_last
    assert not [m for m in runner.core.modules() if isinstance(m, nn.BatchNorm2d)]  # all 19 folded
    kw = dict(sigma=0.25, n=300, batch_size=100, seed=2)
    optimized = topk_certify.sample_counts(model, x, **kw)
    plain = topk_certify.sample_counts(model, x, optimize=False, **kw)
    np.testing.assert_array_equal(optimized, plain)


def test_slices_on_the_cpu_hold_the_rows_whose_largest_activation_fits_the_budget():
    from topk_certify.models.architectures import build_model

    x = torch.rand(1, 3, 32, 32)
    form = inference.inference_form(_randomize_batchnorms(build_model("cifar_resnet20")), x)
    per_row = 16 * 32 * 32 * 4  # its widest activation: 16 channels of 32 x 32 in float32
    assert inference.slice_rows(form) == inference.CPU_SLICE_BYTES // per_row == 64
    wide = nn.Sequential(nn.Conv2d(3, 64, 3), nn.BatchNorm2d(64), nn.Flatten(), nn.LazyLinear(2))
    wide(torch.rand(1, 3, 224, 224))  # 12.6 MB per row: fewer than one row fits, 8 is the floor
    form = inference.inference_form(_randomize_batchnorms(wide.eval()), torch.rand(1, 3, 224, 224))
    assert inference.slice_rows(form) == inference.CPU_SLICE_MIN_ROWS == 8


class TwoOutputs(ConvBN):
    def forward(self, x):
        features = torch.relu(self.bn(self.conv(x))).flatten(1)
        return self.fc(features), features


def test_a_form_whose_output_is_not_one_tensor_of_rows_is_not_sliced():
    x = torch.rand(2, 3, 6, 6)
    form = inference.inference_form(_randomize_batchnorms(TwoOutputs()), x)
    assert form is not None and inference.slice_rows(form) is None


def test_sliced_cpu_batches_give_the_counts_of_whole_batches(monkeypatch):
    monkeypatch.setattr(inference, "CPU_SLICE_BYTES", 20 * 8 * 6 * 6 * 4)  # 20 rows of ConvBN's widest
    model = _randomize_batchnorms(ConvBN())
    x = torch.rand(3, 3, 6, 6)
    runner = inference.runner_for(model, x, _settings(batch_size=100))
    assert runner.slice_rows == 20
    seen = []
    core = runner.core
    monkeypatch.setattr(runner, "core", lambda batch: seen.append(batch.shape[0]) or core(batch))
    kw = dict(sigma=0.5, n=250, batch_size=100, seed=4)
    sliced = topk_certify.sample_counts(model, x, **kw)
    assert max(seen) == 20 and sum(seen) == 3 * 250
    np.testing.assert_array_equal(sliced, topk_certify.sample_counts(model, x, optimize=False, **kw))


class BatchCentred(ConvBN):
    """Its rows depend on the rest of their batch (logits centred on the batch's mean)."""

    def forward(self, x):
        logits = super().forward(x)
        return logits - 3 * logits.mean(0, keepdim=True)


def test_a_model_whose_rows_depend_on_their_batch_fails_the_probe_of_slices(monkeypatch):
    monkeypatch.setattr(inference, "CPU_SLICE_BYTES", 1)  # 8-row slices of the probe's 32 rows
    model = _randomize_batchnorms(BatchCentred())
    x = torch.rand(4, 3, 6, 6)
    with pytest.warns(inference.OptimizeFallbackWarning, match="probe batch"):
        runner = inference.runner_for(model, x, _settings())
    assert runner is model


def test_a_later_call_reuses_the_form_until_the_module_changes():
    model = _randomize_batchnorms(ConvBN())
    x = torch.rand(2, 3, 6, 6)
    first = inference.runner_for(model, x, _settings())
    assert inference.runner_for(model, x, _settings()) is first
    assert inference.runner_for(model, x, _settings(batch_size=32)) is first  # no compile: the shape is free
    in_bf16 = inference.runner_for(model, x, _settings(precision="bf16"))
    assert in_bf16 is not first and inference.runner_for(model, x, _settings()) is first  # one form per setting
    with torch.no_grad():
        model.bn.running_mean.data.add_(1.0)  # through .data: the version counter does not move
    second = inference.runner_for(model, x, _settings())
    assert second is not first
    batch = inference.probe_batch(x, 0.5, 20)
    with torch.inference_mode():
        got = second(batch)
    expected = _logits(model, batch)
    assert float((got - expected).abs().max() / expected.abs().max()) < 1e-5
    model.scale = 2.0  # any attribute
    assert inference.runner_for(model, x, _settings()) is not second


def test_precision_and_compile_are_refused_where_they_cannot_run(monkeypatch, tmp_path):
    model = ConvBN()
    x = torch.rand(2, 3, 6, 6)
    with pytest.raises(ValueError, match='precision="fp16" is not supported on the CPU'):
        topk_certify.certify_batch(model, x, [0, 1], sigma=0.5, n=10, precision="fp16")
    with pytest.raises(ValueError, match="precision must be one of"):
        topk_certify.sample_counts(model, x, sigma=0.5, n=10, precision="fp64")
    with pytest.raises(TypeError, match="precision must be a str"):
        topk_certify.sample_counts(model, x, sigma=0.5, n=10, precision=16)
    for name in ("optimize", "compile"):
        with pytest.raises(TypeError, match=f"{name} must be a bool"):
            topk_certify.sample_counts(model, x, sigma=0.5, n=10, **{name: 1})
    monkeypatch.setenv("PATH", str(tmp_path))  # no C++ compiler for the CPU backend
    monkeypatch.delenv("CXX", raising=False)
    with pytest.raises(ValueError, match="compile=True cannot run here: torch.compile needs a C\\+\\+ compiler"):
        topk_certify.sample_counts(model, x, sigma=0.5, n=10, compile=True)


def test_bf16_runs_the_model_under_autocast_and_returns_float32_logits():
    model = _randomize_batchnorms(ConvBN())
    x = torch.rand(2, 3, 6, 6)
    runner = inference.runner_for(model, x, _settings(precision="bf16"))
    with torch.inference_mode():
        out = runner(inference.probe_batch(x, 0.5, 7))
    assert out.dtype == torch.float32 and out.shape == (7, 5)
    counts = topk_certify.sample_counts(model, x, sigma=0.5, n=100, batch_size=64, seed=0, precision="bf16")
    assert counts.sum(1).tolist() == [100, 100]


def test_compile_pads_every_batch_to_one_shape_and_counts_only_real_rows(monkeypatch):
    shapes = []

    def fake_compile(core, mode=None, dynamic=None):
        assert dynamic is False and mode is None  # the CPU: no CUDA graphs

        def compiled(batch):
            shapes.append(tuple(batch.shape))
            return core(batch)

        return compiled

    monkeypatch.setattr(torch, "compile", fake_compile)
    monkeypatch.setattr(inference, "CPU_SLICE_BYTES", 1)  # slices would be of 8 rows: compiled, none
    model = _randomize_batchnorms(ConvBN())
    x = torch.rand(3, 3, 6, 6)
    kw = dict(sigma=0.5, n=150, batch_size=64, seed=9)
    compiled = topk_certify.sample_counts(model, x, compile=True, **kw)  # 450 rows: 7 full batches and 2 rows
    assert set(shapes) == {(64, 3, 6, 6)}
    assert len(shapes) == 1 + 8  # the probe, then every batch
    np.testing.assert_array_equal(compiled, topk_certify.sample_counts(model, x, **kw))


def test_the_command_line_takes_the_flags_and_warns_in_one_line(tmp_path):
    models = tmp_path / "models.py"
    models.write_text(
        "import torch\n"
        f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "from test_inference import LayoutSensitive, _randomize_batchnorms\n"
        "def layout():\n    return _randomize_batchnorms(LayoutSensitive())\n"
    )
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.random((3, 3, 6, 6), dtype=np.float32), y=np.array([0, 1, 2]))
    base = ["-m", "topk_certify", "certify", "--model", f"{models}:layout", "--data", tmp_path / "d.npz"]
    base += ["--sigma", "0.5", "--k", "1", "--n", "100", "--seed", "0", "--no-progress"]
    run = [sys.executable, *map(str, base)]
    refused = subprocess.run([*run, "-o", tmp_path / "a.tsv", "--precision", "fp16"], capture_output=True, text=True)
    assert refused.returncode != 0 and not (tmp_path / "a.tsv").exists()
    assert refused.stderr.strip().count("\n") == 0 and "--precision fp16 is not supported on the CPU" in refused.stderr
    warned = subprocess.run([*run, "-o", tmp_path / "b.tsv"], capture_output=True, text=True)
    assert warned.returncode == 0, warned.stderr
    lines = warned.stderr.strip().splitlines()
    assert len(lines) == 1 and "warning: the optimized form of the model disagrees" in lines[0]
    plain = subprocess.run([*run, "-o", tmp_path / "c.tsv", "--no-optimize"], capture_output=True, text=True)
    assert plain.returncode == 0 and plain.stderr == ""

    def rows(name):
        return [line.split("\t")[:-1] for line in (tmp_path / name).read_text().splitlines()]

    assert rows("b.tsv") == rows("c.tsv")


def test_a_resume_with_other_inference_settings_is_refused(tmp_path):
    rng = np.random.default_rng(1)
    np.savez(tmp_path / "d.npz", x=rng.normal(size=(4, 1, 4, 4)).astype(np.float32), y=np.array([0, 1, 2, 3]))
    model = str(Path(__file__).parent / "cli_models.py") + ":linear"
    base = [sys.executable, "-m", "topk_certify", "certify", "--model", model, "--data", str(tmp_path / "d.npz")]
    base += ["--sigma", "0.5", "--k", "1", "--n", "100", "--seed", "0", "--no-progress", "-o", str(tmp_path / "o.tsv")]
    assert subprocess.run(base, capture_output=True).returncode == 0
    before = (tmp_path / "o.tsv").read_bytes()
    for flags, name in ((["--no-optimize"], "optimize"), (["--precision", "bf16"], "precision")):
        run = subprocess.run([*base, "--resume", *flags], capture_output=True, text=True)
        assert run.returncode == 2 and "other settings" in run.stderr and f"({name}:" in run.stderr, run.stderr
        assert (tmp_path / "o.tsv").read_bytes() == before
    assert subprocess.run([*base, "--resume"], capture_output=True).returncode == 0  # the same settings go on


def test_after_an_out_of_memory_error_the_halves_of_a_compiled_batch_run_uncompiled(monkeypatch):
    calls = []

    def fake_compile(core, mode=None, dynamic=None):
        def compiled(batch):
            calls.append(batch.shape[0])
            if len(calls) == 2:  # the first batch after the probe
                raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
            return core(batch)

        return compiled

    monkeypatch.setattr(torch, "compile", fake_compile)
    model = _randomize_batchnorms(ConvBN())
    x = torch.rand(2, 3, 6, 6)
    runner = inference.runner_for(model, x, _settings(compile=True))
    batch = inference.probe_batch(x, 0.5, 64)
    with torch.inference_mode():
        with pytest.raises(torch.OutOfMemoryError):
            runner(batch)
        halves = torch.cat([runner(batch[:32]), runner(batch[32:])])  # as the sampler retries
        whole = runner(batch)  # the full batch is compiled again
    assert calls == [64, 64, 64]
    expected = _logits(model, batch)
    for out in (halves, whole):
        assert float((out - expected).abs().max() / expected.abs().max()) < 1e-5

"""What runs differently on a GPU, checked on the CPU with stand-ins: where the host copy of
the counts is waited for, the counts' sum invariant, noise for half-precision inputs, the
torchrun backend, memory of adaptive runs, out-of-memory retries and models that are odd
about their device."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import topk_certify as tc
from test_smoothing_models import (
    IntervalClassifier,
    Recorder,
    one_torch_thread,  # noqa: F401 (autouse fixture)
)
from topk_certify import distributed
from topk_certify.smoothing import forward as _forward
from topk_certify.smoothing import sampler as _sampler

HERE = Path(__file__).resolve().parent
THRESHOLDS = [-1.0, -0.3, 0.2, 0.9]


def _x(num, dims=5, seed=0):
    return torch.randn(num, dims, generator=torch.Generator().manual_seed(seed))


# -- the host copy of the counts ------------------------------------------------------------


class _FakeCuda:
    """Records which stream each event is recorded on; the current device is cuda:0."""

    def __init__(self):
        self.recorded = []
        fake = self

        class Event:
            def record(self, stream=None):
                fake.recorded.append(stream)

        self.Event = Event

    @staticmethod
    def current_device():
        return 0

    @staticmethod
    def current_stream(device=None):
        index = 0 if device is None else torch.device(device).index
        return ("stream of cuda", index)


class _CountsOnGpu:
    """Stands in for a counts tensor on cuda:1."""

    device = torch.device("cuda", 1)

    def __init__(self):
        self.copies = []

    def to(self, where, non_blocking=False):
        self.copies.append((where, non_blocking))
        return "host copy"


def test_the_copy_event_is_recorded_on_the_stream_of_the_gpu_holding_the_counts():
    cuda, counts = _FakeCuda(), _CountsOnGpu()
    host, event = _sampler.copy_to_host(counts, cuda=cuda)
    assert host == "host copy" and counts.copies == [("cpu", True)]
    # cuda:1's stream, not the current device's (an event there would not wait for the copy).
    assert cuda.recorded == [("stream of cuda", 1)]
    assert event is not None


def test_a_cpu_copy_needs_no_event():
    counts = torch.arange(6).reshape(2, 3)
    host, event = _sampler.copy_to_host(counts, cuda=_FakeCuda())
    assert event is None and torch.equal(host, counts)


# -- the counts add up to the samples drawn ---------------------------------------------------


@pytest.mark.parametrize("column", [0, -1])
def test_a_corrupted_counts_row_is_an_internal_error_never_a_certificate(monkeypatch, column):
    real = _sampler.copy_to_host

    def corrupting(counts, cuda=None):
        host, event = real(counts, cuda)
        host = host.clone()
        host[0, column] += 1  # one label counted twice (or a non-finite sample too many)
        return host, event

    monkeypatch.setattr(_sampler, "copy_to_host", corrupting)
    with pytest.raises(_sampler.CountsInvariantError, match="add up to 51 but 50 samples were drawn"):
        tc.certify_batch(IntervalClassifier(THRESHOLDS), _x(3), [0, 1, 2], sigma=0.5, n=50, seed=0)


def test_counts_that_add_up_pass_the_invariant_on_both_counting_paths():
    for on_host in (True, False):
        sampler = _sampler.NoiseSampler(
            IntervalClassifier(THRESHOLDS),
            _x(4),
            sigma=0.5,
            batch_size=7,
            seed=0,
            indices=range(4),
            totals={_sampler.ESTIMATE: 30},
        )
        sampler.count_on_host = on_host
        with torch.inference_mode():
            rows = dict(sampler.run([(e, _sampler.ESTIMATE, m) for e, m in ((0, 30), (1, 3), (2, 11), (3, 30))]))
        assert [int(rows[t].sum()) for t in range(4)] == [30, 3, 11, 30]


# -- noise in float32 at least ------------------------------------------------------------------


def test_noise_for_a_bf16_input_is_drawn_in_float32_and_cast_once_before_the_model():
    x = _x(3).to(torch.bfloat16)
    half = Recorder(IntervalClassifier(THRESHOLDS).to(torch.bfloat16), keep_inputs=True)
    counts = tc.sample_counts(half, x, sigma=0.5, n=200, batch_size=64, seed=4)
    assert {t.dtype for t in half.inputs} == {torch.bfloat16}
    # The same points in float32: x (exact in float32) plus float32 noise, then rounded once.
    full = Recorder(IntervalClassifier(THRESHOLDS), keep_inputs=True)
    tc.sample_counts(full, x.float(), sigma=0.5, n=200, batch_size=64, seed=4)
    assert torch.equal(half.rows(), full.rows().to(torch.bfloat16))
    assert counts.sum() == 600


def test_a_numpy_input_to_a_bf16_model_is_not_rounded_before_the_noise():
    model = Recorder(IntervalClassifier(THRESHOLDS).to(torch.bfloat16), keep_inputs=True)
    x = np.full((1, 5), 0.1234567, dtype=np.float64)
    tc.sample_counts(model, x, sigma=0.5, n=50, batch_size=50, seed=0)
    reference = Recorder(IntervalClassifier(THRESHOLDS), keep_inputs=True)
    tc.sample_counts(reference, torch.from_numpy(x).float(), sigma=0.5, n=50, batch_size=50, seed=0)
    assert model.inputs[0].dtype == torch.bfloat16
    assert torch.equal(model.rows(), reference.rows().to(torch.bfloat16))


def test_seeded_float32_results_are_those_of_the_previous_sampler():
    # Pinned from the sampler before noise was drawn in float32 at least, before the
    # out-of-memory splitting and the one-call device counting: seeded results must not move.
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 7)
    )
    x = torch.rand(5, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    out = [tc.sample_counts(net, x, sigma=0.5, n=n, batch_size=bs, seed=11) for n, bs in [(300, 128), (37, 10)]]
    out.append(tc.sample_counts(net, x.numpy().astype(np.float64), sigma=0.25, n=200, batch_size=64, seed=3))
    assert out[0][0].tolist() == [113, 0, 101, 0, 0, 54, 32]
    digest = hashlib.sha256(b"".join(o.tobytes() for o in out)).hexdigest()
    assert digest == "93851aa79439842b8da5714bf80fcfc05def6efb18c0565da60497ed2870d847"


# -- torchrun: the backend follows the device ----------------------------------------------------


class _FakeDist:
    def __init__(self):
        self.calls = []

    def is_initialized(self):
        return False

    def init_process_group(self, backend, **kwargs):
        self.calls.append(("init", backend, sorted(kwargs)))

    def new_group(self, backend=None, **kwargs):
        self.calls.append(("new_group", backend))
        return "objects"

    def get_rank(self):
        return 0

    def get_world_size(self):
        return 2


@pytest.fixture()
def fake_torchrun(monkeypatch):
    fake = _FakeDist()
    for name in ("is_initialized", "init_process_group", "new_group", "get_rank", "get_world_size"):
        monkeypatch.setattr(torch.distributed, name, getattr(fake, name))
    set_devices = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_device", set_devices.append)
    monkeypatch.setenv("LOCAL_RANK", "3")
    return fake, set_devices


def test_torchrun_with_device_cpu_uses_gloo_and_never_sets_a_gpu(fake_torchrun):
    fake, set_devices = fake_torchrun
    ctx = distributed._Torchrun("cpu")
    assert ctx.device == torch.device("cpu")
    assert fake.calls[0][:2] == ("init", "gloo")
    assert set_devices == [] and ("new_group", "gloo") not in fake.calls


@pytest.mark.parametrize(
    "name, expected", [("auto", torch.device("cuda", 3)), ("cuda", torch.device("cuda", 3)), ("cuda:1", "cuda:1")]
)
def test_torchrun_on_gpus_uses_nccl_on_the_rank_device(fake_torchrun, name, expected):
    fake, set_devices = fake_torchrun
    ctx = distributed._Torchrun(name)
    assert ctx.device == torch.device(expected)
    assert fake.calls[0][:2] == ("init", "nccl")
    assert set_devices == [torch.device(expected)]
    assert ("new_group", "gloo") in fake.calls  # objects never travel through a GPU


def test_device_id_is_passed_only_where_torch_takes_it(fake_torchrun):
    fake, _ = fake_torchrun
    distributed._Torchrun("auto")
    takes_it = distributed._supports_device_id(torch)
    assert ("device_id" in fake.calls[0][2]) == takes_it


# -- memory of adaptive runs ---------------------------------------------------------------------


PEAK_RSS = """
import resource, sys, torch
import topk_certify as tc
torch.set_num_threads(1)
examples = int(sys.argv[1])
net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 10))
torch.nn.init.normal_(net[1].weight, std=0.01, generator=torch.Generator().manual_seed(0))
x = torch.rand(examples, 3, 32, 32, generator=torch.Generator().manual_seed(1))
tc.certify_batch(net, x, [0] * examples, k=1, sigma=0.25, n=3000, batch_size=1000, seed=0, adaptive=True)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def _peak_rss_mib(examples: int) -> float:
    done = subprocess.run([sys.executable, "-c", PEAK_RSS, str(examples)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return int(done.stdout.split()[-1]) / 1024


def test_adaptive_memory_does_not_grow_with_the_examples():
    # CIFAR-sized inputs at batch 1000: a block of noise is 12 MiB. Streams used to keep the
    # unused part of their block, so 60 examples in flight held hundreds of MiB more than 6.
    small, large = _peak_rss_mib(6), _peak_rss_mib(60)
    assert large - small < 60, (small, large)


def test_released_examples_free_their_streams_and_are_never_drawn_again():
    sampler = _sampler.NoiseSampler(
        IntervalClassifier(THRESHOLDS), _x(2), sigma=0.5, batch_size=64, seed=0, indices=[0, 1],
        totals={_sampler.ESTIMATE: 1000},
    )  # fmt: skip
    with torch.inference_mode():
        list(sampler.run([(0, _sampler.ESTIMATE, 10), (1, _sampler.ESTIMATE, 10)]))
        assert sampler.live_streams() == 2
        sampler.release(0)
        assert sampler.live_streams() == 1
        with pytest.raises(ValueError, match="has 0 left"):  # a fresh stream would repeat its noise
            list(sampler.run([(0, _sampler.ESTIMATE, 1)]))


# -- out of memory ---------------------------------------------------------------------------------


class OutOfMemoryAbove(torch.nn.Module):
    """IntervalClassifier that raises torch's OutOfMemoryError on batches above `limit` rows."""

    def __init__(self, limit):
        super().__init__()
        self.inner = IntervalClassifier(THRESHOLDS)
        self.limit = limit
        self.failures = 0

    def forward(self, z):
        if z.shape[0] > self.limit:
            self.failures += 1
            raise torch.OutOfMemoryError(f"out of memory: tried to allocate for {z.shape[0]} rows")
        return self.inner(z)


@pytest.mark.parametrize("n, batch_size", [(1000, 400), (90, 400), (401, 400)])
def test_out_of_memory_is_retried_in_halves_with_the_same_noise(n, batch_size):
    x = _x(7)
    labels = [0, 1, 2, 3, 4, 0, 1]
    tight = OutOfMemoryAbove(150)
    split = tc.certify_batch(tight, x, labels, k=(1, 2), sigma=0.6, n=n, batch_size=batch_size, seed=9)
    whole = tc.certify_batch(
        IntervalClassifier(THRESHOLDS), x, labels, k=(1, 2), sigma=0.6, n=n, batch_size=batch_size, seed=9
    )
    assert tight.failures > 0
    assert np.array_equal(split.counts, whole.counts)
    assert np.array_equal(split.radius, whole.radius)


def test_after_an_out_of_memory_the_size_that_worked_is_kept_then_grown_back():
    calls = []

    def model(z):
        calls.append(z.shape[0])
        if z.shape[0] > 100 and len(calls) < 4:
            raise torch.OutOfMemoryError("out of memory")
        return torch.zeros(z.shape[0], 3)

    run = _forward.SplittingForward(model, torch.device("cpu"), 400)
    run(torch.zeros(400, 2))
    assert calls == [400, 200, 100, 100, 100, 100]  # 400 and 200 failed; 4 pieces of 100
    calls.clear()
    for _ in range(_forward.GROW_BACK_AFTER):
        run(torch.zeros(400, 2))
    assert run.fit == 200  # after GROW_BACK_AFTER passes that fitted, twice the rows again
    assert run(torch.zeros(400, 2)).shape == (400, 3)


def test_out_of_memory_on_a_single_row_gives_up_with_one_clear_error():
    def model(z):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 80.00 GiB")

    with pytest.raises(_forward.OutOfMemoryOnOneRow, match="even for a single input.*batch_size"):
        tc.sample_counts(model, _x(1), sigma=0.5, n=10, batch_size=8, seed=0)


def test_the_command_line_survives_out_of_memory_with_the_rows_of_a_run_that_never_hit_it(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 1, 4, 4)).astype(np.float32)
    data = tmp_path / "data.npz"
    np.savez(data, x=x, y=np.arange(6) % 5)
    rows = {}
    for name in ("linear", "OutOfMemoryAbove150"):
        out = tmp_path / f"{name}.tsv"
        done = subprocess.run(
            [sys.executable, "-m", "topk_certify", "certify", "--model", f"{HERE / 'cli_models.py'}:{name}",
             "--data", str(data), "--sigma", "0.5", "--k", "1", "2", "--n", "300", "--batch-size", "400",
             "--seed", "0", "--device", "cpu", "--no-progress", "-o", str(out)],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        rows[name] = [line.split("\t")[:-1] for line in out.read_text().splitlines()]  # all but the time
    assert rows["linear"] == rows["OutOfMemoryAbove150"] and len(rows["linear"]) == 7


# -- models that are odd about their device ---------------------------------------------------------


def test_a_parameterless_callable_failing_on_the_device_says_to_pass_device():
    def wrapper(z):  # as a lambda around a model on a GPU fails on CPU inputs
        raise RuntimeError("Expected all tensors to be on the same device, but found cuda:0 and cpu!")

    with pytest.raises(ValueError, match="no parameters that tell its device, so pass device="):
        tc.sample_counts(wrapper, _x(2), sigma=0.5, n=10, seed=0)


def test_outputs_on_another_device_are_moved_to_the_counts():
    seen = []

    def model(z):
        out = torch.zeros(z.shape[0], 3)
        seen.append(out.device)
        return out

    run = _forward.SplittingForward(model, torch.device("meta"), 8)
    assert run(torch.zeros(4, 2)).device.type == "meta" and seen == [torch.device("cpu")]


def test_a_model_on_the_meta_device_is_refused_before_any_work():
    with torch.device("meta"):
        model = torch.nn.Linear(5, 3)
    with pytest.raises(ValueError, match="meta device.*load its weights"):
        tc.sample_counts(model, _x(2), sigma=0.5, n=10, seed=0)


def test_a_ddp_wrapped_model_is_refused_with_the_fix():
    wrapped = torch.nn.parallel.DistributedDataParallel.__new__(torch.nn.parallel.DistributedDataParallel)
    with pytest.raises(TypeError, match="pass model.module"):
        tc.sample_counts(wrapped, _x(2), sigma=0.5, n=10, seed=0)


def test_a_model_calling_sys_exit_in_forward_is_an_error_not_an_exit():
    def model(z):
        sys.exit(7)

    with pytest.raises(_forward.ModelExit, match=r"sys.exit\(7\)") as caught:
        tc.sample_counts(model, _x(2), sigma=0.5, n=10, batch_size=4, seed=0)
    assert caught.value.code == 7 and _sampler.model_failure_rows(caught.value) == 4


def test_the_output_width_is_checked_from_the_first_forward_pass():
    # The command line probes the width on one clean input and passes it as num_classes: a
    # model that then answers with another width is refused on its first batch already.
    def model(z):
        return torch.zeros(z.shape[0], 7)

    with pytest.raises(ValueError, match="num_classes=5 is smaller than the model's output width 7"):
        tc.sample_counts(model, _x(2), sigma=0.5, n=10, batch_size=10, seed=0, num_classes=5)

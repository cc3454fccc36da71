"""Samples per second of certify_batch against a Cohen-style sampling loop, on Cohen et al.'s
three architectures, for the ways of running the model (smoothing/inference.py).

    python benches/bench_throughput.py                     # CPU, all three, every variant
    python benches/bench_throughput.py --archs cifar_resnet110 --variants default bf16
    python benches/bench_throughput.py --device cuda --batch resnet50=400
    python benches/bench_throughput.py --cli               # also the whole certify command

The Cohen-style loop is their core.py's `_sample_noise`: per example, `x.repeat` to a batch,
`randn_like * sigma`, `model(batch + noise).argmax(1)`, counted on the host, under no_grad.
certify_batch runs with optimize=False (the module as given), the default (BatchNorm folded,
channels_last, CPU batches in slices run side by side), precision="bf16" and compile=True. The first call of each variant builds its
form (folds, probes, compiles) and is timed apart, on one batch; the timed calls reuse it, as
the calls of a long run do. Models: random weights in the
checkpoints' layouts (Normalize in front), BatchNorm running statistics and affine parameters
made non-trivial; inputs uniform in [0, 1].

Every round times each variant once, in a rotated order (the machine is shared: the ratios
are taken within a round and the median over rounds is printed). "labels differ" is the
fraction of the samples of round 1 whose label differs from optimize=False's on the same
noise (same seed, same batches).

The CPU targets (README): with the defaults against the Cohen loop, at least 1.8x on
cifar_resnet110 and 1.4x on resnet50, with at most 0.1% of the labels differing.

glibc's malloc runs as it does for a user unless --steady-malloc is given. As is, it maps
every freed block above its threshold back to the system, so the eager model's big
intermediate tensors (26 MB per activation for ResNet-110 at batch 400) are faulted in again
at every layer: the Cohen loop loses about a fifth of its speed to it on this machine, and
the default form, which allocates less and in slices, almost nothing. --steady-malloc shows
the gap on a process tuned to keep freed memory.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List

import numpy as np
import torch
from torch import nn

import topk_certify as tc
from topk_certify.models.architectures import architecture, build_model
from topk_certify.smoothing import inference

BATCH = {"cifar_resnet20": 1000, "cifar_resnet110": 400, "resnet50": 32}
VARIANTS = {
    "optimize=False": dict(optimize=False),
    "default": dict(),
    "bf16": dict(precision="bf16"),
    "compile": dict(compile=True),
}
SIGMA = 0.25
CLOCK = time.perf_counter  # --cpu-time: time.process_time


def random_model(arch: str, device) -> nn.Module:
    torch.manual_seed(0)
    model = build_model(arch)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return model.to(device).eval()


def cohen_loop(model, x, n: int, batch_size: int, num_classes: int) -> np.ndarray:
    """Cohen et al.'s core.py sampling, example by example."""
    counts = np.zeros((x.shape[0], num_classes), dtype=np.int64)
    with torch.no_grad():
        for e in range(x.shape[0]):
            left = n
            while left:
                rows = min(batch_size, left)
                left -= rows
                batch = x[e : e + 1].repeat((rows, 1, 1, 1))
                noise = torch.randn_like(batch) * SIGMA
                predictions = model(batch + noise).argmax(1)
                counts[e] += np.bincount(predictions.cpu().numpy(), minlength=num_classes)
    return counts


class Recorder:
    """Wraps what the sampler runs to keep each sample's label (argmax of the logits)."""

    def __init__(self, runner: Callable):
        self.runner = runner
        self.labels: List[torch.Tensor] = []

    def __call__(self, batch):
        out = self.runner(batch)
        self.labels.append(out.argmax(1).cpu())
        return out

    def __getattr__(self, name):
        return getattr(self.runner, name)


def _recording(store: Dict[str, Recorder], name: str):
    """inference.runner_for, with its runner wrapped in a Recorder kept under `name`."""
    build = inference.runner_for

    def runner_for(model, x, settings):
        store[name] = Recorder(build(model, x, settings))
        return store[name]

    return build, runner_for


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_variant(name: str, model, x, n: int, batch_size: int, device, store: Dict[str, Recorder]) -> float:
    """Seconds of one certify_batch call of variant `name` (its labels recorded in `store`)."""
    build, recording = _recording(store, name)
    inference.runner_for = recording
    try:
        _sync(device)
        start = CLOCK()
        tc.certify_batch(model, x, [0] * x.shape[0], sigma=SIGMA, n=n, batch_size=batch_size, seed=0, **VARIANTS[name])
        _sync(device)
        return CLOCK() - start
    finally:
        inference.runner_for = build


def bench_arch(arch: str, args, device) -> None:
    batch_size = args.batch.get(arch, BATCH[arch])
    model = random_model(arch, device)
    x = torch.rand(args.examples, *architecture(arch).input_shape, device=device)
    n = args.batches * batch_size
    samples = x.shape[0] * n
    variants = ["optimize=False", *(v for v in args.variants if v != "optimize=False")]
    # The first call of each variant builds its form (and compiles): timed apart. Later calls
    # on the unchanged module reuse it, as a long run's calls do.
    first_call = {v: time_variant(v, model, x[:1], batch_size, batch_size, device, {}) for v in variants}
    ratios: Dict[str, List[float]] = {v: [] for v in variants}
    rates: Dict[str, List[float]] = {v: [] for v in ["cohen", *variants]}
    first: Dict[str, Recorder] = {}
    for r in range(args.rounds):
        order = ["cohen", *variants]
        order = order[r % len(order) :] + order[: r % len(order)]
        seconds: Dict[str, float] = {}
        for name in order:
            if name == "cohen":
                _sync(device)
                start = CLOCK()
                cohen_loop(model, x, n, batch_size, 1000 if arch == "resnet50" else 10)
                _sync(device)
                seconds[name] = CLOCK() - start
            else:
                store: Dict[str, Recorder] = {}
                seconds[name] = time_variant(name, model, x, n, batch_size, device, store)
                first.setdefault(name, store[name])
        for name, s in seconds.items():
            rates[name].append(samples / s)
            if name != "cohen":
                ratios[name].append(seconds["cohen"] / s)
    base = torch.cat(first["optimize=False"].labels)
    print(f"\n{arch}, batch {batch_size}, {samples} samples per call, {args.rounds} rounds (median):")
    print(f"  {'Cohen-style loop':<22} {statistics.median(rates['cohen']):9.1f} samples/s")
    for name in variants:
        labels = torch.cat(first[name].labels)
        differ = float((labels != base).double().mean()) if labels.shape == base.shape else float("nan")
        note = f"  (first call {first_call[name]:.1f} s)" if name != "optimize=False" else ""
        print(
            f"  certify_batch {name:<14} {statistics.median(rates[name]):9.1f} samples/s  "
            f"{statistics.median(ratios[name]):5.2f}x the Cohen loop  labels differ {100 * differ:.3f}%{note}",
            flush=True,
        )


def bench_cli(args) -> None:
    """Rows per second of the whole certify command on a Cohen-format checkpoint, with
    --no-optimize and with the defaults (alternating, median of the rounds)."""
    arch = args.cli_arch
    model = random_model(arch, "cpu")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        torch.save({"epoch": 90, "arch": arch, "state_dict": model.state_dict()}, folder / "checkpoint.pth.tar")
        rng = np.random.default_rng(0)
        x = rng.random((args.cli_rows, *architecture(arch).input_shape), dtype=np.float32)
        np.savez(folder / "data.npz", x=x, y=rng.integers(0, 10, args.cli_rows))
        command = [sys.executable, "-m", "topk_certify", "certify", "--model", str(folder / "checkpoint.pth.tar")]
        command += ["--data", str(folder / "data.npz"), "--sigma", str(SIGMA), "--k", "1", "--seed", "0"]
        command += ["--n", str(args.cli_n), "--batch-size", str(BATCH[arch]), "--no-progress"]
        rates: Dict[str, List[float]] = {"--no-optimize": [], "default": []}
        for r in range(args.rounds):
            for name in rates if r % 2 == 0 else reversed(list(rates)):
                out = folder / f"out{r}{name}.tsv"
                start = time.perf_counter()
                extra = ["--no-optimize"] if name == "--no-optimize" else []
                subprocess.run([*command, "-o", str(out), *extra], check=True)
                rates[name].append(args.cli_rows / (time.perf_counter() - start))
        same = [line.split("\t")[:-1] for line in (folder / "out0default.tsv").read_text().splitlines()] == [
            line.split("\t")[:-1] for line in (folder / "out0--no-optimize.tsv").read_text().splitlines()
        ]
    plain, default = statistics.median(rates["--no-optimize"]), statistics.median(rates["default"])
    print(f"\ntopk-certify certify, {arch} checkpoint, {args.cli_rows} rows, n = {args.cli_n} (whole process):")
    print(f"  --no-optimize {plain:.4f} rows/s, default {default:.4f} rows/s: {default / plain:.2f}x")
    print(f"  rows equal (time column aside): {same}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--archs", nargs="+", default=list(BATCH), choices=list(BATCH))
    parser.add_argument(
        "--batch", nargs="*", default=[], metavar="ARCH=B", help="batch size per architecture (default: 1000, 400, 32)"
    )
    parser.add_argument("--batches", type=int, default=2, help="forward batches per example per call (default 2)")
    parser.add_argument("--examples", type=int, default=1, help="examples per call (default 1)")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds, interleaved (default 3)")
    parser.add_argument(
        "--variants",
        nargs="+",
        default=list(VARIANTS),
        choices=list(VARIANTS),
        help="certify_batch settings to time (default all; compile takes minutes to compile on a CPU)",
    )
    parser.add_argument("--cli", action="store_true", help="also time the whole certify command, before/after")
    parser.add_argument("--cli-only", action="store_true", help="only time the certify command")
    parser.add_argument("--cli-arch", default="cifar_resnet110", choices=["cifar_resnet20", "cifar_resnet110"])
    parser.add_argument("--cli-rows", type=int, default=2, help="examples the command certifies (default 2)")
    parser.add_argument("--cli-n", type=int, default=2000, help="samples per example for the command (default 2000)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default torch's)")
    parser.add_argument(
        "--steady-malloc",
        action="store_true",
        help="rerun with glibc's malloc keeping freed memory (MALLOC_MMAP_THRESHOLD_, MALLOC_TRIM_THRESHOLD_): "
        "a tuned process; by default the allocator runs as it does for a user, where the eager model's "
        "big intermediate tensors are mapped and faulted in again at every layer",
    )
    parser.add_argument(
        "--cpu-time",
        action="store_true",
        help="time with the process's CPU time, not the wall clock: steadier on a shared machine (with --threads 1)",
    )
    args = parser.parse_args()
    args.batch = {arch: int(b) for arch, b in (item.split("=") for item in args.batch)}
    if args.steady_malloc and "MALLOC_MMAP_THRESHOLD_" not in os.environ:
        env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "4000000000", "MALLOC_TRIM_THRESHOLD_": "4000000000"}
        os.execve(sys.executable, [sys.executable, *sys.argv], env)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.cpu_time:
        global CLOCK
        CLOCK = time.process_time
    device = torch.device(args.device)
    clock = "CPU time" if args.cpu_time else "wall clock"
    malloc = "glibc malloc kept (--steady-malloc)" if "MALLOC_MMAP_THRESHOLD_" in os.environ else "glibc malloc as is"
    print(f"torch {torch.__version__}, {device}, {torch.get_num_threads()} threads, {clock}, {malloc}, sigma {SIGMA}")
    if not args.cli_only:
        for arch in args.archs:
            bench_arch(arch, args, device)
    if args.cli or args.cli_only:
        bench_cli(args)


if __name__ == "__main__":
    main()

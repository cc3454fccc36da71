"""Speed of the sampling front: certify_batch against a bare torch loop.

    python benches/bench_sampling.py                      # small CNN, 3x32x32, CPU (2 threads)
    python benches/bench_sampling.py --counting           # where to count the labels
    python benches/bench_sampling.py --steady-malloc      # steadier CPU timings (see --help)
    python benches/bench_sampling.py --device cuda --model resnet50   # on a GPU

certify_batch runs the module as given (optimize=False: the inference form's own gain is
bench_throughput.py's), so the bare loop does the same work with nothing around it: per
example, batch by batch, draw the noise with a torch.Generator on the device, add it to the
broadcast input, run the model under inference_mode, torch.bincount the argmax.
certify_batch should take at most 1.10x its time, and less where n is small next to
batch_size (it packs several examples into each forward pass; the bare loop runs one short
pass per example).

With --model resnet50 (torchvision's if installed, else the same architecture defined here,
25,557,032 parameters like torchvision's; random weights, timing only) the reference is also
a bare forward-pass loop over one fixed batch of noisy inputs: samples/s of the network
alone, the most any sampler can reach.

Measured on a 2-core VM shared with other jobs (torch 2.15, --steady-malloc, best of 5):
  E=8,   n=2000, batch 500:   certify_batch / bare loop = 1.005 (2 threads, wall clock),
                              0.985 (1 thread, CPU time)
  E=100, n=100,  batch 1000:  0.929 (2 threads), 1.063 (1 thread): 16,300 samples/s against
                              15,100; the network alone runs 17,100 samples/s at batch 100 and
                              18,800 at batch 1000, so packing can gain little on this CPU.
Without --steady-malloc the same runs swing between 0.6x and 2x from one run to the next
(page faults on the CNN's 32 MB activations and other jobs on the two cores), for both
samplers alike: with glibc's malloc keeping its memory, 12 paired runs gave a median ratio
of 0.998 (0.95 to 1.02).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np
import torch
from torch import nn

import topk_certify as tc


class SmallCNN(nn.Module):
    """Two conv layers and a linear head for 3x32x32 inputs (CIFAR-sized), 10 classes."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.head = nn.Linear(32 * 8 * 8, num_classes)

    def forward(self, z):
        return self.head(self.features(z).flatten(1))


class _Bottleneck(nn.Module):
    def __init__(self, inplanes, planes, stride):
        super().__init__()
        width, out = planes, planes * 4
        self.body = nn.Sequential(
            nn.Conv2d(inplanes, width, 1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, stride, 1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, out, 1, bias=False),
            nn.BatchNorm2d(out),
        )
        self.skip = (
            nn.Sequential(nn.Conv2d(inplanes, out, 1, stride, bias=False), nn.BatchNorm2d(out))
            if stride != 1 or inplanes != out
            else nn.Identity()
        )

    def forward(self, z):
        return torch.relu(self.body(z) + self.skip(z))


def resnet50(num_classes: int = 1000) -> nn.Module:
    """torchvision's ResNet-50 when installed, else the same architecture (He et al. 2016)."""
    try:
        import torchvision

        return torchvision.models.resnet50(num_classes=num_classes)
    except ImportError:
        print("(torchvision not installed: using the ResNet-50 defined in this file)")
    layers, inplanes = [], 64
    for planes, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
        for b in range(blocks):
            layers.append(_Bottleneck(inplanes, planes, stride if b == 0 else 1))
            inplanes = planes * 4
    return nn.Sequential(
        nn.Conv2d(3, 64, 7, 2, 3, bias=False),
        nn.BatchNorm2d(64),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(3, 2, 1),
        *layers,
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(2048, num_classes),
    )


# -- the references ---------------------------------------------------------------------------


def bare_loop(model, x, *, sigma, n, batch_size, num_classes, seed=0):
    """The plainest correct sampler: per example, batch by batch, bincount in torch."""
    counts = torch.zeros(x.shape[0], num_classes, dtype=torch.int64, device=x.device)
    model.eval()
    with torch.inference_mode():
        for i in range(x.shape[0]):
            generator = torch.Generator(device=x.device).manual_seed(seed + i)
            left = n
            while left > 0:
                size = min(batch_size, left)
                noise = torch.randn((size, *x.shape[1:]), generator=generator, device=x.device, dtype=x.dtype)
                labels = model(x[i] + sigma * noise).argmax(1)
                counts[i] += torch.bincount(labels, minlength=num_classes)
                left -= size
    return counts.cpu().numpy()


def bare_forward(model, x, *, total, batch_size, sigma=0.25):
    """Forward passes alone over one fixed batch of noisy inputs: the network's own speed.

    (Distinct rows: on a CPU a batch of identical rows runs up to 1.6x faster, the branches
    of max-pooling being predictable, which no real sampler can have.)
    """
    generator = torch.Generator(device=x.device).manual_seed(0)
    noise = torch.randn((batch_size, *x.shape[1:]), generator=generator, device=x.device, dtype=x.dtype)
    batch = x[0] + sigma * noise
    model.eval()
    with torch.inference_mode():
        for _ in range(total // batch_size):
            model(batch).argmax(1)
        if x.device.type == "cuda":
            torch.cuda.synchronize()


CLOCK = time.perf_counter


def timed(fn, device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = CLOCK()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return CLOCK() - start


def compare(model, x, *, sigma, n, batch_size, num_classes, repeats, device, forward_too=False):
    labels = np.zeros(x.shape[0], dtype=np.int64)
    runs = {
        "certify_batch": lambda: tc.certify_batch(
            model, x, labels, sigma=sigma, n=n, batch_size=batch_size, seed=0, optimize=False
        ),
        "bare loop": lambda: bare_loop(model, x, sigma=sigma, n=n, batch_size=batch_size, num_classes=num_classes),
    }
    if forward_too:
        runs["bare forward"] = lambda: bare_forward(model, x, total=x.shape[0] * n, batch_size=batch_size)
    for fn in runs.values():  # warm up (allocator, kernels, cudnn autotune)
        fn()
    times = {name: [] for name in runs}
    for _ in range(repeats):  # interleaved, so that drift hits both
        for name, fn in runs.items():
            times[name].append(timed(fn, device))
    # The best of the runs is the time with the least interference from other processes
    # (as timeit reports); the median is printed next to it.
    best = {name: min(t) for name, t in times.items()}
    samples = x.shape[0] * n
    print(f"E={x.shape[0]}, n={n}, batch_size={batch_size} ({samples} samples, best and median of {repeats}):")
    for name, t in best.items():
        print(
            f"  {name:14s} {t:8.3f} s  {samples / t:10.0f} samples/s   (median {statistics.median(times[name]):.3f} s)"
        )
    ratio = best["certify_batch"] / best["bare loop"]
    print(f"  certify_batch / bare loop = {ratio:.3f}")
    if forward_too:
        forward = best["certify_batch"] / best["bare forward"]
        print(f"  certify_batch / bare forward = {forward:.3f}")
    return ratio


# -- counting: on the device or in Rust --------------------------------------------------------


def bench_counting(batch_size, num_classes, segments, repeats=2000):
    """Per forward batch: count `segments` equal segments of argmax labels, four ways."""
    labels = torch.randint(0, num_classes, (batch_size,))
    bounds = np.linspace(0, batch_size, segments + 1).astype(int)
    counts = torch.zeros(segments, num_classes, dtype=torch.int64)
    ones = torch.ones(batch_size, dtype=torch.int64)
    seg_of_row = np.repeat(np.arange(segments), np.diff(bounds))

    def index_add():  # what NoiseSampler does: on the device, no sync
        for s in range(segments):
            a, b = bounds[s], bounds[s + 1]
            counts[s].index_add_(0, labels[a:b], ones[: b - a])

    def bincount():
        for s in range(segments):
            counts[s] += torch.bincount(labels[bounds[s] : bounds[s + 1]], minlength=num_classes)

    def rust():  # labels to the host, one count_labels call with segment offsets
        flat = labels.numpy() + seg_of_row * num_classes
        return tc.count_labels(flat, segments * num_classes).reshape(segments, num_classes)

    def numpy_bincount():
        flat = labels.numpy() + seg_of_row * num_classes
        return np.bincount(flat, minlength=segments * num_classes).reshape(segments, num_classes)

    print(f"counting {batch_size} labels of {num_classes} classes in {segments} segment(s):")
    for name, fn in [
        ("index_add_ (device)", index_add),
        ("torch.bincount", bincount),
        ("count_labels (Rust)", rust),
        ("np.bincount", numpy_bincount),
    ]:
        fn()
        start = time.perf_counter()
        for _ in range(repeats):
            fn()
        print(f"  {name:20s} {1e6 * (time.perf_counter() - start) / repeats:8.1f} us per batch")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model", choices=["cnn", "resnet50"], default="cnn")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--counting", action="store_true", help="only the counting comparison")
    parser.add_argument("--n", type=int, default=None, help="resnet50: samples per example")
    parser.add_argument("--examples", type=int, default=4, help="resnet50: examples")
    parser.add_argument("--batch-size", type=int, default=400, help="resnet50: batch size")
    parser.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default="float32")
    parser.add_argument(
        "--cpu-time",
        action="store_true",
        help="time with the process's CPU time instead of the wall clock: steadier on a "
        "machine shared with other jobs (use with --threads 1; CPU device only)",
    )
    parser.add_argument(
        "--steady-malloc",
        action="store_true",
        help="rerun with glibc's malloc keeping freed memory (MALLOC_MMAP_THRESHOLD_, "
        "MALLOC_TRIM_THRESHOLD_): otherwise the model's big intermediate tensors are "
        "returned to the OS and page-faulted back, and CPU timings swing by +-30%% with "
        "the order of allocations, whichever sampler runs",
    )
    args = parser.parse_args()
    if args.steady_malloc and "MALLOC_MMAP_THRESHOLD_" not in os.environ:
        env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "4000000000", "MALLOC_TRIM_THRESHOLD_": "4000000000"}
        os.execve(sys.executable, [sys.executable, *sys.argv], env)
    if args.cpu_time:
        global CLOCK
        CLOCK = time.process_time
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    print(f"torch {torch.__version__}, device {device}, {torch.get_num_threads()} CPU threads, {args.dtype}")

    if args.counting:
        for batch_size, num_classes, segments in ((1000, 10, 1), (1000, 10, 10), (400, 1000, 1), (400, 1000, 4)):
            bench_counting(batch_size, num_classes, segments)
        return

    torch.manual_seed(0)
    if args.model == "cnn":
        model = SmallCNN().to(device, dtype).eval()
        x = torch.rand(100, 3, 32, 32, device=device, dtype=dtype)
        settings = [(2000, 500, 8), (100, 1000, 100)]
        if device.type == "cuda":
            settings = [(20000, 5000, 8), (100, 1000, 1000)]
        for n, batch_size, num in settings:
            inputs = x[:num] if num <= 100 else x.repeat(num // 100, 1, 1, 1)
            compare(
                model,
                inputs,
                sigma=0.25,
                n=n,
                batch_size=batch_size,
                num_classes=10,
                repeats=args.repeats,
                device=device,
            )
        # Packing pays only where the network runs faster per sample on bigger batches.
        # On a CPU that is often not so (the activations of 1000 CIFAR images overflow the
        # caches): print the network's own speed at both batch sizes of the n = 100 row.
        for batch_size in (100, 1000):
            seconds = min(
                timed(
                    lambda batch_size=batch_size: bare_forward(model, x, total=10 * batch_size, batch_size=batch_size),
                    device,
                )
                for _ in range(args.repeats)
            )
            print(f"forward passes alone at batch {batch_size}: {10 * batch_size / seconds:.0f} samples/s")
    else:
        if device.type != "cuda":
            print("note: ResNet-50 at 3x224x224 is meant for a GPU; on the CPU this takes long")
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        model = resnet50().to(device, dtype).eval()
        x = torch.rand(args.examples, 3, 224, 224, device=device, dtype=dtype)
        n = args.n or (4000 if device.type == "cuda" else 400)
        compare(
            model,
            x,
            sigma=0.25,
            n=n,
            batch_size=args.batch_size,
            num_classes=1000,
            repeats=args.repeats,
            device=device,
            forward_too=True,
        )


if __name__ == "__main__":
    main()

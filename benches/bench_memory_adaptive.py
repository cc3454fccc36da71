"""Peak memory of an adaptive `certify_batch` against the number of examples.

Adaptive runs start every example of the call and move them through the looks together, so
whatever an example holds between two looks is held for all of them at once. The noise streams
keep only their generator's state between looks (a partly used block of noise is drawn again
for its next part) and stopped examples release their streams, so the peak should not grow
with the examples. This runs the same adaptive certification on E and on 10 E CIFAR-sized
examples (3x32x32 float32, a linear model, batch 1000: a block of noise is 12 MiB) in fresh
processes and prints both peaks above the process's start and their difference, measured in
one run. Target: the difference within noise (a few MiB), where streams that kept their blocks
held about 12 MiB per example in flight.

Usage: python benches/bench_memory_adaptive.py [--examples 6] [--n 3000]
"""

from __future__ import annotations

import argparse
import subprocess
import sys

CHILD = """
import resource, sys, torch
import topk_certify as tc
torch.set_num_threads(1)
examples, n = int(sys.argv[1]), int(sys.argv[2])
net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 10))
torch.nn.init.normal_(net[1].weight, std=0.01, generator=torch.Generator().manual_seed(0))
x = torch.rand(examples, 3, 32, 32, generator=torch.Generator().manual_seed(1))
tc.certify_batch(net, x[:1], [0], sigma=0.25, n=100, batch_size=100, seed=0)  # imports and first-call costs
start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
result = tc.certify_batch(net, x, [0] * examples, k=1, sigma=0.25, n=n, batch_size=1000, seed=0, adaptive=True)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(start, peak, int(result.n_used.sum()))
"""


def peak_above_start_mib(examples: int, n: int):
    done = subprocess.run([sys.executable, "-c", CHILD, str(examples), str(n)], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"certify_batch failed on {examples} examples: {done.stderr.strip().splitlines()[-1]}")
    start, peak, used = map(int, done.stdout.split())
    return (peak - start) / 1024, used


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=6)
    parser.add_argument("--n", type=int, default=3000)
    args = parser.parse_args()
    small, used_small = peak_above_start_mib(args.examples, args.n)
    large, used_large = peak_above_start_mib(10 * args.examples, args.n)
    print(
        f"adaptive certify_batch, peak memory above the start: {small:.0f} MiB on {args.examples} examples "
        f"({used_small:,} samples), {large:.0f} MiB on {10 * args.examples} ({used_large:,} samples): "
        f"{large - small:+.0f} MiB for {9 * args.examples} more examples (target: within a few MiB)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

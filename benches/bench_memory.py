"""Peak memory of `topk-certify certify` against the size of the data set.

Examples are read chunk by chunk (datasets: rows of an .npz read by positioned reads, image
files decoded per chunk), so the peak resident memory of a run should not grow with the number
of examples. This runs the same certification on E and on 10 E examples (CIFAR-sized inputs,
3x32x32 float32, a linear model, small n so that it takes seconds) and prints both peaks and
their ratio, measured in one run. Target: at most 1.2x.

Usage: python benches/bench_memory.py [--examples 1000] [--n 20]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
MODEL = """import torch
net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 10))
torch.nn.init.normal_(net[1].weight, std=0.01, generator=torch.Generator().manual_seed(0))
"""
PEAK = (
    "import resource, subprocess, sys\n"
    "done = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL)\n"
    "print(done.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
)


def peak_kib(folder: str, examples: int, n: int) -> int:
    data = os.path.join(folder, f"data_{examples}.npz")
    rng = np.random.default_rng(0)
    x = np.lib.format.open_memmap(
        os.path.join(folder, "x.npy"), mode="w+", dtype=np.float32, shape=(examples, 3, 32, 32)
    )
    for start in range(0, examples, 1000):  # written in pieces: the writer stays small too
        x[start : start + 1000] = rng.random((min(1000, examples - start), 3, 32, 32), dtype=np.float32)
    np.savez(data, x=x, y=rng.integers(0, 10, size=examples))
    del x
    os.remove(os.path.join(folder, "x.npy"))
    out = os.path.join(folder, f"out_{examples}.tsv")
    command = [
        sys.executable,
        "-m",
        "topk_certify",
        "certify",
        "--model",
        os.path.join(folder, "model.py:net"),
        "--data",
        data,
        "--sigma",
        "0.25",
        "--k",
        "1",
        "--n",
        str(n),
        "--batch-size",
        "1000",
        "--seed",
        "0",
        "--device",
        "cpu",
        "--no-progress",
        "-o",
        out,
    ]
    done = subprocess.run([sys.executable, "-c", PEAK, *command], capture_output=True, text=True, check=True)
    code, kib = map(int, done.stdout.split())
    if code != 0:
        raise SystemExit(f"certify failed on {examples} examples (exit {code})")
    os.remove(data)
    return kib


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=1000)
    parser.add_argument("--n", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        with open(os.path.join(folder, "model.py"), "w") as handle:
            handle.write(MODEL)
        small = peak_kib(folder, args.examples, args.n)
        large = peak_kib(folder, 10 * args.examples, args.n)
    size = 3 * 32 * 32 * 4 * args.examples / 2**20
    print(
        f"peak RSS of certify: {small / 1024:.0f} MiB on {args.examples:,} examples ({size:.0f} MiB of data), "
        f"{large / 1024:.0f} MiB on {10 * args.examples:,} ({10 * size:.0f} MiB of data): "
        f"{large / small:.2f}x (target <= 1.2x)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

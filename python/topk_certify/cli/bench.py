"""`topk-certify bench`: the speed of certify_counts on synthetic counts, and its ratio to
the paper's per-example algorithm (scipy) measured in the same run. See `topk_certify.benchmark`."""

from __future__ import annotations

import argparse
import sys

__all__ = ["DESCRIPTION", "HELP", "NAME", "add_arguments", "run"]


def _int_at_least(minimum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an int >= {minimum}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an int >= {minimum}, got {value}")
        return value

    return parse


NAME = "bench"
HELP = "speed of certify_counts on synthetic counts, and its ratio to the paper's algorithm"
DESCRIPTION = (
    "Times certify_counts (bound simuem, sigma 0.25, alpha 0.001) on R synthetic count "
    "rows (a dominant label and a long tail, drawn from --seed): best of 5 calls after a warm-up. "
    "With scipy installed it also times the paper's per-example algorithm on the first B rows and "
    "prints the ratio of the two, measured in this one run, and checks that their radii agree "
    "(exit code 1 if not)."
)


def add_arguments(parser) -> None:
    parser.add_argument("--classes", type=_int_at_least(2), default=10, metavar="C", help="labels per row (default 10)")
    parser.add_argument("--k", type=_int_at_least(1), default=3, metavar="K", help="top-k, below C (default 3)")
    parser.add_argument(
        "--n", type=_int_at_least(1), default=100_000, metavar="N", help="samples per row (default 100000)"
    )
    parser.add_argument(
        "--rows", type=_int_at_least(1), default=100_000, metavar="R", help="rows timed (default 100000)"
    )
    parser.add_argument(
        "--threads",
        type=_int_at_least(1),
        default=None,
        metavar="T",
        help="rayon threads (default: one per usable CPU, or RAYON_NUM_THREADS)",
    )
    parser.add_argument(
        "--baseline-rows",
        type=_int_at_least(0),
        default=100,
        metavar="B",
        help="rows for the paper's algorithm, about 10 ms each at C = 10 and 0.1 s at C = 1000 "
        "(default 100; 0 skips it)",
    )
    parser.add_argument("--seed", type=_int_at_least(0), default=0, metavar="S", help="seed of the rows (default 0)")


def run(args: argparse.Namespace) -> None:
    from ..benchmark import describe_platform, run_benchmark

    report = run_benchmark(
        num_classes=args.classes,
        k=args.k,
        n=args.n,
        rows=args.rows,
        threads=args.threads,
        baseline_rows=args.baseline_rows,
        seed=args.seed,
    )
    sys.stdout.write(describe_platform() + "\n" + report.format() + "\n")
    sys.stdout.flush()
    if not report.agrees:
        sys.stderr.write(f"topk-certify: error: {report.disagreements} rows disagree with the paper's algorithm\n")
        raise SystemExit(1)

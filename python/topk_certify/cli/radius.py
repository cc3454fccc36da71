"""`topk-certify radius`: certified radii from a counts file (the paper's frequency format)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Optional

from ..formats.atomic import write_text_atomically
from ..formats.counts import read_counts_file
from ..stats import certify_counts
from .args import check_distinct_ks, number
from .errors import CliError

NAME = "radius"
HELP = "certified radii from a counts file (the paper's frequency format)"
DESCRIPTION = (
    "Certified l2 radius of each line's label in the top-k, from Monte Carlo counts "
    "(one example a line: C counts, then the label). Output: TSV with idx (0-based line), label, radius."
)


def add_arguments(radius) -> None:
    radius.add_argument("counts_file", metavar="COUNTS_FILE")
    radius.add_argument(
        "--k", type=int, nargs="+", required=True, metavar="K", help="top-k; several give one radius@K column each"
    )
    radius.add_argument("--sigma", type=number, required=True, help="noise level the counts were drawn with")
    radius.add_argument("--alpha", type=number, default=0.001, help="failure probability (default 0.001)")
    radius.add_argument(
        "--bound", default="simuem", choices=["simuem", "binocp"], help="probability bounds (default simuem)"
    )
    radius.add_argument("-o", "--output", metavar="OUT", help="write the TSV here instead of stdout")


def run(args: argparse.Namespace) -> None:
    check_distinct_ks(args.k)
    if args.output is not None:
        _check_output(args.output, args.counts_file)
    counts, labels, meta = read_counts_file(args.counts_file)
    if meta.get("adaptive") == "1":
        raise CliError(
            f"{args.counts_file} was written by an adaptive run: its sample sizes depended on the counts, so "
            "fixed-n bounds would overstate the radii; use the radii in that run's output (or rerun without --adaptive)"
        )
    if counts.shape[0] == 0:
        raise CliError(f"{args.counts_file} holds no examples")
    radii = certify_counts(counts, labels, k=list(args.k), sigma=args.sigma, alpha=args.alpha, bound=args.bound)
    names = ["radius"] if len(args.k) == 1 else [f"radius@{k}" for k in args.k]
    lines = ["\t".join(["idx", "label"] + names) + "\n"]
    for i, (label, row) in enumerate(zip(labels, radii)):
        lines.append("\t".join([str(i), str(int(label))] + [repr(float(r)) for r in row]) + "\n")
    _write_text(args.output, "".join(lines))


def _check_output(path: str, counts_file: str) -> None:
    """-o may name a new file or an earlier radius output, never the input or another file."""
    if os.path.exists(path) and os.path.exists(counts_file) and os.path.samefile(path, counts_file):
        raise CliError(f"-o {path} is the counts file being read: choose another output file")
    if not os.path.exists(path):
        return
    try:
        with open(path, encoding="utf-8") as handle:
            first = handle.readline()
    except (OSError, UnicodeDecodeError):
        first = ""
    if not first.startswith("idx\tlabel\tradius"):
        raise CliError(
            f"-o {path} exists and is not an earlier radius output: choose a new file (it is not overwritten)"
        )


def _write_text(path: Optional[str], text: str) -> None:
    if path is None:
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    try:
        write_text_atomically(path, text)
    except OSError as exc:
        raise CliError(f"cannot write {path}: {exc.strerror}") from None

"""The `topk-certify` command line (also `python -m topk_certify`).

Every user error ends as one line on stderr and exit code 2, without a traceback.
"""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn, Optional, Sequence

EXIT_USAGE = 2


class CliError(Exception):
    """A user error: its message is printed as one line, and the exit code is 2."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type name when it has none)."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def check_distinct_ks(ks: Sequence[int]) -> None:
    """One radius@K column per K: a repeated K would make the table ambiguous."""
    if len(set(ks)) != len(ks):
        raise CliError(f"--k values must be distinct (one radius@K column each), got {' '.join(map(str, ks))}")


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    return value


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors are one line (exit code 2), like every other error."""

    def error(self, message: str) -> "NoReturn":  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="topk-certify",
        description="Certified top-k robustness by Gaussian randomized smoothing (Jia et al., ICLR 2020).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    radius = sub.add_parser(
        "radius",
        help="certified radii from a counts file (the paper's frequency format)",
        description="Certified l2 radius of each line's label in the top-k, from Monte Carlo counts "
        "(one example a line: C counts, then the label). Output: TSV with idx (0-based line), label, radius.",
    )
    radius.add_argument("counts_file", metavar="COUNTS_FILE")
    radius.add_argument("--k", type=int, nargs="+", required=True, metavar="K", help="top-k; several give one radius@K column each")
    radius.add_argument("--sigma", type=_positive_float, required=True, help="noise level the counts were drawn with")
    radius.add_argument("--alpha", type=_positive_float, default=0.001, help="failure probability (default 0.001)")
    radius.add_argument("--bound", default="simuem", choices=["simuem", "binocp"], help="probability bounds (default simuem)")
    radius.add_argument("-o", "--output", metavar="OUT", help="write the TSV here instead of stdout")
    radius.set_defaults(handler=_run_radius)

    from . import commands  # the sampling commands register themselves

    commands.register(sub)
    return parser


def _run_radius(args: argparse.Namespace) -> None:
    from .countsfile import read_counts_file
    from .stats import certify_counts

    counts, labels, meta = read_counts_file(args.counts_file)
    if meta.get("adaptive") == "1":
        raise CliError(
            f"{args.counts_file} was written by an adaptive run: its sample sizes depended on the counts, so "
            "fixed-n bounds would overstate the radii; use the radii in that run's output (or rerun without --adaptive)"
        )
    if counts.shape[0] == 0:
        raise CliError(f"{args.counts_file} holds no examples")
    check_distinct_ks(args.k)
    radii = certify_counts(counts, labels, k=list(args.k), sigma=args.sigma, alpha=args.alpha, bound=args.bound)
    names = ["radius"] if len(args.k) == 1 else [f"radius@{k}" for k in args.k]
    lines = ["\t".join(["idx", "label"] + names) + "\n"]
    for i, (label, row) in enumerate(zip(labels, radii)):
        lines.append("\t".join([str(i), str(int(label))] + [repr(float(r)) for r in row]) + "\n")
    _write_text(args.output, "".join(lines))


def _write_text(path: Optional[str], text: str) -> None:
    if path is None:
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    try:
        with open(path, "w", encoding="utf-8") as out:
            out.write(text)
    except OSError as exc:
        raise CliError(f"cannot write {path}: {exc.strerror}") from None


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.handler(args)
    except CliError as exc:
        return _fail(str(exc))
    except (ValueError, TypeError) as exc:
        return _fail(str(exc))
    except OSError as exc:
        return _fail(f"{exc.filename or ''}: {exc.strerror or exc}".lstrip(": "))
    except KeyboardInterrupt:
        return 130
    return 0


def _fail(message: str) -> int:
    first = " ".join(message.split("\n")).strip() or "error"
    sys.stderr.write(f"topk-certify: error: {first}\n")
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())

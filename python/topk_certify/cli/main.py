"""Parsing the command line and running a command, with every error as one line."""

from __future__ import annotations

import sys
import warnings
from typing import Optional, Sequence

from . import analyze, bench, certify, demo, radius
from .args import Parser
from .errors import EXIT_INTERRUPTED, EXIT_USAGE, CliError, first_line


def build_parser() -> Parser:
    parser = Parser(
        prog="topk-certify",
        description="Certified top-k robustness by Gaussian randomized smoothing (Jia et al., ICLR 2020).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for command in (radius, certify, analyze, demo, bench):
        command.register(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code = _run(args)
    if code == 0:  # on failure the error is the one line; warnings would only bury it
        for warning in caught:
            sys.stderr.write(f"topk-certify: warning: {first_line(Exception(str(warning.message)))}\n")
    return code


def _run(args) -> int:
    try:
        args.handler(args)
    except (CliError, ValueError, TypeError) as exc:
        return fail(str(exc))
    except OSError as exc:
        return fail(f"{exc.filename or ''}: {exc.strerror or exc}".lstrip(": "))
    except MemoryError:
        return fail("out of memory (try a smaller --batch-size)")
    except KeyboardInterrupt:
        hint = "; rerun with --resume to continue" if args.command == "certify" else ""
        return fail(f"interrupted{hint}", EXIT_INTERRUPTED)
    return 0


def fail(message: str, code: int = EXIT_USAGE) -> int:
    first = " ".join(message.split("\n")).strip() or "error"
    sys.stderr.write(f"topk-certify: error: {first}\n")
    sys.stderr.flush()
    return code


if __name__ == "__main__":
    sys.exit(main())

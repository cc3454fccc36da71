"""Parsing the command line and running a command, with every error as one line."""

from __future__ import annotations

import os
import signal
import sys
import warnings
from typing import Optional, Sequence

from ..distributed import AgreedError, world_size_from_env
from . import analyze, bench, certify, demo, radius
from .args import Parser
from .errors import EXIT_INTERRUPTED, EXIT_USAGE, CliError, first_line

DEBUG_ENV = "TOPK_CERTIFY_DEBUG"


def build_parser() -> Parser:
    parser = Parser(
        prog="topk-certify",
        description="Certified top-k robustness by Gaussian randomized smoothing (Jia et al., ICLR 2020).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for command in (radius, certify, analyze, demo, bench):  # each: NAME, HELP, DESCRIPTION, add_arguments, run
        one = sub.add_parser(command.NAME, help=command.HELP, description=command.DESCRIPTION)
        command.add_arguments(one)
        one.set_defaults(handler=command.run)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs the command line (`argv`: the arguments; None: the program's own, sys.argv)."""
    try:
        args = build_parser().parse_args(argv)
    except KeyboardInterrupt:
        return fail("interrupted", EXIT_INTERRUPTED)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code = _run(args)
    if code == 0:  # on failure the error is the one line; warnings would only bury it
        for warning in caught:
            sys.stderr.write(f"topk-certify: warning: {first_line(Exception(str(warning.message)))}\n")
    if argv is None and code != EXIT_INTERRUPTED:
        # The program is done and has said so: a Ctrl-C from here to the exit changes nothing.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    return code


def _run(args) -> int:
    try:
        args.handler(args)
    except (CliError, ValueError, TypeError, AgreedError) as exc:
        return fail(str(exc))
    except OSError as exc:
        return fail(f"{exc.filename or ''}: {exc.strerror or exc}".lstrip(": "))
    except MemoryError:
        return fail("out of memory (try a smaller --batch-size)")
    except KeyboardInterrupt:
        hint = "; rerun with --resume to continue" if args.command == "certify" else ""
        return fail(f"interrupted{hint}", EXIT_INTERRUPTED)
    except Exception as exc:  # anything else still ends as one line (DEBUG_ENV=1: the traceback)
        if os.environ.get(DEBUG_ENV):
            raise
        return fail(f"{type(exc).__name__}: {first_line(exc)}")
    return 0


def fail(message: str, code: int = EXIT_USAGE) -> int:
    """Prints the one line (under torchrun only on rank 0: every rank has agreed on the error)."""
    if world_size_from_env() > 1 and os.environ.get("RANK", "0") != "0":
        return code
    first = " ".join(message.split("\n")).strip() or "error"
    sys.stderr.write(f"topk-certify: error: {first}\n")
    sys.stderr.flush()
    return code


if __name__ == "__main__":
    sys.exit(main())

"""Parsing the command line and running a command, with every error as one line."""

from __future__ import annotations

import os
import signal
import sys
import warnings
from typing import Optional, Sequence

from ..distributed import AgreedError, world_size_from_env
from . import analyze, bench, certify, demo, predict, radius
from .args import Parser
from .errors import EXIT_INTERRUPTED, EXIT_TERMINATED, EXIT_USAGE, CliError, Terminated, first_line

DEBUG_ENV = "TOPK_CERTIFY_DEBUG"


def build_parser() -> Parser:
    parser = Parser(
        prog="topk-certify",
        description="Certified top-k robustness by Gaussian randomized smoothing (Jia et al., ICLR 2020).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for command in (
        radius,
        certify,
        predict,
        analyze,
        demo,
        bench,
    ):  # each: NAME, HELP, DESCRIPTION, add_arguments, run
        one = sub.add_parser(command.NAME, help=command.HELP, description=command.DESCRIPTION)
        command.add_arguments(one)
        one.set_defaults(handler=command.run)
    return parser


def _raise_terminated(signum, frame):
    raise Terminated()


def _on_sigterm(handler):
    """Installs `handler` for SIGTERM; returns the one it replaced (None where it cannot:
    outside the main thread, or where the application has its own)."""
    try:
        if handler is _raise_terminated and signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
            return None
        return signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        return None


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs the command line (`argv`: the arguments; None: the program's own, sys.argv)."""
    previous = _on_sigterm(_raise_terminated)
    try:
        code = _parse_and_run(argv)
    except Terminated as exc:  # between the handler's install and the command's own catch
        code = _interrupted(None, exc)
    finally:
        if previous is not None:  # a program that is done ignores a late SIGTERM, as a late Ctrl-C
            _on_sigterm(previous if argv is not None else signal.SIG_IGN)
    if argv is None and code not in (EXIT_INTERRUPTED, EXIT_TERMINATED):
        # The program is done and has said so: a Ctrl-C from here to the exit changes nothing.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    return code


def _interrupted(args, exc: KeyboardInterrupt) -> int:
    """Ctrl-C (exit 130) or SIGTERM (exit 143): one line; a certify or predict run is left resumable."""
    resumable = args is not None and args.command in (certify.NAME, predict.NAME)
    hint = "; rerun with --resume to continue" if resumable else ""
    if isinstance(exc, Terminated):
        return fail(f"terminated (SIGTERM){hint}", EXIT_TERMINATED)
    return fail(f"interrupted{hint}", EXIT_INTERRUPTED)


def _parse_and_run(argv: Optional[Sequence[str]]) -> int:
    try:
        args = build_parser().parse_args(argv)
    except KeyboardInterrupt as exc:
        return _interrupted(None, exc)
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
    except (CliError, ValueError, TypeError, AgreedError) as exc:
        return fail(str(exc))
    except OSError as exc:
        return fail(f"{exc.filename or ''}: {exc.strerror or exc}".lstrip(": "))
    except MemoryError:
        return fail("out of memory (try a smaller --batch-size)")
    except KeyboardInterrupt as exc:
        return _interrupted(args, exc)
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

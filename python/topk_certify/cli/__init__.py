"""The `topk-certify` command line (also `python -m topk_certify`): one module per command
(`radius`, `certify`, `predict`, `analyze`, `demo`, `bench`), `main` to parse and run them.

Every user error ends as one line on stderr and exit code 2, without a traceback; Ctrl-C
is one line and exit code 130, SIGTERM one line and exit code 143, from the first moment on.
"""

import os
import signal
import sys


def _interrupted_while_starting(signum, frame):
    sys.stderr.write("topk-certify: error: interrupted\n")
    sys.stderr.flush()
    os._exit(130)


def _terminated_while_starting(signum, frame):
    sys.stderr.write("topk-certify: error: terminated (SIGTERM)\n")
    sys.stderr.flush()
    os._exit(143)


def _catch_early_interrupts() -> bool:
    """Imports take a while (numpy, the extension): a Ctrl-C then is one line too. Only in the
    main thread, and only where Python's own handler is in place (not inside an application
    that set its own)."""
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        return False
    try:
        signal.signal(signal.SIGINT, _interrupted_while_starting)
    except ValueError:  # not the main thread
        return False
    return True


def _catch_early_terminations() -> bool:
    """SIGTERM too (where nobody set a handler for it): main() installs its own."""
    try:
        if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
            return False
        signal.signal(signal.SIGTERM, _terminated_while_starting)
    except ValueError:  # not the main thread
        return False
    return True


if _catch_early_interrupts():
    terminations = _catch_early_terminations()
    try:
        from .main import build_parser, main
    finally:  # Python's own handlers back, so that a run closes its files on the way out
        signal.signal(signal.SIGINT, signal.default_int_handler)
        if terminations:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
else:
    from .main import build_parser, main

__all__ = ["build_parser", "main"]

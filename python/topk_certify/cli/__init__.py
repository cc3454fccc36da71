"""The `topk-certify` command line (also `python -m topk_certify`): one module per command
(`radius`, `certify`, `analyze`, `demo`, `bench`), `main` to parse and run them.

Every user error ends as one line on stderr and exit code 2, without a traceback; Ctrl-C
is one line and exit code 130, from the first moment on.
"""

import os
import signal
import sys
import threading


def _interrupted_while_starting(signum, frame):
    sys.stderr.write("topk-certify: error: interrupted\n")
    sys.stderr.flush()
    os._exit(130)


# Imports take a while (numpy, the extension): a Ctrl-C then is one line too. `main` puts
# Python's own handler back once it runs, so that files are closed on the way out.
if (
    threading.current_thread() is threading.main_thread()
    and signal.getsignal(signal.SIGINT) is signal.default_int_handler
):
    signal.signal(signal.SIGINT, _interrupted_while_starting)
    try:
        from .main import build_parser, main
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
else:
    from .main import build_parser, main

__all__ = ["build_parser", "main"]

"""The `topk-certify` command line (also `python -m topk_certify`): one module per command
(`radius`, `certify`, `analyze`, `demo`, `bench`), `main` to parse and run them.

Every user error ends as one line on stderr and exit code 2, without a traceback; Ctrl-C
is one line and exit code 130.
"""

from .main import build_parser, main

__all__ = ["build_parser", "main"]

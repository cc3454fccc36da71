"""Argument types and checks shared by the commands."""

from __future__ import annotations

import argparse
from typing import NoReturn, Sequence

from .errors import EXIT_USAGE, CliError


class Parser(argparse.ArgumentParser):
    """argparse, but usage errors are one line (exit code 2), like every other error."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def check_distinct_ks(ks: Sequence[int]) -> None:
    """One radius@K column per K: a repeated K would make the table ambiguous."""
    if len(set(ks)) != len(ks):
        raise CliError(f"--k values must be distinct (one radius@K column each), got {' '.join(map(str, ks))}")

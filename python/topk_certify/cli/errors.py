"""The command line's error (a leaf module: any command may raise it without importing the
CLI) and its exit codes."""

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143  # 128 + SIGTERM, what a shell reports for a program SIGTERM ended


class Terminated(KeyboardInterrupt):
    """SIGTERM (Slurm's preemption and time limit, `kill`), raised where the program is, so
    that it unwinds as a Ctrl-C does: files closed, the run left resumable."""


class CliError(Exception):
    """A user error: its message is printed as one line, and the exit code is 2."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type name when it has none). The twin of
    `_checks.first_line`, kept here because this leaf loads before the command line handles
    Ctrl-C, and `_checks` would bring numpy into that window."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__

"""The command line's error (a leaf module: any command may raise it without importing the
CLI) and its exit codes."""

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class CliError(Exception):
    """A user error: its message is printed as one line, and the exit code is 2."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type name when it has none)."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__

"""The error of the file-format layer (a leaf: anything may import it)."""


class FormatError(ValueError):
    """A file that cannot be read or used as asked; the message names the file (and line)."""

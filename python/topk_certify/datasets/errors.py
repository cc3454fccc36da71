"""The one error class of topk_certify.datasets (a leaf module: imports nothing)."""


class DataError(ValueError):
    """A data set that cannot be read as asked; the message is one line naming the file."""

"""The one error class of topk_certify.models (a leaf module: imports nothing)."""


class CheckpointError(ValueError):
    """A checkpoint file that cannot be turned into a model; the message is one line."""

"""The file formats, each owned by one module in both directions: `counts` (the paper's
frequency format) and `table` (certify's OUT.tsv with its OUT.meta.json sidecar)."""

from .errors import FormatError

__all__ = ["FormatError"]

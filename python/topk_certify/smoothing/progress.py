"""The progress bar over noise samples (tqdm, imported only when a bar is asked for)."""

from __future__ import annotations


def tqdm_class():
    try:
        from tqdm.auto import tqdm
    except ImportError:
        raise ImportError("progress=True needs tqdm: pip install tqdm") from None
    return tqdm


def samples_bar(total: int, name: str = "certify"):
    """A bar over `total` samples, labelled with what the caller runs (`certify`, `predict`)."""
    return tqdm_class()(total=total, unit="samples", unit_scale=True, desc=name, dynamic_ncols=True)


def optional_samples_bar(total: int, name: str = "certify"):
    """samples_bar, or None where tqdm is not installed (the command line's bar is a nicety)."""
    try:
        return samples_bar(total, name)
    except ImportError:
        return None

"""The model, its device and the inputs, checked and prepared for sampling (torch is passed
in by the caller, so that this module imports without it)."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from .._checks import as_int_array

if TYPE_CHECKING:  # pragma: no cover
    import torch


def import_torch():
    try:
        import torch
    except ImportError:
        raise ImportError("sample_counts and certify_batch need PyTorch: pip install 'topk-certify[torch]'") from None
    return torch


def model_tensors(torch, model) -> list:
    if isinstance(model, torch.nn.Module):
        return [*model.parameters(), *model.buffers()]
    return []


def _check_runnable(torch, model) -> None:
    """Models that cannot run here as they are: said before any work."""
    if not callable(model):
        raise TypeError(f"model must be callable (a torch.nn.Module), got {type(model).__name__}")
    if isinstance(model, torch.nn.parallel.DistributedDataParallel):
        raise TypeError(
            "model is wrapped in DistributedDataParallel, which synchronizes buffers at every forward pass "
            "(ranks that run different numbers of batches would wait for each other forever): pass model.module"
        )
    if isinstance(model, torch.nn.Module) and any(t.is_meta for t in model_tensors(torch, model)):
        raise ValueError(
            "the model has parameters on the meta device (shapes without values): load its weights first, "
            "e.g. model.to_empty(device=...) then load_state_dict(...)"
        )


def resolve_device(torch, model, device) -> torch.device:
    """The device of the noise: `device`, or the model's (first parameter), or the CPU (a model
    without parameters cannot tell its device: pass `device` for one that runs elsewhere)."""
    _check_runnable(torch, model)
    tensors = model_tensors(torch, model)
    if device is None:
        return tensors[0].device if tensors else torch.device("cpu")
    device = parse_device(torch, device)
    elsewhere = sorted({str(t.device) for t in tensors if t.device != device})
    if elsewhere:
        raise ValueError(
            f"device={str(device)!r} but the model has parameters on {', '.join(elsewhere)}; "
            f"move the model first (model.to({str(device)!r})): it is not moved for you"
        )
    return device


def parse_device(torch, device) -> torch.device:
    """A torch.device from a name or device, checked to exist here (cuda gets its index)."""
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(
            f"device must be None, a torch.device or a name like 'cpu', 'cuda', 'cuda:1'; got {device!r}"
        ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device={str(device)!r} but no CUDA GPU is available here (torch.cuda.is_available() is False)"
        )
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return device


def model_dtype(torch, model):
    """The floating dtype of the model's first floating parameter or buffer (None without one)."""
    return next((p.dtype for p in model_tensors(torch, model) if p.is_floating_point()), None)


def input_dtype(torch, model, x) -> torch.dtype:
    """The dtype the model takes: a half-precision model's own (the noise is still drawn in
    float32 at least and cast just before the model), else x's."""
    dtype = model_dtype(torch, model)
    if dtype is not None and dtype.itemsize < 4 and x.dtype.itemsize >= 4:
        return dtype
    return x.dtype


def _numpy_to_tensor(torch, x: np.ndarray, model):
    if x.dtype.kind != "f":
        raise TypeError(
            f"x must hold floating-point values, got a numpy array of {x.dtype}; convert "
            "it (scaled as the model expects) to float"
        )
    # A numpy array says nothing about the torch dtype: take the model's, but never below
    # float32 (x itself is not rounded to half precision: the noise is added to it exactly).
    dtype = model_dtype(torch, model) or torch.get_default_dtype()
    if dtype.itemsize < 4:
        dtype = torch.float32
    return torch.from_numpy(x if x.flags.writeable else x.copy()).to(dtype)


def prepare_x(torch, x, model, device) -> torch.Tensor:
    """x as a floating tensor on the device, with its leading batch dimension checked."""
    if isinstance(x, np.ndarray):
        x = _numpy_to_tensor(torch, x, model)
    elif not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor or a numpy.ndarray, got {type(x).__name__}")
    elif not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor (the noise is drawn in its dtype), got {x.dtype}")
    if x.ndim < 1:
        raise ValueError(
            "x must have a leading batch dimension, (E, ...): got a 0-d tensor; use x[None] for a single example"
        )
    if x.shape[0] == 0:
        raise ValueError("x holds no examples (its first dimension is 0)")
    return x.detach().to(device)


def check_finite(torch, x, indices: Sequence[int]) -> None:
    """A NaN or infinite input would be certified at a point that does not exist: refused."""
    finite = torch.isfinite(x.reshape(x.shape[0], -1)).all(dim=1)
    if not bool(finite.all()):
        e = int((~finite).nonzero()[0, 0])
        where = f"x[{e}]" + (f" (index {indices[e]})" if indices[e] != e else "")
        raise ValueError(f"{where} holds NaN or infinite values: inputs must be finite")


def check_indices(indices, num_examples: int) -> Sequence[int]:
    if indices is None:
        return range(num_examples)
    if hasattr(indices, "detach"):
        indices = indices.detach().cpu().numpy()
    array = np.asarray(indices)
    if array.dtype.kind not in "iu" or array.shape != (num_examples,):
        raise ValueError(
            f"indices must be {num_examples} ints (one per example), got {array.dtype} array of shape {array.shape}"
        )
    if num_examples and array.min() < 0:
        raise ValueError("indices must be non-negative")
    return [int(i) for i in array]


def check_labels(labels: Any, num_examples: int) -> np.ndarray:
    if hasattr(labels, "detach"):  # a torch tensor
        labels = labels.detach().cpu().numpy()
    array = as_int_array(labels, "labels")
    if array.dtype == np.uint64 and array.size and int(array.max()) >= 2**63:
        raise ValueError(f"labels must be class indices below 2**63, got {int(array.max())}")
    if array.shape != (num_examples,):
        raise ValueError(f"labels must have shape ({num_examples},), one per example of x; got shape {array.shape}")
    if num_examples and array.min() < 0:
        raise ValueError(f"labels must be non-negative, got {int(array.min())}")
    return np.ascontiguousarray(array, dtype=np.int64)


@contextlib.contextmanager
def eval_mode(torch, model):
    """Eval mode for the call; every submodule's own training flag restored after."""
    if not isinstance(model, torch.nn.Module):
        yield
        return
    flags = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in flags:
            module.training = training

"""The fingerprint of a model: what a resumed run checks to continue only with the same one.

A SHA-256 over the model's state_dict as built (every parameter and buffer: name, dtype,
shape and bytes, in order) and, for a model loaded from a TorchScript file, over that file's
bytes too (its code is part of the model, and not in the state_dict).
"""

from __future__ import annotations

import hashlib
import weakref

import torch

_FILE_DIGESTS: weakref.WeakKeyDictionary[torch.nn.Module, str] = weakref.WeakKeyDictionary()


def remember_file(model: torch.nn.Module, data: bytes) -> None:
    """Records the bytes of the file `model` was loaded from (TorchScript)."""
    _FILE_DIGESTS[model] = hashlib.sha256(data).hexdigest()


def _tensor_bytes(tensor: torch.Tensor) -> bytes:
    tensor = tensor.detach()
    if tensor.layout != torch.strided:
        tensor = tensor.to_dense()
    if tensor.is_quantized:
        tensor = tensor.int_repr()
    flat = tensor.reshape(-1).contiguous().cpu()
    try:
        return flat.view(torch.uint8).numpy().tobytes()
    except (RuntimeError, TypeError):  # a dtype that cannot be viewed as bytes
        return repr(flat.tolist()).encode("utf-8")


def model_fingerprint(model: torch.nn.Module) -> str:
    """A hex SHA-256 of the model's weights and buffers (and TorchScript file)."""
    h = hashlib.sha256()
    file_digest = _FILE_DIGESTS.get(model)
    if file_digest is not None:
        h.update(b"file " + file_digest.encode("ascii") + b"\n")
    with torch.no_grad():
        for name, value in model.state_dict().items():
            if isinstance(value, torch.Tensor):
                shape = ",".join(str(d) for d in value.shape)
                h.update(f"{name}|{value.dtype}|{shape}|".encode())
                h.update(_tensor_bytes(value))
            else:  # extra state: whatever the module stores
                h.update(f"{name}|{type(value).__name__}|{value!r}".encode())
            h.update(b"\n")
    return h.hexdigest()

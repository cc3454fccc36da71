"""Loading Cohen-format checkpoints (Cohen et al.; also SmoothAdv, MACER, consistency training).

The file is a dict {'arch': name, 'state_dict': ..., 'epoch', 'optimizer', ...} written by
torch.save, where the state_dict is that of `Sequential(normalize_layer, network)`: the
network's keys under `1.`, or under `1.module.` when the network was wrapped in
DataParallel (Cohen et al.'s resnet50). The normalise layer keeps its constants outside
the state_dict, so it adds no keys.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Dict, List, Optional, Union

import torch
from torch import nn

from .architectures import ARCHITECTURES, architecture, build_model
from .errors import CheckpointError
from .torchfile import load_torch_file

_DATA_PARALLEL = "1.module."
_SHOWN = 3  # keys named in a mismatch message


def load_checkpoint(path, device: Optional[Union[str, torch.device]] = None) -> nn.Module:
    """The classifier in a Cohen-format checkpoint, in eval mode, on `device` (default: CPU).

    The returned module is `Sequential(Normalize, network)`: it takes images in [0, 1],
    as the noise is added there. Nothing in the file is run (weights_only loading).
    Raises CheckpointError (a ValueError) naming the file and what was wrong.
    """
    path = os.fspath(path)
    target = _device(device)
    blob = load_torch_file(path, CheckpointError, "checkpoint")
    if not isinstance(blob, Mapping):
        raise CheckpointError(
            f"{path}: expected a dict with 'arch' and 'state_dict' (a Cohen-format checkpoint), got a {type(blob).__name__}"
        )
    missing = [key for key in ("arch", "state_dict") if key not in blob]
    if missing:
        found = ", ".join(repr(key) for key in list(blob)[:8])
        raise CheckpointError(
            f"{path}: the checkpoint has no {' or '.join(map(repr, missing))} (a Cohen-format checkpoint has "
            f"'arch' and 'state_dict'; found {found or 'nothing'})"
        )
    arch = blob["arch"]
    try:
        architecture(arch)
    except ValueError:
        raise CheckpointError(f"{path}: unknown arch {arch!r} (known: {', '.join(ARCHITECTURES)})") from None
    model = build_model(arch)
    state = _fitted(path, arch, blob["state_dict"], model.state_dict())
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:  # _fitted checked keys and shapes; this is a backstop
        raise CheckpointError(
            f"{path}: the state_dict does not load into {arch} ({str(exc).strip().splitlines()[-1]})"
        ) from None
    model.eval()
    return model.to(target)


def _fitted(path: str, arch: str, state_dict, expected: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """`state_dict` with keys as `expected` names them, or a CheckpointError saying what differs."""
    if not isinstance(state_dict, Mapping):
        raise CheckpointError(f"{path}: 'state_dict' is a {type(state_dict).__name__}, not a dict of tensors")
    bad = next((key for key in state_dict if not isinstance(key, str)), None)
    if bad is not None:
        raise CheckpointError(f"{path}: the state_dict has a key {bad!r} that is not a string")
    keys = list(state_dict)
    data_parallel = bool(keys) and all(key.startswith(_DATA_PARALLEL) for key in keys)
    # The name each key will load under, mapped to the name the file gives it.
    original = {("1." + key[len(_DATA_PARALLEL) :] if data_parallel else key): key for key in keys}
    state = {name: state_dict[key] for name, key in original.items()}

    missing = [key for key in expected if key not in state]
    # BatchNorm's counter (absent from checkpoints older than PyTorch 0.4.1) is unused in eval mode.
    for key in [key for key in missing if key.endswith(".num_batches_tracked")]:
        state[key] = torch.zeros((), dtype=torch.long)
        missing.remove(key)
    unexpected = [key for name, key in original.items() if name not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {_some([_DATA_PARALLEL + key[2:] if data_parallel else key for key in missing])}")
        if unexpected:
            parts.append(f"unexpected {_some(unexpected)}")
        raise CheckpointError(
            f"{path}: the state_dict does not fit {arch}: {'; '.join(parts)} (expected the keys of "
            f"Sequential(normalize, {arch}), e.g. '1.conv1.weight', or '1.module.conv1.weight' with DataParallel)"
        )
    for name, want in expected.items():
        value = state[name]
        key = original.get(name, name)
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{path}: state_dict[{key!r}] is a {type(value).__name__}, not a tensor")
        if value.shape != want.shape:
            raise CheckpointError(
                f"{path}: state_dict[{key!r}] has shape {tuple(value.shape)}, {arch} needs {tuple(want.shape)}"
            )
    return state


def _some(keys: List[str]) -> str:
    shown = ", ".join(repr(key) for key in keys[:_SHOWN])
    return shown + (f" and {len(keys) - _SHOWN} more" if len(keys) > _SHOWN else "")


def _device(device) -> torch.device:
    if device is None:
        return torch.device("cpu")
    try:
        target = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"device must be 'cpu', 'cuda', 'cuda:N' or a torch.device, got {device!r}") from None
    if target.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r}: no CUDA GPU is available here")
    return target

"""A model from a spec string: `path/to/file.py:NAME`, `package.module:NAME` (an nn.Module or
a no-argument callable returning one), a TorchScript file, or a Cohen-format checkpoint
(`.pt`, `.pth`, `.pth.tar`, `.tar`, `.ts`: told apart by their content, not their name)."""

from __future__ import annotations

import importlib
import importlib.util
import io
import os
import sys
import warnings

import torch

from .._checks import first_line
from .checkpoint import load_checkpoint
from .errors import CheckpointError
from .fingerprint import remember_file
from .torchfile import is_torchscript

FILE_SUFFIXES = (".pt", ".ts", ".pth", ".tar")
ALLOWED = "path/to/file.py:NAME, package.module:NAME, a TorchScript file or a Cohen-format checkpoint"


class ModelSpecError(ValueError):
    """A model spec that does not give a model; the message is one line naming the spec."""


def load_model(spec: str, device) -> torch.nn.Module:
    """The model `spec` names, moved to `device`."""
    if spec.endswith(FILE_SUFFIXES) and ":" not in os.path.basename(spec):
        return _moved(_load_file(spec, device), spec, device)
    target, sep, name = spec.rpartition(":")
    if not sep or not target or not name:
        raise ModelSpecError(f"{spec!r} is not a model spec: expected {ALLOWED}")
    module = _import_target(target)
    if not hasattr(module, name):
        raise ModelSpecError(f"{spec}: {target} has no attribute {name!r}")
    obj = getattr(module, name)
    if not isinstance(obj, torch.nn.Module):
        obj = _call_factory(spec, name, obj)
    return _moved(obj, spec, device)


def _load_file(spec: str, device):
    if not os.path.isfile(spec):
        raise ModelSpecError(f"{spec}: no such file")
    if not is_torchscript(spec):
        try:
            return load_checkpoint(spec)
        except CheckpointError as exc:
            raise ModelSpecError(f"{spec}: neither TorchScript nor a Cohen-format checkpoint ({exc})") from None
    try:
        with open(spec, "rb") as handle:
            data = handle.read()  # read once: the fingerprint is of the bytes that were loaded
    except OSError as exc:
        raise ModelSpecError(f"{spec}: cannot read it ({exc.strerror or exc})") from None
    try:
        with warnings.catch_warnings():  # torch 2.10+ deprecates TorchScript; users still have .pt models
            warnings.simplefilter("ignore", FutureWarning)
            model = torch.jit.load(io.BytesIO(data), map_location=device)
    except (RuntimeError, ValueError) as exc:
        raise ModelSpecError(f"{spec}: not a TorchScript file torch.jit.load can read ({first_line(exc)})") from None
    remember_file(model, data)
    return model


def _call_factory(spec: str, name: str, obj):
    if not callable(obj):
        raise ModelSpecError(f"{spec}: {name} is neither an nn.Module nor a callable returning one")
    try:
        model = obj()
    except SystemExit as exc:
        raise ModelSpecError(f"{spec}: calling {name}() called sys.exit({exc.code!r})") from None
    except Exception as exc:  # the user's factory: report, don't trace
        raise ModelSpecError(f"{spec}: calling {name}() failed: {type(exc).__name__}: {first_line(exc)}") from None
    if not isinstance(model, torch.nn.Module):
        raise ModelSpecError(f"{spec}: {name}() returned a {type(model).__name__}, not an nn.Module")
    return model


def _moved(model, spec: str, device):
    try:
        return model.to(device)
    except (RuntimeError, NotImplementedError) as exc:  # e.g. parameters on the meta device: no data
        raise ModelSpecError(f"{spec}: cannot move the model to {device}: {first_line(exc)}") from None


def _exec_file(target: str):
    module_name = "_topk_certify_model_" + str(abs(hash(os.path.abspath(target))))
    spec = importlib.util.spec_from_file_location(module_name, target)
    if spec is None or spec.loader is None:
        raise ModelSpecError(f"cannot import {target}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    sys.path.insert(0, os.path.dirname(os.path.abspath(target)))  # the file may import modules beside it
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.pop(0)
    return module


def _import_target(target: str):
    if target.endswith(".py") and not os.path.isfile(target):
        raise ModelSpecError(f"no such file {target}")
    try:
        return _exec_file(target) if target.endswith(".py") else importlib.import_module(target)
    except ModelSpecError:
        raise
    except SystemExit as exc:
        raise ModelSpecError(f"importing {target} called sys.exit({exc.code!r}) instead of defining a model") from None
    except ModuleNotFoundError as exc:
        if not target.endswith(".py"):
            raise ModelSpecError(f"no module named {exc.name!r} (from {target!r})") from None
        raise ModelSpecError(f"importing {target} failed: ModuleNotFoundError: {first_line(exc)}") from None
    except Exception as exc:  # the user's file: report, don't trace
        raise ModelSpecError(f"importing {target} failed: {type(exc).__name__}: {first_line(exc)}") from None

"""Loading what `topk-certify certify` is pointed at: a model spec and a data file."""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import warnings
from typing import Tuple

import numpy as np

from .cli import CliError, first_line


def resolve_device(torch, name: str):
    """`auto` (a GPU when there is one), `cpu`, `cuda` or `cuda:N`."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise CliError(f"--device must be auto, cpu, cuda or cuda:N, got {name!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CliError(f"--device {name}: no CUDA GPU is available here (use --device cpu or auto)")
    return device


def load_model(spec: str, device):
    """An nn.Module from `file.py:NAME`, `package.module:NAME` or a TorchScript file.

    NAME is a module instance or a callable with no arguments that returns one (a class,
    a factory function). The model is moved to `device`.
    """
    import torch

    if spec.endswith((".pt", ".ts", ".pth")) and ":" not in os.path.basename(spec):
        if not os.path.isfile(spec):
            raise CliError(f"--model {spec}: no such file")
        try:
            with warnings.catch_warnings():  # torch 2.10+ deprecates TorchScript; users still have .pt models
                warnings.simplefilter("ignore", FutureWarning)
                model = torch.jit.load(spec, map_location=device)
        except (RuntimeError, ValueError) as exc:
            raise CliError(f"--model {spec}: not a TorchScript file torch.jit.load can read ({first_line(exc)})") from None
        return model
    target, sep, name = spec.rpartition(":")
    if not sep or not target or not name:
        raise CliError(f"--model must be path/to/file.py:NAME, package.module:NAME or a TorchScript .pt/.ts file, got {spec!r}")
    module = _import_target(target)
    if not hasattr(module, name):
        raise CliError(f"--model {spec}: {target} has no attribute {name!r}")
    obj = getattr(module, name)
    if not isinstance(obj, torch.nn.Module):
        if not callable(obj):
            raise CliError(f"--model {spec}: {name} is neither an nn.Module nor a callable returning one")
        try:
            obj = obj()
        except Exception as exc:  # the user's factory: report, don't trace
            raise CliError(f"--model {spec}: calling {name}() failed: {type(exc).__name__}: {first_line(exc)}") from None
        if not isinstance(obj, torch.nn.Module):
            raise CliError(f"--model {spec}: {name}() returned a {type(obj).__name__}, not an nn.Module")
    return obj.to(device)


def _import_target(target: str):
    if target.endswith(".py"):
        if not os.path.isfile(target):
            raise CliError(f"--model: no such file {target}")
        module_name = "_topk_certify_model_" + str(abs(hash(os.path.abspath(target))))
        spec = importlib.util.spec_from_file_location(module_name, target)
        if spec is None or spec.loader is None:
            raise CliError(f"--model: cannot import {target}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        # The model file may import modules beside it.
        sys.path.insert(0, os.path.dirname(os.path.abspath(target)))
        try:
            spec.loader.exec_module(module)
        except Exception as exc:  # the user's file: report, don't trace
            raise CliError(f"--model: importing {target} failed: {type(exc).__name__}: {first_line(exc)}") from None
        finally:
            sys.path.pop(0)
        return module
    try:
        return importlib.import_module(target)
    except ModuleNotFoundError as exc:
        raise CliError(f"--model: no module named {exc.name!r} (from {target!r})") from None
    except Exception as exc:
        raise CliError(f"--model: importing {target} failed: {type(exc).__name__}: {first_line(exc)}") from None


def load_data(path: str) -> Tuple[np.ndarray, np.ndarray]:
    """(x, y) from an .npz with arrays x (E, ...) and y (E,), or a .pt dict with tensors x and y."""
    if not os.path.isfile(path):
        raise CliError(f"--data {path}: no such file")
    if path.endswith(".npz"):
        try:
            with np.load(path, allow_pickle=False) as archive:
                missing = [key for key in ("x", "y") if key not in archive.files]
                if missing:
                    raise CliError(f"--data {path}: the .npz has no array {' or '.join(map(repr, missing))} (it needs x and y; found {archive.files})")
                x, y = archive["x"], archive["y"]
        except (OSError, ValueError) as exc:
            raise CliError(f"--data {path}: not a readable .npz ({first_line(exc)})") from None
    elif path.endswith((".pt", ".pth")):
        import torch

        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise CliError(f"--data {path}: torch.load failed ({first_line(exc)})") from None
        if not isinstance(blob, dict) or "x" not in blob or "y" not in blob:
            raise CliError(f"--data {path}: expected a dict with tensors 'x' and 'y'")
        x, y = blob["x"], blob["y"]
        x = x.numpy() if hasattr(x, "numpy") else np.asarray(x)
        y = y.numpy() if hasattr(y, "numpy") else np.asarray(y)
    else:
        raise CliError(f"--data must be an .npz (arrays x, y) or a .pt file (dict of tensors x, y), got {path!r}")
    y = np.asarray(y)
    if x.ndim < 1 or y.ndim != 1 or x.shape[0] != y.shape[0]:
        raise CliError(f"--data {path}: x must be (E, ...) and y (E,) with the same E, got x {x.shape} and y {y.shape}")
    if y.dtype.kind not in "iu":
        if y.dtype.kind == "f" and np.all(y == np.round(y)):
            y = y.astype(np.int64)
        else:
            raise CliError(f"--data {path}: y must hold integer labels, got dtype {y.dtype}")
    return x, y.astype(np.int64)


"""The demo's data and model: scikit-learn's 8x8 handwritten digits (1797 images, 10
classes; the data ship inside scikit-learn), scaled to [0, 1], shape (E, 1, 8, 8), split
into 1297 training and 500 held-out images; a small MLP (normalisation inside the model, as
in Cohen et al.'s models) trained with Gaussian noise augmentation at the demo's sigma, a few
seconds on one CPU core. The model is saved as TorchScript (DIR/model.pt) with the held-out
data (DIR/data.npz, arrays x and y) and reused by the next run made with the same settings
(DIR/model.json). The `demo` command (`cli/demo.py`) certifies and analyzes them.

torch and scikit-learn are imported when used (`pip install 'topk-certify[demo]'`).
"""

from __future__ import annotations

import io
import json
import os
import time
import warnings
from dataclasses import asdict, dataclass
from typing import Optional, Tuple

import numpy as np

from .formats.atomic import replace_atomically, write_text_atomically

__all__ = ["DemoSettings", "load_digits_split", "train_model", "prepare_model"]

DEMO_VERSION = 1  # bump when the data, the model or its training change: caches are redone
KS = (1, 3, 5)
ALPHA = 0.001
DEFAULT_SIGMA = 0.5
DEFAULT_N = 10_000
SMOKE_N = 500
TEST_SIZE = 500
SMOKE_EXAMPLES = 60
EPOCHS = 30
SMOKE_EPOCHS = 2
BATCH_SIZE = 1000
HIDDEN = 256
DIR_ENV = "TOPK_CERTIFY_DEMO_DIR"
DEFAULT_DIR = "demo-out"

MODEL_FILE = "model.pt"
MODEL_JSON = "model.json"
DATA_FILE = "data.npz"
OUT_FILE = "certify.tsv"
COUNTS_FILE = "counts.txt"
RUN_JSON = "certify.json"
TIMINGS_JSON = "timings.json"  # seconds per digit of each protocol run with this model
PLOT_FILE = "certified_accuracy.png"


@dataclass(frozen=True)
class DemoSettings:
    """What the demo's model and data depend on (a cached model is reused only if they match)."""

    sigma: float
    seed: int
    epochs: int
    test_examples: int
    version: int = DEMO_VERSION
    hidden: int = HIDDEN


# -- data ---------------------------------------------------------------------------------------


def load_digits_split(seed: int = 0, test_size: int = TEST_SIZE):
    """scikit-learn's digits in [0, 1] as float32 (E, 1, 8, 8), int64 labels, split stratified:
    (x_train, y_train, x_test, y_test) with test_size held-out images (fixed by seed)."""
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError:
        raise ImportError("the demo needs scikit-learn (its digits data): pip install 'topk-certify[demo]'") from None
    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None, :, :]
    y = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=test_size, stratify=y, random_state=seed)
    return x_train, y_train, x_test, y_test


# -- model --------------------------------------------------------------------------------------


def _build_model(torch, mean: float, std: float, hidden: int = HIDDEN):
    nn = torch.nn

    # The base spelled out: mypy takes no local alias (nn) as a base class.
    class Normalize(torch.nn.Module):
        """(x - mean) / std, inside the model: the noise is added to the [0, 1] image."""

        def __init__(self):
            super().__init__()
            self.register_buffer("mean", torch.tensor(float(mean)))
            self.register_buffer("std", torch.tensor(float(std)))

        def forward(self, x):
            return (x - self.mean) / self.std

    return nn.Sequential(
        Normalize(),
        nn.Flatten(),
        nn.Linear(64, hidden),
        nn.ReLU(),
        nn.Linear(hidden, hidden),
        nn.ReLU(),
        nn.Linear(hidden, 10),
    )


def train_model(
    x_train: np.ndarray, y_train: np.ndarray, *, sigma: float, epochs: int, seed: int, hidden: int = HIDDEN
):
    """The demo's MLP trained with Gaussian noise augmentation (Adam, batches of 64): every
    step sees x + N(0, sigma^2 I). Deterministic given seed; the global torch RNG is untouched.
    Returns the model in eval mode."""
    import torch

    x = torch.from_numpy(x_train)
    y = torch.from_numpy(y_train)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = _build_model(torch, float(x_train.mean()), float(x_train.std()), hidden)
    gen = torch.Generator().manual_seed(seed + 1)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(x.shape[0], generator=gen)
        for start in range(0, x.shape[0], 64):
            batch = order[start : start + 64]
            noisy = x[batch] + sigma * torch.randn(x[batch].shape, generator=gen)
            loss = torch.nn.functional.cross_entropy(model(noisy), y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval()


def _accuracy(torch, model, x: np.ndarray, y: np.ndarray, sigma: float, seed: int) -> Tuple[float, float]:
    """(clean accuracy, accuracy under one draw of noise) of the base classifier."""
    gen = torch.Generator().manual_seed(seed + 2)
    xt = torch.from_numpy(x)
    with torch.inference_mode():
        clean = (model(xt).argmax(1).numpy() == y).mean()
        noisy = (model(xt + sigma * torch.randn(xt.shape, generator=gen)).argmax(1).numpy() == y).mean()
    return float(clean), float(noisy)


def read_json(path: str) -> Optional[dict]:
    try:
        with open(path, encoding="utf-8") as handle:
            value = json.load(handle)
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def write_json(path: str, value: dict) -> None:
    write_text_atomically(path, json.dumps(value, indent=1, sort_keys=True) + "\n")


def _save_atomically(path: str, save) -> None:
    """save(file) writes the content; the file at `path` is replaced only once it is complete."""
    buffer = io.BytesIO()
    save(buffer)
    replace_atomically(path, buffer.getvalue())


def prepare_model(out_dir: str, settings: DemoSettings, *, fresh: bool = False, log=print):
    """The TorchScript model and held-out data in out_dir: reused when model.json records the
    same settings, else trained and saved. Returns (model, x_test, y_test, info)."""
    import torch

    model_path = os.path.join(out_dir, MODEL_FILE)
    data_path = os.path.join(out_dir, DATA_FILE)
    json_path = os.path.join(out_dir, MODEL_JSON)
    info = read_json(json_path)
    cached = (
        not fresh
        and info is not None
        and info.get("settings") == asdict(settings)
        and os.path.isfile(model_path)
        and os.path.isfile(data_path)
    )
    if cached:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                model = torch.jit.load(model_path, map_location="cpu")
            with np.load(data_path, allow_pickle=False) as archive:
                x_test, y_test = archive["x"], archive["y"]
        except (RuntimeError, ValueError, OSError, KeyError):
            cached = False  # a damaged cache: train again
    if cached and info is not None:  # cached implies info; said again for mypy
        log(
            f"using the cached model {model_path} (trained with sigma={settings.sigma}; "
            f"accuracy on the held-out digits: {100 * info['clean_accuracy']:.1f}% clean, "
            f"{100 * info['noisy_accuracy']:.1f}% under noise)"
        )
        return model.eval(), x_test, y_test, info

    x_train, y_train, x_test, y_test = load_digits_split(settings.seed)
    x_test, y_test = x_test[: settings.test_examples], y_test[: settings.test_examples]
    log(
        f"training a small MLP on {len(x_train)} digits with Gaussian noise (sigma={settings.sigma}), "
        f"{settings.epochs} epochs ..."
    )
    start = time.perf_counter()
    trained = train_model(
        x_train, y_train, sigma=settings.sigma, epochs=settings.epochs, seed=settings.seed, hidden=settings.hidden
    )
    seconds = time.perf_counter() - start
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch >= 2.9 deprecates TorchScript
        model = torch.jit.trace(trained, torch.from_numpy(x_test[:2]))
    clean, noisy = _accuracy(torch, model, x_test, y_test, settings.sigma, settings.seed)
    log(
        f"trained in {seconds:.1f} s: accuracy on the held-out digits {100 * clean:.1f}% clean, "
        f"{100 * noisy:.1f}% under noise"
    )
    info = {
        "settings": asdict(settings),
        "train_seconds": round(seconds, 3),
        "clean_accuracy": clean,
        "noisy_accuracy": noisy,
        "train_examples": int(len(x_train)),
        "test_examples": int(len(x_test)),
    }
    # model.json last: it is what marks the cache valid.
    stale = [RUN_JSON, adaptive_name(RUN_JSON), TIMINGS_JSON]  # made with the old model
    for path in [json_path] + [os.path.join(out_dir, name) for name in stale]:
        if os.path.exists(path):
            os.remove(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        _save_atomically(model_path, lambda handle: torch.jit.save(model, handle))
    _save_atomically(data_path, lambda handle: np.savez(handle, x=x_test, y=y_test))
    write_json(json_path, info)
    return model, x_test, y_test, info


def adaptive_name(name: str) -> str:
    """certify.tsv -> certify_adaptive.tsv: the adaptive run's files sit beside the fixed run's."""
    stem, ext = os.path.splitext(name)
    return f"{stem}_adaptive{ext}"

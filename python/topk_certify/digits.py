"""`topk-certify demo`: the whole pipeline on a real data set, with nothing downloaded.

1. Data: scikit-learn's 8x8 handwritten digits (1797 images, 10 classes; the data ship inside
   scikit-learn), scaled to [0, 1], shape (E, 1, 8, 8); a fixed stratified split into 1297
   training and 500 held-out images.
2. Model: a small MLP (normalisation inside the model, as in Cohen et al.'s models) trained
   with Gaussian noise augmentation at the demo's sigma (x + N(0, sigma^2 I) at every step,
   Cohen et al.'s training), a few seconds on one CPU core (one torch thread by default: for
   this tiny model, faster than two on a busy 2-core machine). It is saved as TorchScript
   (DIR/model.pt) with the held-out data (DIR/data.npz, arrays x and y), so that
   `topk-certify certify --model DIR/model.pt --data DIR/data.npz ...` works on them, and
   reused by the next run made with the same settings (DIR/model.json).
3. Certify: the held-out images' true labels for top-1, top-3 and top-5 (`run_certify`, the
   `certify` command's job) into DIR/certify.tsv and DIR/counts.txt, with a progress bar.
   A rerun with the same settings resumes that file (finished rows are kept); other settings
   start it afresh. `--adaptive` writes DIR/certify_adaptive.tsv (and counts, plot) beside
   it, and once both protocols have run, compares their time per digit (DIR/timings.json).
4. Analyze: the certified accuracy table, and the plot DIR/certified_accuracy.png.

torch, scikit-learn and matplotlib are imported when the demo runs (`pip install
'topk-certify[demo]'`), not when the command line starts.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from dataclasses import asdict, dataclass
from typing import Optional, Tuple

import numpy as np

__all__ = ["DemoSettings", "load_digits_split", "train_model", "run_demo", "register"]

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
        from .cli import CliError

        raise CliError("the demo needs scikit-learn (its digits data): pip install 'topk-certify[demo]'") from None
    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None, :, :]
    y = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=test_size, stratify=y, random_state=seed
    )
    return x_train, y_train, x_test, y_test


# -- model --------------------------------------------------------------------------------------


def _build_model(torch, mean: float, std: float, hidden: int = HIDDEN):
    nn = torch.nn

    class Normalize(nn.Module):
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


def train_model(x_train: np.ndarray, y_train: np.ndarray, *, sigma: float, epochs: int, seed: int,
                hidden: int = HIDDEN):
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
            batch = order[start:start + 64]
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


def _read_json(path: str) -> Optional[dict]:
    try:
        with open(path, "r", encoding="utf-8") as handle:
            value = json.load(handle)
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _write_json(path: str, value: dict) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(value, handle, indent=1, sort_keys=True)
        handle.write("\n")
    os.replace(tmp, path)


def prepare_model(out_dir: str, settings: DemoSettings, *, fresh: bool = False, log=print):
    """The TorchScript model and held-out data in out_dir: reused when model.json records the
    same settings, else trained and saved. Returns (model, x_test, y_test, info)."""
    import torch

    model_path = os.path.join(out_dir, MODEL_FILE)
    data_path = os.path.join(out_dir, DATA_FILE)
    json_path = os.path.join(out_dir, MODEL_JSON)
    info = _read_json(json_path)
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
    if cached:
        log(f"using the cached model {model_path} (trained with sigma={settings.sigma}; "
            f"accuracy on the held-out digits: {100 * info['clean_accuracy']:.1f}% clean, "
            f"{100 * info['noisy_accuracy']:.1f}% under noise)")
        return model.eval(), x_test, y_test, info

    x_train, y_train, x_test, y_test = load_digits_split(settings.seed)
    x_test, y_test = x_test[:settings.test_examples], y_test[:settings.test_examples]
    log(f"training a small MLP on {len(x_train)} digits with Gaussian noise (sigma={settings.sigma}), "
        f"{settings.epochs} epochs ...")
    start = time.perf_counter()
    trained = train_model(x_train, y_train, sigma=settings.sigma, epochs=settings.epochs,
                          seed=settings.seed, hidden=settings.hidden)
    seconds = time.perf_counter() - start
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch >= 2.9 deprecates TorchScript
        model = torch.jit.trace(trained, torch.from_numpy(x_test[:2]))
    clean, noisy = _accuracy(torch, model, x_test, y_test, settings.sigma, settings.seed)
    log(f"trained in {seconds:.1f} s: accuracy on the held-out digits {100 * clean:.1f}% clean, "
        f"{100 * noisy:.1f}% under noise")
    info = {"settings": asdict(settings), "train_seconds": round(seconds, 3),
            "clean_accuracy": clean, "noisy_accuracy": noisy,
            "train_examples": int(len(x_train)), "test_examples": int(len(x_test))}
    # model.json last: it is what marks the cache valid.
    stale = [RUN_JSON, _adaptive_name(RUN_JSON), TIMINGS_JSON]  # made with the old model
    for path in [json_path] + [os.path.join(out_dir, name) for name in stale]:
        if os.path.exists(path):
            os.remove(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(model, model_path + ".tmp")
    os.replace(model_path + ".tmp", model_path)
    with open(data_path + ".tmp", "wb") as handle:
        np.savez(handle, x=x_test, y=y_test)
    os.replace(data_path + ".tmp", data_path)
    _write_json(json_path, info)
    return model, x_test, y_test, info


def _adaptive_name(name: str) -> str:
    """certify.tsv -> certify_adaptive.tsv: the adaptive run's files sit beside the fixed run's."""
    stem, ext = os.path.splitext(name)
    return f"{stem}_adaptive{ext}"


# -- the pipeline -------------------------------------------------------------------------------


def _adaptive_supported() -> bool:
    import inspect

    from .smoothing import certify_batch

    return "adaptive" in inspect.signature(certify_batch).parameters


def run_demo(
    out_dir: str,
    *,
    smoke: bool = False,
    sigma: float = DEFAULT_SIGMA,
    n: Optional[int] = None,
    adaptive: bool = False,
    seed: int = 0,
    threads: Optional[int] = 1,
    fresh: bool = False,
    progress: bool = True,
    log=print,
) -> dict:
    """Runs the demo into out_dir (see the module docstring). Returns the paths written."""
    from .cli import CliError

    try:
        import torch
    except ImportError:
        raise CliError("the demo needs PyTorch: pip install 'topk-certify[demo]'") from None
    from . import analyze
    from .job import run_certify

    if not (sigma > 0 and np.isfinite(sigma)):
        raise CliError(f"--sigma must be a positive number, got {sigma}")
    n = (SMOKE_N if smoke else DEFAULT_N) if n is None else n
    if n < 1:
        raise CliError(f"--n must be a positive integer, got {n}")
    if seed < 0:
        raise CliError(f"--seed must be non-negative, got {seed}")
    if adaptive and not _adaptive_supported():
        raise CliError("--adaptive: this build of topk-certify has no adaptive certification yet")
    if threads is not None:
        if threads < 1:
            raise CliError(f"--threads must be at least 1, got {threads}")
        torch.set_num_threads(threads)
    try:
        os.makedirs(out_dir, exist_ok=True)
        probe = os.path.join(out_dir, ".write-test")
        with open(probe, "w"):
            pass
        os.remove(probe)
    except OSError as exc:
        raise CliError(f"cannot write to {out_dir}: {exc.strerror or exc}") from None

    settings = DemoSettings(
        sigma=float(sigma), seed=int(seed), epochs=SMOKE_EPOCHS if smoke else EPOCHS,
        test_examples=SMOKE_EXAMPLES if smoke else TEST_SIZE,
    )
    model, x_test, y_test, info = prepare_model(out_dir, settings, fresh=fresh, log=log)

    per_run = _adaptive_name if adaptive else (lambda name: name)
    paths = {name: os.path.join(out_dir, file) for name, file in (
        ("model", MODEL_FILE), ("data", DATA_FILE), ("out", per_run(OUT_FILE)),
        ("counts", per_run(COUNTS_FILE)), ("plot", per_run(PLOT_FILE)))}
    run = {"model": info["settings"], "ks": list(KS), "sigma": float(sigma), "n": int(n),
           "alpha": ALPHA, "batch_size": BATCH_SIZE, "seed": int(seed), "adaptive": bool(adaptive)}
    run_json = os.path.join(out_dir, per_run(RUN_JSON))
    if fresh or _read_json(run_json) != run:
        # Other settings (or none recorded): start the certification afresh.
        for path in (paths["out"], paths["out"] + ".meta.json", paths["counts"], paths["plot"]):
            if os.path.exists(path):
                os.remove(path)
        _write_json(run_json, run)
        resuming = False
    else:
        resuming = os.path.exists(paths["out"])

    mode = f"adaptive, at most n={n:,}" if adaptive else f"n={n:,}"
    log(f"certifying the true label of {len(y_test)} held-out digits for top-{', top-'.join(map(str, KS))} "
        f"(sigma={sigma}, {mode} noise samples each, alpha={ALPHA})"
        + (": resuming the rows already in " + paths["out"] if resuming else " ..."))
    start = time.perf_counter()
    run_certify(
        model, x_test, y_test, out=paths["out"], ks=list(KS), sigma=float(sigma), n=int(n),
        alpha=ALPHA, batch_size=BATCH_SIZE, seed=int(seed), device="cpu", counts=paths["counts"],
        resume=True, progress=progress, adaptive=bool(adaptive),
    )
    seconds = time.perf_counter() - start
    log(f"certified in {seconds:.1f} s" + (" (the rest was already done)" if resuming else ""))

    results = analyze.load_results(paths["out"])
    for note in results.notes:
        sys.stderr.write(f"topk-certify: warning: {note}\n")
    rs = analyze.default_radii(float(results.radius.max()))
    log("")
    log(analyze.format_file_report(results, rs, n_max=n))
    if results.time is not None:
        log(_compare_timings(out_dir, results, n=n, adaptive=adaptive))
    try:
        budget = f"adaptive, n <= {n:,}" if adaptive else f"n={n:,}"
        analyze.plot_curves([results], paths["plot"],
                            title=f"certified top-k accuracy, 8x8 digits (sigma={sigma}, {budget})")
    except ImportError as exc:
        sys.stderr.write(f"topk-certify: warning: no plot: {exc}\n")
        paths.pop("plot")

    log("")
    log(f"files in {out_dir}:")
    described = {
        "model": "TorchScript model (MLP trained with Gaussian noise)",
        "data": f"the {len(y_test)} held-out digits (arrays x, y)",
        "out": "certified radius of each digit's true label (idx, label, radius@K, "
        + ("n, time)" if adaptive else "time)"),
        "counts": "noise-sample counts per digit (the paper's frequency format)",
        "plot": "certified accuracy against the radius",
    }
    for name, path in paths.items():
        log(f"  {path:<{max(len(p) for p in paths.values())}}  {described[name]}")
    log("certify them again with other settings:")
    log(f"  topk-certify certify --model {paths['model']} --data {paths['data']} --sigma {sigma} "
        f"--k 1 3 5 --n {n}{' --adaptive' if adaptive else ''} -o OTHER.tsv")
    return paths


def _times(slow: float, fast: float) -> str:
    ratio = slow / max(fast, 1e-12)
    return f"{ratio:.1f}x faster" if ratio >= 1 else f"{1 / ratio:.1f}x slower"


def _compare_timings(out_dir: str, results, *, n: int, adaptive: bool) -> str:
    """Records this run's seconds per digit (timings.json, per protocol, for this model) and
    compares adaptive with fixed when both have run: the time saved, measured, not guessed."""
    path = os.path.join(out_dir, TIMINGS_JSON)
    timings = _read_json(path) or {}
    fixed_key, adaptive_key = f"fixed n={n}", f"adaptive n={n}"
    per_digit = float(results.time.mean())
    timings[adaptive_key if adaptive else fixed_key] = per_digit
    _write_json(path, timings)
    if fixed_key not in timings or adaptive_key not in timings:
        if adaptive:
            return (f"to time the fixed protocol for comparison, run the demo again without --adaptive "
                    f"(it writes {OUT_FILE} beside this file and reuses the model)")
        return (f"to see the time adaptive certification saves, run the demo again with --adaptive "
                f"(it writes {_adaptive_name(OUT_FILE)} beside this file and reuses the model)")
    fixed, quick = timings[fixed_key], timings[adaptive_key]
    text = (f"time per digit: {1000 * fixed:.1f} ms fixed (n={n:,}), {1000 * quick:.1f} ms adaptive "
            f"(at most n={n:,}): adaptive is {_times(fixed, quick)}")
    if adaptive and results.n is not None:
        text += f", with {n * results.num_examples / max(int(results.n.sum()), 1):.1f}x fewer noise samples"
    fixed_out = os.path.join(out_dir, OUT_FILE)
    text += (f"\ncompare their certified accuracy: topk-certify analyze {fixed_out} "
             f"{os.path.join(out_dir, _adaptive_name(OUT_FILE))}")
    return text


# -- command line -------------------------------------------------------------------------------


def register(sub) -> None:
    """Adds `demo` to the command line's subparsers."""
    parser = sub.add_parser(
        "demo",
        help="the whole pipeline on scikit-learn's 8x8 digits (nothing downloaded)",
        description="Trains a small MLP with Gaussian noise augmentation on scikit-learn's 8x8 "
        "handwritten digits (cached for the next run), certifies the 500 held-out digits for "
        "top-1, top-3 and top-5 (certify.tsv, counts.txt), and prints certified accuracy "
        "against the radius with a plot (certified_accuracy.png). A rerun with the same settings "
        "reuses the model and continues certify.tsv where it stopped (finished rows are kept, so "
        "a finished run is not redone); other settings, or --fresh, start it afresh.",
    )
    parser.add_argument(
        "--out", metavar="DIR", default=None,
        help=f"where the files go (default ${DIR_ENV} or ./{DEFAULT_DIR}; with --smoke, DIR/smoke)",
    )
    parser.add_argument(
        "--smoke", action="store_true",
        help=f"a tiny run for tests: {SMOKE_EXAMPLES} digits, n={SMOKE_N}, {SMOKE_EPOCHS} training epochs",
    )
    parser.add_argument(
        "--adaptive", action=argparse.BooleanOptionalAction, default=False,
        help="adaptive certification: stop each digit's sampling once its outcome is settled, "
        "and report the samples saved (default off)",
    )
    parser.add_argument("--sigma", type=float, default=DEFAULT_SIGMA,
                        help=f"noise level for training and certification (default {DEFAULT_SIGMA})")
    parser.add_argument("--n", type=int, default=None,
                        help=f"noise samples per digit (default {DEFAULT_N:,}; {SMOKE_N} with --smoke)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split, training and noise (default 0)")
    parser.add_argument(
        "--threads", type=int, default=1,
        help="torch CPU threads (default 1: the model is tiny; on a busy 2-core machine one "
        "thread certified 2.5x faster than two)",
    )
    parser.add_argument("--fresh", action="store_true", help="ignore the cached model and results: train and certify again")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True,
                        help="progress bar while sampling (default on)")
    parser.set_defaults(handler=run_demo_command)


def run_demo_command(args: argparse.Namespace) -> None:
    out_dir = args.out
    if out_dir is None:
        out_dir = os.environ.get(DIR_ENV) or DEFAULT_DIR
        if args.smoke:
            out_dir = os.path.join(out_dir, "smoke")
    run_demo(
        out_dir, smoke=args.smoke, sigma=args.sigma, n=args.n, adaptive=args.adaptive,
        seed=args.seed, threads=args.threads, fresh=args.fresh, progress=args.progress,
    )

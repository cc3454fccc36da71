"""`topk-certify demo`: the whole pipeline on a real data set, with nothing downloaded.

1. Data and model (`digits`): scikit-learn's 8x8 digits, a small MLP trained with Gaussian
   noise, cached in DIR.
2. Certify: the held-out images' true labels for top-1, top-3 and top-5 (`run_certify`, the
   `certify` command's job) into DIR/certify.tsv and DIR/counts.txt, with a progress bar.
   A rerun with the same settings resumes that file (finished rows are kept); other settings
   start it afresh. `--adaptive` writes DIR/certify_adaptive.tsv (and counts, plot) beside
   it, and once both protocols have run, compares their time per digit (DIR/timings.json).
3. Analyze: the certified accuracy table, and the plot DIR/certified_accuracy.png.

torch, scikit-learn and matplotlib are imported when the demo runs.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Dict, Optional

import numpy as np

from .. import analysis
from ..datasets.source import ArraySource
from ..digits import (
    ALPHA,
    BATCH_SIZE,
    COUNTS_FILE,
    DATA_FILE,
    DEFAULT_DIR,
    DEFAULT_N,
    DEFAULT_SIGMA,
    DIR_ENV,
    EPOCHS,
    KS,
    MODEL_FILE,
    OUT_FILE,
    PLOT_FILE,
    RUN_JSON,
    SMOKE_EPOCHS,
    SMOKE_EXAMPLES,
    SMOKE_N,
    TEST_SIZE,
    TIMINGS_JSON,
    DemoSettings,
    adaptive_name,
    prepare_model,
    read_json,
    write_json,
)
from ..formats.table import load_results, meta_path
from ..settings import CertifySettings
from .errors import CliError


def _check_options(torch, *, sigma: float, n: int, seed: int, threads: Optional[int]) -> None:
    if not (sigma > 0 and np.isfinite(sigma)):
        raise CliError(f"--sigma must be a positive number, got {sigma}")
    if n < 1:
        raise CliError(f"--n must be a positive integer, got {n}")
    if seed < 0:
        raise CliError(f"--seed must be non-negative, got {seed}")
    if threads is not None:
        if threads < 1:
            raise CliError(f"--threads must be at least 1, got {threads}")
        torch.set_num_threads(threads)


def _check_writable(out_dir: str) -> None:
    try:
        os.makedirs(out_dir, exist_ok=True)
        probe = os.path.join(out_dir, ".write-test")
        with open(probe, "w"):
            pass
        os.remove(probe)
    except OSError as exc:
        raise CliError(f"cannot write to {out_dir}: {exc.strerror or exc}") from None


def _paths(out_dir: str, adaptive: bool) -> Dict[str, str]:
    per_run = adaptive_name if adaptive else (lambda name: name)
    return {
        name: os.path.join(out_dir, file)
        for name, file in (
            ("model", MODEL_FILE),
            ("data", DATA_FILE),
            ("out", per_run(OUT_FILE)),
            ("counts", per_run(COUNTS_FILE)),
            ("plot", per_run(PLOT_FILE)),
        )
    }


def _start_or_resume(out_dir: str, paths: Dict[str, str], run: dict, *, adaptive: bool, fresh: bool) -> bool:
    """Whether the certification resumes; with other settings (or none recorded) its files
    (all the demo's own) are removed so that it starts afresh."""
    run_json = os.path.join(out_dir, adaptive_name(RUN_JSON) if adaptive else RUN_JSON)
    if fresh or read_json(run_json) != run:
        for path in (paths["out"], meta_path(paths["out"]), paths["counts"], paths["plot"]):
            if os.path.exists(path):
                os.remove(path)
        write_json(run_json, run)
        return False
    return os.path.exists(paths["out"])


def _report(out_dir: str, paths: Dict[str, str], *, sigma: float, n: int, adaptive: bool, log) -> None:
    results = load_results(paths["out"])
    for note in results.notes:
        sys.stderr.write(f"topk-certify: warning: {note}\n")
    rs = analysis.default_radii(float(results.radius.max()))
    log("")
    log(analysis.format_file_report(results, rs, n_max=n))
    if results.time is not None:
        log(_compare_timings(out_dir, results, n=n, adaptive=adaptive))
    try:
        budget = f"adaptive, n <= {n:,}" if adaptive else f"n={n:,}"
        analysis.plot_curves(
            [results], paths["plot"], title=f"certified top-k accuracy, 8x8 digits (sigma={sigma}, {budget})"
        )
    except ImportError as exc:
        sys.stderr.write(f"topk-certify: warning: no plot: {exc}\n")
        paths.pop("plot")


def _list_files(
    out_dir: str, paths: Dict[str, str], *, sigma: float, n: int, adaptive: bool, examples: int, log
) -> None:
    log("")
    log(f"files in {out_dir}:")
    described = {
        "model": "TorchScript model (MLP trained with Gaussian noise)",
        "data": f"the {examples} held-out digits (arrays x, y)",
        "out": "certified radius of each digit's true label (idx, label, radius@K, "
        + ("n, time)" if adaptive else "time)"),
        "counts": "noise-sample counts per digit (the paper's frequency format)",
        "plot": "certified accuracy against the radius",
    }
    for name, path in paths.items():
        log(f"  {path:<{max(len(p) for p in paths.values())}}  {described[name]}")
    log("certify them again with other settings:")
    log(
        f"  topk-certify certify --model {paths['model']} --data {paths['data']} --sigma {sigma} "
        f"--k 1 3 5 --n {n}{' --adaptive' if adaptive else ''} -o OTHER.tsv"
    )


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
    from ..smoothing.inputs import import_torch
    from .job import run_certify

    try:
        torch = import_torch()
    except ImportError:
        raise CliError("the demo needs PyTorch: pip install 'topk-certify[demo]'") from None

    n = (SMOKE_N if smoke else DEFAULT_N) if n is None else n
    _check_options(torch, sigma=sigma, n=n, seed=seed, threads=threads)
    _check_writable(out_dir)
    settings = DemoSettings(
        sigma=float(sigma),
        seed=int(seed),
        epochs=SMOKE_EPOCHS if smoke else EPOCHS,
        test_examples=SMOKE_EXAMPLES if smoke else TEST_SIZE,
    )
    model, x_test, y_test, info = prepare_model(out_dir, settings, fresh=fresh, log=log)
    paths = _paths(out_dir, adaptive)
    run = {
        "model": info["settings"],
        "ks": list(KS),
        "sigma": float(sigma),
        "n": int(n),
        "alpha": ALPHA,
        "batch_size": BATCH_SIZE,
        "seed": int(seed),
        "adaptive": bool(adaptive),
    }
    resuming = _start_or_resume(out_dir, paths, run, adaptive=adaptive, fresh=fresh)

    mode = f"adaptive, at most n={n:,}" if adaptive else f"n={n:,}"
    log(
        f"certifying the true label of {len(y_test)} held-out digits for top-{', top-'.join(map(str, KS))} "
        f"(sigma={sigma}, {mode} noise samples each, alpha={ALPHA})"
        + (": resuming the rows already in " + paths["out"] if resuming else " ...")
    )
    start = time.perf_counter()
    certify = CertifySettings.build(
        k=list(KS),
        sigma=float(sigma),
        n=int(n),
        alpha=ALPHA,
        batch_size=BATCH_SIZE,
        seed=int(seed),
        adaptive=bool(adaptive),
    )
    run_certify(
        model,
        ArraySource(paths["data"], x_test, y_test),
        certify,
        out=paths["out"],
        device="cpu",
        counts=paths["counts"],
        resume=True,
        progress=progress,
    )
    log(f"certified in {time.perf_counter() - start:.1f} s" + (" (the rest was already done)" if resuming else ""))
    _report(out_dir, paths, sigma=sigma, n=n, adaptive=adaptive, log=log)
    _list_files(out_dir, paths, sigma=sigma, n=n, adaptive=adaptive, examples=len(y_test), log=log)
    return paths


def _times(slow: float, fast: float) -> str:
    ratio = slow / max(fast, 1e-12)
    return f"{ratio:.1f}x faster" if ratio >= 1 else f"{1 / ratio:.1f}x slower"


def _compare_timings(out_dir: str, results, *, n: int, adaptive: bool) -> str:
    """Records this run's seconds per digit (timings.json, per protocol, for this model) and
    compares adaptive with fixed when both have run: the time saved, measured, not guessed."""
    path = os.path.join(out_dir, TIMINGS_JSON)
    timings = read_json(path) or {}
    fixed_key, adaptive_key = f"fixed n={n}", f"adaptive n={n}"
    per_digit = float(results.time.mean())
    timings[adaptive_key if adaptive else fixed_key] = per_digit
    write_json(path, timings)
    if fixed_key not in timings or adaptive_key not in timings:
        if adaptive:
            return (
                f"to time the fixed protocol for comparison, run the demo again without --adaptive "
                f"(it writes {OUT_FILE} beside this file and reuses the model)"
            )
        return (
            f"to see the time adaptive certification saves, run the demo again with --adaptive "
            f"(it writes {adaptive_name(OUT_FILE)} beside this file and reuses the model)"
        )
    fixed, quick = timings[fixed_key], timings[adaptive_key]
    text = (
        f"time per digit: {1000 * fixed:.1f} ms fixed (n={n:,}), {1000 * quick:.1f} ms adaptive "
        f"(at most n={n:,}): adaptive is {_times(fixed, quick)}"
    )
    if adaptive and results.n is not None:
        text += f", with {n * results.num_examples / max(int(results.n.sum()), 1):.1f}x fewer noise samples"
    fixed_out = os.path.join(out_dir, OUT_FILE)
    text += (
        f"\ncompare their certified accuracy: topk-certify analyze {fixed_out} "
        f"{os.path.join(out_dir, adaptive_name(OUT_FILE))}"
    )
    return text


NAME = "demo"
HELP = "the whole pipeline on scikit-learn's 8x8 digits (nothing downloaded)"
DESCRIPTION = (
    "Trains a small MLP with Gaussian noise augmentation on scikit-learn's 8x8 "
    "handwritten digits (cached for the next run), certifies the 500 held-out digits for "
    "top-1, top-3 and top-5 (certify.tsv, counts.txt), and prints certified accuracy "
    "against the radius with a plot (certified_accuracy.png). A rerun with the same settings "
    "reuses the model and continues certify.tsv where it stopped (finished rows are kept, so "
    "a finished run is not redone); other settings, or --fresh, start it afresh."
)


def add_arguments(parser) -> None:
    parser.add_argument(
        "--out",
        metavar="DIR",
        default=None,
        help=f"where the files go (default ${DIR_ENV} or ./{DEFAULT_DIR}; with --smoke, DIR/smoke)",
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help=f"a tiny run for tests: {SMOKE_EXAMPLES} digits, n={SMOKE_N}, {SMOKE_EPOCHS} training epochs",
    )
    parser.add_argument(
        "--adaptive",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="adaptive certification: stop each digit's sampling once its outcome is settled, "
        "and report the samples saved (default off)",
    )
    parser.add_argument(
        "--sigma",
        type=float,
        default=DEFAULT_SIGMA,
        help=f"noise level for training and certification (default {DEFAULT_SIGMA})",
    )
    parser.add_argument(
        "--n", type=int, default=None, help=f"noise samples per digit (default {DEFAULT_N:,}; {SMOKE_N} with --smoke)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the split, training and noise (default 0)")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default 1: the model is tiny; on a busy 2-core machine one "
        "thread certified 2.5x faster than two)",
    )
    parser.add_argument(
        "--fresh", action="store_true", help="ignore the cached model and results: train and certify again"
    )
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="progress bar while sampling (default on)",
    )


def run(args: argparse.Namespace) -> None:
    out_dir = args.out
    if out_dir is None:
        out_dir = os.environ.get(DIR_ENV) or DEFAULT_DIR
        if args.smoke:
            out_dir = os.path.join(out_dir, "smoke")
    run_demo(
        out_dir,
        smoke=args.smoke,
        sigma=args.sigma,
        n=args.n,
        adaptive=args.adaptive,
        seed=args.seed,
        threads=args.threads,
        fresh=args.fresh,
        progress=args.progress,
    )

"""The main job: certify a model on a data set, one TSV row per example, resumable.

Examples are certified in chunks of ceil(batch_size / n) (so small n still fills each
forward batch) with `certify_batch(indices=...)`: with a seed, every example's noise is a
function of (seed, its index, batch_size) alone, so a chunked, resumed or sharded run
writes exactly the rows of one uninterrupted call.
"""

from __future__ import annotations

import os
import time
import zlib
from typing import Optional, Sequence

import numpy as np

from .cli import CliError, check_distinct_ks, first_line
from .countsfile import format_counts_line, format_header
from .results import AppendOnlyTable, CountsLog, check_meta, done_indices, write_meta
from .stats import validate_alpha, validate_bound, validate_k, validate_sigma


def output_columns(ks: Sequence[int], adaptive: bool) -> list:
    return ["idx", "label"] + [f"radius@{k}" for k in ks] + (["n"] if adaptive else []) + ["time"]


def _check_positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise CliError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _probe_num_classes(torch, model, x) -> int:
    """The model's output width, from one forward pass on one clean input (before any file
    is written, so that a wrong model or labels fail without leaving half a run behind)."""
    from .smoothing import _eval_mode

    try:
        with _eval_mode(torch, model), torch.inference_mode():
            out = model(x[:1])
    except Exception as exc:  # the user's model on the user's data: report, don't trace
        raise CliError(
            f"the model fails on the data's inputs (shape {tuple(x.shape[1:])}, {x.dtype}): "
            f"{type(exc).__name__}: {first_line(exc)}"
        ) from None
    if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != 1:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise CliError(f"the model must return logits of shape (batch, num_classes); on one input it returned {shape}")
    return int(out.shape[1])


def run_certify(
    model,
    x,
    y,
    *,
    out: str,
    ks: Sequence[int],
    sigma: float,
    n: int = 100_000,
    n0: int = 100,
    alpha: float = 0.001,
    batch_size: int = 1000,
    bound: str = "simuem",
    seed: Optional[int] = None,
    device=None,
    counts: Optional[str] = None,
    resume: bool = False,
    progress: bool = True,
    adaptive: bool = False,
    radii: Optional[Sequence[float]] = None,
    describe: Optional[dict] = None,
) -> None:
    """Certifies each example's true label y[i] in the top-k for every k in ks, writing
    `out` (TSV: idx, label, radius@K..., [n], time) row by row. See the module docstring."""
    import torch

    from . import distributed
    from .smoothing import _prepare_x, _resolve_device, certify_batch

    try:
        ks_tuple, _ = validate_k(list(ks))
        sigma = validate_sigma(sigma)
        alpha = validate_alpha(alpha)
        bound = validate_bound(bound)
    except (TypeError, ValueError) as exc:
        raise CliError(str(exc)) from None
    n = _check_positive_int("--n", n)
    n0 = _check_positive_int("--n0", n0)
    batch_size = _check_positive_int("--batch-size", batch_size)
    ks = list(ks_tuple)

    ctx = distributed.context()
    device = _resolve_device(torch, model, device if device is not None else ctx.device)
    x_dev = _prepare_x(torch, x, model, device)
    labels = np.asarray(y, dtype=np.int64)
    num_examples = x_dev.shape[0]
    num_classes = _probe_num_classes(torch, model, x_dev)
    for k in ks:
        if k >= num_classes:
            raise CliError(f"--k {k} must be below the model's number of classes {num_classes}")
    if num_examples and (labels.min() < 0 or labels.max() >= num_classes):
        bad = int(labels[(labels < 0) | (labels >= num_classes)][0])
        raise CliError(f"label {bad} in the data is outside the model's classes [0, {num_classes})")

    check_distinct_ks(ks)
    if adaptive:
        from .adaptive import resolve_radii

        try:  # every setting is checked before a file is created
            resolve_radii(radii, n=n, num_classes=num_classes, ks=ks, sigma=sigma, alpha=alpha, bound=bound)
        except (TypeError, ValueError) as exc:
            raise CliError(str(exc)) from None
    if counts is not None and _same_file(counts, out):
        raise CliError(f"--counts and -o name the same file ({out}): give the counts their own file")

    settings = {
        "ks": ks, "sigma": sigma, "n": n, "n0": n0, "alpha": alpha, "batch_size": batch_size,
        "bound": bound, "seed": seed, "adaptive": bool(adaptive),
        "radii": None if radii is None else [float(r) for r in radii],
        "num_examples": int(num_examples), "labels_crc32": zlib.crc32(labels.tobytes()),
        "num_classes": num_classes,
    }
    settings.update(describe or {})
    table = AppendOnlyTable(out, output_columns(ks, adaptive))
    counts_log = CountsLog(
        counts,
        format_header(sigma=sigma, n=n, alpha=alpha, bound=bound, adaptive=int(bool(adaptive)), seed=seed),
    )

    done: set = set()
    if ctx.is_writer:
        exists = os.path.exists(out)
        if exists and not resume:
            raise CliError(f"{out} already exists: pass --resume to continue that run, or choose another -o")
        if not exists and counts is not None and os.path.exists(counts):
            raise CliError(f"--counts {counts} already exists and {out} does not: choose another --counts file "
                           "(an existing one is only continued, with --resume, beside its own output)")
        if exists:
            check_meta(out, settings)
            rows = table.existing_rows()
            done = done_indices(rows)
            fresh = False
        else:
            rows, fresh = [], True
        # The counts file first: if it cannot be written, no OUT is left behind.
        counts_log.open(fresh=fresh or counts is None or not os.path.exists(counts), rows_in_out=len(rows))
        try:
            table.open(fresh=fresh)
            write_meta(out, settings)
        except BaseException:
            counts_log.close()
            if fresh and counts is not None:
                os.remove(counts)
            raise
    done = ctx.broadcast(done)
    todo = [i for i in range(num_examples) if i not in done]

    certify_kwargs = dict(
        k=ks, sigma=sigma, n=n, n0=n0, alpha=alpha, batch_size=batch_size, bound=bound,
        seed=seed, device=device,
    )
    if adaptive:
        certify_kwargs.update(adaptive=True, radii=radii)
    chunk = max(1, -(-batch_size // n))
    if adaptive:
        chunk *= 8  # adaptive examples stop at different times: more of them share batches

    bar = _progress_bar(len(todo) * n, ctx) if progress else None
    try:
        for group in ctx.rounds(todo, chunk):
            start = time.perf_counter()
            rows_out, counts_out = [], []
            if group:
                result = certify_batch(model, x_dev[group], labels[group], indices=group, **certify_kwargs)
                per_example = (time.perf_counter() - start) / len(group)
                for j, i in enumerate(group):
                    cells = [str(i), str(int(labels[i]))] + [repr(float(r)) for r in np.atleast_1d(result.radius[j])]
                    if adaptive:
                        cells.append(str(int(result.n_used[j])))
                    cells.append(f"{per_example:.4f}")
                    rows_out.append(cells)
                    counts_out.append(format_counts_line(result.counts[j], labels[i]))
            finished = ctx.gather_in_order(list(zip(rows_out, counts_out)))
            for cells, line in finished:
                counts_log.append(line)  # before its row: a kill never leaves a row without counts
                table.append(cells)
            if bar is not None:
                bar.update(len(finished) * n)
    finally:
        if bar is not None:
            bar.close()
        table.close()
        counts_log.close()


def _same_file(a: str, b: str) -> bool:
    if os.path.exists(a) and os.path.exists(b):
        return os.path.samefile(a, b)
    return os.path.realpath(a) == os.path.realpath(b)


def _progress_bar(total: int, ctx):
    if not ctx.is_writer:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, unit="samples", unit_scale=True, desc="certify", dynamic_ncols=True)

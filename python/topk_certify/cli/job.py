"""The main job: run a model over a data set, one TSV row per example, resumable. The
commands that do so (`certify`, `predict`) share every step and differ only in a `Job`: the
meta's kind, OUT's header, and how a group of examples becomes rows.

Examples are read and certified in rounds of ceil(ROUND_BATCHES * batch_size / n) (so that
several forward batches are packed per call and a GPU does not idle between rounds) with
`certify_with(indices=...)`: with a seed, every example's noise is a function of (seed, its
index, batch_size) alone, so a chunked, resumed or sharded run writes exactly the rows of one
uninterrupted call. Under torchrun every step that can fail is agreed on by all ranks
(`distributed`), so an error on one rank ends them all.

A run's identity is its content: its meta records every result-affecting setting, the
model's fingerprint and digests of the examples written (`identity`), and a resume checks
them all, reading only, before it appends a row.
"""

from __future__ import annotations

import dataclasses
import time
import zlib
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .. import distributed
from .._checks import first_out_of_range
from ..formats import table
from ..formats.counts import CountsWriter, format_counts_line
from ..models.fingerprint import model_fingerprint
from ..settings import CertifySettings
from ..smoothing.certify import certify_with
from ..smoothing.inputs import eval_mode, import_torch, prepare_x, resolve_device
from ..smoothing.progress import optional_samples_bar
from ..smoothing.sampler import ModelExit, model_failure_rows
from .args import check_distinct_ks
from .errors import CliError, first_line
from .identity import example_digests, verify_examples, verify_radii
from .run_files import KIND_BEFORE_KINDS, RunFiles

ROUND_BATCHES = 4  # forward batches' worth of samples certified per round (at least)
NOT_IN_META = ("progress",)  # settings that cannot change a result
CERTIFY = KIND_BEFORE_KINDS  # the certify job's kind

# (row cells, counts line) of one example; the counts line is written only with a counts file.
Row = Tuple[List[str], str]


@dataclasses.dataclass(frozen=True)
class Job:
    """What one command's run does with a group of examples; everything else (the checks, the
    files, the rounds, torchrun) is the shared job's.

    kind: the meta's "kind" (a resume as another kind is refused) and the progress bar's name.
    header: OUT's columns.
    sample: (model, x, labels, settings, device, indices) -> the result of sampling the
        group (the user's model failures in it are reported by the job, in one line).
    rows: (result, indices, labels, seconds per example) -> one Row per example.
    counts: the counts file to write beside OUT, or None.
    """

    kind: str
    header: Sequence[str]
    sample: Callable[..., Any]
    rows: Callable[[Any, List[int], np.ndarray, float], List[Row]]
    counts: Optional[str] = None


def _model_exit(exc: BaseException, rows: int) -> Optional[CliError]:
    """The one-line error for the model calling sys.exit on a batch (None for other errors)."""
    if isinstance(exc, (SystemExit, ModelExit)):  # ModelExit: the sampler's wrapper of a SystemExit
        return CliError(f"the model called sys.exit({exc.code!r}) on a batch of {rows}")
    return None


def _probe_num_classes(torch, model, x, idx: int) -> int:
    """The model's output width, from one forward pass on one clean input (before any file
    is written, so that a wrong model or labels fail without leaving half a run behind)."""
    try:
        with eval_mode(torch, model), torch.inference_mode():
            out = model(x[:1])
    except (Exception, SystemExit) as exc:  # the user's model on the user's data: report, don't trace
        exited = _model_exit(exc, 1)
        if exited is not None:
            raise exited from None
        raise CliError(
            f"the model fails on the data's inputs (shape {tuple(x.shape[1:])}, {x.dtype}): "
            f"{type(exc).__name__}: {first_line(exc)}"
        ) from None
    if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != 1:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise CliError(f"the model must return logits of shape (batch, num_classes); on one input it returned {shape}")
    if out.dtype == torch.bool or out.is_complex():
        raise CliError(f"the model must return real-valued logits, it returned {out.dtype}")
    if not bool(torch.isfinite(out).all()):
        raise CliError(f"the model's output on the clean input of example {idx} is NaN or infinite")
    return int(out.shape[1])


def _check_against_model(settings: CertifySettings, labels: np.ndarray, num_classes: int) -> None:
    for k in settings.ks:
        if k >= num_classes:
            raise CliError(f"--k {k} must be below the model's number of classes {num_classes}")
    bad = first_out_of_range(labels, num_classes)
    if bad is not None:
        raise CliError(f"label {int(labels[bad])} in the data is outside the model's classes [0, {num_classes})")
    check_distinct_ks(settings.ks)
    if settings.adaptive:
        from ..adaptive import resolve_radii

        s = settings
        resolve_radii(s.radii, n=s.n, num_classes=num_classes, ks=s.ks, sigma=s.sigma, alpha=s.alpha, bound=s.bound)


SCAN_BYTES = 1 << 26  # examples read per step when checking the data before the run


def _check_finite(source, selected: List[int]) -> None:
    """Every selected example finite, before a file is written (image sources are finite by
    construction: 8-bit pixels scaled to [0, 1])."""
    if getattr(source, "finite_by_construction", False) or not selected:
        return
    step = max(1, SCAN_BYTES // max(1, int(np.prod(source.sample_shape)) * source.dtype.itemsize))
    for start in range(0, len(selected), step):
        chunk = selected[start : start + step]
        finite = np.isfinite(source.read(chunk).reshape(len(chunk), -1)).all(axis=1)
        if not finite.all():
            raise CliError(f"example {chunk[int(np.argmin(finite))]} of {source.name} holds NaN or infinite values")


def _json_value(value: object) -> object:
    """A setting as the meta stores it (JSON: tuples become lists)."""
    if isinstance(value, (tuple, list)):
        return [_json_value(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)


def settings_meta(settings: CertifySettings) -> Dict[str, object]:
    """Every field of the settings that can change a result, whatever fields there are."""
    return {
        f.name: _json_value(getattr(settings, f.name))
        for f in dataclasses.fields(settings)
        if f.name not in NOT_IN_META
    }


def _meta(settings: CertifySettings, source, num_classes: int, job: Job, describe, model_sha) -> Dict[str, object]:
    meta: Dict[str, object] = {
        "version": table.META_VERSION,
        "kind": job.kind,
        "num_examples": len(source),
        "labels_crc32": zlib.crc32(source.labels.tobytes()),
        "model_num_classes": num_classes,
        "counts": job.counts is not None,
        "model_sha256": model_sha,
        "examples": None,  # set when the files are opened: the examples written so far
    }
    meta.update(describe or {})
    shared = set(meta) & set(settings_meta(settings))
    if shared:
        raise RuntimeError(f"internal error: settings fields {sorted(shared)} clash with the run's meta keys")
    meta.update(settings_meta(settings))
    return meta


def _open_files(settings, source, num_classes, job: Job, *, out, describe, model_sha, selected) -> RunFiles:
    s = settings
    writer = None
    if job.counts is not None:
        fields = dict(sigma=s.sigma, n=s.n, alpha=s.alpha, bound=s.bound, adaptive=int(s.adaptive), seed=s.seed)
        writer = CountsWriter(job.counts, fields)
    meta = _meta(s, source, num_classes, job, describe, model_sha)

    def digests_of(group: List[int]) -> List[bytes]:
        return example_digests(group, source.labels[group], source.read(group))

    def check_examples(recorded, done: int):
        return verify_examples(out, recorded, done, selected, digests_of)

    def check_radii(rows, header, counts_rows) -> None:
        # Only certify's rows are radii; adaptive radii come from the looks, not from the final counts alone.
        if job.kind == CERTIFY and not s.adaptive:
            verify_radii(out, rows, header, counts_rows, s, num_classes)

    return RunFiles(out, job.header, meta, writer, selected, check_examples, check_radii)


def run_job(
    model,
    source,
    settings: CertifySettings,
    job: Job,
    *,
    out: str,
    device=None,
    resume: bool = False,
    selection: Optional[Sequence[int]] = None,
    describe: Optional[dict] = None,
    progress: bool = True,
) -> None:
    """Runs `job` on each selected example, writing `out` (TSV, `job.header`) row by row.
    `source` reads examples by index (len, labels, read); `selection` is the idx to run
    (default all). Every check comes before a file is created; a resume continues only the
    same run (the same kind, settings, model and examples)."""
    torch = import_torch()
    ctx = distributed.context()
    settings = settings.but(progress=False)
    selected = list(range(len(source))) if selection is None else list(selection)

    def check():
        dev = resolve_device(torch, model, device if device is not None else ctx.device)
        source.check_inputs(selected)  # every selected file opens as what it claims to be
        # Probed on a selected example (or the first one, when nothing is selected: the run
        # still checks the model and writes its header).
        probe = selected[:1] or [0]
        first = prepare_x(torch, source.read(probe), model, dev)
        num_classes = _probe_num_classes(torch, model, first, probe[0])
        _check_against_model(settings, source.labels, num_classes)
        _check_finite(source, selected)
        model_sha = model_fingerprint(model) if ctx.is_writer else None
        files = _open_files(
            settings, source, num_classes, job, out=out, describe=describe, model_sha=model_sha, selected=selected
        )
        return dev, num_classes, files

    dev, num_classes, files = ctx.together(check)
    done = ctx.from_writer(lambda: files.open(resume) if ctx.is_writer else set())
    try:
        todo = [i for i in selected if i not in done]
        # Every round's model outputs must be as wide as the probe's (the counts lines too).
        rounds = settings.but(num_classes=num_classes)
        _run_rounds(model, source, rounds, job, dev, todo, files, ctx, progress)
    finally:
        if ctx.is_writer:
            files.close()


def run_certify(
    model,
    source,
    settings: CertifySettings,
    *,
    out: str,
    device=None,
    counts: Optional[str] = None,
    resume: bool = False,
    selection: Optional[Sequence[int]] = None,
    describe: Optional[dict] = None,
    progress: bool = True,
) -> None:
    """Certifies each selected example's true label in the top-k for every k, writing `out`
    (TSV: idx, label, radius@K..., [n], time) row by row, and `counts` (the paper's frequency
    format) beside it when given: `run_job` with the certify job."""
    job = certify_job(settings, counts)
    run_job(
        model,
        source,
        settings,
        job,
        out=out,
        device=device,
        resume=resume,
        selection=selection,
        describe=describe,
        progress=progress,
    )


def certify_job(settings: CertifySettings, counts: Optional[str] = None) -> Job:
    """The certify command's job: idx, label, radius@K..., [n], time; the counts lines too."""

    def sample(model, x, labels, rounds: CertifySettings, device, indices):
        return certify_with(model, x, labels, rounds, device=device, indices=indices)

    def rows(result, group: List[int], labels: np.ndarray, seconds: float) -> List[Row]:
        out = []
        for j, i in enumerate(group):
            cells = [str(i), str(int(labels[j]))] + [repr(float(r)) for r in np.atleast_1d(result.radius[j])]
            if settings.adaptive:
                cells.append(str(int(result.n_used[j])))
            cells.append(f"{seconds:.4f}")
            out.append((cells, format_counts_line(result.counts[j], int(labels[j]))))
        return out

    return Job(CERTIFY, table.columns(settings.ks, settings.adaptive), sample, rows, counts)


def round_size(settings: CertifySettings) -> int:
    """Examples certified per round: at least ROUND_BATCHES forward batches of samples."""
    size = max(1, -(-ROUND_BATCHES * settings.batch_size // settings.n))
    if settings.adaptive:
        size *= 8  # adaptive examples stop at different times: more of them share batches
    return size


def _run_rounds(
    model, source, settings: CertifySettings, job: Job, device, todo: List[int], files: RunFiles, ctx, progress: bool
) -> None:
    chunk = round_size(settings)
    bar = optional_samples_bar(len(todo) * settings.n, job.kind) if progress and ctx.is_writer else None
    # The writer's own failure (a full disk, say) is raised inside the next agreed step, so
    # the other ranks learn of it instead of waiting for a round that never comes.
    failure: List[Exception] = []

    def work(group: List[int]) -> list:
        if failure:
            raise failure[0]
        return _run_group(model, source, settings, job, device, group)

    try:
        for group in ctx.rounds(todo, chunk):
            finished = ctx.gather_in_order(lambda group=group: work(group))
            try:
                files.append_round(finished)
            except Exception as exc:
                failure.append(exc)
            if bar is not None:
                bar.update(len(finished) * settings.n)
        ctx.together(lambda: work([]))
    finally:
        if bar is not None:
            bar.close()


def _run_group(model, source, settings: CertifySettings, job: Job, device, group: List[int]) -> list:
    """(row cells, counts line, digest) of each example of `group` (empty on a rank with none left)."""
    if not group:
        return []
    start = time.perf_counter()
    labels = source.labels[group]
    x = source.read(group)
    try:
        result = job.sample(model, x, labels, settings, device, group)
    except (Exception, SystemExit) as exc:
        rows = model_failure_rows(exc)
        if rows is None:
            raise
        # The user's model failed: one line that names the stage.
        exited = _model_exit(exc, rows)
        if exited is not None:
            raise exited from None
        raise CliError(f"the model failed on a batch of {rows}: {type(exc).__name__}: {first_line(exc)}") from None
    digests = example_digests(group, labels, x)
    per_example = (time.perf_counter() - start) / len(group)
    return [
        (cells, line, digest) for (cells, line), digest in zip(job.rows(result, group, labels, per_example), digests)
    ]

"""Certification on the sampler: the fixed protocol and the adaptive one, for given labels
or predicted ones, driven by one `CertifySettings`. `api.py` holds the public signatures."""

from __future__ import annotations

import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .. import adaptive as adaptive_stats
from .._checks import first_out_of_range, validate_k
from ..result import CertifyResult
from ..settings import CertifySettings
from ..stats import certify_counts
from .inputs import check_finite, check_indices, check_labels, eval_mode, import_torch, prepare_x, resolve_device
from .progress import samples_bar, tqdm_class


class _ClassCheck:
    """Checks k, the labels and the adaptive radii against the number of classes, as soon as
    it is known (before the long loop): called by the sampler after its first forward pass."""

    def __init__(self, settings: CertifySettings, labels: Optional[np.ndarray]):
        self.settings = settings
        self.labels = labels
        self.radii: Optional[np.ndarray] = None

    def __call__(self, classes: int) -> None:
        s = self.settings
        validate_k(s.ks, classes)
        if self.labels is not None:
            bad = first_out_of_range(self.labels, classes)
            if bad is not None:
                raise ValueError(
                    f"labels must be smaller than the number of classes ({classes}): "
                    f"labels[{bad}] = {int(self.labels[bad])}"
                )
        if s.adaptive and self.radii is None:
            self.radii = adaptive_stats.resolve_radii(
                s.radii, n=s.n, num_classes=classes, ks=s.ks, sigma=s.sigma, alpha=s.alpha, bound=s.bound
            )


def make_sampler(model, x, settings: CertifySettings, indices: Sequence[int], on_num_classes=None):
    """The sampler of one call, running the model's inference form (`inference.runner_for`:
    built and checked on a probe batch here, before the long loop; the module itself is
    untouched, and eval mode and inference mode on it stay with `count_plan`)."""
    from . import inference, sampler
    from .inputs import input_dtype

    seed = sampler.fresh_seed() if settings.seed is None else settings.seed
    return sampler.NoiseSampler(
        inference.runner_for(model, x, settings),
        x,
        sigma=settings.sigma,
        batch_size=settings.batch_size,
        seed=seed,
        indices=indices,
        totals={sampler.SELECT: settings.n0, sampler.ESTIMATE: settings.n},
        num_classes=settings.num_classes,
        on_num_classes=on_num_classes,
        input_dtype=input_dtype(sampler.torch, model, x),  # the user's model's: a runner has no parameters
    )


def select_candidates(select_counts: np.ndarray, top: int) -> np.ndarray:
    """The `top` labels with the largest selection counts, ties to the lower label (a stable
    sort of -counts)."""
    return np.argsort(-select_counts, axis=1, kind="stable")[:, :top].astype(np.int64)


def _bar_callback(bar, finished: Optional[List[int]] = None) -> Optional[Callable[[int], None]]:
    if bar is None:
        return None
    start = time.perf_counter()

    def on_batch(rows: int) -> None:
        bar.update(rows)
        if finished is not None:
            elapsed = time.perf_counter() - start
            bar.set_postfix_str(f"{finished[0] / elapsed:.3g} examples/s", refresh=False)

    return on_batch


def count_plan(
    torch, model, sampler, plan: Sequence[Tuple[int, int]], progress: bool, name: str = "certify"
) -> Dict[int, np.ndarray]:
    """Counts for every (purpose, m) of `plan`, for every example: {purpose: (E, C) int64}.

    The requests go example by example (example 0's purposes in plan order, then example
    1's, ...), so examples finish in order and at most a batch's worth are in flight.
    """
    num_examples = sampler.x.shape[0]
    requests = ((e, purpose, m) for e in range(num_examples) for purpose, m in plan)
    counts: Dict[int, np.ndarray] = {}
    bar = samples_bar(num_examples * sum(m for _, m in plan), name) if progress else None
    finished = [0]
    try:
        with eval_mode(torch, model), torch.inference_mode():
            for tag, row in sampler.run(requests, on_batch=_bar_callback(bar, finished)):
                e, which = divmod(tag, len(plan))
                purpose = plan[which][0]
                if purpose not in counts:
                    counts[purpose] = np.zeros((num_examples, row.shape[0]), dtype=np.int64)
                counts[purpose][e] = row
                if which == len(plan) - 1:
                    finished[0] += 1
    finally:
        if bar is not None:
            bar.close()
    return counts


def prepare(model, x, labels, settings: CertifySettings, device, indices):
    """(torch, x on the device, indices, labels or None): everything checked before sampling."""
    torch = import_torch()
    if settings.progress:
        tqdm_class()  # checked now, not after the sampling
    device = resolve_device(torch, model, device)
    x = prepare_x(torch, x, model, device)
    indices = check_indices(indices, x.shape[0])
    check_finite(torch, x, indices)
    if labels is not None:
        labels = check_labels(labels, x.shape[0])
    return torch, x, indices, labels


def certify_with(model, x, labels, settings: CertifySettings, *, device=None, indices=None) -> CertifyResult:
    """certify_batch with its keywords already checked into `settings`."""
    torch, x, indices, labels = prepare(model, x, labels, settings, device, indices)
    check = _ClassCheck(settings, labels)
    if settings.num_classes is not None:
        check(settings.num_classes)
    sampler = make_sampler(model, x, settings, indices, on_num_classes=check)
    if settings.adaptive:
        return _certify_adaptive(torch, model, sampler, labels, settings, check)
    return _certify_fixed(torch, model, sampler, labels, settings)


def _certify_fixed(torch, model, sampler, labels, settings: CertifySettings) -> CertifyResult:
    from .sampler import ESTIMATE, SELECT

    s = settings
    plan = [(SELECT, s.n0), (ESTIMATE, s.n)] if labels is None else [(ESTIMATE, s.n)]
    counts = count_plan(torch, model, sampler, plan, s.progress)
    estimate = counts[ESTIMATE]
    num_examples = estimate.shape[0]
    if labels is not None:
        radius = certify_counts(estimate, labels, k=s.k, sigma=s.sigma, alpha=s.alpha, bound=s.bound)
    else:
        top = max(s.ks)
        labels = select_candidates(counts[SELECT], top)
        radius = certify_counts(
            np.repeat(estimate, top, axis=0), labels.reshape(-1), k=s.k, sigma=s.sigma, alpha=s.alpha, bound=s.bound
        )
        if s.single_k:
            radius = radius.reshape(num_examples, top)
        else:  # (E * K, len(k)) -> (E, len(k), K)
            radius = radius.reshape(num_examples, top, len(s.ks)).transpose(0, 2, 1)
    return _result(radius, estimate, labels, np.full(num_examples, s.n, dtype=np.int64), s)


def _result(radius, counts, labels, n_used, s: CertifySettings) -> CertifyResult:
    return CertifyResult(
        radius=np.ascontiguousarray(radius, dtype=np.float64),
        counts=counts,
        labels=labels,
        k=s.k,
        n_used=n_used,
        sigma=s.sigma,
        alpha=s.alpha,
        bound=s.bound,
    )


def _select(sampler, num_examples: int, n0: int, on_batch) -> np.ndarray:
    from .sampler import SELECT

    requests = ((e, SELECT, n0) for e in range(num_examples))
    rows = dict(sampler.run(requests, on_batch=on_batch))
    return np.stack([rows[e] for e in range(num_examples)])


def _certify_adaptive(torch, model, sampler, labels, settings: CertifySettings, check: _ClassCheck) -> CertifyResult:
    """The staged loop of `adaptive_loop` on the sampler."""
    from . import adaptive_loop
    from .sampler import ESTIMATE

    s = settings
    predict = labels is None
    num_examples = sampler.x.shape[0]
    bar = samples_bar(num_examples * (s.n + (s.n0 if predict else 0))) if s.progress else None
    on_batch = _bar_callback(bar)
    try:
        with eval_mode(torch, model), torch.inference_mode():
            if predict:
                candidates = select_candidates(_select(sampler, num_examples, s.n0, on_batch), max(s.ks))
            else:
                candidates = np.asarray(labels, dtype=np.int64)[:, None]
            radius, counts, n_used = adaptive_loop.run(
                sampler,
                candidates=candidates,
                ks=s.ks,
                sigma=s.sigma,
                n=s.n,
                alpha=s.alpha,
                bound=s.bound,
                radii=lambda: check.radii,
                purpose=ESTIMATE,
                on_batch=on_batch,
            )
        if bar is not None:
            budget = num_examples * s.n
            bar.set_postfix_str(f"saved {100 * (1 - n_used.sum() / max(budget, 1)):.0f}% of {budget:,} samples")
    finally:
        if bar is not None:
            bar.close()
    # radius: (E, K, len(ks)) -> the shapes of fixed mode
    if predict:
        out = radius[:, :, 0] if s.single_k else radius.transpose(0, 2, 1)
        return _result(out, counts, candidates, n_used, s)
    out = radius[:, 0, 0] if s.single_k else radius[:, 0, :]
    return _result(out, counts, np.asarray(labels, dtype=np.int64), n_used, s)

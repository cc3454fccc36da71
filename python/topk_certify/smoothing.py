"""The PyTorch front: count a classifier's labels under Gaussian noise, certify top-k radii.

`sample_counts` draws n noisy copies of each input on the model's device and counts the
base classifier's labels (argmax of its output); `certify_batch` turns such counts into
certified top-k radii with the Rust core (`certify_counts`), for given labels (the paper's
evaluation) or for predicted ones (n0 selection samples, then n fresh ones).

torch (and tqdm, for progress=True) are imported inside the functions: `import topk_certify`
works without them.
"""

from __future__ import annotations

import contextlib
import numbers
import time
from typing import TYPE_CHECKING, Optional, Sequence, Tuple, Union

import numpy as np

from .result import CertifyResult
from .stats import (
    as_int_array,
    certify_counts,
    validate_alpha,
    validate_bound,
    validate_k,
    validate_sigma,
)

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["sample_counts", "certify_batch"]

# -- argument checks (all raised before any sampling) -----------------------------------------


def _import_torch():
    try:
        import torch
    except ImportError:
        raise ImportError(
            "sample_counts and certify_batch need PyTorch: pip install 'topk-certify[torch]'"
        ) from None
    return torch


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_int(name: str, value, minimum: int) -> int:
    if not _is_int(value):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}")
    return int(value)


def _check_seed(seed) -> Optional[int]:
    if seed is None:
        return None
    if not _is_int(seed):
        raise TypeError(f"seed must be None or an int, got {type(seed).__name__}")
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    return int(seed)


def _check_indices(indices, num_examples: int) -> Sequence[int]:
    if indices is None:
        return range(num_examples)
    if hasattr(indices, "detach"):
        indices = indices.detach().cpu().numpy()
    array = np.asarray(indices)
    if array.dtype.kind not in "iu" or array.shape != (num_examples,):
        raise ValueError(
            f"indices must be {num_examples} ints (one per example), got "
            f"{array.dtype} array of shape {array.shape}"
        )
    if num_examples and array.min() < 0:
        raise ValueError("indices must be non-negative")
    return [int(i) for i in array]


def _check_labels(labels, num_examples: int) -> np.ndarray:
    if hasattr(labels, "detach"):  # a torch tensor
        labels = labels.detach().cpu().numpy()
    array = as_int_array(labels, "labels")
    if array.shape != (num_examples,):
        raise ValueError(
            f"labels must have shape ({num_examples},), one per example of x; got "
            f"shape {array.shape}"
        )
    if num_examples and array.min() < 0:
        raise ValueError(f"labels must be non-negative, got {int(array.min())}")
    return np.ascontiguousarray(array, dtype=np.int64)


def _check_labels_range(labels: np.ndarray, num_classes: int) -> None:
    if labels.size and labels.max() >= num_classes:
        e = int(np.argmax(labels >= num_classes))
        raise ValueError(
            f"labels must be smaller than the number of classes ({num_classes}): "
            f"labels[{e}] = {int(labels[e])}"
        )


def _check_num_classes(num_classes) -> Optional[int]:
    return None if num_classes is None else _check_int("num_classes", num_classes, 1)


def _model_tensors(torch, model) -> list:
    if isinstance(model, torch.nn.Module):
        return [*model.parameters(), *model.buffers()]
    return []


def _resolve_device(torch, model, device) -> "torch.device":
    """The device of the noise: `device`, or the model's (first parameter), or the CPU."""
    if not callable(model):
        raise TypeError(f"model must be callable (a torch.nn.Module), got {type(model).__name__}")
    tensors = _model_tensors(torch, model)
    if device is None:
        return tensors[0].device if tensors else torch.device("cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"device must be None, a torch.device or a name like 'cpu', 'cuda', 'cuda:1'; got {device!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={str(device)!r} but no CUDA GPU is available here (torch.cuda.is_available() is False)")
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    elsewhere = sorted({str(t.device) for t in tensors if t.device != device})
    if elsewhere:
        raise ValueError(
            f"device={str(device)!r} but the model has parameters on {', '.join(elsewhere)}; "
            f"move the model first (model.to({str(device)!r})): it is not moved for you"
        )
    return device


def _prepare_x(torch, x, model, device) -> "torch.Tensor":
    """x as a floating tensor on the device, with its leading batch dimension checked."""
    if isinstance(x, np.ndarray):
        if x.dtype.kind != "f":
            raise TypeError(
                f"x must hold floating-point values, got a numpy array of {x.dtype}; convert "
                "it (scaled as the model expects) to float"
            )
        # A numpy array says nothing about the torch dtype: take the model's.
        dtype = next(
            (p.dtype for p in _model_tensors(torch, model) if p.is_floating_point()),
            torch.get_default_dtype(),
        )
        x = torch.from_numpy(x if x.flags.writeable else x.copy()).to(dtype)
    elif not isinstance(x, torch.Tensor):
        raise TypeError(
            f"x must be a torch.Tensor or a numpy.ndarray, got {type(x).__name__}"
        )
    elif not x.is_floating_point():
        raise TypeError(
            f"x must be a floating-point tensor (the noise is drawn in its dtype), got {x.dtype}"
        )
    if x.ndim < 1:
        raise ValueError(
            "x must have a leading batch dimension, (E, ...): got a 0-d tensor; "
            "use x[None] for a single example"
        )
    if x.shape[0] == 0:
        raise ValueError("x holds no examples (its first dimension is 0)")
    return x.detach().to(device)


@contextlib.contextmanager
def _eval_mode(torch, model):
    """Eval mode for the call; every submodule's own training flag restored after."""
    if not isinstance(model, torch.nn.Module):
        yield
        return
    flags = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in flags:
            module.training = training


def _tqdm():
    try:
        from tqdm.auto import tqdm
    except ImportError:
        raise ImportError("progress=True needs tqdm: pip install tqdm") from None
    return tqdm


def _progress_bar(total: int):
    return _tqdm()(total=total, unit="samples", unit_scale=True, desc="certify", dynamic_ncols=True)


# -- sampling -----------------------------------------------------------------------------------


def _count(
    torch,
    model,
    x,
    plan: Sequence[Tuple[int, int]],
    *,
    sigma: float,
    batch_size: int,
    seed: Optional[int],
    indices: Sequence[int],
    num_classes: Optional[int],
    on_num_classes=None,
    progress: bool = False,
):
    """Counts for every (purpose, m) of `plan`, for every example: {purpose: (E, C) int64}.

    The requests go example by example (example 0's purposes in plan order, then example
    1's, ...), so examples finish in order and at most a batch's worth are in flight.
    """
    from . import _sampler

    num_examples = x.shape[0]
    sampler = _sampler.NoiseSampler(
        model,
        x,
        sigma=sigma,
        batch_size=batch_size,
        seed=_sampler.fresh_seed() if seed is None else seed,
        indices=indices,
        totals={purpose: m for purpose, m in plan},
        num_classes=num_classes,
        on_num_classes=on_num_classes,
    )
    requests = ((e, purpose, m) for e in range(num_examples) for purpose, m in plan)
    counts = {}
    bar = _progress_bar(num_examples * sum(m for _, m in plan)) if progress else None
    try:
        on_batch = None
        if bar is not None:
            start, finished = time.perf_counter(), [0]

            def on_batch(rows: int) -> None:
                bar.update(rows)
                elapsed = time.perf_counter() - start
                bar.set_postfix_str(f"{finished[0] / elapsed:.3g} examples/s", refresh=False)

        with _eval_mode(torch, model), torch.inference_mode():
            for tag, row in sampler.run(requests, on_batch=on_batch):
                e, which = divmod(tag, len(plan))
                purpose = plan[which][0]
                if purpose not in counts:
                    counts[purpose] = np.zeros((num_examples, row.shape[0]), dtype=np.int64)
                counts[purpose][e] = row
                if bar is not None and which == len(plan) - 1:
                    finished[0] += 1
    finally:
        if bar is not None:
            bar.close()
    return counts


def sample_counts(
    model,
    x,
    *,
    sigma: float,
    n: int,
    num_classes: Optional[int] = None,
    batch_size: int = 1000,
    seed: Optional[int] = None,
    device=None,
    indices=None,
) -> np.ndarray:
    """Count the base classifier's labels on n noisy copies of each input.

    For each example x[e], draws x[e] + eps_j, eps_j ~ N(0, sigma^2 I), j = 1..n, runs the model
    and counts the argmax of its output (ties: the lowest label).

    Args:
        model: a torch.nn.Module (or callable) mapping a batch (B, *x.shape[1:]) to logits
            (B, C). It is put in eval mode for the call (each submodule's flag is restored
            after, also on error) and run under torch.inference_mode(). It is not moved.
        x: (E, ...) tensor or numpy array; the first dimension is the batch of E examples.
            A tensor keeps its dtype (the noise is drawn in it); a numpy array is converted
            to the dtype of the model's parameters.
        sigma: noise standard deviation (finite, > 0).
        n: noise samples per example (>= 1).
        num_classes: width C of the counts; defaults to the model's output width (it must not
            be smaller).
        batch_size: rows per forward pass. Examples are packed: with n = 100 and batch_size =
            1000, ten examples share each forward pass, and only the last pass of the call
            is not full.
        seed: with an int, the noise of example e is a function of (seed, indices[e], n,
            batch_size) only: the same whichever other examples are in the call, in what
            order, in which process (same torch build and device type; CPU and CUDA draw
            different streams). None: fresh randomness on every call.
        device: where to draw the noise and run the model; default the model's device (its
            first parameter's; the CPU for a model without parameters). The model must
            already be there; x is moved.
        indices: the example numbers that key the noise (E non-negative ints, default 0..E-1).
            Pass the positions of the examples in the whole data set so that a subset, a
            shard or a resumed run draws the same noise as one big call.

    Returns:
        int64 array (E, C), each row summing to n.
    """
    torch = _import_torch()
    sigma = validate_sigma(sigma)
    n = _check_int("n", n, 1)
    batch_size = _check_int("batch_size", batch_size, 1)
    num_classes = _check_num_classes(num_classes)
    seed = _check_seed(seed)
    device = _resolve_device(torch, model, device)
    x = _prepare_x(torch, x, model, device)
    indices = _check_indices(indices, x.shape[0])
    from ._sampler import ESTIMATE

    counts = _count(
        torch, model, x, [(ESTIMATE, n)], sigma=sigma, batch_size=batch_size, seed=seed,
        indices=indices, num_classes=num_classes,
    )
    return counts[ESTIMATE]


def certify_batch(
    model,
    x,
    labels=None,
    *,
    k: Union[int, Sequence[int]] = 1,
    sigma: float,
    n: int = 100_000,
    n0: int = 100,
    alpha: float = 0.001,
    batch_size: int = 1000,
    bound: str = "simuem",
    num_classes: Optional[int] = None,
    seed: Optional[int] = None,
    device=None,
    progress: bool = False,
    indices=None,
    adaptive: bool = False,
    radii=None,
) -> CertifyResult:
    """Certified top-k radii of the Gaussian-smoothed `model` around each input.

    With `labels` (evaluation, the paper's protocol): draws n noise samples per example and
    certifies that labels[e] is in the top-k of the smoothed classifier g within the returned
    radius (Jia et al., Theorem 1). `result.radius` is float64 (E,), or (E, len(k)) when k
    is a sequence (the counts are drawn once and certified for every k).

    Without labels (prediction): n0 selection samples per example choose the K = max(k)
    candidate labels (largest counts first, ties to the lower label), then n fresh samples
    (an independent noise stream: the selection samples are never reused for the bounds)
    certify each candidate. `result.labels` is (E, K); `result.radius` is (E, K) for an
    int k, (E, len(k), K) for a sequence: radius[e, m, j] is the radius within which
    labels[e, j] stays in the top-k[m]. The predicted top-k[m] set labels[e, :k[m]] is
    certified within radius[e, m, :k[m]].min().

    A radius of 0.0 means not certified. With probability at least 1 - alpha over the noise,
    each reported radius is valid, for perturbations of l2 norm strictly below it.

    Args:
        model, x, sigma, num_classes, batch_size, seed, device, indices: as in
            `sample_counts`.
        labels: None, or E ints (tensor, array or list) in [0, C).
        k: an int in [1, C), or a sequence of them.
        n: certification samples per example.
        n0: selection samples per example (prediction mode only).
        alpha: failure probability, in (0, 1).
        bound: "simuem" (simultaneous Clopper-Pearson, the paper's) or "binocp" (Cohen's).
        progress: show a tqdm bar over the samples with examples/s (needs tqdm).
        adaptive: draw samples in stages and stop an example as soon as more samples can
            no longer change its outcome at `radii` (docs/adaptive.md: alpha is spent over
            the stages, so every radius stays valid with probability >= 1 - alpha). n is
            then the most samples one example may use; `result.n_used` says how many it
            did (the n0 selection samples of prediction mode come on top of it).
        radii: the radii whose outcome (certified beyond r or not) an adaptive run must
            decide; sorted and deduplicated; default 0, 0.25, 0.5, ... up to the largest
            radius n samples can certify. Only with adaptive=True.

    Returns:
        CertifyResult with radius, counts (E, C) over the n certification samples, labels,
        k, n_used (the certification samples each example used: n in fixed mode, at most n
        with adaptive=True; the n0 selection samples are not included), sigma, alpha and
        bound.
    """
    torch = _import_torch()
    sigma = validate_sigma(sigma)
    n = _check_int("n", n, 1)
    alpha = validate_alpha(alpha)
    batch_size = _check_int("batch_size", batch_size, 1)
    bound = validate_bound(bound)
    ks, scalar_k = validate_k(k)
    num_classes = _check_num_classes(num_classes)
    seed = _check_seed(seed)
    predict = labels is None
    if predict:
        n0 = _check_int("n0", n0, 1)
    if not isinstance(progress, bool):
        raise TypeError(f"progress must be a bool, got {type(progress).__name__}")
    if progress:
        _tqdm()  # checked now, not after the sampling
    if not isinstance(adaptive, bool):
        raise TypeError(f"adaptive must be a bool, got {type(adaptive).__name__}")
    if radii is not None and not adaptive:
        raise ValueError("radii only applies to adaptive certification (adaptive=True)")
    if adaptive and radii is not None:
        from . import adaptive as _adaptive

        # Format errors now; the reach of n is checked once C is known.
        _adaptive.resolve_radii(radii, n=max(n, 10**6), num_classes=2, ks=[1], sigma=sigma, alpha=alpha, bound=bound)
    device = _resolve_device(torch, model, device)
    x = _prepare_x(torch, x, model, device)
    num_examples = x.shape[0]
    indices = _check_indices(indices, num_examples)
    if not predict:
        labels = _check_labels(labels, num_examples)

    resolved_radii = []

    def check_classes(classes: int) -> None:
        validate_k(ks, classes)
        if not predict:
            _check_labels_range(labels, classes)
        if adaptive and not resolved_radii:
            from . import adaptive as _adaptive

            resolved_radii.append(_adaptive.resolve_radii(
                radii, n=n, num_classes=classes, ks=ks, sigma=sigma, alpha=alpha, bound=bound))

    if num_classes is not None:
        check_classes(num_classes)

    from ._sampler import ESTIMATE, SELECT

    if adaptive:
        return _certify_adaptive(
            torch, model, x, labels, ks=ks, scalar_k=scalar_k, sigma=sigma, n=n, n0=n0, alpha=alpha,
            batch_size=batch_size, bound=bound, num_classes=num_classes, seed=seed, indices=indices,
            check_classes=check_classes, resolved_radii=resolved_radii, progress=progress,
        )

    plan = [(SELECT, n0), (ESTIMATE, n)] if predict else [(ESTIMATE, n)]
    counts = _count(
        torch, model, x, plan, sigma=sigma, batch_size=batch_size, seed=seed, indices=indices,
        num_classes=num_classes, on_num_classes=check_classes, progress=progress,
    )
    estimate = counts[ESTIMATE]
    k_arg = ks[0] if scalar_k else ks
    if not predict:
        radius = certify_counts(estimate, labels, k=k_arg, sigma=sigma, alpha=alpha, bound=bound)
    else:
        top = max(ks)
        # Stable sort of -counts: the largest counts first, ties to the lower label.
        labels = np.argsort(-counts[SELECT], axis=1, kind="stable")[:, :top].astype(np.int64)
        radius = certify_counts(
            np.repeat(estimate, top, axis=0), labels.reshape(-1), k=k_arg, sigma=sigma,
            alpha=alpha, bound=bound,
        )
        if scalar_k:
            radius = radius.reshape(num_examples, top)
        else:  # (E * K, len(k)) -> (E, len(k), K)
            radius = radius.reshape(num_examples, top, len(ks)).transpose(0, 2, 1)
    return CertifyResult(
        radius=np.ascontiguousarray(radius, dtype=np.float64),
        counts=estimate,
        labels=labels,
        k=k_arg,
        n_used=np.full(num_examples, n, dtype=np.int64),
        sigma=sigma,
        alpha=alpha,
        bound=bound,
    )


def _select_candidates(select_counts: np.ndarray, top: int) -> np.ndarray:
    """The `top` labels with the largest selection counts, ties to the lower label."""
    return np.argsort(-select_counts, axis=1, kind="stable")[:, :top].astype(np.int64)


def _certify_adaptive(torch, model, x, labels, *, ks, scalar_k, sigma, n, n0, alpha, batch_size, bound,
                      num_classes, seed, indices, check_classes, resolved_radii, progress) -> CertifyResult:
    """certify_batch(adaptive=True): the staged loop of `_adaptive_sampling` on the sampler."""
    from . import _adaptive_sampling, _sampler

    predict = labels is None
    num_examples = x.shape[0]
    sampler = _sampler.NoiseSampler(
        model, x, sigma=sigma, batch_size=batch_size, seed=_sampler.fresh_seed() if seed is None else seed,
        indices=indices, totals={_sampler.SELECT: n0, _sampler.ESTIMATE: n}, num_classes=num_classes,
        on_num_classes=check_classes,
    )
    bar = _progress_bar(num_examples * (n + (n0 if predict else 0))) if progress else None
    on_batch = None
    if bar is not None:
        def on_batch(rows: int) -> None:
            bar.update(rows)

    try:
        with _eval_mode(torch, model), torch.inference_mode():
            if predict:
                select = np.zeros((num_examples, 0), dtype=np.int64)
                requests = ((e, _sampler.SELECT, n0) for e in range(num_examples))
                rows = dict(sampler.run(requests, on_batch=on_batch))
                select = np.stack([rows[e] for e in range(num_examples)])
                candidates = _select_candidates(select, max(ks))
            else:
                candidates = np.asarray(labels, dtype=np.int64)[:, None]
            radius, counts, n_used = _adaptive_sampling.run(
                sampler, candidates=candidates, ks=ks, sigma=sigma, n=n, alpha=alpha, bound=bound,
                radii=lambda: resolved_radii[0], purpose=_sampler.ESTIMATE,
                on_batch=on_batch,
            ) if num_examples else (np.zeros((0, candidates.shape[1], len(ks))), np.zeros((0, num_classes or 0), dtype=np.int64), np.zeros(0, dtype=np.int64))
        if bar is not None:
            budget = num_examples * n
            bar.set_postfix_str(f"saved {100 * (1 - n_used.sum() / max(budget, 1)):.0f}% of {budget:,} samples")
    finally:
        if bar is not None:
            bar.close()
    # radius: (E, K, len(ks)) -> the shapes of fixed mode
    if predict:
        out = radius[:, :, 0] if scalar_k else radius.transpose(0, 2, 1)
        result_labels = candidates
    else:
        out = radius[:, 0, 0] if scalar_k else radius[:, 0, :]
        result_labels = np.asarray(labels, dtype=np.int64)
    return CertifyResult(
        radius=np.ascontiguousarray(out, dtype=np.float64), counts=counts, labels=result_labels,
        k=ks[0] if scalar_k else ks, n_used=n_used, sigma=sigma, alpha=alpha, bound=bound,
    )

"""The PyTorch front's public functions: count a classifier's labels under Gaussian noise
(`sample_counts`) and certify top-k radii (`certify_batch`).

torch (and tqdm, for progress=True) are imported when these are called: `import
topk_certify` works without them.
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import numpy as np

from ..result import CertifyResult
from ..settings import CertifySettings
from .certify import certify_with, count_plan, make_sampler, prepare

__all__ = ["sample_counts", "certify_batch"]


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
    optimize: bool = True,
    precision: str = "fp32",
    compile: bool = False,
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
        optimize: run the model's inference form, built once per call on a copy: BatchNorm
            folded into the convolution or linear layer before it, channels_last for 4-D
            inputs, and on the CPU each batch run in slices of a few MB per activation,
            which the allocator reuses (a row's logits do not depend on the rows beside it,
            which the probe checks). It differs from the module as given only by
            floating-point rounding, and is checked against it on a probe batch of noisy
            inputs first (any label or logit
            that differs: the module runs as given, with a warning). A model that cannot be
            traced (data-dependent control flow, hooks, TorchScript, a plain callable) or
            whose forward changes its own attributes runs as given. The noise is the same.
        precision: "fp32" (default), "bf16" or "fp16": autocast around the model's forward
            pass only (the noise is drawn and added as before; logits come back as float32).
            The certificate is then the reduced-precision model's. fp16 is refused on the CPU.
        compile: torch.compile the model (CUDA graphs on CUDA) on one static batch shape
            (a shorter batch is padded and the padding never counted); refused where
            torch.compile cannot run.

    Returns:
        int64 array (E, C), each row summing to n.
    """
    settings = CertifySettings.build(
        sigma=sigma,
        n=n,
        num_classes=num_classes,
        batch_size=batch_size,
        seed=seed,
        optimize=optimize,
        precision=precision,
        compile=compile,
    )
    torch, x, indices, _ = prepare(model, x, None, settings, device, indices)
    from .sampler import ESTIMATE

    sampler = make_sampler(model, x, settings, indices)
    return count_plan(torch, model, sampler, [(ESTIMATE, settings.n)], progress=False)[ESTIMATE]


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
    optimize: bool = True,
    precision: str = "fp32",
    compile: bool = False,
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
        model, x, sigma, num_classes, batch_size, seed, device, indices, optimize,
            precision, compile: as in `sample_counts`.
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
    settings = CertifySettings.build(
        k=k,
        sigma=sigma,
        n=n,
        n0=n0,
        alpha=alpha,
        batch_size=batch_size,
        bound=bound,
        num_classes=num_classes,
        seed=seed,
        progress=progress,
        adaptive=adaptive,
        radii=radii,
        optimize=optimize,
        precision=precision,
        compile=compile,
    )
    return certify_with(model, x, labels, settings, device=device, indices=indices)

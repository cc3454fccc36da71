"""The smoothed classifier as a predictor: its top-k set of each input, or an abstention
(`predict_batch`), on the sampler of `certify` and the test of `stats.predict_counts`."""

from __future__ import annotations

from typing import Optional

from ..result import PredictResult
from ..settings import CertifySettings
from ..stats import predict_counts, single_k
from .certify import count_plan, make_sampler, prepare

__all__ = ["predict_batch"]


def predict_batch(
    model,
    x,
    *,
    k: int = 1,
    sigma: float,
    n: int = 100_000,
    alpha: float = 0.001,
    batch_size: int = 1000,
    seed: Optional[int] = None,
    device=None,
    progress: bool = False,
    indices=None,
    optimize: bool = True,
    precision: str = "fp32",
    compile: bool = False,
) -> PredictResult:
    """The top-k set of the Gaussian-smoothed `model` at each input, or an abstention.

    Draws n noise samples per example, counts the base classifier's labels and returns the k
    labels with the largest counts (ties to the lower label), largest first, when a test at
    level alpha tells them apart from every other label; otherwise a row of -1. For k = 1 this
    is Cohen et al.'s PREDICT (the two-sided binomial test of the top two counts); for k > 1
    the one-sided binomial test of the k-th count against the (k+1)-th, at alpha / (k (C - k))
    (docs/predict.md). For each example, the probability of returning a set that is not a
    top-k set of the smoothed classifier is at most alpha.

    Args:
        model, x, sigma, batch_size, seed, device, indices: as in `sample_counts`. The noise
            is the stream certify_batch uses for its n samples: with the same seed, n and
            batch_size, `counts` equal certify_batch's (with labels) counts.
        k: the size of the set, one int in [1, C).
        n: noise samples per example.
        alpha: the allowed probability of a wrong set per example, in (0, 1).
        progress: show a tqdm bar over the samples (needs tqdm).
        optimize, precision, compile: how the model is run, as in `certify_batch` (the
            prediction is the smoothed classifier of the model as run).

    Returns:
        PredictResult with labels (E, k) (rows of -1 where it abstained), counts (E, C),
        abstained (E,), k, sigma, alpha and n.
    """
    settings = CertifySettings.build(
        k=single_k(k),
        sigma=sigma,
        n=n,
        alpha=alpha,
        batch_size=batch_size,
        seed=seed,
        progress=progress,
        optimize=optimize,
        precision=precision,
        compile=compile,
    )
    torch, x, indices, _ = prepare(model, x, None, settings, device, indices)
    from .sampler import ESTIMATE

    def check_k(num_classes: int) -> None:  # before the long loop, once C is known
        single_k(settings.ks[0], num_classes)

    sampler = make_sampler(model, x, settings, indices, on_num_classes=check_k)
    counts = count_plan(torch, model, sampler, [(ESTIMATE, settings.n)], settings.progress, "predict")[ESTIMATE]
    labels, abstained = predict_counts(counts, k=settings.ks[0], alpha=settings.alpha)
    return PredictResult(
        labels=labels,
        counts=counts,
        abstained=abstained,
        k=settings.ks[0],
        sigma=settings.sigma,
        alpha=settings.alpha,
        n=settings.n,
    )

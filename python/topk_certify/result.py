"""`CertifyResult` and `PredictResult`: what `certify_batch` and `predict_batch` return."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Tuple, Union

import numpy as np


class _CountsResult:
    """What both results share: read-only copies of their arrays, and the counts' shape."""

    _ARRAYS: ClassVar[Tuple[str, ...]] = ()
    counts: np.ndarray

    def __post_init__(self):
        for name in self._ARRAYS:
            array = np.array(getattr(self, name), copy=True)
            array.setflags(write=False)
            object.__setattr__(self, name, array)

    @property
    def num_examples(self) -> int:
        return int(self.counts.shape[0])

    @property
    def num_classes(self) -> int:
        return int(self.counts.shape[1])


@dataclass(frozen=True, eq=False, repr=False)
class CertifyResult(_CountsResult):
    """Certified top-k radii of E examples under Gaussian randomized smoothing.

    Two modes, told apart by `labels.ndim` (see `predicted`):

    - labels given (evaluation, as in the paper): `labels` (E,) are the certified labels,
      `radius` is (E,) for an int k, (E, len(k)) for a sequence of k: `radius[e, m]` is the
      radius within which `labels[e]` stays in the top-`k[m]` of the smoothed classifier.
    - prediction (`labels=None` in `certify_batch`): `labels` (E, K) are the K = max(k)
      candidates chosen by the n0 selection samples, most frequent first. `radius` is (E, K)
      for an int k; for a sequence of k it is (E, len(k), K): `radius[e, m, j]` is the radius
      within which `labels[e, j]` stays in the top-`k[m]`. The top-`k[m]` prediction is
      `labels[e, :k[m]]`, certified as a set within `radius[e, m, :k[m]].min()`.

    A radius of 0.0 means "not certified"; the certificate covers perturbations of l2 norm
    strictly below the radius, each with probability at least 1 - alpha over the noise.

    Attributes:
        radius: float64, shapes above.
        counts: int64 (E, C), label counts of the base classifier over the n certification
            samples (the n0 selection samples are not in them).
        labels: int64 (E,) or (E, K).
        k: the k asked for: an int, or a tuple of ints.
        n_used: int64 (E,), the noise samples counted for each example: `counts.sum(1)`
            (n for every example in the fixed protocol; prediction mode ran n0 more per
            example for the selection, not included).
        sigma, alpha, bound: the noise level, failure probability and bound used.

    The arrays are read-only.
    """

    radius: np.ndarray
    counts: np.ndarray
    labels: np.ndarray
    k: Union[int, Tuple[int, ...]]
    n_used: np.ndarray
    sigma: float
    alpha: float
    bound: str

    _ARRAYS: ClassVar[Tuple[str, ...]] = ("radius", "counts", "labels", "n_used")

    @property
    def predicted(self) -> bool:
        """True for prediction mode (labels chosen by selection samples), False for given labels."""
        return self.labels.ndim == 2

    def _ks(self) -> Tuple[int, ...]:
        return (self.k,) if isinstance(self.k, (int, np.integer)) else tuple(self.k)

    def _radius_per_k(self) -> np.ndarray:
        """(E, len(k)): the radius of each example for each k.

        For prediction mode, the radius of the predicted top-k set: the smallest radius of its
        k candidates.
        """
        ks = self._ks()
        if not self.predicted:
            return self.radius.reshape(self.num_examples, len(ks))
        radius = self.radius.reshape(self.num_examples, len(ks), self.labels.shape[1])
        return np.stack([radius[:, m, :kk].min(axis=1) for m, kk in enumerate(ks)], axis=1)

    def fraction_certified(self, r: float = 0.0):
        """Fraction of examples certified at radius r (radius > r), per k.

        With true labels given, this is the certified top-k accuracy at r. In prediction mode
        an example counts when its whole predicted top-k set is certified. A float for an int
        k, a float64 array (len(k),) for a sequence.
        """
        fractions = (self._radius_per_k() > r).mean(axis=0) if self.num_examples else (np.zeros(len(self._ks())))
        if isinstance(self.k, (int, np.integer)):
            return float(fractions[0])
        return fractions

    def __repr__(self) -> str:
        ks = self._ks()
        fractions = np.atleast_1d(self.fraction_certified(0.0))
        radius = self._radius_per_k()
        n_used = self.n_used
        if n_used.size and (n_used == n_used[0]).all():
            used = f"n_used={int(n_used[0])} each"
        elif n_used.size:
            used = f"n_used={int(n_used.min())}..{int(n_used.max())} (mean {n_used.mean():.0f})"
        else:
            used = "n_used=-"
        if self.predicted:
            mode, what = f"predicted top-{self.labels.shape[1]} labels", "top-k sets certified"
        else:
            mode, what = "labels given", "certified"
        certified = "  ".join(f"k={kk} {100 * f:.1f}%" for kk, f in zip(ks, fractions))
        medians = "  ".join(
            f"k={kk} {np.median(radius[:, m]) if radius.size else float('nan'):.4g}" for m, kk in enumerate(ks)
        )
        return (
            f"CertifyResult({self.num_examples} examples, {self.num_classes} classes, {mode}, "
            f"{used}\n"
            f"  k={self.k!r}, sigma={self.sigma:g}, alpha={self.alpha:g}, bound={self.bound!r}\n"
            f"  {what} (radius > 0): {certified}\n"
            f"  median radius: {medians}\n"
            f"  shapes: radius {self.radius.shape}, counts {self.counts.shape}, "
            f"labels {self.labels.shape})"
        )


@dataclass(frozen=True, eq=False, repr=False)
class PredictResult(_CountsResult):
    """The smoothed classifier's top-k prediction for E examples, with abstentions.

    Attributes:
        labels: int64 (E, k): each example's top-k labels by count, largest first (ties to
            the lower label), or a row of -1 where the test abstained.
        counts: int64 (E, C), label counts of the base classifier over the n noise samples.
        abstained: bool (E,), True where the row of labels is -1.
        k: the size of the set.
        sigma, alpha, n: the noise level, the allowed probability of a wrong set per example,
            and the samples per example.

    For each example, the probability that `labels` holds a set that is not a top-k set of
    the smoothed classifier is at most alpha (docs/predict.md). The arrays are read-only.
    """

    labels: np.ndarray
    counts: np.ndarray
    abstained: np.ndarray
    k: int
    sigma: float
    alpha: float
    n: int

    _ARRAYS: ClassVar[Tuple[str, ...]] = ("labels", "counts", "abstained")

    @property
    def abstention_rate(self) -> float:
        """The share of examples without a prediction (0.0 for no examples)."""
        return float(self.abstained.mean()) if self.num_examples else 0.0

    def contains(self, labels) -> np.ndarray:
        """bool (E,): whether each example's predicted set holds labels[e] (False where the
        prediction abstained). With the true labels, its mean is the accuracy of the smoothed
        classifier as Cohen et al. report it (an abstention counts as wrong)."""
        wanted = np.asarray(labels)
        if wanted.shape != (self.num_examples,) or wanted.dtype.kind not in "iu":
            raise ValueError(
                f"labels must be {self.num_examples} integers, one per example, got shape {wanted.shape} "
                f"of dtype {wanted.dtype}"
            )
        return (self.labels == wanted.astype(np.int64)[:, None]).any(axis=1) & ~self.abstained

    def __repr__(self) -> str:
        answered = self.num_examples - int(self.abstained.sum())
        return (
            f"PredictResult({self.num_examples} examples, {self.num_classes} classes, top-{self.k} sets, "
            f"n={self.n} each\n"
            f"  sigma={self.sigma:g}, alpha={self.alpha:g}\n"
            f"  answered {answered}, abstained {self.num_examples - answered} "
            f"({100 * self.abstention_rate:.1f}%)\n"
            f"  shapes: labels {self.labels.shape}, counts {self.counts.shape}, abstained {self.abstained.shape})"
        )

"""The paper authors' per-example certification, as a speed and accuracy baseline.

A port of what `compute_radius.py` and `topk.py` in the authors' repository (Jia, Cao, Wang,
Gong, ICLR 2020, "Certify_Topk") do for one example, with the statsmodels call replaced by the
scipy calls it makes:

- `multi_ci`: one Clopper-Pearson interval per label, in a Python loop, each from scalar
  `scipy.stats.beta` quantiles at level alpha / C (Bonferroni), counts clipped to
  [1e-10, n - 1e-10] as the authors do;
- `CertifyRadius`: sort the other labels' upper bounds (clipped to 1 - pl) descending, keep the
  top k, and for t = 1..k bisect R in [0, 10] until the interval is at most 1e-5, calling
  scalar `norm.cdf` / `norm.ppf` inside the loop; R = max over t.

The authors' `proportion_confint(..., method="beta")` computes both ends of the interval for
every label (2 C quantiles, plus statsmodels' own array handling); this port computes only the
end each label needs (the lower one for the certified label, the upper one for the others:
C quantiles). The baseline is therefore somewhat faster than the original, never slower, so a
speed-up measured against it is conservative.

Being a bisection on [0, 10] that keeps the lower end, it returns a value at most about 1e-5
below the exact radius, and about 10 - 1e-5 where the exact radius is 10 or more.

scipy is imported when `paper_radius` is first called, so the package imports without it.
"""

import numpy as np


def scipy_stats():
    """(scipy.stats.beta, scipy.stats.norm); ImportError when scipy is not installed."""
    from scipy.stats import beta, norm

    return beta, norm


def _clopper_pearson_simuem(counts_row, label, alpha, beta):
    """Bonferroni Clopper-Pearson bounds: (pl of `label`, array of upper bounds of all labels).

    The upper bound of `label` itself is not computed (left as NaN); the caller overwrites it.
    """
    n = float(np.sum(counts_row))
    num_classes = len(counts_row)
    # statsmodels' proportion_confint(count, n, alpha=2 * alpha / C, method="beta") uses
    # alpha_2 = alpha / C at each end: beta.ppf(alpha_2, count, n - count + 1) for the lower
    # end and beta.isf(alpha_2, count + 1, n - count) for the upper end.
    alpha_2 = 0.5 * (alpha * 2.0 / num_classes)
    upper = np.full(num_classes, np.nan)
    p_lower = np.nan
    for i in range(num_classes):
        count = min(max(float(counts_row[i]), 1e-10), n - 1e-10)
        if i == label:
            p_lower = beta.ppf(alpha_2, count, n - count + 1)
        else:
            upper[i] = beta.isf(alpha_2, count + 1, n - count)
    return p_lower, upper


def _binary_search_compute_r(p_sn, p_ls, sigma, t, norm):
    """The authors' bisection for R_t (their `binary_search_compute_r`, `n` renamed `t`)."""
    p_sn = min(p_sn, 1 - p_ls)
    lower_bound, upper_bound = 0.0, 10.0
    if p_ls <= p_sn / t:
        return 0.0
    while np.abs(lower_bound - upper_bound) > 1e-5:
        searched_radius = (lower_bound + upper_bound) / 2.0
        if norm.cdf(norm.ppf(p_ls) - searched_radius / sigma) >= norm.cdf(norm.ppf(p_sn) + searched_radius / sigma) / t:
            lower_bound = searched_radius
        else:
            upper_bound = searched_radius
    return lower_bound


def _certify_radius(label, probability_array, k, sigma, norm):
    """The authors' `CertifyRadius` (probability_array[label] holds pl, the rest upper bounds)."""
    p_ls = probability_array[label]
    probability_array[label] = -1
    sorted_index = np.argsort(probability_array)[::-1]
    sorted_probability_topk = probability_array[sorted_index[0:k]]
    # Annotated: checked as Python 3.9, numpy's stubs give zeros(..., dtype=float) no usable type.
    p_sk: np.ndarray = np.zeros([k], dtype=float)
    radius_array: np.ndarray = np.zeros([k], dtype=float)
    for i in np.arange(sorted_probability_topk.shape[0]):
        p_sk[0 : i + 1] += sorted_probability_topk[i]
    # p_sk[i] is the sum of the k - i smallest of the top k: t = k - i.
    for i in np.arange(k):
        radius_array[i] = _binary_search_compute_r(p_sk[i], p_ls, sigma, k - i, norm)
    return float(np.amax(radius_array))


def paper_radius(counts_row, label, k, sigma, alpha):
    """Certified top-k radius of `label` from one row of Monte Carlo counts, the paper's way."""
    beta, norm = scipy_stats()
    p_lower, upper = _clopper_pearson_simuem(counts_row, label, alpha, beta)
    probability_bar = np.clip(upper, a_min=-1, a_max=1 - p_lower)
    probability_bar[label] = p_lower
    return _certify_radius(int(label), probability_bar, int(k), float(sigma), norm)

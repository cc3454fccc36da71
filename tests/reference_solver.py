"""Independent reference for the tests: Clopper-Pearson bounds and the top-k radius.

Written from the paper (Jia et al., ICLR 2020, Theorem 1) without looking at the Rust
core.  Everything that matters is done in mpmath at ``DPS`` (50) significant digits:

* ``beta_cdf(p, a, b)``: regularized incomplete beta I_p(a, b) by the classical continued
  fraction (modified Lentz), evaluated on the side where it converges and where the
  requested tail is small, so tiny tails (1e-30) keep full relative precision.  Works for
  a, b up to 1e9 (mpmath's own ``betainc`` does not converge there).
* ``beta_lower_ppf(level, a, b)``: the ``level``-quantile of Beta(a, b) by a safeguarded
  Newton iteration on log ``beta_cdf`` in log x (start: scipy, bracket kept at every step,
  so a wrong start cannot produce a wrong answer, only a slower one).
* ``ndtri(p)``: Phi^-1 by safeguarded Newton on ``mp.ncdf``.
* ``radius_from_bounds``: R = max_t R_t, each root of
  h_t(u) = Phi(a - u) - Phi(b + u) / t  (u = R / sigma) by safeguarded Newton.

The probability bounds in ``certify_reference`` are these mpmath quantiles (~20 ms each for
n = 1e5, up to ~1 s for n = 1e9 with a quantile near the median: keep the grids small).
scipy is not accurate enough to be the reference: ``stats.beta.isf`` is off by up to 4e-9
relative for x in {1, 2} and n >= 1e6 (checked against these quantiles and against the
closed-form binomial equation (1-p)^n + n p (1-p)^(n-1) = alpha).

Sanity check of this module against the published radii of Jia et al. (500 CIFAR-10 rows,
k = 3, sigma = 0.25, alpha = 0.001, simuem): every radius within the printing/bisection
tolerance (see tests/test_published_reference.py).
"""

from __future__ import annotations

import functools
import math
import warnings
from typing import Sequence

import mpmath as mp
from scipy import special, stats

DPS = 50
mp.mp.dps = DPS

_HALF = mp.mpf("0.5")


# ----------------------------------------------------------------------------------------
# Normal distribution
# ----------------------------------------------------------------------------------------


def ncdf(z):
    return mp.ncdf(z)


def npdf(z):
    return mp.npdf(z)


def ndtri(p):
    """Phi^-1(p) at DPS digits for an mpf 0 < p < 1 (exact input, exact answer)."""
    p = mp.mpf(p)
    if p <= 0:
        return mp.ninf
    if p >= 1:
        return mp.inf
    if p > _HALF:
        return -ndtri(1 - p)
    if p == _HALF:
        return mp.mpf(0)
    # p < 1/2: root of Phi(z) - p, z < 0.  Phi is increasing; keep a bracket.
    pf = float(p)
    z0 = _quiet(special.ndtri, pf) if pf > 0 else math.nan
    z = mp.mpf(z0) if math.isfinite(z0) else -mp.sqrt(-2 * mp.log(p))
    lo, hi = mp.mpf(-100), mp.mpf(0)
    # widen lo if needed (p below Phi(-100) is not used in these tests)
    while ncdf(lo) > p:
        lo *= 2
    tol = mp.mpf(10) ** (-(DPS - 5))
    for _ in range(200):
        if not (lo < z < hi):
            z = (lo + hi) / 2
        f = ncdf(z) - p
        if f > 0:
            hi = z
        elif f < 0:
            lo = z
        else:
            return z
        step = f / npdf(z)
        z_new = z - step
        if abs(step) <= tol * max(1, abs(z)):
            return z_new
        z = z_new
    raise RuntimeError("ndtri did not converge")


# ----------------------------------------------------------------------------------------
# Beta distribution at DPS digits
# ----------------------------------------------------------------------------------------


def _quiet(fn, *args):
    """A scipy call as a float, with its warnings silenced (the test run turns warnings
    into errors); nan where it fails.  Only used for start values and the cross-check."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return float(fn(*args))
        except Exception:  # pragma: no cover
            return math.nan


def _log_beta(a, b):
    return mp.loggamma(a) + mp.loggamma(b) - mp.loggamma(a + b)


def _betacf(a, b, x):
    """Continued fraction of I_x(a, b) (Numerical Recipes 6.4, modified Lentz)."""
    tiny = mp.mpf(10) ** (-(mp.mp.dps + 20))
    eps = mp.mpf(10) ** (-(mp.mp.dps + 2))
    qab, qap, qam = a + b, a + 1, a - 1
    c = mp.mpf(1)
    d = 1 - qab * x / qap
    if abs(d) < tiny:
        d = tiny
    d = 1 / d
    h = d
    m = 0
    while True:
        m += 1
        if m > 10_000_000:
            raise RuntimeError("betacf did not converge")
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1 + aa * d
        if abs(d) < tiny:
            d = tiny
        c = 1 + aa / c
        if abs(c) < tiny:
            c = tiny
        d = 1 / d
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1 + aa * d
        if abs(d) < tiny:
            d = tiny
        c = 1 + aa / c
        if abs(c) < tiny:
            c = tiny
        d = 1 / d
        delta = d * c
        h *= delta
        if abs(delta - 1) < eps:
            return h


def _beta_front(a, b, x):
    return mp.exp(a * mp.log(x) + b * mp.log1p(-x) - _log_beta(a, b))


def beta_cdf(x, a, b):
    """I_x(a, b), the Beta(a, b) CDF at x, with full relative precision in the lower tail."""
    a, b, x = mp.mpf(a), mp.mpf(b), mp.mpf(x)
    if x <= 0:
        return mp.mpf(0)
    if x >= 1:
        return mp.mpf(1)
    with mp.workdps(DPS + 30):
        if x < (a + 1) / (a + b + 2):
            return +(_beta_front(a, b, x) * _betacf(a, b, x) / a)
        return +(1 - _beta_front(b, a, 1 - x) * _betacf(b, a, 1 - x) / b)


def beta_pdf(x, a, b):
    a, b, x = mp.mpf(a), mp.mpf(b), mp.mpf(x)
    with mp.workdps(DPS + 30):
        return +mp.exp((a - 1) * mp.log(x) + (b - 1) * mp.log1p(-x) - _log_beta(a, b))


def beta_lower_ppf(level, a, b):
    """The level-quantile of Beta(a, b) as an mpf, accurate to ~DPS - 8 digits relative in
    both x and 1 - x.

    Safeguarded Newton on g(y) = log I_{e^y}(a, b) - log(level) in y = log x (nearly linear
    in the lower tail, so tiny levels such as 1e-300 converge in a few steps); the bracket
    is kept at every step, so a poor start (scipy's) only costs iterations.
    """
    level, a, b = mp.mpf(level), mp.mpf(a), mp.mpf(b)
    if not (0 < level < 1):
        raise ValueError(level)
    start = _quiet(stats.beta.ppf, float(level), float(a), float(b))
    log_level = mp.log(level)
    lo, hi = None, mp.mpf(0)  # bracket in y; lo unknown yet
    y = mp.log(start) if (0 < start < 1 and math.isfinite(start)) else mp.log(_HALF)
    tol = mp.mpf(10) ** (-(DPS - 8))
    for _ in range(1000):
        if not ((lo is None or lo < y) and y < hi):
            y = (lo + hi) / 2 if lo is not None else hi - max(mp.mpf(1), abs(hi))
        x = mp.exp(y)
        F = beta_cdf(x, a, b)
        g = mp.log(F) - log_level
        if g > 0:
            hi = y
        elif g < 0:
            lo = y
        else:
            return x
        step = g / (beta_pdf(x, a, b) * x / F)
        y_new = y - step
        if abs(step) <= tol * min(mp.mpf(1), abs(y)) and (lo is None or lo <= y_new) and y_new <= hi:
            return mp.exp(y_new)
        y = y_new
    raise RuntimeError(f"beta_lower_ppf({level}, {a}, {b}) did not converge")


# ----------------------------------------------------------------------------------------
# Clopper-Pearson one-sided bounds (as (value, 1 - value) pairs of mpf)
# ----------------------------------------------------------------------------------------


def _pair_from_small(small, is_complement):
    """Return (value, 1 - value) given whichever of the two is small."""
    small = mp.mpf(small)
    return (1 - small, small) if is_complement else (small, 1 - small)


@functools.cache
def cp_lower_exact(x: int, n: int, level) -> tuple:
    """(pl, 1 - pl): pl = level-quantile of Beta(x, n - x + 1), 0 when x = 0."""
    if x == 0:
        return (mp.mpf(0), mp.mpf(1))
    level = mp.mpf(level)
    # solve on the side that keeps relative precision: pl itself when it is small, else
    # 1 - pl (both at DPS digits, so either side is fine for the tests' magnitudes)
    est = _quiet(stats.beta.ppf, float(level), x, n - x + 1)
    if est <= 0.5:
        return _pair_from_small(beta_lower_ppf(level, x, n - x + 1), False)
    return _pair_from_small(_upper_ppf_exact(level, n - x + 1, x), True)


def _upper_ppf_exact(level, a, b):
    """The (1 - level)-quantile of Beta(a, b), i.e. 1 - level-quantile of Beta(b, a)."""
    v = beta_lower_ppf(level, b, a)
    with mp.workdps(DPS + 10):
        return +(1 - v)


@functools.cache
def cp_upper_exact(x: int, n: int, level) -> tuple:
    """(ub, 1 - ub): ub = (1 - level)-quantile of Beta(x + 1, n - x), 1 when x = n."""
    if x == n:
        return (mp.mpf(1), mp.mpf(0))
    level = mp.mpf(level)
    # 1 - ub = level-quantile of Beta(n - x, x + 1)
    c = beta_lower_ppf(level, n - x, x + 1)
    if c <= _HALF:
        return _pair_from_small(c, True)
    # ub < 1/2: 1 - c computed at DPS digits keeps ~DPS - log10(1/ub) significant digits
    # (ub >= ~1e-10 in these tests), so no separate solve for ub is needed.
    return _pair_from_small(1 - c, False)


# ----------------------------------------------------------------------------------------
# Theorem 1: the radius from bounds
# ----------------------------------------------------------------------------------------


def _root_decreasing(h, dh, hi0):
    """Root of a strictly decreasing h on (0, inf) with h(0) > 0, safeguarded Newton."""
    lo, hi = mp.mpf(0), mp.mpf(hi0)
    while h(hi) > 0:
        lo, hi = hi, hi * 2
        if hi > 1e12:
            raise RuntimeError("no sign change")
    u = (lo + hi) / 2
    tol = mp.mpf(10) ** (-(DPS - 8))
    for _ in range(400):
        if not (lo < u < hi):
            u = (lo + hi) / 2
        f = h(u)
        if f > 0:
            lo = u
        elif f < 0:
            hi = u
        else:
            return u
        d = dh(u)
        step = f / d
        u_new = u - step
        if abs(step) <= tol * max(abs(u), mp.mpf(1)) and lo <= u_new <= hi:
            return u_new
        if hi - lo <= tol * max(abs(u), mp.mpf(1)):
            return (lo + hi) / 2
        u = u_new
    raise RuntimeError("root did not converge")


def radius_terms(pl, q, ubs: Sequence, k: int, sigma):
    """List of (t, pS_t, R_t) for t = 1..k.

    pl, q = 1 - pl: the lower bound of the label (pair, so that q keeps its precision);
    ubs: the (already clipped) upper bounds of the other labels (mpf).
    """
    sigma = mp.mpf(sigma)
    pl, q = mp.mpf(pl), mp.mpf(q)
    b = sorted((mp.mpf(u) for u in ubs), reverse=True)[:k]
    if len(b) < k:
        raise ValueError("k >= number of labels")
    out = []
    if pl <= 0:
        return [(t, None, mp.mpf(0)) for t in range(1, k + 1)]
    a = -ndtri(q) if q < _HALF else ndtri(pl)
    for t in range(1, k + 1):
        S = b[k - t :]
        pS = min(mp.fsum(S), q)
        if pl - pS / t <= 0:
            out.append((t, pS, mp.mpf(0)))
            continue
        bb = ndtri(pS)
        if t == 1:
            u = (a - bb) / 2
        else:
            tt = mp.mpf(t)

            def h(u, a=a, bb=bb, tt=tt):
                return ncdf(a - u) - ncdf(bb + u) / tt

            def dh(u, a=a, bb=bb, tt=tt):
                return -npdf(a - u) - npdf(bb + u) / tt

            # R_t >= R_1-like start: use a scale guess
            u = _root_decreasing(h, dh, max(mp.mpf(1), abs(a) + abs(bb)))
        out.append((t, pS, sigma * u))
    return out


def radius_from_bounds(pl, q, ubs, k, sigma):
    return max(r for _, _, r in radius_terms(pl, q, ubs, k, sigma))


# ----------------------------------------------------------------------------------------
# From counts
# ----------------------------------------------------------------------------------------


def bounds_from_counts(counts, label, alpha, bound="simuem", top=None):
    """(pl, q, [ub_i for i != label]) as mpf, ub_i clipped to 1 - pl (= q).

    top: only return the ub of the `top` largest other counts (ub_i is increasing in n_i,
    so the k largest ub_i belong to the k largest counts); None = all of them.
    """
    counts = [int(c) for c in counts]
    C = len(counts)
    n = sum(counts)
    if n <= 0:
        raise ValueError("empty row")
    if not 0 <= label < C:
        raise ValueError("label")
    nl = counts[label]
    if bound == "simuem":
        level = float(alpha) / C  # the package sees alpha / C in float64 as well
    elif bound == "binocp":
        level = float(alpha)
    else:
        raise ValueError(bound)
    pl, q = cp_lower_exact(nl, n, level)
    others = sorted((c for i, c in enumerate(counts) if i != label), reverse=True)
    if top is not None:
        others = others[:top]
    if bound == "binocp":
        ubs = [q] * len(others)
    else:
        ubs = [min(cp_upper_exact(c, n, level)[0], q) for c in others]
    return pl, q, ubs


@functools.cache
def _unit_radius(counts: tuple, label: int, k: int, alpha: float, bound: str):
    pl, q, ubs = bounds_from_counts(counts, label, alpha, bound, top=k)
    return radius_from_bounds(pl, q, ubs, k, 1)


def certify_reference(counts, label, k, sigma, alpha=0.001, bound="simuem"):
    """The certified radius as an mpf (0 = not certified).  R is sigma * R(sigma = 1)."""
    u = _unit_radius(tuple(int(c) for c in counts), int(label), int(k), float(alpha), str(bound))
    return mp.mpf(sigma) * u


def pl_and_pS(counts, label, k, alpha=0.001, bound="simuem"):
    """(pl, [pS_1, ..., pS_k]) as mpf."""
    pl, q, ubs = bounds_from_counts(counts, label, alpha, bound, top=k)
    b = sorted(ubs, reverse=True)[:k]
    return pl, [min(mp.fsum(b[k - t :]), q) for t in range(1, k + 1)]


def certified_by_condition(counts, label, k, alpha=0.001, bound="simuem"):
    """(certified?, min over t of |pl - pS_t / t| / pl) from the bounds alone."""
    pl, pS = pl_and_pS(counts, label, k, alpha, bound)
    if pl <= 0:
        return False, mp.inf
    certified = False
    margin = mp.inf
    for t, p in enumerate(pS, start=1):
        diff = pl - p / t
        margin = min(margin, abs(diff) / pl)
        if diff > 0:
            certified = True
    return certified, margin

"""topk_certify.clopper_pearson against mpmath (authority) and scipy (cross-check).

Authority: tests/reference_solver.py computes Beta quantiles at 50 digits (continued
fraction + safeguarded Newton).  scipy.stats.beta is only a cross-check where it is itself
accurate: its ``isf`` for the upper bound is off by up to 4e-9 relative for x in {1, 2} and
n >= 1e6 (e.g. beta.isf(0.05, 2, 10**9 - 1) vs the exact root of
(1-p)^n + n p (1-p)^(n-1) = 0.05), and ``ppf(1 - alpha)`` is useless for alpha < 1e-10.
"""

from __future__ import annotations

import itertools

import mpmath as mp
import numpy as np
import pytest
from scipy import stats

import reference_solver as rs
import topk_certify

cp = topk_certify.clopper_pearson

RTOL = 1e-10

NS = [1, 2, 3, 10, 100_000, 10**9]
ALPHAS = [0.5, 0.05, 1e-3, 1e-10, 1e-30]


def _xs(n):
    return sorted({x for x in (0, 1, n // 2, n - 1, n) if 0 <= x <= n})


GRID = [(x, n, a) for n in NS for x in _xs(n) for a in ALPHAS]


def _rel(got, want):
    got = mp.mpf(float(got))
    want = mp.mpf(want)
    if want == 0:
        return float(abs(got))
    return float(abs(got - want) / abs(want))


@pytest.fixture(scope="module")
def grid_result():
    x = np.array([g[0] for g in GRID], dtype=np.int64)
    n = np.array([g[1] for g in GRID], dtype=np.int64)
    a = np.array([g[2] for g in GRID], dtype=np.float64)
    lo, up = cp(x, n, a)
    return np.asarray(lo), np.asarray(up)


def test_grid_types_and_shapes(grid_result):
    lo, up = grid_result
    assert lo.dtype == np.float64 and up.dtype == np.float64
    assert lo.shape == (len(GRID),) and up.shape == (len(GRID),)
    assert np.all(np.isfinite(lo)) and np.all(np.isfinite(up))


def test_grid_vs_mpmath(grid_result):
    lo, up = grid_result
    bad = []
    for i, (x, n, a) in enumerate(GRID):
        want_lo = rs.cp_lower_exact(x, n, a)[0]
        want_up = rs.cp_upper_exact(x, n, a)[0]
        if x == 0:
            if lo[i] != 0.0:
                bad.append(f"lower(x=0, n={n}, alpha={a}) = {lo[i]!r}, want exactly 0")
        elif _rel(lo[i], want_lo) > RTOL:
            bad.append(
                f"lower(x={x}, n={n}, alpha={a}) = {lo[i]!r}, want {mp.nstr(want_lo, 17)} "
                f"(rel err {_rel(lo[i], want_lo):.2e})"
            )
        if x == n:
            if up[i] != 1.0:
                bad.append(f"upper(x=n={n}, alpha={a}) = {up[i]!r}, want exactly 1")
        elif _rel(up[i], want_up) > RTOL:
            bad.append(
                f"upper(x={x}, n={n}, alpha={a}) = {up[i]!r}, want {mp.nstr(want_up, 17)} "
                f"(rel err {_rel(up[i], want_up):.2e})"
            )
    assert not bad, "\n".join(bad)


def test_grid_vs_scipy(grid_result):
    """Cross-check with scipy where scipy is itself accurate (see module docstring)."""
    lo, up = grid_result
    bad = []
    for i, (x, n, a) in enumerate(GRID):
        if x > 0:
            ref = stats.beta.ppf(a, x, n - x + 1)
            if abs(lo[i] - ref) > RTOL * abs(ref):
                bad.append(f"lower({x}, {n}, {a}) = {lo[i]!r}, scipy ppf {ref!r}")
        if x < n and n <= 100_000:
            ref = stats.beta.isf(a, x + 1, n - x)
            if abs(up[i] - ref) > RTOL * abs(ref):
                bad.append(f"upper({x}, {n}, {a}) = {up[i]!r}, scipy isf {ref!r}")
    assert not bad, "\n".join(bad)


def _closed_forms():
    """(x, n, alpha, lower, upper) from closed forms, mpmath at 60 digits; None = skip."""
    out = []
    with mp.workdps(60):
        for n in [1, 2, 7, 100_000, 10**9]:
            nn = mp.mpf(n)
            for a in [0.5, 1e-3, 1e-10, 1e-30]:
                A = mp.mpf(a)
                # x = n: lower = alpha^(1/n)
                out.append((n, n, a, A ** (1 / nn), None))
                # x = 0: upper = 1 - alpha^(1/n)
                out.append((0, n, a, None, -mp.expm1(mp.log(A) / nn)))
                # x = 1: lower = 1 - (1 - alpha)^(1/n)
                out.append((1, n, a, -mp.expm1(mp.log1p(-A) / nn), None))
                # x = n - 1: upper = (1 - alpha)^(1/n)
                out.append((n - 1, n, a, None, mp.exp(mp.log1p(-A) / nn)))
            if n == 2:
                for a in [0.5, 1e-3, 1e-30]:
                    A = mp.mpf(a)
                    # x = 1 of 2: P(X >= 1) = 1 - (1-p)^2 = alpha; P(X <= 1) = 1 - p^2 = alpha
                    out.append((1, 2, a, -mp.expm1(mp.log1p(-A) / 2), mp.sqrt(1 - A)))
    return out


CLOSED = _closed_forms()


@pytest.mark.parametrize("x,n,a,want_lo,want_up", CLOSED)
def test_closed_forms(x, n, a, want_lo, want_up):
    lo, up = cp(x, n, a)
    lo, up = float(lo), float(up)
    if want_lo is not None:
        assert _rel(lo, want_lo) <= RTOL, (lo, mp.nstr(want_lo, 20))
    if want_up is not None:
        assert _rel(up, want_up) <= RTOL, (up, mp.nstr(want_up, 20))


def test_random_vs_mpmath():
    rng = np.random.default_rng(20200214)
    cases = []
    for _ in range(40):
        n = int(10 ** rng.uniform(0, 7))
        x = int(rng.integers(0, n + 1))
        if rng.random() < 0.3:
            x = min(max(int(rng.choice([0, 1, 2, n - 2, n - 1, n])), 0), n)
        a = float(10 ** rng.uniform(-30, np.log10(0.2)))
        cases.append((x, n, a))
    x, n, a = (np.array(c) for c in zip(*cases))
    lo, up = cp(x.astype(np.int64), n.astype(np.int64), a.astype(np.float64))
    bad = []
    for i, (xi, ni, ai) in enumerate(cases):
        wl = rs.cp_lower_exact(xi, ni, ai)[0]
        wu = rs.cp_upper_exact(xi, ni, ai)[0]
        if _rel(lo[i], wl) > RTOL or _rel(up[i], wu) > RTOL:
            bad.append(
                f"x={xi} n={ni} alpha={ai!r}: got ({lo[i]!r}, {up[i]!r}), want ({mp.nstr(wl, 17)}, {mp.nstr(wu, 17)})"
            )
    assert not bad, "\n".join(bad)


# ----------------------------------------------------------------------------------------
# Broadcasting and types
# ----------------------------------------------------------------------------------------


def test_scalar_inputs_give_scalar_like_float64():
    lo, up = cp(3, 10, 0.05)
    for v in (lo, up):
        assert np.ndim(v) == 0
        assert np.asarray(v).dtype == np.float64
    assert float(lo) == pytest.approx(stats.beta.ppf(0.05, 3, 8), rel=RTOL)
    assert float(up) == pytest.approx(stats.beta.isf(0.05, 4, 7), rel=RTOL)


def test_returns_tuple_of_two():
    res = cp(np.array([1, 2]), 10, 0.05)
    assert isinstance(res, tuple) and len(res) == 2


def test_broadcast_x_column_n_row():
    x = np.array([[0], [1], [2]])
    n = np.array([2, 5, 10, 1000])
    lo, up = cp(x, n, 0.01)
    lo, up = np.asarray(lo), np.asarray(up)
    assert lo.shape == (3, 4) and up.shape == (3, 4)
    assert lo.dtype == np.float64 and up.dtype == np.float64
    for i, j in itertools.product(range(3), range(4)):
        sl, su = cp(int(x[i, 0]), int(n[j]), 0.01)
        assert lo[i, j] == float(sl) and up[i, j] == float(su)


def test_broadcast_all_three():
    x = np.array([[0], [1], [2]])
    n = np.array([2, 5, 10, 1000])
    a = np.array([0.2, 1e-3]).reshape(2, 1, 1)
    lo, up = cp(x, n, a)
    lo, up = np.asarray(lo), np.asarray(up)
    assert lo.shape == (2, 3, 4) and up.shape == (2, 3, 4)
    for s, i, j in itertools.product(range(2), range(3), range(4)):
        sl, su = cp(int(x[i, 0]), int(n[j]), float(a[s, 0, 0]))
        assert lo[s, i, j] == float(sl) and up[s, i, j] == float(su)


def test_broadcast_lists_and_int_dtypes():
    ref_lo, ref_up = cp(np.array([0, 3, 7], dtype=np.int64), np.int64(7), 0.05)
    for dt in (np.uint8, np.int16, np.int32, np.uint32, np.uint64):
        lo, up = cp(np.array([0, 3, 7], dtype=dt), np.array(7, dtype=dt), 0.05)
        np.testing.assert_array_equal(lo, ref_lo)
        np.testing.assert_array_equal(up, ref_up)
    lo, up = cp([0, 3, 7], 7, [0.05, 0.05, 0.05])
    np.testing.assert_array_equal(lo, ref_lo)
    np.testing.assert_array_equal(up, ref_up)


def test_broadcast_incompatible_shapes_raise(clean_error):
    with clean_error((ValueError,), match=r"(?i)broadcast|shape"):
        cp(np.array([1, 2, 3]), np.array([10, 20]), 0.05)


# ----------------------------------------------------------------------------------------
# Monotonicity and consistency
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 7, 1000, 10**9])
@pytest.mark.parametrize("a", [0.3, 1e-3, 1e-30])
def test_monotone_in_x(n, a):
    if n <= 1000:
        x = np.arange(n + 1)
    else:
        x = np.array([0, 1, 2, 3, 1000, n // 2, n - 1000, n - 2, n - 1, n])
    lo, up = cp(x, n, a)
    lo, up = np.asarray(lo), np.asarray(up)
    assert lo[0] == 0.0 and up[-1] == 1.0
    assert np.all(np.diff(lo) > 0), lo
    # upper bounds within 1e-16 of 1 round to 1.0 (n = 1, alpha = 1e-30): strict only below
    assert np.all(np.diff(up) >= 0), up
    assert np.all(np.diff(up)[up[1:] < 1.0] > 0), up
    assert np.all((lo >= 0) & (lo < 1)) and np.all((up > 0) & (up <= 1))
    assert np.all(lo < up)


@pytest.mark.parametrize("x,n", [(0, 10), (1, 10), (5, 10), (10, 10), (500, 1000), (1, 10**9), (10**9 - 1, 10**9)])
def test_monotone_in_alpha(x, n):
    alphas = np.array([0.5, 0.2, 0.05, 1e-3, 1e-6, 1e-10, 1e-20, 1e-30])
    lo, up = cp(x, n, alphas)
    lo, up = np.asarray(lo), np.asarray(up)
    if x > 0:
        assert np.all(np.diff(lo) < 0), lo  # smaller alpha: smaller lower bound
    else:
        assert np.all(lo == 0)
    if x < n:
        # upper bounds near 1 may saturate in float64 (n = 1e9, x = n - 1 needs 1 - 1e-10)
        assert np.all(np.diff(up) >= 0), up
        assert up[-1] > up[0]
    else:
        assert np.all(up == 1)


@pytest.mark.parametrize("n", [1, 2, 10, 12345, 10**9])
def test_upper_is_one_minus_mirrored_lower(n):
    x = np.array(sorted({0, 1, n // 3, n // 2, n - 1, n}))
    for a in (0.05, 1e-10):
        lo, up = cp(x, n, a)
        lo_m, _ = cp(n - x, n, a)
        up, lo_m = np.asarray(up), np.asarray(lo_m)
        # 1 - upper(x) is the alpha-quantile of Beta(n - x, x + 1) = lower(n - x): equal up
        # to the 1e-10 relative accuracy of each and the rounding of 1 - lo_m
        tol = 2.3e-16 + RTOL * (np.abs(up) + np.abs(lo_m))
        assert np.all(np.abs(up - (1.0 - lo_m)) <= tol), (x, up, 1.0 - lo_m)


# ----------------------------------------------------------------------------------------
# Errors
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "x,n,a,match",
    [
        (-1, 10, 0.05, r"(?i)success|negative|x\b"),
        (11, 10, 0.05, r"(?i)success|trial|exceed|x\b"),
        (0, 0, 0.05, r"(?i)trial|n\b"),
        (0, -5, 0.05, r"(?i)trial|n\b"),
        (1, 10, 0.0, r"(?i)alpha"),
        (1, 10, 1.0, r"(?i)alpha"),
        (1, 10, -0.1, r"(?i)alpha"),
        (1, 10, 1.5, r"(?i)alpha"),
        (1, 10, float("nan"), r"(?i)alpha"),
        (2.5, 10, 0.05, r"(?i)success|integ|x\b"),
        (2, 10.5, 0.05, r"(?i)trial|integ|n\b"),
        (float("nan"), 10, 0.05, r"(?i)success|nan|integ|finite|x\b"),
        (1, float("nan"), 0.05, r"(?i)trial|nan|integ|finite|n\b"),
        (np.array([1, -1]), 10, 0.05, r"(?i)success|negative|x\b"),
        (np.array([1, 2]), np.array([10, 1]), 0.05, r"(?i)success|trial|exceed"),
        (1, 10, np.array([0.05, 0.0]), r"(?i)alpha"),
    ],
)
def test_invalid_inputs(x, n, a, match, clean_error):
    with clean_error((ValueError,), match=match):
        cp(x, n, a)


def test_the_unchecked_bounds_of_the_stopping_rule_equal_the_checked_ones_broadcast_alike():
    from topk_certify.stats import clopper_pearson_unchecked

    rng = np.random.default_rng(3)
    trials = rng.integers(1, 10**9, size=(4, 1))
    successes = (rng.random((4, 6)) * (trials + 1)).astype(np.int64)  # 0..trials, the ends included
    successes[0, 0], successes[1, 0] = 0, trials[1, 0]
    for alpha in (0.2, np.array([1e-12, 0.05, 0.5, 0.9, 1e-3, 0.3])):
        want = topk_certify.clopper_pearson(successes, trials, alpha)
        got = clopper_pearson_unchecked(successes, trials, alpha)
        for w, g in zip(want, got):
            assert g.shape == (4, 6)
            np.testing.assert_array_equal(g, w)
    lower, upper = clopper_pearson_unchecked(7, 10, 0.05)  # scalars give 0-d arrays, like the checked
    assert lower.shape == upper.shape == () and 0 < float(lower) < 0.7 < float(upper) < 1

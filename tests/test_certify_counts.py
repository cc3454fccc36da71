"""topk_certify.certify_counts against the mpmath reference (tests/reference_solver.py),
closed forms, layouts, k sequences, property tests; topk_certify.count_labels."""

from __future__ import annotations

import math

import mpmath as mp
import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from scipy import special, stats

import reference_solver as rs
import topk_certify

certify = topk_certify.certify_counts

RTOL = 1e-8
ZERO_ATOL = 1e-12  # only where the exact radius is exactly 0 (not certified)
SIGMAS = [0.12, 0.25, 0.5, 1.0, 50.0]


def _call(counts, labels, **kw):
    out = certify(np.asarray(counts, dtype=np.int64), np.asarray(labels, dtype=np.int64), **kw)
    assert isinstance(out, np.ndarray) and out.dtype == np.float64
    return out


def _check_rows(got, rows, labels, k, sigma, alpha, bound):
    got = np.asarray(got)
    assert got.shape == (len(rows),)
    bad = []
    for i, (row, lab) in enumerate(zip(rows, labels)):
        ref = rs.certify_reference(row, lab, k, sigma, alpha, bound)
        g = float(got[i])
        if not math.isfinite(g) or g < 0:
            bad.append(f"row {list(row)} label {lab}: got {g!r}")
            continue
        if ref == 0:
            ok = g <= ZERO_ATOL
        else:
            ok = abs(mp.mpf(g) - ref) <= RTOL * ref
        if not ok:
            # knife-edge ties pl == pS_t / t (e.g. binocp, n = 10, n_l = 10, alpha = 1e-10,
            # k = 9: pl = 0.1 = (1 - pl) / 9 up to the rounding of alpha) decide between 0
            # and R ~ 1e-19: the float rounding of alpha decides, not the solver.
            _, margin = rs.certified_by_condition(row, lab, k, alpha, bound)
            if margin < 1e-12:
                ok = abs(mp.mpf(g) - ref) <= 1e-10 * sigma
        if not ok:
            bad.append(
                f"certify_counts([{list(row)}], [{lab}], k={k}, sigma={sigma}, alpha={alpha}, "
                f"bound={bound!r}) = {g!r}, reference {mp.nstr(ref, 17)}"
            )
    assert not bad, "\n".join(bad)


# ----------------------------------------------------------------------------------------
# Published CIFAR-10 counts (a subset), both bounds, several k
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("bound", ["simuem", "binocp"])
@pytest.mark.parametrize("k", [1, 3, 9])
def test_cifar_subset_vs_reference(cifar_rows, bound, k):
    sub = cifar_rows[::17]
    rows = [r for r, _ in sub]
    labels = [lab for _, lab in sub]
    got = _call(rows, labels, k=k, sigma=0.25, alpha=0.001, bound=bound)
    _check_rows(got, rows, labels, k, 0.25, 0.001, bound)


# ----------------------------------------------------------------------------------------
# Random counts
# ----------------------------------------------------------------------------------------


def _random_rows(C, n, num, seed):
    rng = np.random.default_rng(seed)
    rows, labels = [], []
    for _ in range(num):
        conc = rng.choice([0.05, 0.3, 2.0])
        p = rng.dirichlet(np.full(C, conc))
        row = rng.multinomial(n, p)
        order = np.argsort(-row, kind="stable")
        u = rng.random()
        lab = int(order[0]) if u < 0.65 else int(order[1]) if u < 0.85 else int(rng.integers(C))
        rows.append([int(v) for v in row])
        labels.append(lab)
    return rows, labels


RANDOM_SETS = {
    # C: (k values, n values)
    2: ([1], [1, 2, 10, 1000, 100_000]),
    3: ([1, 2], [1, 2, 10, 1000, 100_000]),
    10: ([1, 2, 5, 9], [1, 2, 10, 1000, 100_000]),
    100: ([1, 3, 10, 99], [1, 10, 1000]),
}


def _random_cases():
    cases = []
    for C, (ks, ns) in RANDOM_SETS.items():
        for n in ns:
            for alpha in (0.5, 1e-3, 1e-10):
                for bound in ("simuem", "binocp"):
                    cases.append((C, n, alpha, bound, ks))
    return cases


@pytest.mark.parametrize("C,n,alpha,bound,ks", _random_cases())
def test_random_vs_reference(C, n, alpha, bound, ks):
    rows, labels = _random_rows(C, n, 4 if C < 100 else 2, seed=C * 1000003 + n)
    for k in ks:
        for sigma in SIGMAS:
            got = _call(rows, labels, k=k, sigma=sigma, alpha=alpha, bound=bound)
            _check_rows(got, rows, labels, k, sigma, alpha, bound)


HUGE = [
    ([10**9 - 1000, 600, 400], 0),
    ([10**9 - 1000, 600, 400], 1),
    ([10**9 - 1, 1, 0], 0),
    ([10**9, 0, 0, 0, 0], 0),
    ([999_000_000, 500_000, 300_000, 200_000], 0),
    ([500_000_000, 300_000_000, 150_000_000, 50_000_000], 0),
    ([400_000_000, 350_000_000, 250_000_000], 0),
    ([10**9 - 3, 1, 1, 1, 0, 0, 0, 0, 0, 0], 0),
]


@pytest.mark.parametrize("bound", ["simuem", "binocp"])
@pytest.mark.parametrize("alpha", [1e-3, 1e-10])
def test_huge_n_vs_reference(bound, alpha):
    rows = [r for r, _ in HUGE]
    labels = [lab for _, lab in HUGE]
    for k in (1, 2):
        for sigma in (0.25, 50.0):
            # rows of different C: one call per row
            for row, lab in zip(rows, labels):
                got = _call([row], [lab], k=k, sigma=sigma, alpha=alpha, bound=bound)
                _check_rows(got, [row], [lab], k, sigma, alpha, bound)


@pytest.mark.parametrize(
    "row,label",
    [
        ([1, 0], 0),
        ([0, 1], 0),
        ([1, 0, 0], 0),
        ([2, 0, 0], 0),
        ([1, 1, 0], 0),
        ([10, 0, 0], 0),
        ([9, 1, 0], 0),
        ([5, 5, 0], 0),
        ([10, 0, 0, 0, 0, 0, 0, 0, 0, 0], 0),
    ],
)
@pytest.mark.parametrize("alpha", [0.5, 1e-3])
def test_tiny_n_vs_reference(row, label, alpha):
    C = len(row)
    for bound in ("simuem", "binocp"):
        for k in range(1, C):
            got = _call([row], [label], k=k, sigma=0.5, alpha=alpha, bound=bound)
            _check_rows(got, [row], [label], k, 0.5, alpha, bound)


def test_sigma_50_gives_radii_in_the_hundreds():
    row, lab = [99_990, 5, 5], 0
    got = float(_call([row], [lab], k=1, sigma=50.0, alpha=0.001)[0])
    ref = rs.certify_reference(row, lab, 1, 50.0, 0.001, "simuem")
    assert got > 100.0, got
    assert abs(mp.mpf(got) - ref) <= RTOL * ref, (got, ref)
    got_k2 = float(_call([row], [lab], k=2, sigma=50.0, alpha=0.001)[0])
    assert got_k2 >= got > 100.0
    # n = 1e9, everything on the label: far above any fixed search interval such as [0, 10]
    big = float(_call([[10**9, 0, 0]], [0], k=2, sigma=50.0, alpha=0.001)[0])
    ref = rs.certify_reference([10**9, 0, 0], 0, 2, 50.0, 0.001, "simuem")
    assert big > 250.0
    assert abs(mp.mpf(big) - ref) <= RTOL * ref, (big, ref)


def test_radius_is_linear_in_sigma(cifar_rows):
    rows = [r for r, _ in cifar_rows[:60]]
    labels = [lab for _, lab in cifar_rows[:60]]
    base = _call(rows, labels, k=3, sigma=1.0)
    for s in (0.12, 0.25, 3.0, 50.0):
        got = _call(rows, labels, k=3, sigma=s)
        np.testing.assert_allclose(got, s * base, rtol=1e-12, atol=0)


# ----------------------------------------------------------------------------------------
# Closed forms (scipy for the bounds; rows where scipy is accurate: n <= 1e5)
# ----------------------------------------------------------------------------------------


def _scipy_pl_q(nl, n, level):
    """(pl, 1 - pl) from scipy, each on its well-conditioned side."""
    if nl == 0:
        return 0.0, 1.0
    pl = stats.beta.ppf(level, nl, n - nl + 1)
    q = stats.beta.isf(level, n - nl + 1, nl)
    return pl, q


def _phi_inv_pl(pl, q):
    return -special.ndtri(q) if q < 0.5 else special.ndtri(pl)


CLOSED_ROWS = [
    ([99_990, 5, 5], 0),
    ([90_000, 6_000, 4_000], 0),
    ([60_000, 30_000, 10_000, 0], 0),
    ([50_000, 49_000, 1_000], 0),
    ([50_000, 49_000, 1_000], 1),
    ([800, 150, 50, 0, 0, 0, 0, 0, 0, 0], 0),
    ([30, 1, 0], 0),
    ([7, 3], 0),
]


@pytest.mark.parametrize("row,label", CLOSED_ROWS)
@pytest.mark.parametrize("alpha", [0.3, 1e-3, 1e-10])
def test_k1_simuem_closed_form(row, label, alpha):
    C, n = len(row), sum(row)
    level = alpha / C
    pl, q = _scipy_pl_q(row[label], n, level)
    runner_up = max(c for i, c in enumerate(row) if i != label)
    ub = stats.beta.isf(level, runner_up + 1, n - runner_up) if runner_up < n else 1.0
    ub = min(ub, q)
    want = 0.25 / 2 * (_phi_inv_pl(pl, q) - special.ndtri(ub)) if pl > 0 else 0.0
    want = max(want, 0.0)
    got = float(_call([row], [label], k=1, sigma=0.25, alpha=alpha, bound="simuem")[0])
    if want == 0:
        assert got == 0.0
    else:
        assert got == pytest.approx(want, rel=1e-9, abs=0), (got, want)


@pytest.mark.parametrize("row,label", CLOSED_ROWS + [([4, 6], 0), ([5, 5], 0), ([10, 0], 1)])
@pytest.mark.parametrize("alpha", [0.3, 1e-3, 1e-10])
def test_k1_binocp_closed_form(row, label, alpha):
    n = sum(row)
    pl, q = _scipy_pl_q(row[label], n, alpha)
    want = 0.5 * _phi_inv_pl(pl, q) if pl > 0.5 else 0.0
    got = float(_call([row], [label], k=1, sigma=0.5, alpha=alpha, bound="binocp")[0])
    if want == 0:
        assert got == 0.0
    else:
        assert got == pytest.approx(want, rel=1e-9, abs=0), (got, want)


# ----------------------------------------------------------------------------------------
# k as a sequence
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("bound", ["simuem", "binocp"])
def test_k_sequence_columns_equal_scalar_k(cifar_rows, bound):
    rows = np.array([r for r, _ in cifar_rows[:80]], dtype=np.int64)
    labels = np.array([lab for _, lab in cifar_rows[:80]], dtype=np.int64)
    for ks in ([1, 2, 3, 5, 9], (3, 1), [9, 9, 4], (2,)):
        multi = certify(rows, labels, k=ks, sigma=0.5, alpha=1e-3, bound=bound)
        assert isinstance(multi, np.ndarray) and multi.dtype == np.float64
        assert multi.shape == (len(rows), len(ks))
        for j, k in enumerate(ks):
            single = certify(rows, labels, k=k, sigma=0.5, alpha=1e-3, bound=bound)
            assert single.shape == (len(rows),)
            np.testing.assert_array_equal(multi[:, j], single)


def test_k_scalar_gives_1d_and_numpy_int_k():
    rows = np.array([[90, 5, 5], [50, 30, 20]])
    a = certify(rows, [0, 0], k=1, sigma=0.25)
    b = certify(rows, [0, 0], k=np.int64(1), sigma=0.25)
    assert a.shape == (2,) and b.shape == (2,)
    np.testing.assert_array_equal(a, b)
    assert a[0] > 0


# ----------------------------------------------------------------------------------------
# Layouts and dtypes
# ----------------------------------------------------------------------------------------


def _layout_data():
    rng = np.random.default_rng(7)
    base = rng.integers(0, 40, size=(12, 5)).astype(np.int64)
    base[:, 2] += 40  # label 2 usually wins
    base[0] = [0, 0, 100, 0, 0]
    base[1] = [30, 0, 31, 0, 0]
    labels = np.array([2] * 10 + [0, 4], dtype=np.int64)
    return base, labels


@pytest.mark.parametrize("k", [1, 2, [1, 3]])
def test_layouts_and_dtypes_agree(k):
    base, labels = _layout_data()
    ref = certify(np.ascontiguousarray(base), labels, k=k, sigma=0.25)
    assert np.any(ref > 0) and np.any(ref == 0)
    variants = {}
    for dt in (np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64):
        variants[np.dtype(dt).name] = base.astype(dt)
    variants["fortran"] = np.asfortranarray(base)
    variants["fortran_uint16"] = np.asfortranarray(base.astype(np.uint16))
    wide = np.zeros((base.shape[0], 2 * base.shape[1]), dtype=np.int32)
    wide[:, ::2] = base
    variants["column_stride"] = wide[:, ::2]
    tall = np.zeros((2 * base.shape[0], base.shape[1]), dtype=np.int64)
    tall[::2] = base
    variants["row_stride"] = tall[::2]
    variants["reversed_cols_view"] = np.ascontiguousarray(base[:, ::-1])[:, ::-1]
    variants["transposed_view"] = np.ascontiguousarray(base.T).T
    variants["nested_list"] = base.tolist()
    variants["float64_integral"] = base.astype(np.float64)
    variants["float32_integral"] = base.astype(np.float32)
    variants["big_endian"] = base.astype(">i8")
    for name, counts in variants.items():
        got = certify(counts, labels, k=k, sigma=0.25)
        assert got.dtype == np.float64, name
        np.testing.assert_array_equal(got, ref, err_msg=name)
    # labels too: list, other int dtypes, float integral
    for lab in (labels.tolist(), labels.astype(np.int8), labels.astype(np.uint32), labels.astype(np.float64)):
        np.testing.assert_array_equal(certify(base, lab, k=k, sigma=0.25), ref)


def test_batch_rows_are_independent(cifar_rows):
    rows = np.array([r for r, _ in cifar_rows[:50]])
    labels = np.array([lab for _, lab in cifar_rows[:50]])
    full = certify(rows, labels, k=3, sigma=0.25)
    perm = np.random.default_rng(3).permutation(len(rows))
    np.testing.assert_array_equal(certify(rows[perm], labels[perm], k=3, sigma=0.25), full[perm])
    for i in (0, 7, 49):
        np.testing.assert_array_equal(certify(rows[i : i + 1], labels[i : i + 1], k=3, sigma=0.25), full[i : i + 1])


@pytest.mark.parametrize("C", [3, 10])
def test_empty_batch(C):
    counts = np.zeros((0, C), dtype=np.int64)
    out = certify(counts, np.zeros(0, dtype=np.int64), k=1, sigma=0.25)
    assert isinstance(out, np.ndarray) and out.shape == (0,) and out.dtype == np.float64
    out = certify(counts, np.zeros(0, dtype=np.int64), k=[1, 2], sigma=0.25)
    assert out.shape == (0, 2) and out.dtype == np.float64


# ----------------------------------------------------------------------------------------
# Properties (Hypothesis)
# ----------------------------------------------------------------------------------------


@st.composite
def count_rows(draw, max_c=10, max_count=5000):
    C = draw(st.integers(2, max_c))
    row = draw(st.lists(st.integers(0, max_count), min_size=C, max_size=C))
    label = draw(st.integers(0, C - 1))
    if draw(st.booleans()):  # make the label the largest more often
        row[label] += draw(st.integers(0, 20 * max_count))
    assume(sum(row) > 0)
    k = draw(st.integers(1, C - 1))
    return row, label, k


alphas = st.sampled_from([0.5, 0.1, 1e-3, 1e-6, 1e-12])
sigmas = st.sampled_from([0.12, 0.25, 1.0, 50.0])
bounds = st.sampled_from(["simuem", "binocp"])


def _one(row, label, **kw):
    return float(certify(np.array([row], dtype=np.int64), np.array([label]), **kw)[0])


@given(count_rows(), alphas, sigmas, bounds)
def test_prop_radius_finite_nonnegative(case, alpha, sigma, bound):
    row, label, k = case
    r = _one(row, label, k=k, sigma=sigma, alpha=alpha, bound=bound)
    assert math.isfinite(r) and r >= 0.0


@given(count_rows(), st.data(), alphas, bounds)
def test_prop_moving_a_count_to_the_label_never_hurts(case, data, alpha, bound):
    row, label, k = case
    donors = [i for i, c in enumerate(row) if i != label and c > 0]
    assume(donors)
    j = data.draw(st.sampled_from(donors))
    moved = list(row)
    moved[j] -= 1
    moved[label] += 1
    before = _one(row, label, k=k, sigma=0.25, alpha=alpha, bound=bound)
    after = _one(moved, label, k=k, sigma=0.25, alpha=alpha, bound=bound)
    assert after >= before * (1 - 1e-12), (row, moved, before, after)


@given(count_rows(), st.sampled_from([0.5, 0.1, 1e-3, 1e-6]), st.sampled_from([2.0, 10.0, 1e4]), bounds)
def test_prop_smaller_alpha_never_grows_radius(case, alpha, factor, bound):
    row, label, k = case
    big = _one(row, label, k=k, sigma=0.25, alpha=alpha, bound=bound)
    small = _one(row, label, k=k, sigma=0.25, alpha=alpha / factor, bound=bound)
    assert small <= big * (1 + 1e-12), (row, label, k, alpha, big, small)


@given(count_rows(), alphas, bounds)
def test_prop_radius_nondecreasing_in_k(case, alpha, bound):
    # Theorem 1's formula: for k + 1 the kept bounds b_1..b_{k+1} give, for each t <= k,
    # a set S_t of the t smallest among k+1 whose sum is <= the k-case's, so every
    # R_t grows, and R_{k+1} adds one more term to the max: R(k) <= R(k + 1).
    row, label, _ = case
    C = len(row)
    ks = list(range(1, C))
    r = certify(np.array([row]), np.array([label]), k=ks, sigma=0.25, alpha=alpha, bound=bound)[0]
    assert np.all(np.diff(r) >= -1e-12 * np.abs(r[1:])), (row, label, r)


@given(count_rows(max_count=2000), st.sampled_from([0.5, 1e-3, 1e-10]), bounds)
def test_prop_positive_iff_certified_by_the_bounds(case, alpha, bound):
    row, label, k = case
    certified, margin = rs.certified_by_condition(row, label, k, alpha, bound)
    assume(margin > 1e-9)  # keep away from exact ties pl == pS_t / t
    r = _one(row, label, k=k, sigma=0.25, alpha=alpha, bound=bound)
    if certified:
        assert r > 0.0, (row, label, k, alpha, bound)
    else:
        assert r == 0.0, (row, label, k, alpha, bound, r)


@given(count_rows(max_c=6, max_count=300), st.sampled_from([0.5, 1e-3]), bounds, st.sampled_from([0.25, 50.0]))
def test_prop_matches_reference(case, alpha, bound, sigma):
    row, label, k = case
    r = _one(row, label, k=k, sigma=sigma, alpha=alpha, bound=bound)
    _check_rows(np.array([r]), [row], [label], k, sigma, alpha, bound)


# ----------------------------------------------------------------------------------------
# count_labels
# ----------------------------------------------------------------------------------------


def test_count_labels_1d():
    labels = np.array([0, 2, 2, 1, 2, 0, 4])
    got = topk_certify.count_labels(labels, 5)
    assert got.dtype == np.int64 and got.shape == (5,)
    np.testing.assert_array_equal(got, np.bincount(labels, minlength=5))


def test_count_labels_2d_and_dtypes():
    rng = np.random.default_rng(11)
    labels = rng.integers(0, 7, size=(4, 1000))
    want = np.stack([np.bincount(r, minlength=10) for r in labels])
    for dt in (np.int64, np.int32, np.uint8, np.int16):
        got = topk_certify.count_labels(labels.astype(dt), 10)
        assert got.dtype == np.int64 and got.shape == (4, 10)
        np.testing.assert_array_equal(got, want)
    got = topk_certify.count_labels(np.asfortranarray(labels), 10)
    np.testing.assert_array_equal(got, want)
    got = topk_certify.count_labels(labels[:, ::3], 10)
    np.testing.assert_array_equal(got, np.stack([np.bincount(r, minlength=10) for r in labels[:, ::3]]))


def test_count_labels_feeds_certify():
    labels = np.array([[1] * 95 + [0] * 5, [2] * 60 + [0] * 40])
    counts = topk_certify.count_labels(labels, 3)
    np.testing.assert_array_equal(counts, [[5, 95, 0], [40, 0, 60]])
    got = certify(counts, [1, 2], k=1, sigma=0.25)
    np.testing.assert_array_equal(got, certify(np.array([[5, 95, 0], [40, 0, 60]]), [1, 2], k=1, sigma=0.25))


@pytest.mark.parametrize("labels", [np.array([0, 1, -1]), np.array([0, 3, 1]), np.array([[0, 5]])])
def test_count_labels_out_of_range(labels, clean_error):
    with clean_error((ValueError,), match=r"(?i)label|range|class"):
        topk_certify.count_labels(labels, 3)

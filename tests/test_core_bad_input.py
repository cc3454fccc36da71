"""Bad input to certify_counts / count_labels / clopper_pearson: a ValueError or TypeError
whose message names the problem; never a pyo3 PanicException, never a crash, never a
silently wrong number."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

import topk_certify

certify = topk_certify.certify_counts

GOOD = np.array([[90, 6, 4], [50, 30, 20]], dtype=np.int64)
GOOD_LABELS = np.array([0, 0], dtype=np.int64)
KW = dict(k=1, sigma=0.25, alpha=0.001, bound="simuem")


def _kw(**over):
    kw = dict(KW)
    kw.update(over)
    return kw


def test_good_input_is_fine():
    out = certify(GOOD, GOOD_LABELS, **KW)
    assert out.shape == (2,) and out[0] > 0


# ----------------------------------------------------------------------------------------
# counts
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "counts,match",
    [
        (np.array([[90, -6, 4], [50, 30, 20]]), r"(?i)count|negative"),
        (np.array([[90.0, 6.5, 4.0], [50, 30, 20]]), r"(?i)count|integ|fraction"),
        (np.array([[90.0, np.nan, 4.0], [50, 30, 20]]), r"(?i)count|nan|finite"),
        (np.array([[90.0, np.inf, 4.0], [50, 30, 20]]), r"(?i)count|inf|finite"),
        (np.array([[90, 6, 4], [0, 0, 0]]), r"(?i)count|sum|zero|total|empty|sample"),
        ([[90, 6, 4], [50, -1, 20]], r"(?i)count|negative"),
        ([[90, 6, 4], [50, 0.5, 20]], r"(?i)count|integ|fraction"),
        (np.array([[90, -6, 4], [50, 30, 20]], dtype=np.int8), r"(?i)count|negative"),
    ],
)
def test_bad_counts_values(counts, match, clean_error):
    with clean_error((ValueError, TypeError), match=match):
        certify(counts, GOOD_LABELS, **KW)


@pytest.mark.parametrize(
    "counts",
    [
        np.array([90, 6, 4]),  # 1-D
        np.array([[[90, 6, 4]], [[50, 30, 20]]]),  # 3-D
        np.array(5),  # 0-D
    ],
)
def test_counts_not_2d(counts, clean_error):
    labels = np.zeros(len(counts) if counts.ndim else 1, dtype=np.int64)
    with clean_error((ValueError,), match=r"(?i)2-?d|dim|shape"):
        certify(counts, labels, **KW)


def test_ragged_nested_list(clean_error):
    with clean_error((ValueError, TypeError), match=r"(?i)count|shape|rectangular|ragged|2-?d|inhomogeneous"):
        certify([[90, 6, 4], [50, 30]], [0, 0], **KW)


def test_non_numeric_counts(clean_error):
    with clean_error((ValueError, TypeError), match=r"(?i)count"):
        certify([["a", "b", "c"]], [0], **KW)


def test_bool_counts_rejected_or_correct(clean_error):
    # booleans are not counts: either reject, or treat as 0/1 (never crash)
    try:
        out = certify(np.array([[True, False, False]]), [0], **KW)
    except (ValueError, TypeError) as exc:
        assert "Panic" not in type(exc).__name__
    else:
        assert out.shape == (1,)


@pytest.mark.parametrize(
    "counts",
    [
        np.array([[2**63, 2**63, 0]], dtype=np.uint64),
        np.array([[2**64 - 1, 1, 0]], dtype=np.uint64),
        np.array([[2**63, 2**62, 2**62]], dtype=np.uint64),
    ],
)
def test_row_total_overflow(counts, clean_error):
    with clean_error((ValueError, OverflowError), match=r"(?i)overflow|too large|exceed|64|large|big|sum|total"):
        certify(counts, [0], **KW)


def test_row_total_overflow_nested_list(clean_error):
    with clean_error(
        (ValueError, TypeError, OverflowError), match=r"(?i)overflow|too large|exceed|64|large|big|sum|total|count"
    ):
        certify([[2**63, 2**63, 0]], [0], **KW)


# ----------------------------------------------------------------------------------------
# labels
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "labels",
    [np.array([0]), np.array([0, 0, 0]), np.array([[0, 0]]), np.array([], dtype=np.int64)],
)
def test_labels_wrong_length_or_shape(labels, clean_error):
    with clean_error((ValueError,), match=r"(?i)label"):
        certify(GOOD, labels, **KW)


@pytest.mark.parametrize("labels", [np.array([0, -1]), np.array([3, 0]), np.array([0, 100])])
def test_labels_out_of_range(labels, clean_error):
    with clean_error((ValueError,), match=r"(?i)label"):
        certify(GOOD, labels, **KW)


@pytest.mark.parametrize("labels", [np.array([0.5, 0.0]), np.array([0.0, np.nan]), ["a", "b"]])
def test_labels_not_integers(labels, clean_error):
    with clean_error((ValueError, TypeError), match=r"(?i)label"):
        certify(GOOD, labels, **KW)


# ----------------------------------------------------------------------------------------
# k, sigma, alpha, bound
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [0, -1, 3, 4, 1000, [1, 3], [0, 1], (2, -2)])
def test_k_out_of_range(k, clean_error):
    with clean_error((ValueError,), match=r"\bk\b"):
        certify(GOOD, GOOD_LABELS, **_kw(k=k))


@pytest.mark.parametrize("k", [1.5, "2", None, [1.5], []])
def test_k_wrong_type(k, clean_error):
    with clean_error((ValueError, TypeError), match=r"\bk\b"):
        certify(GOOD, GOOD_LABELS, **_kw(k=k))


@pytest.mark.parametrize("sigma", [0.0, -0.25, float("nan"), float("inf"), -float("inf")])
def test_sigma_not_finite_positive(sigma, clean_error):
    with clean_error((ValueError,), match=r"sigma"):
        certify(GOOD, GOOD_LABELS, **_kw(sigma=sigma))


@pytest.mark.parametrize("sigma", ["0.25", None, [0.25]])
def test_sigma_wrong_type(sigma, clean_error):
    with clean_error((ValueError, TypeError), match=r"sigma"):
        certify(GOOD, GOOD_LABELS, **_kw(sigma=sigma))


@pytest.mark.parametrize("alpha", [0.0, 1.0, -0.1, 1.5, float("nan"), float("inf")])
def test_alpha_outside_unit_interval(alpha, clean_error):
    with clean_error((ValueError,), match=r"alpha"):
        certify(GOOD, GOOD_LABELS, **_kw(alpha=alpha))


@pytest.mark.parametrize("bound", ["foo", "SIMUEM", "", "binom", None, 1])
def test_unknown_bound(bound, clean_error):
    with clean_error((ValueError, TypeError), match=r"bound"):
        certify(GOOD, GOOD_LABELS, **_kw(bound=bound))


def test_k_ge_C_on_empty_batch_still_rejected(clean_error):
    # k >= C is an input error whatever the batch size (never an infinite radius)
    with clean_error((ValueError,), match=r"\bk\b"):
        certify(np.zeros((0, 3), dtype=np.int64), np.zeros(0, dtype=np.int64), **_kw(k=3))


def test_sigma_checked_on_empty_batch(clean_error):
    with clean_error((ValueError,), match=r"sigma"):
        certify(np.zeros((0, 3), dtype=np.int64), np.zeros(0, dtype=np.int64), **_kw(sigma=0.0))


def test_single_class_rejected(clean_error):
    # C = 1: no k with 1 <= k < C exists
    with clean_error((ValueError,), match=r"(?i)\bk\b|class|\bC\b"):
        certify(np.array([[10], [5]]), GOOD_LABELS, **KW)


def test_error_in_one_row_of_a_batch(clean_error):
    counts = np.tile(GOOD, (50, 1))
    counts[73, 1] = -3
    labels = np.zeros(100, dtype=np.int64)
    with clean_error((ValueError,), match=r"(?i)count|negative"):
        certify(counts, labels, **KW)
    counts[73, 1] = 3
    counts[88] = 0
    with clean_error((ValueError,), match=r"(?i)count|sum|zero|total|empty|sample"):
        certify(counts, labels, **KW)


def test_inputs_not_modified():
    counts = np.array([[90, 6, 4], [50, 30, 20]], dtype=np.int32)
    labels = np.array([0, 1], dtype=np.int64)
    c0, l0 = counts.copy(), labels.copy()
    certify(counts, labels, k=[1, 2], sigma=0.25)
    np.testing.assert_array_equal(counts, c0)
    np.testing.assert_array_equal(labels, l0)


# ----------------------------------------------------------------------------------------
# No crash: run the nastiest inputs in a child process so that an abort or a segfault is
# reported as a failure instead of killing the test run.
# ----------------------------------------------------------------------------------------


def test_no_crash_in_subprocess():
    code = textwrap.dedent(
        """
        import numpy as np, topk_certify as tc
        cases = [
            (np.array([[2**63, 2**63, 0]], dtype=np.uint64), [0], {}),
            (np.array([[2**64 - 1, 2**64 - 1]], dtype=np.uint64), [0], {}),
            (np.array([[0, 0, 0]]), [0], {}),
            (np.array([[1, 2, 3]]), [7], {}),
            (np.array([[1, 2, 3]]), [-7], {}),
            (np.array([[1, 2, 3]]), [0], {"k": 10**12}),
            (np.array([[1, 2, 3]]), [0], {"k": -(10**12)}),
            (np.array([[1, 2, 3]]), [0], {"k": 2**70}),
            (np.array([[1, 2, 3]]), [0], {"sigma": 1e-320}),
            (np.array([[1, 2, 3]]), [0], {"alpha": 1e-320}),
            (np.array([[1, 2, 3]]), [0], {"sigma": 1e308}),
            (np.array([[-(2**63), 2, 3]]), [0], {}),
        ]
        for counts, labels, extra in cases:
            kw = dict(k=1, sigma=0.25, alpha=0.001)
            kw.update(extra)
            try:
                out = tc.certify_counts(counts, labels, **kw)
                assert np.all(np.isfinite(out)) and np.all(out >= 0), (counts, kw, out)
            except (ValueError, TypeError, OverflowError):
                pass
        for args in [(-1, 10, 0.05), (2**64, 2**64, 0.05), (1, 2**70, 0.05), (1, 10, 1e-320)]:
            try:
                lo, up = tc.clopper_pearson(*args)
                assert 0 <= float(lo) <= float(up) <= 1, (args, lo, up)
            except (ValueError, TypeError, OverflowError):
                pass
        for args in [(np.array([0, 1, 2**40]), 3), (np.array([0, 1]), 0), (np.array([0, 1]), -1)]:
            try:
                tc.count_labels(*args)
            except (ValueError, TypeError, OverflowError):
                pass
        print("OK")
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("OK"), (
        f"rc={proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    )
    assert "Panic" not in proc.stderr, proc.stderr


# ----------------------------------------------------------------------------------------
# count_labels
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("num_classes", [0, -1])
def test_count_labels_bad_num_classes(num_classes, clean_error):
    with clean_error((ValueError,), match=r"(?i)class|label"):
        topk_certify.count_labels(np.array([0, 0]), num_classes)


def test_count_labels_bad_shape(clean_error):
    with clean_error((ValueError,), match=r"(?i)label|dim|shape|1-?d|2-?d"):
        topk_certify.count_labels(np.zeros((2, 2, 2), dtype=np.int64), 3)


def test_count_labels_fractional(clean_error):
    with clean_error((ValueError, TypeError), match=r"(?i)label|integ"):
        topk_certify.count_labels(np.array([0.5, 1.0]), 3)


# -- values at the edge of 64 bits, huge tables, numpy scalars -------------------------------


def test_python_ints_beyond_int64_stay_exact():
    # numpy would turn [2**63, 5, 0] into float64; the counts must stay exact integers,
    # and give what the same counts as a uint64 array give.
    as_list = certify([[2**63, 5, 0]], [0], **KW)
    as_uint64 = certify(np.array([[2**63, 5, 0]], dtype=np.uint64), [0], **KW)
    assert as_list[0] == as_uint64[0] > 0
    # Below 2**63 but above 2**53, where float64 would round: the same as int64.
    big = 2**60 + 1
    assert certify([[big, 3, 1]], [1], **KW)[0] == certify(np.array([[big, 3, 1]]), [1], **KW)[0]


@pytest.mark.parametrize("counts", [[[2**64, 1, 0]], [[2**63, -5, 0]], [[-(2**63) - 1, 1, 0]]])
def test_python_ints_beyond_64_bits(counts, clean_error):
    with clean_error((ValueError,), match=r"64-bit"):
        certify(counts, [0], **KW)


@pytest.mark.parametrize("trials", [np.uint64(2**63), np.uint64(2**64 - 1), 2**70])
def test_clopper_pearson_trials_beyond_int64(trials, clean_error):
    with clean_error((ValueError,), match=r"trials must (be below 2\*\*63|fit in 64-bit)"):
        topk_certify.clopper_pearson(1, trials, 0.1)


@pytest.mark.parametrize("num_classes", [2**40, 2**62, 2**64])
def test_count_labels_num_classes_too_large_for_memory(num_classes, clean_error):
    # Not an allocation abort, not a PanicException, not an OverflowError.
    with clean_error((ValueError,), match=r"num_classes"):
        topk_certify.count_labels([0, 1], num_classes)


def test_zero_d_arrays_are_scalars():
    counts, labels = GOOD, GOOD_LABELS
    plain = certify(counts, labels, k=2, sigma=0.25, alpha=0.01)
    zero_d = certify(counts, labels, k=np.array(2), sigma=np.array(0.25), alpha=np.array(0.01))
    assert zero_d.shape == (2,)
    np.testing.assert_array_equal(zero_d, plain)


def test_two_d_k_is_refused(clean_error):
    with clean_error((TypeError,), match=r"1-D"):
        certify(GOOD, GOOD_LABELS, **_kw(k=np.array([[1]])))


def test_sigma_near_the_largest_float_gives_a_finite_radius():
    # sigma * u overflows: the radius is clipped to the largest float (still below the true
    # radius), never infinity.
    radius = certify([[90, 5, 5]], [0], k=1, sigma=1e308, alpha=0.01)
    assert np.isfinite(radius[0]) and radius[0] > 1e307

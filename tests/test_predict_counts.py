"""predict_counts: Cohen's PREDICT for k = 1 (against a transcription of their code on the same
counts), the simultaneous test for k > 1 (against scipy's Beta quantiles), soundness on
multinomial counts with known probabilities, and bad input."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy import stats

import topk_certify as tc

# -- references -------------------------------------------------------------------------------


def cohen_predict(counts: np.ndarray, alpha: float) -> int:
    """Cohen et al.'s Smooth.predict (code/core.py) on counts they would have drawn, with
    scipy.stats.binomtest for the binom_test that scipy no longer has."""
    ABSTAIN = -1
    top2 = counts.argsort()[::-1][:2]
    count1 = counts[top2[0]]
    count2 = counts[top2[1]]
    if stats.binomtest(int(count1), int(count1 + count2), p=0.5).pvalue > alpha:
        return ABSTAIN
    return int(top2[0])


def pairwise_reference(counts: np.ndarray, k: int, alpha: float) -> np.ndarray:
    """The k > 1 test with scipy: the top-k labels (stable sort of -counts) when the one-sided
    binomial test of the k-th count against the (k+1)-th, given their sum, rejects at
    alpha / (k (C - k))."""
    order = np.argsort(-counts, kind="stable")
    kth, nxt = int(counts[order[k - 1]]), int(counts[order[k]])
    pvalue = stats.binomtest(kth, kth + nxt, 0.5, alternative="greater").pvalue if kth + nxt else 1.0
    return order[:k] if pvalue <= alpha / (k * (counts.size - k)) else np.full(k, -1)


def simultaneous_reference(counts: np.ndarray, k: int, alpha: float) -> np.ndarray:
    """The simple test: the k-th count's Clopper-Pearson lower bound above the (k+1)-th
    count's upper bound, both at alpha / C (the `simuem` bounds), with scipy's quantiles."""
    order = np.argsort(-counts, kind="stable")
    n, a = int(counts.sum()), alpha / counts.size
    kth, nxt = int(counts[order[k - 1]]), int(counts[order[k]])
    lower = stats.beta.ppf(a, kth, n - kth + 1) if kth > 0 else 0.0
    upper = stats.beta.ppf(1 - a, nxt + 1, n - nxt) if nxt < n else 1.0
    return order[:k] if lower > upper else np.full(k, -1)


def top_two_rows(pairs, num_classes=4, seed=0):
    """Rows of C counts whose two largest are each (nA, nB), the rest smaller, in shuffled
    columns."""
    rng = np.random.default_rng(seed)
    rows = []
    for na, nb in pairs:
        rest = rng.integers(0, max(nb, 1), size=num_classes - 2) if nb > 0 else np.zeros(num_classes - 2, int)
        row = np.concatenate([[na, nb], rest]).astype(np.int64)
        rows.append(row[rng.permutation(num_classes)])
    return np.array(rows)


# -- k = 1: Cohen's PREDICT -------------------------------------------------------------------

EDGE_PAIRS = [
    (1, 0),  # n = 1: p-value 1, always abstains
    (2, 0),
    (5, 5),  # nA = nB: p-value 1
    (50, 50),
    (10, 0),  # nB = 0: p = 2 / 1024
    (11, 0),
    (100_000, 0),
    (99_990, 10),
    (51_000, 49_000),
    (50_300, 49_700),
    (10**12 // 2 + 2_000_000, 10**12 // 2 - 2_000_000),  # huge n
    (10**12 // 2 + 500_000, 10**12 // 2 - 500_000),
    (2 * 10**7, 2 * 10**7 - 30_000),  # past 1e7, where scipy's relative tolerance acts
    (3 * 10**15 + 10**8, 3 * 10**15 - 10**8),  # and there, near a decision
]


@pytest.mark.parametrize("alpha", [1e-6, 0.001, 0.05, 0.2, 0.5])
def test_k1_is_cohens_predict_on_edge_counts(alpha):
    counts = top_two_rows(EDGE_PAIRS)
    labels, abstained = tc.predict_counts(counts, k=1, alpha=alpha)
    expected = [cohen_predict(row, alpha) for row in counts]
    assert labels[:, 0].tolist() == expected
    assert abstained.tolist() == [e == -1 for e in expected]


def test_k1_matches_cohen_on_both_sides_of_each_p_value():
    """alpha a hair above and below scipy's p-value: every decision flips where Cohen's does,
    which pins the p-value to 1e-7 relative (the huge counts included)."""
    rng = np.random.default_rng(1)
    pairs = []
    for n in [3, 20, 101, 1000, 10**5, 10**6, 10**9, 10**12, 10**15]:
        for gap in np.unique(np.abs(rng.normal(0, 3 * np.sqrt(n), size=12)).astype(np.int64) % (n + 1)):
            na = (n + int(gap)) // 2 + (n + int(gap)) % 2 * 0
            na = max(na, n - na)
            pairs.append((na, n - na))
    counts = top_two_rows(pairs, num_classes=3, seed=2)
    checked = 0
    for (na, nb), row in zip(pairs, counts):
        p = stats.binomtest(na, na + nb, 0.5).pvalue
        for alpha in (p * (1 - 1e-7), p * (1 + 1e-7)):
            if not 0 < alpha < 1:
                continue
            got, _ = tc.predict_counts(row[None, :], k=1, alpha=alpha)
            assert got[0, 0] == cohen_predict(row, alpha), (na, nb, alpha, p)
            checked += 1
    assert checked > 100


def test_k1_abstains_on_a_tie_whatever_alpha():
    for na in [1, 2, 7, 10**6, 2**40]:
        counts = np.array([[na, na, 0], [0, na, na]], dtype=np.int64)
        labels, abstained = tc.predict_counts(counts, k=1, alpha=0.99)
        assert abstained.all() and (labels == -1).all()


# -- k > 1: pairwise binomial tests ----------------------------------------------------------


def random_rows(k: int, rows: int, num_classes: int, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.array([rng.multinomial(n, rng.dirichlet(np.full(num_classes, 0.4))) for _ in range(rows)])


@pytest.mark.parametrize("k, num_classes", [(2, 3), (2, 10), (3, 10), (5, 10), (9, 10), (5, 100)])
def test_k_above_one_matches_the_binomial_reference(k, num_classes):
    counts = random_rows(k, 300, num_classes, 10_000, seed=k + num_classes)
    expected = [pairwise_reference(row, k, 0.01) for row in counts]
    labels, abstained = tc.predict_counts(counts, k=k, alpha=0.01)
    assert labels.tolist() == np.array(expected).tolist()
    assert 10 < abstained.sum() < len(counts) - 10  # both outcomes occur


def test_k_above_one_decisions_flip_at_the_p_value():
    rng = np.random.default_rng(5)
    checked = 0
    for kth, nxt in [(30, 10), (600, 500), (5_100, 4_900), (50_500, 49_500), (10**9 + 10**5, 10**9)]:
        row = np.array([kth, kth + rng.integers(0, 1000), nxt, nxt // 2, 0], dtype=np.int64)[rng.permutation(5)]
        k = 2
        pvalue = stats.binomtest(kth, kth + nxt, 0.5, alternative="greater").pvalue
        for factor, answers in ((1 + 1e-7, True), (1 - 1e-7, False)):
            alpha = pvalue * k * (5 - k) * factor
            if not 0 < alpha < 1:
                continue
            _, abstained = tc.predict_counts(row[None, :], k=k, alpha=alpha)
            assert abstained[0] != answers, (kth, nxt, alpha)
            checked += 1
    assert checked >= 6


@pytest.mark.parametrize(
    "k, num_classes, n, alpha",
    [(2, 10, 100_000, 0.001), (3, 10, 1000, 0.2), (5, 1000, 1_000_000, 0.001), (2, 3, 100, 0.001)],
)
def test_the_pairwise_test_answers_wherever_the_simple_one_does_and_more(k, num_classes, n, alpha):
    """docs/predict.md: the pairwise test is the more powerful one; measured on the same counts
    against simultaneous Clopper-Pearson bounds (scipy's quantiles)."""
    counts = random_rows(k, 400, num_classes, n, seed=7 * k + num_classes)
    simple = np.array([simultaneous_reference(row, k, alpha)[0] >= 0 for row in counts])
    _, abstained = tc.predict_counts(counts, k=k, alpha=alpha)
    assert not (simple & abstained).any()
    assert (~abstained).sum() > simple.sum()


def test_sets_are_ordered_by_count_with_ties_to_the_lower_label():
    counts = np.array([[100, 3000, 100, 2000, 2000, 0, 100]])
    labels, _ = tc.predict_counts(counts, k=3, alpha=0.01)
    assert labels.tolist() == [[1, 3, 4]]
    labels, abstained = tc.predict_counts(counts, k=2, alpha=0.01)
    assert labels.tolist() == [[-1, -1]] and abstained.tolist() == [True]  # 2000 against 2000
    labels, _ = tc.predict_counts(np.array([[5, 900, 5, 900, 5]]), k=2, alpha=0.01)
    assert labels.tolist() == [[1, 3]]


def test_k_one_below_the_classes_and_every_dtype_and_layout():
    counts = np.array([[0, 400, 300, 300], [250, 250, 250, 250], [1000, 0, 0, 0]], dtype=np.int64)
    labels, abstained = tc.predict_counts(counts, k=3, alpha=0.001)
    assert labels.tolist() == [[1, 2, 3], [-1, -1, -1], [-1, -1, -1]]
    for variant in (
        counts.astype(np.int32),
        counts.astype(np.uint16),
        counts.astype(np.uint64),
        counts.astype(np.float64),
        np.asfortranarray(counts),
        np.repeat(counts, 2, axis=1)[:, ::2],
        counts.tolist(),
    ):
        again, _ = tc.predict_counts(variant, k=3, alpha=0.001)
        assert again.tolist() == labels.tolist()
        assert again.dtype == np.int64


def test_no_rows_and_huge_counts():
    labels, abstained = tc.predict_counts(np.zeros((0, 5), dtype=np.int64), k=2, alpha=0.1)
    assert labels.shape == (0, 2) and abstained.shape == (0,) and abstained.dtype == bool
    big = np.array([[2**62, 2**61, 2**60]], dtype=np.uint64)
    labels, _ = tc.predict_counts(big, k=2, alpha=0.001)
    assert labels.tolist() == [[0, 1]]
    labels, _ = tc.predict_counts(big, k=1, alpha=0.001)
    assert labels.tolist() == [[0]]


# -- soundness with known probabilities -------------------------------------------------------


def is_top_k_set(p: np.ndarray, labels: np.ndarray) -> bool:
    """Whether `labels` is a top-k set of p: every label in it at least as likely as every
    label outside it (under a tie at the k-th place, several sets are)."""
    inside = np.zeros(p.size, dtype=bool)
    inside[labels] = True
    return bool(p[inside].min() >= p[~inside].max())


def near_ties(k: int, count: int, num_classes: int, rng) -> np.ndarray:
    """Probabilities of which 80% have k-th and (k+1)-th within 0.1% (before normalising,
    about 0.3% after), the others 4% to 8% apart; a few small ones below."""
    out = []
    for e in range(count):
        p = np.empty(num_classes)
        p[: k - 1] = rng.uniform(0.15, 0.25, size=k - 1)
        kth = rng.uniform(0.08, 0.12)
        p[k - 1] = kth
        p[k] = kth - (rng.uniform(0.0, 0.001) if e % 5 else rng.uniform(0.04, 0.08))
        p[k + 1 :] = rng.uniform(0.0, 0.01, size=num_classes - k - 1)
        p /= p.sum()
        out.append(p[rng.permutation(num_classes)])
    return np.array(out)


def wrong_rate(probabilities: np.ndarray, labels: np.ndarray) -> float:
    answered = labels[:, 0] >= 0
    wrong = [not is_top_k_set(p, row) for p, row in zip(probabilities[answered], labels[answered])]
    return sum(wrong) / len(labels)


def raw_top_k(counts: np.ndarray, k: int) -> np.ndarray:
    """No test at all: the k largest counts. The check below must catch it."""
    return np.argsort(-counts, axis=1, kind="stable")[:, :k]


SLACK = 3 * np.sqrt(0.2 * 0.8 / 500)  # three standard deviations of a rate of 0.2 over 500


@pytest.mark.parametrize("k", [1, 2, 3])
def test_wrong_sets_stay_within_alpha_on_near_ties(k):
    rng = np.random.default_rng(10 + k)
    alpha, num_classes, n = 0.2, 8, 1000
    p = near_ties(k, 500, num_classes, rng)
    counts = np.array([rng.multinomial(n, row) for row in p])
    labels, abstained = tc.predict_counts(counts, k=k, alpha=alpha)
    assert wrong_rate(p, labels) <= alpha + SLACK
    assert (~abstained).sum() >= 25  # not vacuous: some near-ties are answered
    # The check has teeth: without a test, about half the near-ties come out wrong.
    assert wrong_rate(p, raw_top_k(counts, k)) > alpha + SLACK


@pytest.mark.parametrize("k", [1, 2, 3])
def test_exact_ties_return_a_top_k_set_or_abstain(k):
    """p_k = p_(k+1): either set is a top-k set of g; a set outside them is an error."""
    rng = np.random.default_rng(20 + k)
    p = near_ties(k, 400, 6, rng)
    for row in p:  # make the k-th and (k+1)-th equal
        order = np.argsort(-row, kind="stable")
        row[order[k]] = row[order[k - 1]]
        row /= row.sum()
    counts = np.array([rng.multinomial(3000, row) for row in p])
    labels, _ = tc.predict_counts(counts, k=k, alpha=0.2)
    assert wrong_rate(p, labels) <= 0.2 + SLACK


@pytest.mark.parametrize("k", [1, 3])
def test_clear_examples_are_nearly_always_answered(k):
    rng = np.random.default_rng(30 + k)
    num_classes, n = 10, 10_000
    p = np.zeros((400, num_classes))
    p[:, :k] = 0.6 / k + rng.uniform(-0.02, 0.02, size=(400, k))
    p[:, k:] = 0.04 / (num_classes - k) * rng.uniform(0.5, 1.5, size=(400, num_classes - k))
    p /= p.sum(axis=1, keepdims=True)
    counts = np.array([rng.multinomial(n, row) for row in p])
    labels, abstained = tc.predict_counts(counts, k=k, alpha=0.001)
    assert abstained.mean() <= 0.01
    assert all(set(row) == set(range(k)) for row in labels[~abstained])


# -- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(k=0), ValueError, "k must be >= 1"),
        (dict(k=-2), ValueError, "k must be >= 1"),
        (dict(k=4), ValueError, "k must be < the number of classes C = 4"),
        (dict(k=9), ValueError, "k must be < the number of classes C = 4"),
        (dict(k=[1, 2]), TypeError, "one int"),
        (dict(k=1.0), TypeError, "one int"),
        (dict(k=True), TypeError, "one int"),
        (dict(k=None), TypeError, "one int"),
        (dict(k=1, alpha=0.0), ValueError, "alpha must be in the open interval (0, 1)"),
        (dict(k=1, alpha=1.0), ValueError, "alpha must be in the open interval (0, 1)"),
        (dict(k=1, alpha=-0.1), ValueError, "alpha must be in the open interval (0, 1)"),
        (dict(k=1, alpha=float("nan")), ValueError, "alpha must be in the open interval (0, 1)"),
        (dict(k=1, alpha="0.1"), TypeError, "alpha must be a number"),
    ],
)
def test_bad_settings_say_what_is_allowed(kwargs, error, message):
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")):
        tc.predict_counts([[5, 3, 2, 1]], **kwargs)


@pytest.mark.parametrize(
    "counts, error, message",
    [
        ([5, 3, 2], ValueError, "counts must be 2-D"),
        (np.zeros((2, 3, 4), dtype=int), ValueError, "counts must be 2-D"),
        ([[5], [3]], ValueError, "at least 2 classes"),
        ([[5, -1, 2]], ValueError, "non-negative integers, got -1 at row 0, column 1"),
        ([[1, 2, 3], [0, 0, 0]], ValueError, "row 1 of counts sums to 0"),
        ([[1.5, 2, 3]], ValueError, "fractional"),
        ([[np.nan, 2, 3]], ValueError, "NaN"),
        ([[True, False, True]], TypeError, "booleans"),
        ([["a", "b", "c"]], TypeError, "must hold integers"),
        (np.array([[2**63, 2**63, 1]], dtype=np.uint64), ValueError, "64 bits"),
        ([[1, 2], [3]], ValueError, "rectangular"),
    ],
)
def test_bad_counts_say_what_is_wrong(counts, error, message):
    with pytest.raises(error, match=message):
        tc.predict_counts(counts, k=1, alpha=0.1)


def test_the_error_names_the_first_bad_row_of_a_large_batch():
    counts = np.ones((5000, 4), dtype=np.int64)
    counts[4000, 2] = -7
    counts[1234] = 0
    with pytest.raises(ValueError, match="row 1234 of counts sums to 0"):
        tc.predict_counts(counts, k=2, alpha=0.1)


def test_other_threads_run_while_the_core_predicts():
    import time

    from test_gil import _ticks_during

    counts = np.tile(np.array([[60_000, 30_000, 9_000, 1_000]]), (200_000, 1))
    start = time.perf_counter()
    ticks = _ticks_during(lambda: tc.predict_counts(counts, k=2, alpha=0.001))
    assert time.perf_counter() - start > 0.05, "the call was too short to tell"
    assert ticks > 1000, ticks  # holding the GIL would leave the spinning thread at ~0


def test_k1_answers_an_exact_tie_at_the_top_at_most_alpha_of_the_time():
    """Two labels share the top probability: Cohen's two-sided test, exact given their sum,
    answers (with either label) in at most alpha of the examples."""
    rng = np.random.default_rng(40)
    p = np.array([0.42, 0.42, 0.1, 0.06])
    counts = np.array([rng.multinomial(1000, p[rng.permutation(4)]) for _ in range(500)])
    _, abstained = tc.predict_counts(counts, k=1, alpha=0.2)
    assert (~abstained).mean() <= 0.2 + SLACK
    assert (~abstained).sum() > 0  # the test does answer some ties


@given(
    counts=hnp.arrays(
        np.int64, hnp.array_shapes(min_dims=2, max_dims=2, min_side=2, max_side=9), elements=st.integers(0, 60)
    ),
    data=st.data(),
)
def test_every_row_is_the_reference_decision(counts, data):
    counts = counts[counts.sum(axis=1) > 0]
    assume(counts.shape[0] > 0)
    num_classes = counts.shape[1]
    k = data.draw(st.integers(1, num_classes - 1))
    alpha = data.draw(st.sampled_from([0.01, 0.1, 0.3, 0.9]))
    labels, abstained = tc.predict_counts(counts, k=k, alpha=alpha)
    for row, got in zip(counts, labels):
        if k == 1:
            expected = [cohen_predict(row, alpha)]
        else:
            expected = pairwise_reference(row, k, alpha).tolist()
        assert got.tolist() == expected, (row, k, alpha)
    assert abstained.tolist() == (labels[:, 0] == -1).tolist()

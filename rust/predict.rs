//! PREDICT for top-k: the smoothed classifier's top-k set from a row of counts, or an
//! abstention when the counts cannot tell it apart from the other labels (docs/predict.md).
//!
//! - k = 1 is Cohen et al.'s PREDICT: the two-sided exact binomial test of the top two
//!   counts nA, nB at p = 1/2, as `scipy.stats.binomtest(nA, nA + nB, 0.5)` computes its
//!   p-value (relative tolerance included); abstain when the p-value exceeds alpha.
//! - k > 1: the one-sided binomial test of the k-th count against the (k+1)-th given their
//!   sum, at level alpha / (k (C - k)): a wrong set needs some label outside the true top-k
//!   to beat one inside it in exactly this test, and there are k (C - k) such pairs. On all
//!   the counts measured it returned every set that simultaneous Clopper-Pearson bounds at
//!   alpha / C (the `simuem` bound) return, and more (docs/predict.md).
//!
//! Both tests are Beta tails at 1/2 (`beta::tails`); rows run in parallel as in `certify`,
//! small batches on the calling thread.

use ndarray::{ArrayView1, ArrayView2};
use rayon::prelude::*;

use crate::beta;
use crate::bounds;
use crate::error::{CoreError, CoreResult};
use crate::int_value::IntValue;
use crate::math::{exp, log, log1p};
use crate::parallel;
use crate::prob::Prob;

/// The label written for every slot of a row that abstains.
pub const ABSTAIN: i64 = -1;

/// Each row's top-k labels by count (ties to the lower label), largest first, or k times
/// `ABSTAIN`: `out[e * k + j]`. Errors name the first bad row (lowest index), whatever
/// order rayon ran them in.
pub fn predict_batch<T: IntValue>(counts: ArrayView2<T>, k: usize, alpha: f64, parallel: bool) -> CoreResult<Vec<i64>> {
    let (rows, num_classes) = counts.dim();
    validate(num_classes, k, alpha)?;
    let mut out = vec![ABSTAIN; rows * k];
    let run = |(e, slot): (usize, &mut [i64])| -> Result<(), (usize, CoreError)> {
        let top = rank_row(counts.row(e), e, k + 1).map_err(|err| (e, err))?;
        if returns_set(&top, num_classes, alpha) {
            for (label, &(_, l)) in slot.iter_mut().zip(&top) {
                *label = l as i64;
            }
        }
        Ok(())
    };
    let first_error = if parallel::worth_it(parallel, rows) {
        out.par_chunks_mut(k).enumerate().map(run).filter_map(Result::err).min_by_key(|(e, _)| *e)
    } else {
        out.chunks_mut(k).enumerate().map(run).filter_map(Result::err).next()
    };
    match first_error {
        Some((_, err)) => Err(err),
        None => Ok(out),
    }
}

fn validate(num_classes: usize, k: usize, alpha: f64) -> CoreResult<()> {
    if num_classes < 2 {
        return Err(CoreError::value(format!("counts need at least 2 classes (columns), got {num_classes}")));
    }
    if k < 1 || k >= num_classes {
        return Err(CoreError::value(format!(
            "k must satisfy 1 <= k < C = {num_classes} (with k >= C the top-k set is every label), got k={k}"
        )));
    }
    bounds::validate_alpha(alpha)
}

/// Above this many kept labels, a row is ranked by selection instead of insertion.
const INSERT_MAX: usize = 33;

/// Checks every count of the row (the messages of `scan`: non-negative, a total that fits 64
/// bits and is not 0) and returns its `m` largest (count, label) pairs: counts descending,
/// equal counts by ascending label.
fn rank_row<T: IntValue>(row: ArrayView1<T>, e: usize, m: usize) -> CoreResult<Vec<(u64, usize)>> {
    if let (Some(slice), true) = (row.as_slice(), m <= INSERT_MAX) {
        if let Some(top) = rank_slice(slice, m) {
            return Ok(top);
        }
    }
    rank_checked(row, e, m)
}

/// The fast path for a contiguous row and a small m (the scan of `scan::scan_slice`): no
/// per-count checks, only a test at the end that no count could be negative or overflow the
/// total (no bit at or above 64 - log2(C)). None sends the row to the checked path, which
/// also names a row that sums to 0.
fn rank_slice<T: IntValue>(slice: &[T], m: usize) -> Option<Vec<(u64, usize)>> {
    let (mut total, mut bits) = (0u64, 0u64);
    let mut top: Vec<(u64, usize)> = Vec::with_capacity(m + 1);
    for (j, v) in slice.iter().enumerate() {
        let c = v.to_u64();
        total = total.wrapping_add(c);
        bits |= c;
        keep(&mut top, m, c, j);
    }
    let safe_bits = 64 - (usize::BITS - slice.len().leading_zeros());
    (bits >> safe_bits == 0 && total > 0).then_some(top)
}

/// Keeps in `top` the m largest (count, label) pairs offered so far, counts descending. Labels
/// come in ascending order and a count goes after every kept count >= it, so equal counts
/// rank by ascending label. Most counts fail the first compare once `top` is full.
#[inline(always)]
fn keep(top: &mut Vec<(u64, usize)>, m: usize, c: u64, j: usize) {
    if top.len() < m || c > top[m - 1].0 {
        let at = top.partition_point(|&(kept, _)| kept >= c);
        top.insert(at, (c, j));
        top.truncate(m);
    }
}

/// Any layout and any m, every count checked, with the messages of `scan`.
fn rank_checked<T: IntValue>(row: ArrayView1<T>, e: usize, m: usize) -> CoreResult<Vec<(u64, usize)>> {
    let mut total: u64 = 0;
    let mut top: Vec<(u64, usize)> = Vec::with_capacity(if m <= INSERT_MAX { m + 1 } else { row.len() });
    for (j, v) in row.iter().enumerate() {
        let wide = v.to_i128();
        let c = u64::try_from(wide).map_err(|_| {
            CoreError::value(format!("counts must be non-negative integers, got {wide} at row {e}, column {j}"))
        })?;
        total = total.checked_add(c).ok_or_else(|| {
            CoreError::value(format!("counts in row {e} sum to more than 2**64 - 1; totals must fit in 64 bits"))
        })?;
        if m > INSERT_MAX {
            top.push((c, j));
        } else {
            keep(&mut top, m, c, j);
        }
    }
    if total == 0 {
        return Err(CoreError::value(format!("row {e} of counts sums to 0: every row needs at least one sample")));
    }
    if m > INSERT_MAX {
        let order = |a: &(u64, usize), b: &(u64, usize)| b.0.cmp(&a.0).then(a.1.cmp(&b.1));
        top.select_nth_unstable_by(m - 1, order);
        top.truncate(m);
        top.sort_unstable_by(order);
    }
    Ok(top)
}

/// Whether the row's top-k set (`top[..k]`, with the (k+1)-th label after it) passes the
/// test at level alpha.
fn returns_set(top: &[(u64, usize)], num_classes: usize, alpha: f64) -> bool {
    let k = top.len() - 1;
    let (kth, next) = (top[k - 1].0, top[k].0);
    if k == 1 {
        return !cohen_abstains(kth, next, alpha);
    }
    let pairs = k as f64 * (num_classes - k) as f64;
    pairwise_separates(kth, next, alpha / pairs)
}

/// k > 1: whether P[Bin(kth + next, 1/2) >= kth] <= alpha_pair, the one-sided binomial test
/// of the k-th count against the (k+1)-th given their sum. Its p-value falls as the first
/// count grows and rises as the second grows, so every label of the set passes it against
/// every label outside (docs/predict.md).
pub fn pairwise_separates(kth: u64, next: u64, alpha_pair: f64) -> bool {
    if kth <= next {
        return false; // p-value >= 1/2
    }
    ln_upper_tail(kth, next) <= log(alpha_pair)
}

/// Cohen et al.'s PREDICT decision for the top two counts nA >= nB: abstain when the
/// two-sided binomial test's p-value is above alpha (a p-value equal to alpha predicts).
pub fn cohen_abstains(na: u64, nb: u64, alpha: f64) -> bool {
    debug_assert!(na >= nb && na > 0);
    if na == nb {
        return true; // p-value 1
    }
    let ln_alpha = log(alpha);
    // The p-value is at least twice the upper tail (the mirror tail holds at least as much).
    let upper = ln_upper_tail(na, nb);
    if std::f64::consts::LN_2 + upper > ln_alpha {
        return true;
    }
    ln_two_sided_pvalue_from(na, nb, upper) > ln_alpha
}

/// ln of the p-value of `scipy.stats.binomtest(na, na + nb, 0.5)` for na >= nb, na + nb >= 1.
pub fn ln_two_sided_pvalue(na: u64, nb: u64) -> f64 {
    if na == nb {
        return 0.0;
    }
    ln_two_sided_pvalue_from(na, nb, ln_upper_tail(na, nb))
}

const HALF: Prob = Prob { p: 0.5, q: 0.5 };

/// ln P[X >= na] for X ~ Bin(na + nb, 1/2): ln I_{1/2}(na, nb + 1).
fn ln_upper_tail(na: u64, nb: u64) -> f64 {
    beta::tails(na as f64, nb as f64 + 1.0, HALF).lower
}

/// scipy's two-sided p-value P[X <= j] + P[X >= na], capped at 1, where j is the largest
/// outcome at or below the mode whose probability is at most (1 + 1e-7) P[X = na]: nb (the
/// mirror of na, equally likely) and, beyond about 1e7 samples, the few after it that the
/// relative tolerance lets in.
fn ln_two_sided_pvalue_from(na: u64, nb: u64, ln_upper: f64) -> f64 {
    let j = scipy_mirror_end(na, nb);
    let ln_lower = if j == nb {
        ln_upper
    } else {
        // P[X <= j] = P[X >= n - j] = I_{1/2}(n - j, j + 1)
        let n = na + nb;
        beta::tails((n - j) as f64, j as f64 + 1.0, HALF).lower
    };
    let (hi, lo) = if ln_upper >= ln_lower { (ln_upper, ln_lower) } else { (ln_lower, ln_upper) };
    (hi + log1p(exp(lo - hi))).min(0.0)
}

/// The largest j in [nb, floor(n / 2)] with P[X = j] <= (1 + 1e-7) P[X = nb], walking up
/// from nb with the exact ratio P[X = j + 1] / P[X = j] = (n - j) / (j + 1): the pmf rises
/// towards the mode, so the outcomes let in form a run starting at nb.
fn scipy_mirror_end(na: u64, nb: u64) -> u64 {
    let n = na + nb;
    let ln_tolerance = log1p(1e-7);
    let (mut j, mut ln_ratio) = (nb, 0.0f64);
    while j < n / 2 {
        // (n - j) / (j + 1) = 1 + (n - 2j - 1) / (j + 1), with n - 2j - 1 >= 0 exact in integers
        let step = log1p((n - 2 * j - 1) as f64 / (j + 1) as f64);
        if ln_ratio + step > ln_tolerance {
            break;
        }
        ln_ratio += step;
        j += 1;
    }
    j
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{array, Array2};

    /// The two-sided p-value by summing exact binomial probabilities at p = 1/2 (small n).
    fn pvalue_by_sum(na: u64, nb: u64) -> f64 {
        let n = na + nb;
        let ln_pmf = |x: u64| {
            let lc = |m: u64| (1..=m).map(|i| (i as f64).ln()).sum::<f64>();
            lc(n) - lc(x) - lc(n - x) - n as f64 * std::f64::consts::LN_2
        };
        let d = ln_pmf(na);
        let p: f64 = (0..=n).filter(|&x| ln_pmf(x) <= d + 1e-12).map(|x| ln_pmf(x).exp()).sum();
        p.min(1.0)
    }

    #[test]
    fn pvalue_matches_the_exact_sum() {
        for n in 1..=60u64 {
            for na in n.div_ceil(2)..=n {
                let nb = n - na;
                let got = ln_two_sided_pvalue(na, nb).exp();
                let want = pvalue_by_sum(na, nb);
                assert!((got - want).abs() <= 1e-12 * want.max(1e-300) + 1e-300, "{na} {nb}: {got} vs {want}");
            }
        }
        assert_eq!(ln_two_sided_pvalue(7, 7), 0.0);
        assert_eq!(ln_two_sided_pvalue(1, 0), 0.0); // 2 * 1/2, capped at 1
    }

    #[test]
    fn the_tolerance_only_matters_past_ten_million() {
        assert_eq!(scipy_mirror_end(1000, 10), 10);
        assert_eq!(scipy_mirror_end(600_000, 500_000), 500_000);
        // nB + 1 > 1e7 with a small gap: the next outcome is within 1e-7 of P[X = nB].
        let nb = 50_000_000u64;
        assert!(scipy_mirror_end(nb + 3, nb) > nb);
        assert!(scipy_mirror_end(nb + 3, nb) <= (2 * nb + 3) / 2);
    }

    #[test]
    fn cohen_decisions() {
        // Ties and a single sample always abstain.
        assert!(cohen_abstains(5, 5, 0.5));
        assert!(cohen_abstains(1, 0, 0.999));
        // 10 vs 0: p = 2 / 1024.
        assert!(!cohen_abstains(10, 0, 0.002));
        assert!(cohen_abstains(10, 0, 0.0019));
        // Exactly alpha predicts (Cohen abstains only when p > alpha).
        assert!(!cohen_abstains(10, 0, 2.0 / 1024.0));
    }

    #[test]
    fn ranks_with_ties_to_the_lower_label() {
        let row = array![3i64, 7, 7, 1, 9, 7];
        for m in [1usize, 2, 3, 4, 6] {
            let want = [(9u64, 4usize), (7, 1), (7, 2), (7, 5), (3, 0), (1, 3)];
            assert_eq!(rank_row(row.view(), 0, m).unwrap(), want[..m].to_vec());
        }
        // The selection path (many labels kept) agrees with the insertion path.
        let wide = ndarray::Array1::from_iter((0..200u64).map(|i| (i * 7919) % 31));
        let mut want: Vec<(u64, usize)> = wide.iter().copied().zip(0..).collect();
        want.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        for m in [1usize, 5, 33, 34, 120, 200] {
            assert_eq!(rank_row(wide.view(), 0, m).unwrap(), want[..m].to_vec());
            // The checked path (any layout) ranks alike.
            assert_eq!(rank_checked(wide.view(), 0, m).unwrap(), want[..m].to_vec());
        }
        // Negative counts and near-overflowing ones leave the fast path for the checked one.
        assert!(rank_slice(&[3i8, -1, 2], 2).is_none());
        assert!(rank_slice(&[1u64 << 62, 1 << 61, 0, 0], 2).is_none());
        assert_eq!(
            rank_row(ndarray::ArrayView1::from(&[1u64 << 62, 1 << 61, 0, 0]), 0, 2).unwrap(),
            vec![(1 << 62, 0), (1 << 61, 1)]
        );
    }

    #[test]
    fn batch_returns_clear_sets_and_abstains_on_close_ones() {
        let counts = array![
            [900i64, 50, 30, 20], // top-1 clear
            [500, 499, 1, 0],     // top-1 unclear, top-2 clear
            [400, 400, 100, 100], // tie for the first place
            [0, 0, 0, 1000],      // one label
        ];
        let top1 = predict_batch(counts.view(), 1, 0.001, false).unwrap();
        assert_eq!(top1, vec![0, -1, -1, 3]);
        let top2 = predict_batch(counts.view(), 2, 0.001, true).unwrap();
        // Row 0: 50 against 30 of 1000 is no clear second; row 3: labels 0..2 tie for it.
        assert_eq!(top2, vec![-1, -1, 0, 1, 0, 1, -1, -1]);
        // A tie at the k-th place abstains; the sets are ordered by count.
        let tied = array![[10i64, 500, 10, 480]];
        assert_eq!(predict_batch(tied.view(), 2, 0.1, false).unwrap(), vec![1, 3]);
        assert_eq!(predict_batch(tied.view(), 3, 0.1, false).unwrap(), vec![-1, -1, -1]);
    }

    #[test]
    fn parallel_and_sequential_agree() {
        let rows = 3 * parallel::MIN_ITEMS;
        let counts = Array2::from_shape_fn((rows, 10), |(e, j)| ((e * 31 + j * 17) % 97) as i64 * (j as i64 + 1));
        for k in [1usize, 2, 5] {
            let a = predict_batch(counts.view(), k, 0.05, false).unwrap();
            let b = predict_batch(counts.view(), k, 0.05, true).unwrap();
            assert_eq!(a, b);
            assert!(a.iter().any(|&l| l >= 0) && a.contains(&ABSTAIN), "k = {k}");
        }
    }

    #[test]
    fn pairwise_test_for_k_above_one() {
        // Against the exact binomial sum, on both sides of the level.
        for (kth, next) in [(10u64, 0u64), (30, 10), (60, 40), (7, 6), (5, 5)] {
            let m = kth + next;
            let ln_choose = |x: u64| {
                (1..=m).map(|i| (i as f64).ln()).sum::<f64>()
                    - (1..=x).map(|i| (i as f64).ln()).sum::<f64>()
                    - (1..=m - x).map(|i| (i as f64).ln()).sum::<f64>()
            };
            let tail: f64 = (kth..=m).map(|x| (ln_choose(x) - m as f64 * std::f64::consts::LN_2).exp()).sum();
            assert!(pairwise_separates(kth, next, tail * (1.0 + 1e-9)) == (kth > next), "{kth} {next}");
            assert!(!pairwise_separates(kth, next, tail * (1.0 - 1e-9)), "{kth} {next}");
        }
        // Where simultaneous Clopper-Pearson bounds at alpha / C separate the counts, so does
        // the pairwise test at alpha / (k (C - k)).
        let (n, c, alpha) = (100_000u64, 10usize, 0.001);
        for (kth, next, k) in [(30_000u64, 28_900u64, 2usize), (2_000, 1_600, 3), (40, 2, 5), (40, 0, 9)] {
            let a = alpha / c as f64;
            let simultaneous = bounds::lower(kth, n, a).p > bounds::upper(next, n, a).p;
            assert!(simultaneous, "{kth} {next}");
            assert!(pairwise_separates(kth, next, alpha / (k * (c - k)) as f64), "{kth} {next}");
        }
        assert!(!pairwise_separates(30_000, 29_500, 1e-4));
    }

    #[test]
    fn bad_input_names_the_problem() {
        let ok = array![[5i64, 3, 2]];
        for (k, alpha, needle) in [(0, 0.1, "1 <= k"), (3, 0.1, "1 <= k"), (1, 0.0, "alpha"), (1, 1.0, "alpha")] {
            let err = predict_batch(ok.view(), k, alpha, false).unwrap_err().to_string();
            assert!(err.contains(needle), "{err}");
        }
        assert!(predict_batch(array![[5i64]].view(), 1, 0.1, false).unwrap_err().to_string().contains("2 classes"));
        let bad = array![[1i64, 2, 3], [4, -1, 0], [0, 0, 0]];
        let err = predict_batch(bad.view(), 1, 0.1, true).unwrap_err().to_string();
        assert!(err.contains("row 1, column 1"), "{err}");
        let zero = array![[1i64, 2, 3], [0, 0, 0]];
        assert!(predict_batch(zero.view(), 1, 0.1, false)
            .unwrap_err()
            .to_string()
            .contains("row 1 of counts sums to 0"));
        let big = array![[u64::MAX, 1u64, 0]];
        assert!(predict_batch(big.view(), 1, 0.1, false).unwrap_err().to_string().contains("64 bits"));
        let empty = Array2::<i64>::zeros((0, 4));
        assert!(predict_batch(empty.view(), 2, 0.1, false).unwrap().is_empty());
    }
}

//! Certified top-k radii for a batch of count rows, in parallel across rows.

use ndarray::{ArrayView1, ArrayView2};
use rayon::prelude::*;

use crate::beta::Prob;
use crate::bounds;
use crate::error::{CoreError, CoreResult};
use crate::radius::topk_radius;

/// An integer element of a counts or labels array, whatever its numpy dtype.
pub trait IntValue: Copy + Send + Sync {
    fn to_i128(self) -> i128;
    fn is_negative(self) -> bool;
    /// The value as u64 (meaningful when it is not negative).
    fn to_u64(self) -> u64;
}

macro_rules! int_value {
    ($($t:ty),*) => {$(
        impl IntValue for $t {
            #[inline]
            fn to_i128(self) -> i128 { self as i128 }
            #[inline]
            #[allow(unused_comparisons)]
            fn is_negative(self) -> bool { self < 0 }
            #[inline]
            fn to_u64(self) -> u64 { self as u64 }
        }
    )*};
}
int_value!(i8, i16, i32, i64, u8, u16, u32, u64);

/// How the probability bounds are made from counts (THEORY.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bound {
    /// Bonferroni Clopper-Pearson over all C labels (the paper's default).
    Simuem,
    /// Cohen-style: one lower bound, every other label bounded by 1 - pl.
    Binocp,
}

impl Bound {
    pub fn parse(name: &str) -> CoreResult<Self> {
        match name {
            "simuem" => Ok(Bound::Simuem),
            "binocp" => Ok(Bound::Binocp),
            other => Err(CoreError::value(format!(
                "bound must be 'simuem' or 'binocp', got {other:?}"
            ))),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Params {
    pub ks: Vec<usize>,
    pub sigma: f64,
    pub alpha: f64,
    pub bound: Bound,
}

impl Params {
    pub fn validate(&self, num_classes: usize) -> CoreResult<()> {
        if self.ks.is_empty() {
            return Err(CoreError::value("k must be a positive int or a non-empty sequence of them"));
        }
        for &k in &self.ks {
            if k < 1 || k >= num_classes {
                return Err(CoreError::value(format!(
                    "k must satisfy 1 <= k < C = {num_classes} (with k >= C every label is always in the top-k), got k={k}"
                )));
            }
        }
        if !(self.sigma.is_finite() && self.sigma > 0.0) {
            return Err(CoreError::value(format!("sigma must be a finite positive number, got {}", self.sigma)));
        }
        bounds::validate_alpha(self.alpha)
    }
}

/// Radii for every row: `out[e * ks.len() + j]` is row e's radius for `ks[j]`.
/// Errors name the first bad row (lowest index), whatever order rayon ran them in.
pub fn certify_batch<T: IntValue>(
    counts: ArrayView2<T>,
    labels: &[i64],
    params: &Params,
    parallel: bool,
) -> CoreResult<Vec<f64>> {
    let (rows, num_classes) = counts.dim();
    if labels.len() != rows {
        return Err(CoreError::value(format!(
            "labels must have one entry per row of counts: {} labels for {rows} rows",
            labels.len()
        )));
    }
    if num_classes < 2 {
        return Err(CoreError::value(format!("counts need at least 2 classes (columns), got {num_classes}")));
    }
    params.validate(num_classes)?;
    let width = params.ks.len();
    let mut out = vec![0.0f64; rows * width];
    let run = |(e, slot): (usize, &mut [f64])| {
        certify_row(counts.row(e), e, labels[e], params, slot).map_err(|err| (e, err))
    };
    let result = if parallel {
        out.par_chunks_mut(width).enumerate().map(run).collect::<Vec<_>>()
    } else {
        out.chunks_mut(width).enumerate().map(run).collect::<Vec<_>>()
    };
    if let Some((_, err)) = result.into_iter().filter_map(Result::err).min_by_key(|(e, _)| *e) {
        return Err(err);
    }
    Ok(out)
}

/// One pass over a row: checks every count, sums them, and keeps the `k` largest counts
/// of the labels other than `label` (largest first), with the label's own count.
struct RowScan {
    total: u64,
    label_count: u64,
    top: Vec<u64>,
}

fn scan_row<T: IntValue>(row: ArrayView1<T>, e: usize, label: usize, k: usize) -> CoreResult<RowScan> {
    match row.as_slice() {
        Some(slice) if k <= 32 => scan_slice(slice, e, label, k),
        Some(slice) => scan_values(slice.iter().copied(), e, label, k),
        None => scan_values(row.iter().copied(), e, label, k),
    }
}

/// The fast path for a contiguous row (the common case, thousands of classes): one
/// branch-free pass that vectorises (any negative, wrapping sum, max), then the top-k pass
/// in which most counts are rejected by a single compare. Rows that might overflow or hold
/// a negative count go to the checked path, which names the problem.
fn scan_slice<T: IntValue>(slice: &[T], e: usize, label: usize, k: usize) -> CoreResult<RowScan> {
    let (negative, total, max) = slice.iter().fold((false, 0u64, 0u64), |(neg, sum, max), &v| {
        let c = v.to_u64();
        (neg | v.is_negative(), sum.wrapping_add(c), max.max(c))
    });
    if negative || (slice.len() as u128) * (max as u128) > u64::MAX as u128 {
        return scan_values(slice.iter().copied(), e, label, k);
    }
    if total == 0 {
        return Err(CoreError::value(format!("row {e} of counts sums to 0: every row needs at least one sample")));
    }
    let mut top: Vec<u64> = Vec::with_capacity(k + 1);
    let mut floor = 0u64;
    for (j, &v) in slice.iter().enumerate() {
        let c = v.to_u64();
        if (c > floor || top.len() < k) && j != label {
            let pos = top.partition_point(|&x| x >= c);
            top.insert(pos, c);
            top.truncate(k);
            if top.len() == k {
                floor = top[k - 1];
            }
        }
    }
    Ok(RowScan { total, label_count: slice[label].to_u64(), top })
}

fn scan_values<T: IntValue>(values: impl Iterator<Item = T>, e: usize, label: usize, k: usize) -> CoreResult<RowScan> {
    let mut total: u64 = 0;
    let mut label_count = 0;
    // Small k: a sorted buffer, skipping most counts at one compare. Large k: keep every
    // other count and select afterwards (the buffer's inserts would cost O(C k)).
    let buffered = k <= 32;
    let mut top: Vec<u64> = Vec::with_capacity(if buffered { k + 1 } else { 0 });
    let mut floor = 0u64; // the smallest count in a full `top`: most counts fall below it
    for (j, v) in values.enumerate() {
        let wide = v.to_i128();
        let c = match u64::try_from(wide) {
            Ok(c) => c,
            Err(_) => {
                return Err(CoreError::value(format!(
                    "counts must be non-negative integers, got {wide} at row {e}, column {j}"
                )))
            }
        };
        total = total.checked_add(c).ok_or_else(|| {
            CoreError::value(format!("counts in row {e} sum to more than 2**64 - 1; totals must fit in 64 bits"))
        })?;
        if j == label {
            label_count = c;
        } else if !buffered {
            top.push(c);
        } else if top.len() < k || c > floor {
            let pos = top.partition_point(|&x| x >= c);
            top.insert(pos, c);
            top.truncate(k);
            if top.len() == k {
                floor = top[k - 1];
            }
        }
    }
    if total == 0 {
        return Err(CoreError::value(format!("row {e} of counts sums to 0: every row needs at least one sample")));
    }
    if !buffered {
        top.select_nth_unstable_by(k - 1, |a, b| b.cmp(a));
        top.truncate(k);
        top.sort_unstable_by(|a, b| b.cmp(a));
    }
    Ok(RowScan { total, label_count, top })
}

fn certify_row<T: IntValue>(row: ArrayView1<T>, e: usize, label: i64, params: &Params, out: &mut [f64]) -> CoreResult<()> {
    let num_classes = row.len();
    if label < 0 || label as usize >= num_classes {
        return Err(CoreError::value(format!("labels must be in [0, C) = [0, {num_classes}), got {label} for row {e}")));
    }
    let kmax = *params.ks.iter().max().expect("validated non-empty");
    let scan = scan_row(row, e, label as usize, kmax)?;
    let alpha = match params.bound {
        Bound::Simuem => params.alpha / num_classes as f64,
        Bound::Binocp => params.alpha,
    };
    let pl = bounds::lower(scan.label_count, scan.total, alpha);
    if pl.p <= 0.0 {
        out.fill(0.0);
        return Ok(());
    }
    let ubs = match params.bound {
        Bound::Binocp => vec![pl.q; kmax],
        Bound::Simuem => upper_bounds(&scan.top, scan.total, alpha, pl),
    };
    for (slot, &k) in out.iter_mut().zip(&params.ks) {
        *slot = topk_radius(pl, &ubs[..k], params.sigma);
    }
    Ok(())
}

/// Upper bounds of the largest other counts (largest first), clipped to 1 - pl. The upper
/// bound grows with the count, so only the kmax largest counts need a quantile.
fn upper_bounds(top: &[u64], n: u64, alpha: f64, pl: Prob) -> Vec<f64> {
    let mut ubs = Vec::with_capacity(top.len());
    let mut prev: Option<(u64, f64)> = None;
    for &c in top {
        let ub = match prev {
            Some((pc, pu)) if pc == c => pu, // equal counts, equal bounds
            _ => bounds::upper(c, n, alpha).p.min(pl.q),
        };
        prev = Some((c, ub));
        ubs.push(ub);
    }
    ubs
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    fn params(ks: Vec<usize>) -> Params {
        Params { ks, sigma: 0.25, alpha: 0.001, bound: Bound::Simuem }
    }

    #[test]
    fn published_first_row() {
        // Line 1 of cifar0.25.txt; the authors printed 0.55 (3 significant digits).
        let counts = array![[2i64, 2, 334, 93642, 2, 5279, 737, 0, 2, 0]];
        let r = certify_batch(counts.view(), &[3], &params(vec![3]), false).unwrap();
        assert!((r[0] - 0.55).abs() < 0.005 + 1e-5, "{}", r[0]);
    }

    #[test]
    fn k_sequence_matches_single_k() {
        let counts = array![[10i64, 500, 80000, 19000, 490], [30000, 30000, 20000, 15000, 5000]];
        let labels = [2, 0];
        let all = certify_batch(counts.view(), &labels, &params(vec![1, 2, 3, 4]), true).unwrap();
        for (j, k) in [1, 2, 3, 4].into_iter().enumerate() {
            let one = certify_batch(counts.view(), &labels, &params(vec![k]), false).unwrap();
            assert_eq!(one[0], all[j]);
            assert_eq!(one[1], all[4 + j]);
        }
        // Top-1 is not certified for a 30% label, top-3 is.
        assert_eq!(all[4], 0.0);
        assert!(all[4 + 2] > 0.0);
    }

    #[test]
    fn scan_keeps_the_largest_other_counts_and_the_total() {
        let row = ndarray::Array1::from_iter((0..100u64).map(|i| (i * 7919) % 113));
        for k in [1, 5, 16, 17, 40, 99] {
            let mut expect: Vec<u64> = row.iter().enumerate().filter(|&(j, _)| j != 3).map(|(_, &c)| c).collect();
            expect.sort_unstable_by(|a, b| b.cmp(a));
            expect.truncate(k);
            let scan = scan_row(row.view(), 0, 3, k).unwrap();
            assert_eq!(scan.top, expect);
            assert_eq!(scan.total, row.sum());
            assert_eq!(scan.label_count, row[3]);
            // A strided view goes through the generic path to the same answer.
            let wide = ndarray::Array2::from_shape_fn((100, 2), |(i, j)| if j == 0 { row[i] } else { 7 });
            assert_eq!(scan_row(wide.column(0), 0, 3, k).unwrap().top, expect);
        }
    }

    #[test]
    fn bad_rows_name_the_problem() {
        let p = params(vec![1]);
        let neg = array![[5i64, -1, 3]];
        assert!(certify_batch(neg.view(), &[0], &p, false).unwrap_err().to_string().contains("non-negative"));
        let zero = array![[1i64, 2, 3], [0, 0, 0]];
        let err = certify_batch(zero.view(), &[0, 0], &p, false).unwrap_err().to_string();
        assert!(err.contains("sums to 0"), "{err}");
        let big = array![[u64::MAX, 1u64, 0]];
        assert!(certify_batch(big.view(), &[0], &p, false).unwrap_err().to_string().contains("64 bits"));
        let ok = array![[1i64, 2, 3]];
        assert!(certify_batch(ok.view(), &[3], &p, false).is_err());
        assert!(certify_batch(ok.view(), &[0], &params(vec![3]), false).is_err());
        assert!(certify_batch(ok.view(), &[0, 1], &p, false).is_err());
    }
}

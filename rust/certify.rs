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
}

macro_rules! int_value {
    ($($t:ty),*) => {$(
        impl IntValue for $t {
            #[inline]
            fn to_i128(self) -> i128 { self as i128 }
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

/// Checks a counts row and returns its entries as u64 with their total.
fn row_total<T: IntValue>(row: ArrayView1<T>, e: usize) -> CoreResult<u64> {
    let mut total: u64 = 0;
    for (j, &c) in row.iter().enumerate() {
        let v = c.to_i128();
        if v < 0 {
            return Err(CoreError::value(format!("counts must be non-negative integers, got {v} at row {e}, column {j}")));
        }
        total = u64::try_from(v).ok().and_then(|v| total.checked_add(v)).ok_or_else(|| {
            CoreError::value(format!("counts in row {e} sum to more than 2**64 - 1; totals must fit in 64 bits"))
        })?;
    }
    if total == 0 {
        return Err(CoreError::value(format!("row {e} of counts sums to 0: every row needs at least one sample")));
    }
    Ok(total)
}

fn certify_row<T: IntValue>(row: ArrayView1<T>, e: usize, label: i64, params: &Params, out: &mut [f64]) -> CoreResult<()> {
    let num_classes = row.len();
    if label < 0 || label as usize >= num_classes {
        return Err(CoreError::value(format!("labels must be in [0, C) = [0, {num_classes}), got {label} for row {e}")));
    }
    let label = label as usize;
    let n = row_total(row, e)?;
    let c_of = |j: usize| row[j].to_i128() as u64;
    let alpha = match params.bound {
        Bound::Simuem => params.alpha / num_classes as f64,
        Bound::Binocp => params.alpha,
    };
    let pl = bounds::lower(c_of(label), n, alpha);
    if pl.p <= 0.0 {
        out.fill(0.0);
        return Ok(());
    }
    let kmax = *params.ks.iter().max().expect("validated non-empty");
    let ubs = match params.bound {
        Bound::Binocp => vec![pl.q; kmax],
        Bound::Simuem => top_upper_bounds(row, label, kmax, n, alpha, pl),
    };
    for (slot, &k) in out.iter_mut().zip(&params.ks) {
        *slot = topk_radius(pl, &ubs[..k], params.sigma);
    }
    Ok(())
}

/// The kmax largest upper bounds among the other labels, largest first, clipped to 1 - pl.
/// The upper bound grows with the count, so only the kmax largest counts need a quantile.
fn top_upper_bounds<T: IntValue>(row: ArrayView1<T>, label: usize, kmax: usize, n: u64, alpha: f64, pl: Prob) -> Vec<f64> {
    let top = largest_counts(row, label, kmax);
    let mut ubs = Vec::with_capacity(kmax);
    let mut prev: Option<(u64, f64)> = None;
    for c in top {
        let ub = match prev {
            Some((pc, pu)) if pc == c => pu, // equal counts, equal bounds
            _ => bounds::upper(c, n, alpha).p.min(pl.q),
        };
        prev = Some((c, ub));
        ubs.push(ub);
    }
    ubs
}

/// The k largest counts of the row without column `skip`, largest first.
fn largest_counts<T: IntValue>(row: ArrayView1<T>, skip: usize, k: usize) -> Vec<u64> {
    let others = row.iter().enumerate().filter(|&(j, _)| j != skip).map(|(_, &c)| c.to_i128() as u64);
    if k <= 16 {
        // One pass with a small sorted buffer: cheaper than a selection for the usual k.
        let mut top: Vec<u64> = Vec::with_capacity(k + 1);
        for c in others {
            if top.len() == k && c <= top[k - 1] {
                continue;
            }
            let pos = top.partition_point(|&x| x >= c);
            top.insert(pos, c);
            top.truncate(k);
        }
        top
    } else {
        let mut all: Vec<u64> = others.collect();
        all.select_nth_unstable_by(k - 1, |a, b| b.cmp(a));
        all.truncate(k);
        all.sort_unstable_by(|a, b| b.cmp(a));
        all
    }
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
    fn largest_counts_agree_with_a_sort() {
        let row = ndarray::Array1::from_iter((0..100u64).map(|i| (i * 7919) % 113));
        for k in [1, 5, 16, 17, 40] {
            let mut expect: Vec<u64> = row.iter().enumerate().filter(|&(j, _)| j != 3).map(|(_, &c)| c).collect();
            expect.sort_unstable_by(|a, b| b.cmp(a));
            expect.truncate(k);
            assert_eq!(largest_counts(row.view(), 3, k), expect);
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

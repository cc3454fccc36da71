//! Certified top-k radii for a batch of count rows, in parallel across rows.

use ndarray::{ArrayView1, ArrayView2};
use rayon::prelude::*;

use crate::bounds;
use crate::error::{CoreError, CoreResult};
use crate::int_value::IntValue;
use crate::parallel;
use crate::prob::Prob;
use crate::radius::topk_radius;
use crate::scan::{scan_row, RowScan};

/// How the probability bounds are made from counts.
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
            other => Err(CoreError::value(format!("bound must be 'simuem' or 'binocp', got {other:?}"))),
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
    let kmax = *params.ks.iter().max().expect("validated non-empty");
    let run = |(e, slot): (usize, &mut [f64])| -> Result<(), (usize, CoreError)> {
        let scan = scan_labelled_row(counts.row(e), e, labels[e], kmax).map_err(|err| (e, err))?;
        certify_scan(&scan, num_classes, params, slot);
        Ok(())
    };
    let first_error = if parallel::worth_it(parallel, rows) {
        out.par_chunks_mut(width).enumerate().map(run).filter_map(Result::err).min_by_key(|(e, _)| *e)
    } else {
        out.chunks_mut(width).enumerate().map(run).filter_map(Result::err).next()
    };
    match first_error {
        Some((_, err)) => Err(err),
        None => Ok(out),
    }
}

fn scan_labelled_row<T: IntValue>(row: ArrayView1<T>, e: usize, label: i64, kmax: usize) -> CoreResult<RowScan> {
    let num_classes = row.len();
    if label < 0 || label as usize >= num_classes {
        return Err(CoreError::value(format!(
            "labels must be in [0, C) = [0, {num_classes}), got {label} for row {e}"
        )));
    }
    scan_row(row, e, label as usize, kmax)
}

/// One row's radii, one per k of `params`, into `out`.
fn certify_scan(scan: &RowScan, num_classes: usize, params: &Params, out: &mut [f64]) {
    let top = scan.top();
    let alpha = match params.bound {
        Bound::Simuem => params.alpha / num_classes as f64,
        Bound::Binocp => params.alpha,
    };
    let pl = bounds::lower(scan.label_count, scan.total, alpha);
    if pl.p <= 0.0 {
        out.fill(0.0);
        return;
    }
    let (mut stack, mut heap) = ([0.0f64; 32], Vec::new());
    let ubs: &mut [f64] = if top.len() <= stack.len() {
        &mut stack[..top.len()]
    } else {
        heap.resize(top.len(), 0.0);
        &mut heap
    };
    match params.bound {
        Bound::Binocp => ubs.fill(pl.q),
        Bound::Simuem => upper_bounds(top, scan.total, alpha, pl, ubs),
    }
    for (slot, &k) in out.iter_mut().zip(&params.ks) {
        *slot = topk_radius(pl, &ubs[..k], params.sigma);
    }
}

/// Upper bounds of the largest other counts (largest first) into `ubs`, clipped to
/// 1 - pl. The upper bound grows with the count, so only the kmax largest counts need a
/// quantile.
fn upper_bounds(top: &[u64], n: u64, alpha: f64, pl: Prob, ubs: &mut [f64]) {
    let mut prev: Option<(u64, f64)> = None;
    for (&c, slot) in top.iter().zip(ubs) {
        let ub = match prev {
            Some((pc, pu)) if pc == c => pu, // equal counts, equal bounds
            _ => bounds::upper_memoized(c, n, alpha).min(pl.q),
        };
        prev = Some((c, ub));
        *slot = ub;
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

//! One-sided Clopper-Pearson bounds from binomial counts.

use ndarray::ArrayView1;
use rayon::prelude::*;

use crate::beta::quantile;
use crate::error::{CoreError, CoreResult};
use crate::parallel;
use crate::prob::Prob;

/// Checks a (successes, trials, alpha) triple and says what is allowed when it is not.
pub fn validate(successes: i64, trials: i64, alpha: f64) -> CoreResult<()> {
    if trials < 1 {
        return Err(CoreError::value(format!("trials must be >= 1, got {trials}")));
    }
    if successes < 0 || successes > trials {
        return Err(CoreError::value(format!(
            "successes must be in [0, trials], got successes={successes}, trials={trials}"
        )));
    }
    validate_alpha(alpha)
}

pub fn validate_alpha(alpha: f64) -> CoreResult<()> {
    if !(alpha > 0.0 && alpha < 1.0) {
        return Err(CoreError::value(format!("alpha must be in the open interval (0, 1), got {alpha}")));
    }
    Ok(())
}

/// The alpha-quantile of Beta(x, n - x + 1): P[p >= lower] >= 1 - alpha. 0 when x = 0.
pub fn lower(x: u64, n: u64, alpha: f64) -> Prob {
    if x == 0 {
        return Prob { p: 0.0, q: 1.0 };
    }
    quantile(x as f64, (n - x) as f64 + 1.0, Prob::from_p(alpha))
}

/// The (1 - alpha)-quantile of Beta(x + 1, n - x): P[p <= upper] >= 1 - alpha. 1 when x = n.
pub fn upper(x: u64, n: u64, alpha: f64) -> Prob {
    if x >= n {
        return Prob { p: 1.0, q: 0.0 };
    }
    // The target 1 - alpha is passed with alpha as its exact complement.
    quantile(x as f64 + 1.0, (n - x) as f64, Prob::from_q(alpha))
}

/// (lower, upper) bounds for each (successes, trials, alpha) triple of equal-length
/// arrays. Every triple is checked before any is computed; an error names the first bad
/// one.
pub fn clopper_pearson(
    successes: ArrayView1<i64>,
    trials: ArrayView1<i64>,
    alpha: ArrayView1<f64>,
    parallel: bool,
) -> CoreResult<(Vec<f64>, Vec<f64>)> {
    let len = successes.len();
    if trials.len() != len || alpha.len() != len {
        return Err(CoreError::value("successes, trials and alpha must have one shape after broadcasting"));
    }
    for i in 0..len {
        validate(successes[i], trials[i], alpha[i])?;
    }
    // Validated: 0 <= successes <= trials, so both fit u64 as they are.
    let one = |i: usize| {
        let (x, n, a) = (successes[i] as u64, trials[i] as u64, alpha[i]);
        (lower(x, n, a).p, upper(x, n, a).p)
    };
    let pairs: Vec<(f64, f64)> = if parallel::worth_it(parallel, len) {
        (0..len).into_par_iter().map(one).collect()
    } else {
        (0..len).map(one).collect()
    };
    Ok(pairs.into_iter().unzip())
}

/// `upper(x, n, alpha).p` through a per-thread memo. A batch certifies many rows with
/// the same n and alpha, and the largest counts of the other labels repeat from row to
/// row (small counts above all), so most of these quantiles were computed already. The
/// key is the whole argument triple: a hit returns exactly what `upper` would.
pub fn upper_memoized(x: u64, n: u64, alpha: f64) -> f64 {
    use std::cell::RefCell;
    const SLOTS: usize = 4096;
    #[derive(Clone, Copy)]
    struct Entry {
        x: u64,
        n: u64,
        alpha: u64,
        upper: f64,
    }
    thread_local! {
        // n = 0 never occurs (n >= 1), so the initial entries never match.
        static MEMO: RefCell<Vec<Entry>> = const { RefCell::new(Vec::new()) };
    }
    let slot = (x.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ n.wrapping_mul(0xc2b2_ae3d_27d4_eb4f)) >> 52;
    let alpha_bits = alpha.to_bits();
    MEMO.with(|memo| {
        let mut memo = memo.borrow_mut();
        if memo.is_empty() {
            memo.resize(SLOTS, Entry { x: 0, n: 0, alpha: 0, upper: 0.0 });
        }
        let entry = &mut memo[slot as usize % SLOTS];
        if entry.x == x && entry.n == n && entry.alpha == alpha_bits {
            return entry.upper;
        }
        let upper = upper(x, n, alpha).p;
        *entry = Entry { x, n, alpha: alpha_bits, upper };
        upper
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closed_forms_at_the_edges() {
        // x = n: lower = alpha^(1/n); x = 0: upper = 1 - alpha^(1/n).
        let (n, alpha) = (1000u64, 1e-3f64);
        let l = lower(n, n, alpha).p;
        assert!(((l - alpha.powf(1.0 / n as f64)) / l).abs() < 1e-14);
        let u = upper(0, n, alpha).p;
        let expect = -libm::expm1(libm::log(alpha) / n as f64);
        assert!(((u - expect) / expect).abs() < 1e-14);
        assert_eq!(lower(0, n, alpha).p, 0.0);
        assert_eq!(upper(n, n, alpha).p, 1.0);
    }

    #[test]
    fn bounds_bracket_the_estimate_and_tighten_with_n() {
        for &n in &[10u64, 1000, 100_000, 1_000_000_000] {
            let x = n / 3;
            let (l, u) = (lower(x, n, 1e-3).p, upper(x, n, 1e-3).p);
            let phat = x as f64 / n as f64;
            assert!(l < phat && phat < u, "n = {n}");
        }
        let w = |n: u64| upper(n / 2, n, 0.01).p - lower(n / 2, n, 0.01).p;
        assert!(w(100) > w(10_000) && w(10_000) > w(1_000_000));
    }

    #[test]
    fn memoized_upper_is_upper() {
        // Colliding and repeated arguments, other n and alpha for the same x: every call
        // returns exactly the direct computation.
        for round in 0..3 {
            for x in (0..20_000u64).step_by(7) {
                for &(n, alpha) in &[(100_000u64, 1e-6), (100_000, 1e-3), (1_000_000_000, 1e-30)] {
                    let n = n + round;
                    assert_eq!(upper_memoized(x, n, alpha).to_bits(), upper(x, n, alpha).p.to_bits());
                }
            }
        }
    }

    #[test]
    fn batch_is_the_pointwise_bounds() {
        let (x, n, a) = ([0i64, 3, 50, 100], [100i64; 4], [1e-3, 0.05, 1e-10, 0.5]);
        let (xv, nv, av) = (ArrayView1::from(&x), ArrayView1::from(&n), ArrayView1::from(&a));
        for parallel in [false, true] {
            let (lo, up) = clopper_pearson(xv, nv, av, parallel).unwrap();
            for i in 0..x.len() {
                let (xi, ni) = (x[i] as u64, n[i] as u64);
                assert_eq!((lo[i], up[i]), (lower(xi, ni, a[i]).p, upper(xi, ni, a[i]).p));
            }
        }
        let err = clopper_pearson(xv, ArrayView1::from(&n[..3]), av, false).unwrap_err().to_string();
        assert!(err.contains("one shape"), "{err}");
        let bad = [0i64, 3, 101, -1];
        let err = clopper_pearson(ArrayView1::from(&bad), nv, av, true).unwrap_err().to_string();
        assert!(err.contains("successes=101"), "{err}");
    }

    #[test]
    fn rejects_bad_triples() {
        assert!(validate(-1, 10, 0.1).is_err());
        assert!(validate(11, 10, 0.1).is_err());
        assert!(validate(0, 0, 0.1).is_err());
        assert!(validate(1, 10, 0.0).is_err());
        assert!(validate(1, 10, 1.0).is_err());
        assert!(validate(1, 10, f64::NAN).is_err());
        assert!(validate(10, 10, 0.5).is_ok());
    }
}

//! The tight top-k radius of Theorem 1 (Jia et al., ICLR 2020) from probability bounds.

use crate::normal;
use crate::prob::Prob;

/// The certified l2 radius of a label in the top-k.
///
/// `pl` bounds the label's probability from below; `top_ubs` holds the k largest upper
/// bounds of the other labels, largest first, each already clipped to at most 1 - pl.
/// Returns 0 when the label is not certified.
pub fn topk_radius(pl: Prob, top_ubs: &[f64], sigma: f64) -> f64 {
    if pl.p <= 0.0 {
        return 0.0;
    }
    let k = top_ubs.len();
    // Phi^-1(pl) from whichever side of pl is precise.
    let a = if pl.p > 0.5 { -normal::ppf(pl.q) } else { normal::ppf(pl.p) };
    // S_t = the t smallest of the k bounds: sums[t - 1] grows from the end of the list.
    let mut sums = [0.0f64; 64];
    let mut sum_vec = Vec::new();
    let sums: &mut [f64] = if k <= 64 {
        &mut sums[..k]
    } else {
        sum_vec.resize(k, 0.0);
        &mut sum_vec
    };
    let mut sum = 0.0;
    for t in 1..=k {
        sum += top_ubs[k - t];
        sums[t - 1] = sum;
    }
    let mut best = 0.0f64;
    // ln Phi(a - best / sigma), the left side of every pruning test at the current best.
    let mut ln_left_at_best = 0.0f64;
    // Largest t first: it usually gives the largest root, and a t whose equation already
    // fails at the best radius so far (h_t(best) <= 0, h_t decreasing) cannot beat it.
    for t in (1..=k).rev() {
        let clipped = sums[t - 1] >= pl.q;
        let ps = if clipped { pl.q } else { sums[t - 1] };
        if pl.p <= ps / t as f64 {
            continue;
        }
        if best > 0.0 {
            // The test may use Phi^-1 without its last Newton step: where that changes its
            // verdict, R_t and best agree to about 1e-15, and keeping best is then at most
            // that much below the exact radius, never above it.
            let b = if clipped { -a } else { normal::ppf_approx(ps) };
            if ln_left_at_best - normal::ln_cdf(b + best / sigma) + f64::ln(t as f64) <= 0.0 {
                continue;
            }
        }
        // Phi^-1(1 - pl) is exactly -a: keep it exact when the sum was clipped.
        let b = if clipped { -a } else { normal::ppf(ps) };
        let u = if t == 1 { 0.5 * (a - b) } else { solve_root(a, b, t as f64) };
        if sigma * u > best {
            best = sigma * u;
            ln_left_at_best = normal::ln_cdf(a - u);
        }
    }
    // sigma near f64::MAX can overflow the product: the largest finite value is still below
    // the true radius, infinity would claim more.
    best.min(f64::MAX)
}

/// The root u > 0 of Phi(a - u) = Phi(b + u) / t for t >= 2, given Phi(a) > Phi(b) / t.
///
/// With m = (a + b) / 2 and u = (a - b) / 2 + d the equation is Phi(m - d) = Phi(m + d) / t,
/// so in logs g(d) = ln Phi(m - d) - ln Phi(m + d) + ln t = 0, strictly decreasing, with
/// g(0) = ln t > 0: the root is d > 0. Start from the linearisation at d = 0, then Halley
/// steps (g' and g'' come from the inverse Mills ratio M = phi / Phi with one erfc per
/// side) inside a bracket that only shrinks. Stops at an ulp of u: no tolerance, no cap.
fn solve_root(a: f64, b: f64, t: f64) -> f64 {
    let ln_t = f64::ln(t);
    let m = 0.5 * (a + b);
    let half_gap = 0.5 * (a - b);
    let (mut lo, mut hi) = (0.0f64, f64::INFINITY);
    let (_, m0) = normal::ln_cdf_and_mills(m);
    let mut d = ln_t / (2.0 * m0);
    for _ in 0..200 {
        let (ln_left, m_left) = normal::ln_cdf_and_mills(m - d);
        let (ln_right, m_right) = normal::ln_cdf_and_mills(m + d);
        let g = ln_left - ln_right + ln_t;
        if g > 0.0 {
            lo = d;
        } else if g < 0.0 {
            hi = d;
        } else {
            return half_gap + d;
        }
        // g' = -(M(m - d) + M(m + d)); g'' from M'(x) = -M(x) (x + M(x)).
        let slope = -(m_left + m_right);
        let curve = -m_left * (m - d + m_left) + m_right * (m + d + m_right);
        let newton = g / slope;
        let halley = 1.0 - 0.5 * newton * curve / slope;
        let step = if halley > 0.5 && halley < 2.0 { newton / halley } else { newton };
        let next = d - step;
        let u_scale = (half_gap + d).abs().max(f64::MIN_POSITIVE);
        // A Halley step from error e leaves O(e^3): below 1e-6 the root is reached.
        if step.is_finite()
            && (step.abs() <= 1e-6 * u_scale || step.abs() <= 2.0 * f64::EPSILON * u_scale)
            && (next > lo && next < hi || step.abs() <= 2.0 * f64::EPSILON * u_scale)
        {
            return half_gap + next;
        }
        d = if step.is_finite() && next > lo && next < hi {
            next
        } else if hi.is_finite() {
            let mid = 0.5 * (lo + hi);
            if mid <= lo || mid >= hi {
                return half_gap + d;
            }
            mid
        } else {
            2.0 * lo.max(0.5)
        };
    }
    half_gap + d
}

#[cfg(test)]
mod tests {
    use super::*;

    fn certified_equation(a: f64, b: f64, t: f64, u: f64) -> f64 {
        normal::cdf(a - u) - normal::cdf(b + u) / t
    }

    #[test]
    fn k1_is_cohens_radius() {
        let pl = Prob::from_p(0.9);
        let r = topk_radius(pl, &[0.05], 0.5);
        let expect = 0.25 * (normal::ppf(0.9) - normal::ppf(0.05));
        assert!((r - expect).abs() < 1e-15);
    }

    #[test]
    fn roots_solve_the_equation() {
        for &(a, b, t) in &[(1.0, -1.0, 2.0), (0.2, -2.5, 3.0), (5.0, -7.0, 5.0), (-0.5, -3.0, 4.0)] {
            let u = solve_root(a, b, t);
            assert!(certified_equation(a, b, t, u).abs() < 1e-15, "a={a} b={b} t={t} u={u}");
            assert!(certified_equation(a, b, t, u * (1.0 - 1e-12)) > 0.0);
            assert!(certified_equation(a, b, t, u * (1.0 + 1e-12)) < 0.0);
        }
    }

    #[test]
    fn no_cap_on_large_sigma() {
        let r = topk_radius(Prob::from_q(1e-6), &[1e-7, 1e-7, 1e-7], 50.0);
        assert!(r > 100.0, "{r}");
    }

    #[test]
    fn huge_sigma_stays_finite() {
        let r = topk_radius(Prob::from_p(0.9), &[0.05, 0.01], 1e308);
        assert_eq!(r, f64::MAX);
    }

    #[test]
    fn not_certified_is_zero() {
        // pl = 0.3 cannot beat ub = 0.35 at t = 1, nor (0.35 + 0.3) / 2 at t = 2.
        assert_eq!(topk_radius(Prob::from_p(0.3), &[0.35, 0.3], 1.0), 0.0);
        assert_eq!(topk_radius(Prob::from_p(0.0), &[0.1], 1.0), 0.0);
    }
}

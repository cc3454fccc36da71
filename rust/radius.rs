//! The tight top-k radius of Theorem 1 (Jia et al., ICLR 2020) from probability bounds.

use crate::beta::Prob;
use crate::normal;

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
    let mut best = 0.0f64;
    let mut sum = 0.0;
    // S_t = the t smallest of the k bounds: grow the sum from the end of the list.
    for t in 1..=k {
        sum += top_ubs[k - t];
        let clipped = sum >= pl.q;
        let ps = if clipped { pl.q } else { sum };
        if pl.p <= ps / t as f64 {
            continue;
        }
        // Phi^-1(1 - pl) is exactly -a: keep it exact when the sum was clipped.
        let b = if clipped { -a } else { normal::ppf(ps) };
        let u = if t == 1 { 0.5 * (a - b) } else { solve_root(a, b, t as f64) };
        best = best.max(sigma * u);
    }
    best
}

/// The root u > 0 of Phi(a - u) = Phi(b + u) / t for t >= 2, given Phi(a) > Phi(b) / t.
///
/// Solved in logs, g(u) = ln Phi(a - u) - ln Phi(b + u) + ln t, which is strictly
/// decreasing and keeps its precision when both sides are tiny. Newton's method inside
/// a bracket that only shrinks, falling back to bisection, until the step is below an
/// ulp of u: no tolerance, no cap on u.
fn solve_root(a: f64, b: f64, t: f64) -> f64 {
    let ln_t = libm::log(t);
    let g = |u: f64| normal::ln_cdf(a - u) - normal::ln_cdf(b + u) + ln_t;
    // g((a - b) / 2) = ln t > 0, so the root lies right of both 0 and (a - b) / 2.
    let mut lo = (0.5 * (a - b)).max(0.0);
    let mut width = 1.0;
    let mut hi = lo + width;
    while g(hi) > 0.0 {
        lo = hi;
        width *= 2.0;
        hi = lo + width;
        if !hi.is_finite() {
            return lo;
        }
    }
    let mut u = lo;
    for _ in 0..300 {
        let gu = g(u);
        if gu > 0.0 {
            lo = u;
        } else if gu < 0.0 {
            hi = u;
        } else {
            return u;
        }
        // g'(u) = -(M(a - u) + M(b + u)) with the inverse Mills ratio M = phi / Phi.
        let mills = |x: f64| libm::exp(normal::ln_pdf(x) - normal::ln_cdf(x));
        let slope = -(mills(a - u) + mills(b + u));
        let newton = u - gu / slope;
        let next = if newton > lo && newton < hi { newton } else { 0.5 * (lo + hi) };
        if (next - u).abs() <= 2.0 * f64::EPSILON * u.abs() || hi - lo <= 2.0 * f64::EPSILON * hi {
            return next;
        }
        u = next;
    }
    u
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
    fn not_certified_is_zero() {
        // pl = 0.3 cannot beat ub = 0.35 at t = 1, nor (0.35 + 0.3) / 2 at t = 2.
        assert_eq!(topk_radius(Prob::from_p(0.3), &[0.35, 0.3], 1.0), 0.0);
        assert_eq!(topk_radius(Prob::from_p(0.0), &[0.1], 1.0), 0.0);
    }
}

//! The Beta distribution's lower tail and its quantile, for the Clopper-Pearson bounds.
//!
//! Precision is the point: counts reach 1e9 and tail masses 1e-30, where the textbook
//! `a ln x + b ln(1-x) - ln B(a, b)` loses digits to cancellation between terms of size
//! `n`. The density therefore goes through Loader's saddle-point form of the binomial
//! probability (the one R's `dbinom` uses), which keeps relative precision for any n,
//! and every probability near 1 is carried as its complement (`Prob`).

use libm::{exp, expm1, lgamma, log, log1p};

/// A probability together with its complement, each to full relative precision.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Prob {
    pub p: f64,
    /// 1 - p
    pub q: f64,
}

impl Prob {
    pub fn from_p(p: f64) -> Self {
        Prob { p, q: 1.0 - p }
    }
    pub fn from_q(q: f64) -> Self {
        Prob { p: 1.0 - q, q }
    }
    pub fn complement(self) -> Self {
        Prob { p: self.q, q: self.p }
    }
}

/// ln(sqrt(2 pi))
const LN_SQRT_2PI: f64 = 0.918_938_533_204_672_8;
const LN_2PI: f64 = 1.837_877_066_409_345_5;

/// Stirling's error ln(n!) - ln(sqrt(2 pi n) (n/e)^n) for integers n <= 15 (mpmath).
#[allow(clippy::excessive_precision)]
const STIRLERR_SMALL: [f64; 16] = [
    0.0,
    0.08106146679532725821967,
    0.04134069595540929409382,
    0.02767792568499833914879,
    0.02079067210376509311152,
    0.01664469118982119216319,
    0.01387612882307074799875,
    0.01189670994589177009506,
    0.01041126526197209649748,
    0.009255462182712732917729,
    0.008330563433362871256469,
    0.007573675487951840794972,
    0.006942840107209529865664,
    0.00640899418800420706844,
    0.005951370112758847735624,
    0.005554733551962801371039,
];

/// Stirling's error for a non-negative integer-valued n.
fn stirlerr(n: f64) -> f64 {
    if n <= 15.0 {
        let i = n as usize;
        if (i as f64) == n {
            return STIRLERR_SMALL[i];
        }
        return lgamma(n + 1.0) - (n + 0.5) * log(n) + n - LN_SQRT_2PI;
    }
    // The Stirling series 1/(12n) - 1/(360n^3) + 1/(1260n^5) - 1/(1680n^7) + 1/(1188n^9).
    let nn = n * n;
    (1.0 / 12.0 - (1.0 / 360.0 - (1.0 / 1260.0 - (1.0 / 1680.0 - 1.0 / (1188.0 * nn)) / nn) / nn) / nn)
        / n
}

/// Loader's deviance term bd0(x, m) = x ln(x/m) + m - x, without cancellation for x ~ m.
/// `d` is x - m, passed in because the caller can form it more precisely than x - m.
fn bd0(x: f64, m: f64, d: f64) -> f64 {
    if d.abs() < 0.1 * (x + m) {
        let v = d / (x + m);
        let mut s = d * v;
        let mut ej = 2.0 * x * v;
        let v2 = v * v;
        let mut j = 1.0;
        loop {
            ej *= v2;
            let s1 = s + ej / (2.0 * j + 1.0);
            if s1 == s || j > 1000.0 {
                return s1;
            }
            s = s1;
            j += 1.0;
        }
    }
    x * log(x / m) - d
}

/// ln of the binomial probability C(m, k) x^k y^(m-k), with y = 1 - x given precisely.
fn ln_binom_pmf(k: f64, m: f64, x: Prob) -> f64 {
    if m == 0.0 {
        return 0.0;
    }
    if k == 0.0 {
        return m * ln_q(x);
    }
    if k == m {
        return m * ln_p(x);
    }
    // k - m p = -((m - k) - m q): form it from the side of x that is exact.
    let d = if x.p <= 0.5 { k - m * x.p } else { m * x.q - (m - k) };
    let lc = stirlerr(m) - stirlerr(k) - stirlerr(m - k) - bd0(k, m * x.p, d) - bd0(m - k, m * x.q, -d);
    let lf = LN_2PI + log(k) + log1p(-k / m);
    lc - 0.5 * lf
}

/// ln p, using the complement when that is the precise one.
fn ln_p(x: Prob) -> f64 {
    if x.p < 0.5 {
        log(x.p)
    } else {
        log1p(-x.q)
    }
}

fn ln_q(x: Prob) -> f64 {
    ln_p(x.complement())
}

/// ln of the Beta(a, b) density at x (a, b >= 1), through the binomial identity
/// f(x) = (a + b - 1) C(a + b - 2, a - 1) x^(a-1) y^(b-1).
pub fn ln_pdf(a: f64, b: f64, x: Prob) -> f64 {
    log(a + b - 1.0) + ln_binom_pmf(a - 1.0, a + b - 2.0, x)
}

/// Modified Lentz evaluation of the continued fraction for I_x(a, b) (Numerical Recipes'
/// `betacf`); it converges fast for x below (a + 1) / (a + b + 2). Integer b ends the
/// fraction after b steps; otherwise it takes O(sqrt(max(a, b))) steps.
fn beta_cf(a: f64, b: f64, x: f64) -> f64 {
    const TINY: f64 = 1e-300;
    let guard = |v: f64| if v.abs() < TINY { TINY } else { v };
    let (qab, qap, qam) = (a + b, a + 1.0, a - 1.0);
    let mut c = 1.0;
    let mut d = 1.0 / guard(1.0 - qab * x / qap);
    let mut h = d;
    let mut m = 1.0;
    while m < 1e7 {
        let m2 = 2.0 * m;
        let aa = m * (b - m) * x / ((qam + m2) * (a + m2));
        d = 1.0 / guard(1.0 + aa * d);
        c = guard(1.0 + aa / c);
        h *= d * c;
        let aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2));
        d = 1.0 / guard(1.0 + aa * d);
        c = guard(1.0 + aa / c);
        let del = d * c;
        h *= del;
        if (del - 1.0).abs() <= 1e-16 || m >= b {
            break;
        }
        m += 1.0;
    }
    h
}

/// Both tails of Beta(a, b) at a point, in logs, with the log density there (Newton's
/// slope comes for free with the tail's prefactor).
#[derive(Clone, Copy, Debug)]
pub struct Tails {
    /// ln I_x(a, b)
    pub lower: f64,
    /// ln(1 - I_x(a, b))
    pub upper: f64,
    /// ln f(x), the Beta(a, b) density
    pub ln_pdf: f64,
}

/// Both tails of Beta(a, b) at x. a and b are integers >= 1 (counts), which the
/// binomial sums below rely on.
pub fn tails(a: f64, b: f64, x: Prob) -> Tails {
    if x.p <= 0.0 {
        return Tails { lower: f64::NEG_INFINITY, upper: 0.0, ln_pdf: ln_pdf(a, b, x) };
    }
    if x.q <= 0.0 {
        return Tails { lower: 0.0, upper: f64::NEG_INFINITY, ln_pdf: ln_pdf(a, b, x) };
    }
    // Work where the variable is <= 1/2 and so exact to its last bit: for x near 1 with a
    // huge, the continued fraction's first term 1 - (a + b) x / (a + 1) cancels.
    if x.p <= 0.5 {
        tails_small_x(a, b, x)
    } else {
        let t = tails_small_x(b, a, x.complement());
        Tails { lower: t.upper, upper: t.lower, ln_pdf: t.ln_pdf }
    }
}

/// (ln I_x(a, b), ln(1 - I_x(a, b))).
pub fn ln_tails(a: f64, b: f64, x: Prob) -> (f64, f64) {
    let t = tails(a, b, x);
    (t.lower, t.upper)
}

fn tails_small_x(a: f64, b: f64, x: Prob) -> Tails {
    let (ln_x, ln_y) = (log(x.p), log1p(-x.p));
    if x.p < (a + 1.0) / (a + b + 2.0) {
        // I_x(a, b) = x^a y^b / (a B(a, b)) * cf = x y / a * f(x) * cf
        let ln_f = ln_pdf(a, b, x);
        let lower = ln_x + ln_y - log(a) + ln_f + log(beta_cf(a, b, x.p));
        Tails { lower, upper: ln_one_minus_exp(lower), ln_pdf: ln_f }
    } else {
        // Past the mean the fraction converges slowly and, for x near 1 in the mirrored
        // problem, cancels; 1 - I_x(a, b) = P[Bin(a + b - 1, x) <= a - 1] is a sum of
        // positive terms, about 6 sd of them. Its last term gives the density:
        // f(x) = b / y * P[Bin(a + b - 1, x) = a - 1].
        let (ln_pmf, ln_sum) = ln_binom_cdf(a - 1.0, a + b - 1.0, x);
        let upper = ln_pmf + ln_sum;
        Tails { lower: ln_one_minus_exp(upper), upper, ln_pdf: log(b) + ln_pmf - ln_y }
    }
}

/// ln P[Bin(m, x) <= k] for k below the mean m x: summed from j = k down, where the
/// terms fall geometrically (the ratio of term j - 1 to term j is below 1 there).
/// Returns (ln of the term at k, ln of the sum relative to it).
fn ln_binom_cdf(k: f64, m: f64, x: Prob) -> (f64, f64) {
    let mut sum = 1.0;
    let mut term = 1.0;
    let ratio = x.q / x.p;
    let mut j = k;
    while j >= 1.0 {
        term *= j * ratio / (m - j + 1.0);
        sum += term;
        if term < 1e-17 * sum {
            break;
        }
        j -= 1.0;
    }
    (ln_binom_pmf(k, m, x), log(sum))
}

/// ln(1 - e^l) for l <= 0, without cancellation (Maechler's log1mexp).
fn ln_one_minus_exp(l: f64) -> f64 {
    if l > -std::f64::consts::LN_2 {
        log(-expm1(l))
    } else {
        log1p(-exp(l))
    }
}

/// The x with I_x(a, b) = target, for a, b >= 1 and target in (0, 1), as a `Prob` whose
/// smaller side carries full relative precision.
pub fn quantile(a: f64, b: f64, target: Prob) -> Prob {
    // Closed forms: I_x(1, b) = 1 - y^b and I_x(a, 1) = x^a.
    if a == 1.0 {
        // y^b = 1 - target
        let ln_y = ln_q(target) / b;
        return Prob { p: -expm1(ln_y), q: exp(ln_y) };
    }
    if b == 1.0 {
        // x^a = target
        let ln_x = ln_p(target) / a;
        return Prob { p: exp(ln_x), q: -expm1(ln_x) };
    }
    // Solve on the smaller tail so that its logarithm is well conditioned; the other
    // tail is the same problem for Beta(b, a) at y.
    if target.p <= 0.5 {
        solve_lower(a, b, log(target.p))
    } else {
        solve_lower(b, a, log(target.q)).complement()
    }
}

/// Solves G(x) = ln I_x(a, b) - ln_target = 0. G is concave and increasing (the Beta cdf
/// is log-concave for a, b >= 1), so Newton's method converges from any start, at most
/// once past the root; Halley's correction makes it cubic, and a bracket that only
/// shrinks keeps every iterate inside (0, 1). The last step is accepted without another
/// evaluation once the curvature says the error left is far below an ulp.
fn solve_lower(a: f64, b: f64, ln_target: f64) -> Prob {
    let mut lo = Prob { p: 0.0, q: 1.0 };
    let mut hi = Prob { p: 1.0, q: 0.0 };
    let mut x = initial_guess(a, b, ln_target);
    for _ in 0..200 {
        let t = tails(a, b, x);
        let g = t.lower - ln_target;
        if g > 0.0 {
            hi = x;
        } else if g < 0.0 {
            lo = x;
        } else {
            return x;
        }
        let slope = exp(t.ln_pdf - t.lower); // G' = f / I
        let newton = g / slope;
        // G'' / G' = f'/f - G', with f'/f = (a - 1)/x - (b - 1)/y.
        let curvature = (a - 1.0) / x.p - (b - 1.0) / x.q - slope;
        let halley = 1.0 - 0.5 * newton * curvature;
        let step = if halley > 0.5 && halley < 2.0 { newton / halley } else { newton };
        // Move the precise side: y gains what x loses.
        let next = if x.p < 0.5 { Prob::from_p(x.p - step) } else { Prob::from_q(x.q + step) };
        let inside = step.is_finite() && below(lo, next) && below(next, hi);
        let scale = x.p.min(x.q);
        // A Halley step from error e leaves O(e^3); the Newton part alone leaves
        // (curvature / 2) e^2, a bound on what is left that needs no new evaluation.
        let newton_left = (0.5 * curvature * step * step).abs();
        if step.is_finite() && step.abs() <= 2.0 * f64::EPSILON * scale {
            return next;
        }
        if inside && newton_left <= 0.5 * f64::EPSILON * scale && (step / scale).abs() < 1e-5 {
            return next;
        }
        x = if inside {
            next
        } else {
            let mid = midpoint(lo, hi);
            if mid == lo || mid == hi {
                return x;
            }
            mid
        };
    }
    x
}

/// u < v, compared on the side of each that is exact.
fn below(u: Prob, v: Prob) -> bool {
    if u.p <= 0.5 || v.p <= 0.5 {
        u.p < v.p
    } else {
        u.q > v.q
    }
}

fn midpoint(lo: Prob, hi: Prob) -> Prob {
    if lo.p > 0.5 {
        Prob::from_q(0.5 * (lo.q + hi.q))
    } else {
        Prob::from_p(0.5 * (lo.p + hi.p))
    }
}

/// A start close enough that Newton needs a handful of steps: a Cornish-Fisher normal
/// approximation in the bulk, gamma (Wilson-Hilferty) approximations where one side is
/// small, the power law of the far lower tail where those leave (0, 1).
fn initial_guess(a: f64, b: f64, ln_target: f64) -> Prob {
    let z = crate::normal::ppf_approx(exp(ln_target)); // negative: lower tail
    let n = a + b;
    if a.min(b) >= 30.0 {
        let mean = a / n;
        let sd = (a * b / (n * n * (n + 1.0))).sqrt();
        let skew = 2.0 * (b - a) * (n + 1.0).sqrt() / ((n + 2.0) * (a * b).sqrt());
        let x = mean + sd * (z + skew * (z * z - 1.0) / 6.0);
        if x > 0.0 && x < 1.0 {
            return if x < 0.5 { Prob::from_p(x) } else { Prob::from_q(1.0 - x) };
        }
    }
    if a <= b && a < 30.0 {
        // x small: I_x(a, b) ~ P[Poisson(l) >= a] with l = n x, which is
        // e^-l l^a / a! (1 + l/(a+1) + l^2/((a+1)(a+2)) + ...): a fixed point in l.
        let ln_fact = lgamma(a + 1.0);
        let mut l = 0.0f64;
        for _ in 0..4 {
            let series = 1.0 + l / (a + 1.0) * (1.0 + l / (a + 2.0) * (1.0 + l / (a + 3.0)));
            l = exp((ln_target + ln_fact + l - log(series)) / a);
        }
        let x = l / (n - 1.0);
        if x > 0.0 && x < 0.5 {
            return Prob::from_p(x);
        }
    }
    if a <= b {
        // x small: n x is roughly Gamma(a) distributed; its lower quantile.
        let c = 1.0 / (9.0 * a);
        let w = 1.0 - c + z * c.sqrt();
        if w > 0.0 {
            let x = a * w * w * w / (n - 0.5 * (a - 1.0)).max(1.0);
            if x > 0.0 && x < 1.0 {
                return Prob::from_p(x);
            }
        }
        // I_x(a, b) ~ x^a / (a B(a, b)) for small x.
        let ln_beta = lgamma(a) + lgamma(b) - lgamma(n);
        let x = exp((ln_target + log(a) + ln_beta) / a);
        Prob::from_p(x.min(0.5))
    } else {
        // y = 1 - x small: n y is roughly Gamma(b) distributed; its upper quantile.
        let c = 1.0 / (9.0 * b);
        let w = 1.0 - c - z * c.sqrt();
        let y = b * w * w * w / (n - 0.5 * (b - 1.0)).max(1.0);
        Prob::from_q(y.clamp(1e-300, 0.5))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rel(a: f64, b: f64) -> f64 {
        ((a - b) / b).abs()
    }

    #[test]
    fn stirlerr_is_continuous_at_the_table_edge() {
        let from_lgamma = lgamma(17.0) - 16.5 * log(16.0) + 16.0 - LN_SQRT_2PI;
        assert!((stirlerr(16.0) - from_lgamma).abs() < 1e-14);
    }

    #[test]
    fn closed_form_tails() {
        // I_x(a, 1) = x^a; I_x(1, b) = 1 - (1 - x)^b; I_x(2, 2) = 3x^2 - 2x^3.
        let x = Prob::from_p(0.3);
        assert!(rel(exp(ln_tails(4.0, 1.0, x).0), 0.3f64.powi(4)) < 1e-14);
        assert!(rel(exp(ln_tails(1.0, 5.0, x).0), 1.0 - 0.7f64.powi(5)) < 1e-14);
        assert!(rel(exp(ln_tails(2.0, 2.0, x).0), 3.0 * 0.09 - 2.0 * 0.027) < 1e-14);
        assert!(rel(exp(ln_tails(2.0, 2.0, x).1), 1.0 - (3.0 * 0.09 - 2.0 * 0.027)) < 1e-14);
    }

    #[test]
    fn binomial_identity_for_integer_parameters() {
        // I_x(a, n - a + 1) = P[Bin(n, x) >= a], summed directly for a small n.
        let n = 30u32;
        let x = 0.37f64;
        for a in 1..=n {
            let mut tail = 0.0;
            for j in a..=n {
                let lc = lgamma(n as f64 + 1.0) - lgamma(j as f64 + 1.0) - lgamma((n - j) as f64 + 1.0);
                tail += exp(lc + j as f64 * log(x) + (n - j) as f64 * log(1.0 - x));
            }
            let got = exp(ln_tails(a as f64, (n - a + 1) as f64, Prob::from_p(x)).0);
            assert!(rel(got, tail) < 1e-12, "a = {a}: {got} vs {tail}");
        }
    }

    #[test]
    fn quantile_inverts_the_tail() {
        for &(a, b) in &[(2.0, 3.0), (50.0, 50.0), (99_000.0, 1001.0), (3.0, 1e9), (1e9, 7.0), (5e8, 5e8)] {
            for &t in &[1e-30, 1e-10, 1e-3, 0.3, 0.5, 0.9, 1.0 - 1e-6] {
                let x = quantile(a, b, Prob::from_p(t));
                let (lo, up) = ln_tails(a, b, x);
                let err = if t < 0.5 { rel(exp(lo), t) } else { rel(exp(up), 1.0 - t) };
                assert!(err < 1e-9, "a={a} b={b} t={t}: x={x:?} err={err}");
                assert!((x.p + x.q - 1.0).abs() < 1e-15);
            }
        }
    }
}

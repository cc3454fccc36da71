//! The Beta distribution's lower tail and its quantile, for the Clopper-Pearson bounds.
//!
//! Precision is the point: counts reach 1e9 and tail masses 1e-30, where the textbook
//! `a ln x + b ln(1-x) - ln B(a, b)` loses digits to cancellation between terms of size
//! `n`. The density therefore goes through Loader's saddle-point form of the binomial
//! probability (the one R's `dbinom` uses), which keeps relative precision for any n,
//! and every probability near 1 is carried as its complement (`Prob`).
//!
//! Speed comes from two things. Where both parameters are 30 or more, the tail is
//! Temme's uniform asymptotic expansion (`Uniform`), O(1) work instead of sums of
//! O(sqrt(n)) terms; elsewhere it is an exact binomial sum. And the quantile solver
//! (`solve_lower`) gets every derivative of ln I from one evaluation, so one evaluation
//! from a fair start usually ends it (`taylor_step`).

use crate::math::{exp, expm1, lgamma, log, log1p, LN_2PI, LN_SQRT_2PI, SQRT_2PI};
use crate::normal::{mills, ppf_approx};
use crate::prob::Prob;

/// Stirling's error ln(n!) - ln(sqrt(2 pi n) (n/e)^n) for integers n <= 15 (mpmath).
#[allow(clippy::excessive_precision)] // the digits mpmath printed
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
    (1.0 / 12.0 - (1.0 / 360.0 - (1.0 / 1260.0 - (1.0 / 1680.0 - 1.0 / (1188.0 * nn)) / nn) / nn) / nn) / n
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
    // Work where the variable is <= 1/2 and so exact to its last bit (1 - x near 1 would
    // have lost the digits of a tiny y).
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
    // With m = a + b - 1, I_x(a, b) = P[Bin(m, x) >= a]: whichever side of the binomial
    // mean a - 1/2 falls on, the tail away from the mean is a sum of positive terms that
    // fall geometrically from its first one, which also gives the density:
    // f(x) = a / x P[Bin(m, x) = a] = b / y P[Bin(m, x) = a - 1]. Below the mean with a
    // large, the continued fraction gets there in fewer steps (`SUM_MAX_A`).
    let m = a + b - 1.0;
    if x.p < (a + 1.0) / (a + b + 2.0) {
        if a >= SUM_MAX_A {
            // I_x(a, b) = x^a y^b / (a B(a, b)) * cf = x y / a * f(x) * cf
            let ln_f = ln_pdf(a, b, x);
            let lower = log(x.p) + log1p(-x.p) - log(a) + ln_f + log(beta_cf(a, b, x.p));
            return Tails { lower, upper: ln_one_minus_exp(lower), ln_pdf: ln_f };
        }
        let (ln_pmf, sum) = binom_sf(a, m, x);
        let lower = ln_pmf + log(sum);
        Tails { lower, upper: ln_one_minus_exp(lower), ln_pdf: log(a) + ln_pmf - log(x.p) }
    } else {
        let (ln_pmf, sum) = binom_cdf(a - 1.0, m, x);
        let upper = ln_pmf + log(sum);
        Tails { lower: ln_one_minus_exp(upper), upper, ln_pdf: log(b) + ln_pmf - log1p(-x.p) }
    }
}

/// Below the mean, the sum upward from a has about a terms where a is small (the Poisson
/// limit), but O(sd) near the mean, where the continued fraction needs far fewer steps.
const SUM_MAX_A: f64 = 30.0;

/// (ln I_x(a, b), d ln I / dx) by the binomial sums of `tails`, for the solver: where
/// the lower tail is the smaller one it is the sum itself, and its slope f / I needs
/// neither the density's logarithm nor an exponential.
fn exact_lower(a: f64, b: f64, x: Prob) -> (f64, f64) {
    if x.p <= 0.0 || x.q <= 0.0 {
        let t = tails(a, b, x);
        return (t.lower, exp(t.ln_pdf - t.lower));
    }
    let m = a + b - 1.0;
    let (ln_pmf, ln_upper, pdf_factor) = if x.p <= 0.5 {
        if x.p < (a + 1.0) / (a + b + 2.0) {
            if a >= SUM_MAX_A {
                let t = tails_small_x(a, b, x);
                return (t.lower, exp(t.ln_pdf - t.lower));
            }
            // I = P[Bin(m, x) >= a] = pmf(a) sum, f = a / x pmf(a)
            let (ln_pmf, sum) = binom_sf(a, m, x);
            return (ln_pmf + log(sum), a / (x.p * sum));
        }
        // 1 - I = P[Bin(m, x) <= a - 1], f = b / y pmf(a - 1)
        let (ln_pmf, sum) = binom_cdf(a - 1.0, m, x);
        (ln_pmf, ln_pmf + log(sum), b / x.q)
    } else {
        // The same with y: I = P[Bin(m, y) <= b - 1], 1 - I = P[Bin(m, y) >= b].
        let y = x.complement();
        if y.p >= (b + 1.0) / (a + b + 2.0) {
            let (ln_pmf, sum) = binom_cdf(b - 1.0, m, y); // f = a / x pmf(b - 1)
            return (ln_pmf + log(sum), a / (x.p * sum));
        }
        if b >= SUM_MAX_A {
            let t = tails_small_x(b, a, y);
            return (t.upper, exp(t.ln_pdf - t.upper));
        }
        let (ln_pmf, sum) = binom_sf(b, m, y); // f = b / y pmf(b)
        (ln_pmf, ln_pmf + log(sum), b / y.p)
    };
    let lower = ln_one_minus_exp(ln_upper);
    (lower, pdf_factor * exp(ln_pmf - lower))
}

/// P[Bin(m, x) <= k] for k below the mean m x, summed from j = k down, where the terms
/// fall geometrically (the ratio of term j - 1 to term j is below 1 and falling).
/// Returns (ln of the term at k, the sum relative to it).
fn binom_cdf(k: f64, m: f64, x: Prob) -> (f64, f64) {
    let ratio = x.q / x.p;
    let (mut sum, mut term, mut j) = (1.0, 1.0, k);
    while j >= 1.0 {
        term *= j * ratio / (m - j + 1.0);
        sum += term;
        if term < 1e-17 * sum {
            break;
        }
        j -= 1.0;
    }
    (ln_binom_pmf(k, m, x), sum)
}

/// P[Bin(m, x) >= k] for k above the mean m x, summed from j = k up. Returns (ln of the
/// term at k, the sum relative to it).
fn binom_sf(k: f64, m: f64, x: Prob) -> (f64, f64) {
    let ratio = x.p / x.q;
    let (mut sum, mut term, mut j) = (1.0, 1.0, k);
    while j < m {
        term *= (m - j) * ratio / (j + 1.0);
        sum += term;
        if term < 1e-17 * sum {
            break;
        }
        j += 1.0;
    }
    (ln_binom_pmf(k, m, x), sum)
}

/// ln(1 - e^l) for l <= 0, without cancellation (Maechler's log1mexp).
fn ln_one_minus_exp(l: f64) -> f64 {
    if l > -std::f64::consts::LN_2 {
        log(-expm1(l))
    } else {
        log1p(-exp(l))
    }
}

// ---------------------------------------------------------------------------------------
// Temme's uniform asymptotic expansion, for both parameters large.
//
// With r = a + b, x0 = a / r and the deviance D = a ln(x0 / x) + b ln(y0 / y) = r eta^2 / 2,
// z = sign(x - x0) sqrt(2 D) (Temme, "Special Functions", 1996, section 11.3.3; DiDonato &
// Morris, TOMS 708, `basym`):
//
//     I_x(a, b) = Phi(z) - x^a y^b / (r B(a, b)) * sum_k g_k(eta) / r^k,
//
// where, with f(zeta) = zeta / (t - x0) the Jacobian of t -> zeta, g_0 = (f - f(0)) / zeta and
// g_{k+1} = (g_k' - g_k'(0)) / zeta (repeated integration by parts). Each g_k splits into a
// polynomial P_k in t(1 - t), 1 - 2t and w = 1 / (t - x0) (P_0 = w, P_{k+1} = t(1-t) w dP_k/dt)
// and a part in powers of 1 / zeta whose coefficients are those of Stirling's series for
// B(a, b); the two parts cancel as t -> x0, which is why this is only used for |z| >= z_min.
// The prefactor is exact: x^a y^b / (r B(a, b)) = sqrt(ab / r) / r * e^(-D - dmu) / sqrt(2 pi),
// dmu = stirlerr(a) + stirlerr(b) - stirlerr(r), so the one asymptotic piece is the sum,
// whose truncation after order K leaves about min(a, b)^-(K + 1) of it (the test
// `uniform_matches_the_exact_tails` compares it with the exact sums). The normal tail is
// carried as Mills' ratio, Phi(-|z|) = e^(-D) M(|z|), so nothing underflows and neither
// the tail nor the slope of its logarithm needs an exponential.

/// The order K kept, by the smaller parameter m, and the smallest |z| where it is used.
/// Truncation error falls like m^-(K + 1); rounding in the cancellation between the
/// polynomial and the 1 / zeta parts grows like (2K - 1)!! eps / |z|^(2K + 1). These keep
/// both below ~4e-15 of the quantile (`uniform_matches_the_exact_tails` measures them).
fn uniform_order(m: f64) -> Option<(usize, f64)> {
    if m >= 1000.0 {
        Some((3, 0.9))
    } else if m >= 100.0 {
        Some((4, 1.3))
    } else if m >= 30.0 {
        Some((6, 2.0))
    } else {
        None
    }
}

/// Per-(a, b) constants of the expansion.
#[derive(Clone, Copy, Debug)]
struct Uniform {
    a: f64,
    b: f64,
    r: f64,
    order: usize,
    /// sqrt(a b / r)
    sqrt_s: f64,
    /// e^(-dmu) / sqrt(2 pi)
    c: f64,
    /// Coefficients of the 1 / zeta part, in powers of 1 / z^2 (see `new`).
    q: [f64; 7],
    /// Smallest |z| where the rounding in the P/Q cancellation stays below ~1e-14.
    z_min: f64,
}

impl Uniform {
    fn new(a: f64, b: f64) -> Option<Self> {
        let (order, z_min) = uniform_order(a.min(b))?;
        Some(Self::new_with_order(a, b, order, z_min))
    }

    fn new_with_order(a: f64, b: f64, order: usize, z_min: f64) -> Self {
        let r = a + b;
        let dmu = stirlerr(a) + stirlerr(b) - stirlerr(r);
        // e^-dmu by its Taylor series: 0 < dmu < 1 / (6 min(a, b)) < 0.006, dmu^6 / 6! < 1e-16.
        let exp_neg_dmu = 1.0 - dmu * (1.0 - dmu / 2.0 * (1.0 - dmu / 3.0 * (1.0 - dmu / 4.0 * (1.0 - dmu / 5.0))));
        // Stirling's series of dmu in powers of 1 / r: l1 / r + l3 / r^3 + l5 / r^5 with
        // l_j / r^j = beta_j (a^-j + b^-j - r^-j); e^dmu = sum_m e_m / r^m.
        let (ia, ib, ir) = (1.0 / a, 1.0 / b, 1.0 / r);
        let cube = |v: f64| v * v * v;
        let l1 = (ia + ib - ir) / 12.0;
        let l3 = -(cube(ia) + cube(ib) - cube(ir)) / 360.0;
        let l5 = (cube(ia) * ia * ia + cube(ib) * ib * ib - cube(ir) * ir * ir) / 1260.0;
        let e = [
            1.0,
            l1,
            l1 * l1 / 2.0,
            cube(l1) / 6.0 + l3,
            l1 * cube(l1) / 24.0 + l1 * l3,
            l1 * l1 * cube(l1) / 120.0 + l1 * l1 * l3 / 2.0 + l5,
            cube(l1) * cube(l1) / 720.0 + cube(l1) * l3 / 6.0 + l3 * l3 / 2.0 + l1 * l5,
        ];
        // The 1 / zeta part of sum_k r^-k g_k, times the prefactor, is
        // -sum_j (-1)^j (2j - 1)!! z^-(2j + 1) E_{K - j}, E_n = e_0 + ... + e_n: the same
        // order K in 1 / r as the polynomial part, or their cancellation would be lost.
        let mut q = [0.0; 7];
        let mut dfact = 1.0; // (2j - 1)!!
        for (j, qj) in q.iter_mut().enumerate().take(order + 1) {
            let e_sum: f64 = e[..=order - j].iter().sum();
            *qj = if j % 2 == 0 { dfact } else { -dfact } * e_sum;
            dfact *= (2 * j + 1) as f64;
        }
        Uniform { a, b, r, order, sqrt_s: (a * b / r).sqrt(), c: exp_neg_dmu / SQRT_2PI, q, z_min }
    }

    /// (ln I_x(a, b), d ln I / dx), or None where |z| < z_min (near the median).
    fn eval(&self, x: Prob) -> Option<(f64, f64)> {
        let (a, b, r) = (self.a, self.b, self.r);
        // d = a - r x = r y - b, from the exact side of x.
        let d = if x.p <= 0.5 { a - r * x.p } else { r * x.q - b };
        // D = a ln(a / (r x)) + b ln(b / (r y)) as a sum of two positive terms: z carries
        // its relative precision into the cancellation with the polynomial part.
        let dev = a * v_minus_log1p(-d / a) + b * v_minus_log1p(d / b);
        let z_abs = (2.0 * dev).sqrt();
        if !z_abs.is_finite() || z_abs < self.z_min {
            return None;
        }
        let t = x.p * x.q;
        let u = x.q - x.p;
        let xi = -1.0 / d; // w / r
        let om = t * r * xi * xi; // t (1 - t) w^2 / r, about 1 / z^2 near x0
        let poly = self.sqrt_s * xi * p_sum(self.order, om, xi, t, u);
        let iz = if d > 0.0 { -1.0 / z_abs } else { 1.0 / z_abs }; // 1 / z
        let iz2 = iz * iz;
        let mut qs = 0.0;
        for &qj in self.q[..=self.order].iter().rev() {
            qs = qs * iz2 + qj;
        }
        // The correction term x^a y^b / (r B) sum_k r^-k g_k, over e^-D.
        let cs = self.c * (poly - iz * qs);
        // The smaller tail is e^-D h: I = Phi(z) - e^-D cs below x0, 1 - I above.
        let h = if d > 0.0 { mills(z_abs) - cs } else { mills(z_abs) + cs };
        if h.is_nan() || h <= 0.0 {
            return None;
        }
        // f = x^a y^b / (x y B) = e^-D sqrt(s) c / (x y), s = a b / r
        let f_over_e_d = self.sqrt_s * self.c / t;
        if d > 0.0 {
            Some((-dev + log(h), f_over_e_d / h))
        } else {
            let ln_lower = ln_one_minus_exp(-dev + log(h));
            Some((ln_lower, f_over_e_d * exp(-dev - ln_lower)))
        }
    }
}

/// sum_{k <= order} r^-k P_k / w as a polynomial in om = t(1-t) w^2 / r (about 1 / z^2),
/// xi = w / r (about 1 / (z sqrt(s))), t(1 - t) and u = 1 - 2t, so that every term is O(1)
/// or smaller. Generated with sympy from P_0 = w, P_(k+1) = t(1-t) w dP_k/dt; the leading
/// 1 - om + 3 om^2 - 15 om^3 + ... is the part that cancels against the 1 / zeta terms.
#[inline(always)]
fn p_sum(order: usize, om: f64, xi: f64, t: f64, u: f64) -> f64 {
    let (om1, om2) = (om, om * om);
    let (om3, om4) = (om2 * om, om2 * om2);
    let (om5, om6) = (om4 * om, om3 * om3);
    let f1 = -om1;
    let f2 = -(om1 * u) * xi + om2 * 3.0;
    let f3 = ((om1 * (6.0 * t - 1.0)) * xi + om2 * u * 10.0) * xi - om3 * 15.0;
    let mut s = 1.0 + f1 + f2 + f3;
    if order >= 4 {
        s += (((om1 * u * (12.0 * t - 1.0)) * xi + om2 * (-130.0 * t + 25.0)) * xi + om3 * u * -105.0) * xi
            + om4 * 105.0;
    }
    if order >= 5 {
        s += ((((om1 * ((-120.0 * t + 30.0) * t - 1.0)) * xi + om2 * u * (-462.0 * t + 56.0)) * xi
            + om3 * (2380.0 * t - 490.0))
            * xi
            + om4 * u * 1260.0)
            * xi
            + om5 * -945.0;
    }
    if order >= 6 {
        s += (((((om1 * u * ((-360.0 * t + 60.0) * t - 1.0)) * xi + om2 * ((7308.0 * t - 2156.0) * t + 119.0)) * xi
            + om3 * u * (13216.0 * t - 1918.0))
            * xi
            + om4 * (-44100.0 * t + 9450.0))
            * xi
            + om5 * u * -17325.0)
            * xi
            + om6 * 10395.0;
    }
    s
}

/// v - ln(1 + v) >= 0 for v > -1, to full relative precision.
fn v_minus_log1p(v: f64) -> f64 {
    if v.abs() > 0.25 {
        return v - log1p(v); // at most 8 ulps lost to the subtraction here
    }
    // ln(1 + v) = 2 atanh(s) with s = v / (2 + v), and v - 2 s = s v, so
    // v - ln(1 + v) = s v - 2 s^3 (1/3 + s^2/5 + s^4/7 + ...), |s| <= 1/7: s^20 < 1e-17.
    // Estrin's scheme in s^2 keeps the dependency chain short.
    let s = v / (2.0 + v);
    let s2 = s * s;
    let s4 = s2 * s2;
    let s8 = s4 * s4;
    let c = |k: i32| 1.0 / (2 * k + 3) as f64;
    let p01 = c(0) + c(1) * s2;
    let p23 = c(2) + c(3) * s2;
    let p45 = c(4) + c(5) * s2;
    let p67 = c(6) + c(7) * s2;
    let p89 = c(8) + c(9) * s2;
    let series = (p01 + p23 * s4) + (p45 + p67 * s4) * s8 + p89 * (s8 * s8);
    s * v - 2.0 * s * s2 * series
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
        solve_lower(a, b, target.p)
    } else {
        solve_lower(b, a, target.q).complement()
    }
}

/// Solves G(x) = ln I_x(a, b) - ln(target) = 0 for target <= 1/2. G is concave and
/// increasing (the Beta cdf is log-concave for a, b >= 1), so Newton's method converges
/// from any start, at most once past the root; a bracket that only shrinks keeps every
/// iterate inside (0, 1). Each evaluation gives every derivative of G (`taylor_step`),
/// so the step solves G's Taylor polynomial instead of its tangent, and is accepted
/// without another evaluation once the bound on what it leaves is below half an ulp.
fn solve_lower(a: f64, b: f64, target: f64) -> Prob {
    let (ln_target, z) = target_constants(target);
    let mut lo = Prob { p: 0.0, q: 1.0 };
    let mut hi = Prob { p: 1.0, q: 0.0 };
    let mut x = initial_guess(a, b, z, ln_target);
    let uniform = Uniform::new(a, b);
    for _ in 0..200 {
        let (ln_lower, slope) = match uniform.and_then(|u| u.eval(x)) {
            Some(v) => v,
            None => exact_lower(a, b, x),
        };
        let g = ln_lower - ln_target;
        if g > 0.0 {
            hi = x;
        } else if g < 0.0 {
            lo = x;
        } else {
            return x;
        }
        let scale = x.p.min(x.q);
        let tol = 0.5 * f64::EPSILON * scale;
        let (step, left) = match taylor_step(a, b, x, slope, -g, tol) {
            Some(v) => v,
            None => {
                // Halley's step; the Newton part alone leaves (curvature / 2) e^2, with
                // G'' / G' = f'/f - G' and f'/f = (a - 1)/x - (b - 1)/y.
                let newton = -g / slope;
                let curvature = (a - 1.0) / x.p - (b - 1.0) / x.q - slope;
                let halley = 1.0 + 0.5 * newton * curvature;
                let step = if halley > 0.5 && halley < 2.0 { newton / halley } else { newton };
                let left =
                    if (step / scale).abs() < 1e-5 { (0.5 * curvature * step * step).abs() } else { f64::INFINITY };
                (step, left)
            }
        };
        // Move the precise side: y loses what x gains.
        let next = if x.p < 0.5 { Prob::from_p(x.p + step) } else { Prob::from_q(x.q - step) };
        let inside = step.is_finite() && below(lo, next) && below(next, hi);
        if step.is_finite() && step.abs() <= 2.0 * f64::EPSILON * scale {
            return next;
        }
        if inside && left <= tol {
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

/// The x-step that solves G's Taylor polynomial around x for G = `rhs`, with a bound on
/// what it leaves, or None where the series does not converge fast (the terms of its
/// reversion must fall by more than 20x each). The reversion to order 5 is kept when
/// four times its next term, extrapolated from the last ones, is below `tol`; otherwise
/// it is polished by a Newton step on the polynomial of degree 7, which leaves about
/// G's next Taylor term.
/// G' = g = f / I obeys the Riccati equation g' = l g - g^2, l = f'/f = (a-1)/x - (b-1)/y,
/// whose derivatives are explicit, so g's Taylor coefficients follow by recursion:
/// (k + 1) g_(k+1) = sum_i (l_i - g_i) g_(k-i), and G's k-th coefficient is g_(k-1) / k.
fn taylor_step(a: f64, b: f64, x: Prob, slope: f64, rhs: f64, tol: f64) -> Option<(f64, f64)> {
    const N: usize = 8; // coefficients c_1 ... c_8 of G
    const INV: [f64; N + 1] = [0.0, 1.0, 1.0 / 2.0, 1.0 / 3.0, 1.0 / 4.0, 1.0 / 5.0, 1.0 / 6.0, 1.0 / 7.0, 1.0 / 8.0];
    let (ix, iy) = (1.0 / x.p, 1.0 / x.q);
    // l_k = l^(k) / k! = (-1)^k (a - 1) / x^(k+1) - (b - 1) / y^(k+1)
    let mut l = [0.0; N - 1];
    let (mut px, mut py) = ((a - 1.0) * ix, (b - 1.0) * iy);
    for (k, lk) in l.iter_mut().enumerate() {
        *lk = if k % 2 == 0 { px } else { -px } - py;
        px *= ix;
        py *= iy;
    }
    let mut gam = [0.0; N];
    gam[0] = slope;
    let next = |gam: &[f64; N], k: usize| {
        let mut s = 0.0;
        for i in 0..=k {
            s += (l[i] - gam[i]) * gam[k - i];
        }
        s * INV[k + 1]
    };
    for k in 0..4 {
        gam[k + 1] = next(&gam, k);
    }
    // G(x + d) - G(x) = c_1 d + c_2 d^2 + ..., c_k = gam_(k-1) / k. In units of c_1,
    // a_k = c_k / c_1, solve d + a_2 d^2 + ... = y = rhs / c_1.
    let inv_slope = 1.0 / slope;
    let a_k = |gam: &[f64; N], k: usize| gam[k - 1] * inv_slope * INV[k];
    let (a2, a3, a4, a5) = (a_k(&gam, 2), a_k(&gam, 3), a_k(&gam, 4), a_k(&gam, 5));
    let y = rhs * inv_slope;
    let (y2, a22) = (y * y, a2 * a2);
    let t2 = -a2 * y2;
    let t3 = (2.0 * a22 - a3) * y2 * y;
    let t4 = (-5.0 * a22 * a2 + 5.0 * a2 * a3 - a4) * y2 * y2;
    let t5 = (14.0 * a22 * a22 - 21.0 * a22 * a3 + 6.0 * a2 * a4 + 3.0 * a3 * a3 - a5) * y2 * y2 * y;
    let ratio = (t3 / t2).abs().max((t4 / t3).abs()).max((t5 / t4).abs());
    if !(t2.abs() < 0.05 * y.abs() && ratio < 0.05) {
        return None;
    }
    let d = y + t2 + t3 + t4 + t5;
    if !d.is_finite() {
        return None;
    }
    let left = 4.0 * ratio * t5.abs();
    if left <= tol {
        return Some((d, left));
    }
    for k in 4..N - 1 {
        gam[k + 1] = next(&gam, k);
    }
    let (mut p, mut dp) = (0.0, 0.0);
    for k in (2..N).rev() {
        let ak = a_k(&gam, k);
        p = (p + ak) * d;
        dp = dp * d + k as f64 * ak;
    }
    let p = (p + 1.0) * d; // d + a_2 d^2 + ... + a_7 d^7
    let dp = dp * d + 1.0;
    let step = d - (p - y) / dp;
    // The next Taylor term, or the reversion's terms extrapolated that far if larger.
    let left = 4.0 * (a_k(&gam, N) * step.powi(N as i32)).abs().max(ratio * ratio * ratio * t5.abs());
    step.is_finite().then_some((step, left))
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

/// ln(k!) for k <= 30 (mpmath), for the start of the Poisson-like lower tail.
#[allow(clippy::excessive_precision)] // the digits mpmath printed
const LN_FACTORIAL: [f64; 31] = [
    0.0,
    0.0,
    std::f64::consts::LN_2,
    1.791759469228055000812,
    3.178053830347945619647,
    4.787491742782045994248,
    6.57925121201010099506,
    8.525161361065414300166,
    10.60460290274525022842,
    12.80182748008146961121,
    15.10441257307551529523,
    17.50230784587388583929,
    19.98721449566188614952,
    22.55216385312342288557,
    25.19122118273868150009,
    27.89927138384089156609,
    30.67186010608067280376,
    33.50507345013688888401,
    36.39544520803305357622,
    39.33988418719949403622,
    42.33561646075348502966,
    45.38013889847690802616,
    48.47118135183522387964,
    51.60667556776437357045,
    54.78472939811231919009,
    58.00360522298051993929,
    61.26170176100200198477,
    64.55753862700633105895,
    67.88974313718153498289,
    71.25703896716800901007,
    74.65823634883016438549,
];

/// A start close enough that Newton needs a handful of steps: a Cornish-Fisher normal
/// approximation in the bulk, gamma (Wilson-Hilferty) approximations where one side is
/// small, the power law of the far lower tail where those leave (0, 1).
/// (ln target, Phi^-1(target)) for a tail mass. A batch asks for the same mass again and
/// again (alpha / C for every bound), so each thread remembers the last one.
fn target_constants(target: f64) -> (f64, f64) {
    use std::cell::Cell;
    thread_local! {
        static LAST: Cell<(f64, f64, f64)> = const { Cell::new((f64::NAN, 0.0, 0.0)) };
    }
    LAST.with(|last| {
        let (t, ln_t, z) = last.get();
        if t == target {
            return (ln_t, z);
        }
        let (ln_t, z) = (log(target), ppf_approx(target));
        last.set((target, ln_t, z));
        (ln_t, z)
    })
}

/// `z` is Phi^-1 of the target (negative: a lower tail), `ln_target` its log.
fn initial_guess(a: f64, b: f64, z: f64, ln_target: f64) -> Prob {
    let n = a + b;
    let (small, large) = (a.min(b), a.max(b));
    // Out in the tail of a very skewed Beta the gamma limit below is the better start.
    let gamma_like = large >= 20.0 * small && z * z > 0.25 * small;
    if small >= 30.0 && !gamma_like {
        let mean = a / n;
        let sd = (a * b / (n * n * (n + 1.0))).sqrt();
        let skew = 2.0 * (b - a) * (n + 1.0).sqrt() / ((n + 2.0) * (a * b).sqrt());
        let x = mean + sd * (z + skew * (z * z - 1.0) / 6.0);
        if x > 0.0 && x < 1.0 {
            return if x < 0.5 { Prob::from_p(x) } else { Prob::from_q(1.0 - x) };
        }
    }
    if a <= b {
        // x small: n x is roughly Gamma(a) distributed; Wilson-Hilferty's lower quantile,
        // while its cube root stays well away from 0.
        let c = 1.0 / (9.0 * a);
        let w = 1.0 - c + z * c.sqrt();
        if w > 0.3 {
            let x = a * w * w * w / (n - 0.5 * (a - 1.0)).max(1.0);
            if x > 0.0 && x < 1.0 {
                return Prob::from_p(x);
            }
        }
        if a < 30.0 {
            // Further out, I_x(a, b) ~ P[Poisson(l) >= a] with l = n x, which is
            // e^-l l^a / a! (1 + l/(a+1) + l^2/((a+1)(a+2)) + ...): a fixed point in l.
            let ln_fact = if a.fract() == 0.0 { LN_FACTORIAL[a as usize] } else { lgamma(a + 1.0) };
            let mut l = 0.0f64;
            for _ in 0..2 {
                let series = 1.0 + l / (a + 1.0) * (1.0 + l / (a + 2.0) * (1.0 + l / (a + 3.0)));
                l = exp((ln_target + ln_fact + l - log(series)) / a);
            }
            let x = l / (n - 1.0);
            if x > 0.0 && x < 0.5 {
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

    /// The error of ln(tail) as a relative error of x: what it moves a quantile by.
    fn as_x_error(err_ln: f64, x: Prob, t: &Tails) -> f64 {
        let small = t.lower.min(t.upper);
        err_ln.abs() / (x.p.min(x.q) * exp(t.ln_pdf - small))
    }

    #[test]
    fn v_minus_log1p_keeps_relative_precision() {
        for i in -99..=99 {
            let v = i as f64 / 100.0;
            if v == 0.0 {
                assert_eq!(v_minus_log1p(v), 0.0);
                continue;
            }
            // The alternating series sum_(k>=2) (-v)^k / k, by pairs of terms for |v| > 1/2.
            let mut want = 0.0;
            for k in (2..4000).rev() {
                want += (-v).powi(k) / k as f64;
            }
            let tol = if v.abs() > 0.25 { 2e-14 } else { 4e-16 };
            assert!(rel(v_minus_log1p(v), want) < tol, "v = {v}: {} vs {want}", v_minus_log1p(v));
        }
    }

    #[test]
    fn uniform_matches_the_exact_tails() {
        // Both sides of every switch: m = 30, 100, 1000 start orders 6, 4, 3; z from
        // z_min out to tails of 1e-40; the error is compared as a shift of x.
        let mut worst: (f64, f64, f64, f64) = (0.0, 0.0, 0.0, 0.0);
        for &m in &[30.0f64, 31.0, 57.0, 99.0, 100.0, 313.0, 999.0, 1000.0, 1e4, 1e6, 5e8] {
            for &ratio in &[1.0, 1.5, 10.0, 1e3, 1e6] {
                for (a, b) in [(m, (m * ratio).round()), ((m * ratio).round(), m)] {
                    let uni = Uniform::new(a, b).expect("in the uniform regime");
                    let r = a + b;
                    let x0 = a / r;
                    let sd = (x0 * (1.0 - x0) / r).sqrt();
                    for i in -80..=80 {
                        let xp = x0 + i as f64 * 0.2 * sd;
                        if !(xp > 0.0 && xp < 1.0) {
                            continue;
                        }
                        let x = if xp < 0.5 { Prob::from_p(xp) } else { Prob::from_q(1.0 - xp) };
                        let Some((ln_lower, _)) = uni.eval(x) else { continue };
                        let t = tails(a, b, x);
                        if t.lower.min(t.upper) < -92.0 {
                            continue; // below 1e-40
                        }
                        let err =
                            if t.lower < t.upper { ln_lower - t.lower } else { ln_one_minus_exp(ln_lower) - t.upper };
                        let e = as_x_error(err, x, &t);
                        if e > worst.0 {
                            worst = (e, a, b, i as f64 * 0.2);
                        }
                    }
                }
            }
        }
        assert!(worst.0 < 2e-14, "worst x error {:e} at a = {}, b = {}, {} sd", worst.0, worst.1, worst.2, worst.3);
        assert!(Uniform::new(29.0, 1e6).is_none() && Uniform::new(1e6, 29.0).is_none());
    }

    #[test]
    fn exact_lower_matches_tails() {
        for &(a, b) in &[(2.0, 5.0), (7.0, 1e5), (1e5, 7.0), (29.0, 40.0), (300.0, 3.0)] {
            for i in 1..40 {
                let xp = i as f64 / 40.0;
                let x = if xp < 0.5 { Prob::from_p(xp) } else { Prob::from_q(1.0 - xp) };
                let (ln_lower, slope) = exact_lower(a, b, x);
                let t = tails(a, b, x);
                if t.lower.min(t.upper) < -700.0 {
                    continue; // the density underflows
                }
                assert!((ln_lower - t.lower).abs() < 1e-14 * t.lower.abs().max(1.0), "a={a} b={b} x={xp}");
                assert!(rel(slope, exp(t.ln_pdf - t.lower)) < 1e-12, "a={a} b={b} x={xp}");
            }
        }
    }

    #[test]
    fn taylor_step_lands_on_the_root() {
        // I_x(2, 2) = 3x^2 - 2x^3: from 1% off the root, one step to within what it claims.
        let (a, b, target) = (2.0, 2.0, 0.01f64);
        let root = {
            let mut x = 0.06f64;
            for _ in 0..50 {
                x -= (3.0 * x * x - 2.0 * x * x * x - target) / (6.0 * x - 6.0 * x * x);
            }
            x
        };
        for start in [root * 0.99, root * 1.01, root * (1.0 + 1e-5)] {
            let x = Prob::from_p(start);
            let i = 3.0 * start * start - 2.0 * start * start * start;
            let slope = (6.0 * start - 6.0 * start * start) / i;
            let (step, left) = taylor_step(a, b, x, slope, log(target) - log(i), 0.0).unwrap();
            let err = (start + step - root).abs();
            assert!(err <= left.max(4.0 * f64::EPSILON * root), "start {start}: error {err:e}, claimed {left:e}");
            assert!(err < 1e-9 * root);
        }
    }

    #[test]
    fn quantiles_in_the_fast_regime_are_exact() {
        // Check the result with the exact sums: |ln I(x) - ln t| as a shift of x.
        let mut worst = 0.0f64;
        for &n in &[1000.0f64, 1e5, 1e9] {
            for &x in &[30.0f64, 100.0, 999.0, 1e4, 0.3, 0.5, 0.9, 0.999] {
                let a = if x < 1.0 { (x * n).round() } else { x };
                if a >= n {
                    continue;
                }
                for &t in &[1e-30, 1e-12, 1e-6, 1e-4, 1e-3, 0.05] {
                    for (a, b, target) in [(a, n - a + 1.0, Prob::from_p(t)), (a + 1.0, n - a, Prob::from_q(t))] {
                        let q = quantile(a, b, target);
                        let tl = tails(a, b, q);
                        let err = if target.p <= 0.5 { tl.lower - log(target.p) } else { tl.upper - log(target.q) };
                        worst = worst.max(as_x_error(err, q, &tl));
                    }
                }
            }
        }
        assert!(worst < 1e-14, "worst x error {worst:e}");
    }

    /// Throwaway timing: `cargo test --release -- --ignored --nocapture timing`.
    #[test]
    #[ignore]
    fn timing_typical_quantiles() {
        let n = 100_000.0f64;
        let mut seed = 12345u64;
        let mut uniform = || {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (seed >> 11) as f64 / (1u64 << 53) as f64
        };
        let labels: Vec<f64> = (0..4096).map(|_| (50_000.0 + uniform() * 49_990.0).floor()).collect();
        let others: Vec<f64> = (0..4096).map(|_| (uniform() * 10_000.0).floor()).collect();
        let sets =
            [("lower bound, label count 5e4..1e5", &labels, true), ("upper bound, other count 0..1e4", &others, false)];
        for (name, xs, lower) in sets {
            let mut best = f64::INFINITY;
            let mut acc = 0.0;
            for _ in 0..7 {
                let start = std::time::Instant::now();
                for &x in xs.iter() {
                    acc += if lower {
                        quantile(x, n - x + 1.0, Prob::from_p(1e-4)).p
                    } else {
                        quantile(x + 1.0, n - x, Prob::from_q(1e-4)).p
                    };
                }
                best = best.min(start.elapsed().as_secs_f64() / xs.len() as f64);
            }
            println!("{name}: {:.0} ns per quantile ({acc:.3})", best * 1e9);
        }
    }
}

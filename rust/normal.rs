//! The standard normal distribution: Phi, log Phi and Phi^-1, to about machine precision.

use crate::math::{erfc, exp, log, log1p};

const FRAC_1_SQRT_2: f64 = std::f64::consts::FRAC_1_SQRT_2;
/// ln(sqrt(2 pi))
const LN_SQRT_2PI: f64 = 0.918_938_533_204_672_8;

/// Phi(x) = P[Z <= x].
pub fn cdf(x: f64) -> f64 {
    0.5 * erfc(-x * FRAC_1_SQRT_2)
}

/// The density phi(x).
pub fn pdf(x: f64) -> f64 {
    exp(-0.5 * x * x - LN_SQRT_2PI)
}

/// ln phi(x).
pub fn ln_pdf(x: f64) -> f64 {
    -0.5 * x * x - LN_SQRT_2PI
}

/// ln Phi(x), accurate in both tails (erfc keeps relative precision far into the
/// lower tail; past its underflow the asymptotic series of the Mills ratio takes over).
pub fn ln_cdf(x: f64) -> f64 {
    if x > 0.0 {
        log1p(-0.5 * erfc(x * FRAC_1_SQRT_2))
    } else if x > -37.0 {
        log(0.5 * erfc(-x * FRAC_1_SQRT_2))
    } else {
        // Phi(x) = phi(x)/|x| * (1 - 1/x^2 + 3/x^4 - 15/x^6 + 105/x^8 - ...); |x| > 37
        // makes the truncation error below 1e-16 relative.
        let r = 1.0 / (x * x);
        let series = 1.0 - r * (1.0 - r * (3.0 - r * (15.0 - r * 105.0)));
        ln_pdf(x) - log(-x) + log(series)
    }
}

/// (ln Phi(x), phi(x) / Phi(x)) with one erfc: the log-cdf and the inverse Mills ratio
/// that Newton and Halley steps on ln Phi need.
pub fn ln_cdf_and_mills(x: f64) -> (f64, f64) {
    if x > 0.0 {
        let q = 0.5 * erfc(x * FRAC_1_SQRT_2);
        (log1p(-q), pdf(x) / (1.0 - q))
    } else if x > -37.0 {
        let p = 0.5 * erfc(-x * FRAC_1_SQRT_2);
        (log(p), pdf(x) / p)
    } else {
        let ln_p = ln_cdf(x);
        (ln_p, exp(ln_pdf(x) - ln_p))
    }
}

/// Phi^-1(p) for p in (0, 1): Wichura's AS 241 (PPND16), then one Newton step on
/// Phi to absorb the last rounding of the rational approximation.
pub fn ppf(p: f64) -> f64 {
    if p <= 0.0 {
        return f64::NEG_INFINITY;
    }
    if p >= 1.0 {
        return f64::INFINITY;
    }
    let z = ppf_approx(p);
    // The Newton step is on whichever tail is smaller, so it keeps relative precision.
    if p < 0.5 {
        z - (cdf(z) - p) / pdf(z)
    } else {
        let q = 1.0 - p;
        z + (0.5 * erfc(z * FRAC_1_SQRT_2) - q) / pdf(z)
    }
}

/// Phi^-1 of the complement: the z with P[Z > z] = q, precise for tiny q.
pub fn isf(q: f64) -> f64 {
    -ppf(q)
}

/// Phi^-1 by AS 241 alone (about 1e-16 relative), for starting points.
#[allow(clippy::excessive_precision)]
pub fn ppf_approx(p: f64) -> f64 {
    let q = p - 0.5;
    if q.abs() <= 0.425 {
        let r = 0.180625 - q * q;
        return q
            * (((((((2.5090809287301226727e3 * r + 3.3430575583588128105e4) * r + 6.7265770927008700853e4) * r
                + 4.5921953931549871457e4)
                * r
                + 1.3731693765509461125e4)
                * r
                + 1.9715909503065514427e3)
                * r
                + 1.3314166789178437745e2)
                * r
                + 3.3871328727963666080e0)
            / (((((((5.2264952788528545610e3 * r + 2.8729085735721942674e4) * r + 3.9307895800092710610e4) * r
                + 2.1213794301586595867e4)
                * r
                + 5.3941960214247511077e3)
                * r
                + 6.8718700749205790830e2)
                * r
                + 4.2313330701600911252e1)
                * r
                + 1.0);
    }
    let tail = if q < 0.0 { p } else { 1.0 - p };
    let mut r = (-log(tail)).sqrt();
    let val = if r <= 5.0 {
        r -= 1.6;
        (((((((7.74545014278341407640e-4 * r + 2.27238449892691845833e-2) * r + 2.41780725177450611770e-1) * r
            + 1.27045825245236838258e0)
            * r
            + 3.64784832476320460504e0)
            * r
            + 5.76949722146069140550e0)
            * r
            + 4.63033784615654529590e0)
            * r
            + 1.42343711074968357734e0)
            / (((((((1.05075007164441684324e-9 * r + 5.47593808499534494600e-4) * r + 1.51986665636164571966e-2)
                * r
                + 1.48103976427480074590e-1)
                * r
                + 6.89767334985100004550e-1)
                * r
                + 1.67638483018380384940e0)
                * r
                + 2.05319162663775882187e0)
                * r
                + 1.0)
    } else {
        r -= 5.0;
        (((((((2.01033439929228813265e-7 * r + 2.71155556874348757815e-5) * r + 1.24266094738807843860e-3) * r
            + 2.65321895265761230930e-2)
            * r
            + 2.96560571828504891230e-1)
            * r
            + 1.78482653991729133580e0)
            * r
            + 5.46378491116411436990e0)
            * r
            + 6.65790464350110377720e0)
            / (((((((2.04426310338993978564e-15 * r + 1.42151175831644588870e-7) * r + 1.84631831751005468180e-5)
                * r
                + 7.86869131145613259100e-4)
                * r
                + 1.48753612908506148525e-2)
                * r
                + 1.36929880922735805310e-1)
                * r
                + 5.99832206555887937690e-1)
                * r
                + 1.0)
    };
    if q < 0.0 {
        -val
    } else {
        val
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values() {
        // Reference values from mpmath at 40 digits.
        assert!((ppf(0.975) - 1.959963984540054).abs() < 1e-15);
        assert!((ppf(1e-10) + 6.361340902404056).abs() < 1e-14);
        assert!((ppf(1e-300) + 37.0470962993612).abs() < 1e-11);
        assert!(((cdf(-3.0) - 1.3498980316300946e-3) / 1.35e-3).abs() < 1e-14);
        assert_eq!(ppf(0.5), 0.0);
    }

    #[test]
    fn ppf_inverts_cdf() {
        for &p in &[1e-200, 1e-30, 1e-8, 0.001, 0.1, 0.3, 0.5, 0.7, 0.9, 0.999, 1.0 - 1e-12] {
            let z = ppf(p);
            assert!(((cdf(z) - p) / p).abs() < 1e-13, "p = {p}");
        }
    }

    #[test]
    fn mills_matches_its_definition() {
        for &x in &[-50.0, -37.5, -36.0, -5.0, -0.3, 0.0, 0.7, 4.0, 9.0] {
            let (l, m) = ln_cdf_and_mills(x);
            assert!((l - ln_cdf(x)).abs() <= 1e-15 * l.abs().max(1e-300) + 1e-300, "x = {x}");
            let expect = libm::exp(ln_pdf(x) - ln_cdf(x));
            assert!(((m - expect) / expect).abs() < 1e-13, "x = {x}: {m} vs {expect}");
        }
    }

    #[test]
    fn ln_cdf_is_continuous_across_branches() {
        for &x in &[-37.0f64, 0.0] {
            let lo = ln_cdf(x - 1e-9);
            let hi = ln_cdf(x + 1e-9);
            assert!((lo - hi).abs() < 1e-7 * hi.abs().max(1.0), "x = {x}: {lo} vs {hi}");
        }
        assert!((ln_cdf(-40.0) - (-804.608442013754)).abs() < 1e-9);
    }
}

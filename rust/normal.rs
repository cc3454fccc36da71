//! The standard normal distribution: Phi, log Phi, Phi^-1 and Mills' ratio, to about machine
//! precision.

use crate::math::{erfc, exp, log, log1p, LN_SQRT_2PI, SQRT_2PI};

const FRAC_1_SQRT_2: f64 = std::f64::consts::FRAC_1_SQRT_2;

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

/// Mills' ratio in the form M(y) = Phi(-y) e^(y^2 / 2) = Phi(-y) / (sqrt(2 pi) phi(y)),
/// y >= 0, which stays representable where Phi(-y) underflows (`ln_cdf_and_mills` has
/// the inverse ratio phi / Phi instead). Cody's rational Chebyshev approximations
/// ("Rational Chebyshev approximations for the error function", Math. Comp. 1969), with
/// the coefficients of R's pnorm.c, whose Phi(-y) is e^(-y^2/2) times this.
pub fn mills(y: f64) -> f64 {
    if y <= 0.674_489_75 {
        mills_near_zero(y)
    } else if y <= 32f64.sqrt() {
        mills_middle(y)
    } else {
        mills_tail(y)
    }
}

/// Cody's coefficients as R's pnorm.c has them: A and B for y <= 0.6745, C and D up to
/// sqrt(32), P and Q beyond.
#[allow(clippy::excessive_precision)] // as published
mod cody {
    pub const A: [f64; 5] = [
        2.2352520354606839287,
        161.02823106855587881,
        1067.6894854603709582,
        18154.981253343561249,
        0.065682337918207449113,
    ];
    pub const B: [f64; 4] = [47.20258190468824187, 976.09855173777669322, 10260.932208618978205, 45507.789335026729956];
    pub const C: [f64; 9] = [
        0.39894151208813466764,
        8.8831497943883759412,
        93.506656132177855979,
        597.27027639480026226,
        2494.5375852903726711,
        6848.1904505362823326,
        11602.651437647350124,
        9842.7148383839780218,
        1.0765576773720192317e-8,
    ];
    pub const D: [f64; 8] = [
        22.266688044328115691,
        235.38790178262499861,
        1519.377599407554805,
        6485.558298266760755,
        18615.571640885098091,
        34900.952721145977266,
        38912.003286093271411,
        19685.429676859990727,
    ];
    pub const P: [f64; 6] = [
        0.21589853405795699,
        0.1274011611602473639,
        0.022235277870649807,
        0.001421619193227893466,
        2.9112874951168792e-5,
        0.02307344176494017303,
    ];
    pub const Q: [f64; 5] = [
        1.28426009614491121,
        0.468238212480865118,
        0.0659881378689285515,
        0.00378239633202758244,
        7.29751555083966205e-5,
    ];
}

/// Cody's approximation for y <= 0.6745.
#[inline]
fn mills_near_zero(y: f64) -> f64 {
    use cody::{A, B};
    let ysq = y * y;
    let (mut num, mut den) = (A[4] * ysq, ysq);
    for i in 0..3 {
        num = (num + A[i]) * ysq;
        den = (den + B[i]) * ysq;
    }
    (0.5 - y * (num + A[3]) / (den + B[3])) * exp(0.5 * ysq)
}

/// Cody's approximation for 0.6745 < y <= sqrt(32).
#[inline]
fn mills_middle(y: f64) -> f64 {
    use cody::{C, D};
    // num = C8 y^8 + C0 y^7 + ... + C6 y + C7, den = y^8 + D0 y^7 + ... + D6 y + D7
    // (R's Horner form), by Estrin's scheme.
    let (y2, y4) = (y * y, y * y * y * y);
    let num = ((C[7] + C[6] * y) + (C[5] + C[4] * y) * y2)
        + ((C[3] + C[2] * y) + (C[1] + C[0] * y) * y2) * y4
        + C[8] * (y4 * y4);
    let den =
        ((D[7] + D[6] * y) + (D[5] + D[4] * y) * y2) + ((D[3] + D[2] * y) + (D[1] + D[0] * y) * y2) * y4 + y4 * y4;
    num / den
}

/// Cody's asymptotic approximation for y > sqrt(32).
#[inline]
fn mills_tail(y: f64) -> f64 {
    use cody::{P, Q};
    let ysq = 1.0 / (y * y);
    let (mut num, mut den) = (P[5] * ysq, ysq);
    for i in 0..4 {
        num = (num + P[i]) * ysq;
        den = (den + Q[i]) * ysq;
    }
    (1.0 / SQRT_2PI - ysq * (num + P[4]) / (den + Q[4])) / y
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
pub fn ppf_approx(p: f64) -> f64 {
    let q = p - 0.5;
    if q.abs() <= 0.425 {
        let r = 0.180625 - q * q;
        return q * horner(&as241::A, r) / horner(&as241::B, r);
    }
    let tail = if q < 0.0 { p } else { 1.0 - p };
    let r = (-log(tail)).sqrt();
    let val = if r <= 5.0 {
        let r = r - 1.6;
        horner(&as241::C, r) / horner(&as241::D, r)
    } else {
        let r = r - 5.0;
        horner(&as241::E, r) / horner(&as241::F, r)
    };
    if q < 0.0 {
        -val
    } else {
        val
    }
}

/// AS 241's coefficients as Wichura published them, lowest power first: the central
/// region's numerator A and denominator B (in r = 0.180625 - q^2), the near tail's C and D
/// (in r = sqrt(-ln tail) - 1.6, tails down to e^-25), the far tail's E and F (in
/// r = sqrt(-ln tail) - 5).
#[allow(clippy::excessive_precision)] // as published
mod as241 {
    pub const A: [f64; 8] = [
        3.3871328727963666080e0,
        1.3314166789178437745e2,
        1.9715909503065514427e3,
        1.3731693765509461125e4,
        4.5921953931549871457e4,
        6.7265770927008700853e4,
        3.3430575583588128105e4,
        2.5090809287301226727e3,
    ];
    pub const B: [f64; 8] = [
        1.0,
        4.2313330701600911252e1,
        6.8718700749205790830e2,
        5.3941960214247511077e3,
        2.1213794301586595867e4,
        3.9307895800092710610e4,
        2.8729085735721942674e4,
        5.2264952788528545610e3,
    ];
    pub const C: [f64; 8] = [
        1.42343711074968357734e0,
        4.63033784615654529590e0,
        5.76949722146069140550e0,
        3.64784832476320460504e0,
        1.27045825245236838258e0,
        2.41780725177450611770e-1,
        2.27238449892691845833e-2,
        7.74545014278341407640e-4,
    ];
    pub const D: [f64; 8] = [
        1.0,
        2.05319162663775882187e0,
        1.67638483018380384940e0,
        6.89767334985100004550e-1,
        1.48103976427480074590e-1,
        1.51986665636164571966e-2,
        5.47593808499534494600e-4,
        1.05075007164441684324e-9,
    ];
    pub const E: [f64; 8] = [
        6.65790464350110377720e0,
        5.46378491116411436990e0,
        1.78482653991729133580e0,
        2.96560571828504891230e-1,
        2.65321895265761230930e-2,
        1.24266094738807843860e-3,
        2.71155556874348757815e-5,
        2.01033439929228813265e-7,
    ];
    pub const F: [f64; 8] = [
        1.0,
        5.99832206555887937690e-1,
        1.36929880922735805310e-1,
        1.48753612908506148525e-2,
        7.86869131145613259100e-4,
        1.84631831751005468180e-5,
        1.42151175831644588870e-7,
        2.04426310338993978564e-15,
    ];
}

/// c[0] + c[1] x + ... + c[7] x^7 by Horner's rule, from the highest power down.
#[inline(always)]
fn horner(c: &[f64; 8], x: f64) -> f64 {
    let mut acc = c[7];
    for &ci in c[..7].iter().rev() {
        acc = acc * x + ci;
    }
    acc
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
    fn mills_ratio_matches_erfc_and_laplace_fraction() {
        let mut y = 0.0;
        while y < 40.0 {
            let got = mills(y);
            let want = if y < 2.0 {
                0.5 * erfc(y * std::f64::consts::FRAC_1_SQRT_2) * exp(0.5 * y * y)
            } else {
                // Laplace's continued fraction Phi(-y) / phi(y) = 1/(y + 1/(y + 2/(y + ...)))
                let mut cf = y;
                for k in (1..5000).rev() {
                    cf = y + k as f64 / cf;
                }
                1.0 / (cf * SQRT_2PI)
            };
            assert!(((got - want) / want).abs() < 1.5e-15, "y = {y}: {got} vs {want}");
            y += 0.0625;
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

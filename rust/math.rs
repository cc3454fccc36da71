//! The elementary functions the core uses, under the names of C's libm, and the
//! constants of 2 pi that the normal and Beta densities share.
//!
//! exp, log, log1p and expm1 come from the platform's libm through std (glibc picks FMA
//! builds at run time, faster than the portable `libm` crate); erfc and lgamma, which std
//! lacks, from the `libm` crate.

pub use libm::{erfc, lgamma};

/// ln(sqrt(2 pi))
pub const LN_SQRT_2PI: f64 = 0.918_938_533_204_672_8;
/// ln(2 pi)
pub const LN_2PI: f64 = 1.837_877_066_409_345_5;
/// sqrt(2 pi)
pub const SQRT_2PI: f64 = 2.506_628_274_631_000_5;

#[inline]
pub fn exp(x: f64) -> f64 {
    x.exp()
}

#[inline]
pub fn log(x: f64) -> f64 {
    x.ln()
}

#[inline]
pub fn log1p(x: f64) -> f64 {
    x.ln_1p()
}

#[inline]
pub fn expm1(x: f64) -> f64 {
    x.exp_m1()
}

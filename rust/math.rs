//! The elementary functions the core uses, under the names of C's libm.
//!
//! exp, log, log1p and expm1 come from the platform's libm through std (glibc picks FMA
//! builds at run time, faster than the portable `libm` crate); erfc and lgamma, which std
//! lacks, from the `libm` crate.

pub use libm::{erfc, lgamma};

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

//! A probability carried with its complement, for the Beta quantiles, the bounds made
//! from them and the radius that uses those bounds.

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

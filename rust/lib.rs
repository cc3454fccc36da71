//! topk-certify's core: exact certified top-k radii for Gaussian randomized smoothing
//! (Jia, Cao, Wang, Gong, ICLR 2020). Pure Rust; the Python bindings live in `python`
//! behind the `python` feature, so `cargo test` needs no interpreter.

pub mod beta;
pub mod bounds;
pub mod certify;
pub mod count;
pub mod error;
pub mod int_value;
mod math;
pub mod normal;
mod parallel;
pub mod predict;
pub mod prob;
pub mod radius;
pub mod scan;

#[cfg(feature = "python")]
mod python;

pub use certify::{certify_batch, Bound, Params};
pub use count::count_labels;
pub use error::{CoreError, CoreResult};
pub use int_value::IntValue;
pub use predict::predict_batch;
pub use prob::Prob;

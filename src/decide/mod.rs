//! The decision core: state in, decision out, no I/O. For one customer turn
//! it takes what the extractor ([`crate::extract`]) found, decides whether the
//! model is worth calling, and disposes of whatever was proposed (by the model,
//! or by the keyword triggers offline) under the source ranks and the ask
//! policy. The worker and the eval runner both drive it, so what the evals
//! measure is what production does.

pub mod policy;
pub mod priming;
pub mod triggers;
mod turn;

pub use turn::*;

//! Extraction and the ask decision: the pure decision core. Nothing here does
//! I/O; the worker loads state, calls [`decision`], and writes the result.

pub mod decision;
pub mod declines;
pub mod grounding;
pub mod language;
pub mod patterns;
pub mod priming;
pub mod triggers;

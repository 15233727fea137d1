//! TEMP
pub mod declines;
pub mod patterns;

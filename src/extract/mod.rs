//! The extractor: reads a customer's text for facts (emails, phone numbers,
//! names, options), refusals and language, and checks that a value is
//! grounded in the words it came from. Pure functions; the decision core
//! ([`crate::decide`]) decides what of it is written.

pub mod declines;
pub mod grounding;
pub mod language;
pub mod ownership;
pub mod patterns;
pub mod signatures;
pub mod spelled;

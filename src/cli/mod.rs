//! Subcommands of the `enricher` binary that are more than a call into the
//! worker: publishing events and benchmarking.

pub mod bench;
pub mod fake_model;
pub mod inspect;
pub mod send;

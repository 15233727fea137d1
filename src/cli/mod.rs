//! Subcommands of the `enricher` binary that are more than a call into the
//! worker: publishing events, benchmarking, inspecting schema and prompts, and
//! the customer tools (show, export, forget).

pub mod bench;
pub mod bench_search;
pub mod customers;
pub mod fake_model;
pub mod inspect;
pub mod send;
pub mod settle;
pub mod tokens;

//! Subcommands of the `enricher` binary that are more than a call into the
//! worker: publishing events, benchmarking, inspecting schema and prompts, and
//! the customer tools (show, export, forget), the dead-letter tools (list,
//! replay, purge) and the operator's status screen.

pub mod bench;
pub mod bench_broker;
pub mod bench_search;
pub mod customers;
pub mod dead_letters;
pub mod fake_model;
pub mod inspect;
pub mod send;
pub mod settle;
pub mod status;
pub mod tokens;

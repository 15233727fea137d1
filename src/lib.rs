//! enricher turns live chat traffic into enriched customer profiles: it
//! consumes chat events from RabbitMQ, keeps profiles hot in Redis, records
//! the facts customers volunteer and writes everything to Postgres, where
//! dashboards read it. The crate is a library so tests, benchmarks and evals
//! drive the same code the `enricher` binary runs.

pub mod api;
pub mod boundary;
pub mod cli;
pub mod config;
pub mod console;
pub mod decide;
pub mod eval;
pub mod event;
pub mod extract;
pub mod fields;
pub mod insights;
pub mod llm;
pub mod ops;
pub mod queue;
pub mod retry;
pub mod startup;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod turn;
pub mod worker;
pub mod workspaces;

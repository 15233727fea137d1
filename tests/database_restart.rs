//! The database restarts in the middle of a stream: the worker's pooled
//! connections die, the batches they were writing fail with transient errors
//! and are retried on fresh connections, and nothing is lost or stored twice.
//! This restarts the shared local Postgres, so it lives in its own test
//! binary (cargo runs test binaries one at a time).

mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_worker_recovers_from_a_database_restart_without_losing_events() {
    common::restart_mid_stream_loses_nothing("postgres").await;
}

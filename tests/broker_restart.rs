//! The broker restarts in the middle of a stream: the worker reconnects by
//! itself and nothing is lost. This restarts the shared local RabbitMQ, so it
//! lives in its own test binary (cargo runs test binaries one at a time).

mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_worker_recovers_from_a_broker_restart_without_losing_events() {
    common::restart_mid_stream_loses_nothing("rabbitmq").await;
}

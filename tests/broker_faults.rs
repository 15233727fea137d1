//! Broker faults that lapin's own recovery does not mend: the worker must
//! notice, subscribe again and go on consuming without being restarted.

mod common;

use std::time::Duration;

use common::{RunningWorker, TestApp, chat_batch, unique};
use lapin::ExchangeKind;
use lapin::options::{ExchangeDeclareOptions, ExchangeDeleteOptions, QueueDeleteOptions};
use lapin::types::FieldTable;

const STORED: &str = "SELECT count(*) FROM enrich.messages";

/// A worker that has stored its first 20 events.
async fn consuming() -> (TestApp, RunningWorker, String) {
    common::show_worker_log();
    let app = TestApp::new().await;
    let mut worker = app.start_worker().await;
    let ws = unique("ws");
    app.publish(&chat_batch(&ws, 0..20, 5)).await;
    worker
        .while_running(app.wait_for_count(STORED, 20, Duration::from_secs(30)))
        .await;
    (app, worker, ws)
}

/// After the first 20 events were stored and the fault is over: the worker
/// is consuming every shard queue again and stores the next 20.
async fn consumes_again(app: &TestApp, mut worker: RunningWorker, ws: &str) {
    worker
        .while_running(
            app.wait_for_shard_consumers(|consumers| consumers == Some(1), Duration::from_secs(30)),
        )
        .await;
    app.publish(&chat_batch(ws, 20..40, 5)).await;
    worker
        .while_running(app.wait_for_count(STORED, 40, Duration::from_secs(30)))
        .await;
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_subscription_the_broker_cancels_is_taken_up_again() {
    let (app, worker, ws) = consuming().await;

    // Deleting a shard queue makes the broker cancel the worker's consumer
    // of it.
    let (connection, channel) = app.broker_channel().await;
    channel
        .queue_delete(
            enricher::queue::topology::shard_queue(&app.settings().amqp, 0)
                .as_str()
                .into(),
            QueueDeleteOptions::default(),
        )
        .await
        .expect("delete a shard queue");
    connection.close(200, "done".into()).await.ok();

    // The worker declares the queue again and consumes from it.
    consumes_again(&app, worker, &ws).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_connection_whose_recovery_fails_is_replaced() {
    let (app, worker, ws) = consuming().await;

    // Recreate the outbound exchange as another kind: when lapin reconnects
    // and replays the worker's declarations, the broker refuses this one and
    // the recovery fails.
    let outbound = app.settings().amqp.outbound_exchange;
    let (connection, channel) = app.broker_channel().await;
    channel
        .exchange_delete(outbound.as_str().into(), ExchangeDeleteOptions::default())
        .await
        .expect("delete the outbound exchange");
    channel
        .exchange_declare(
            outbound.as_str().into(),
            ExchangeKind::Fanout,
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("declare a conflicting outbound exchange");
    assert_eq!(app.close_consumer_connections(), 1);

    // While the conflict lasts the worker cannot subscribe (not by lapin's
    // recovery, not by its own), and it keeps trying.
    app.wait_for_shard_consumers(|consumers| consumers == Some(0), Duration::from_secs(10))
        .await;
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(app.shard_consumers().await, Some(0));
    }

    // Once the conflict is gone the worker's next attempt declares the
    // exchange as it should be and consumes again.
    channel
        .exchange_delete(outbound.as_str().into(), ExchangeDeleteOptions::default())
        .await
        .expect("delete the conflicting exchange");
    connection.close(200, "done".into()).await.ok();
    consumes_again(&app, worker, &ws).await;
}

//! A store that goes away mid-stream holds the conversations instead of
//! losing, reordering or dead-lettering their events: Postgres stopped for
//! 120 s, Redis for 30 s, each while events keep arriving. Every event is
//! stored once, every conversation in publish order, nothing is
//! dead-lettered and the worker keeps running.
//!
//! These tests stop and start the local services (`scripts/services`, with
//! the environment the tests run in), so they live in a test binary of
//! their own and take turns: no other test runs against the services while
//! one of them is down.

mod common;

use std::time::{Duration, Instant};

use common::ordered_stream::{
    StoppedService, assert_stored_in_publish_order, dead_letters_waiting, interleaved,
    publish_at_rate, wait_until_stored,
};
use common::{TestApp, unique};

/// One outage at a time.
static SERVICES: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const CONVERSATIONS: usize = 50;
const PER_CONVERSATION: usize = 40;

/// Publishes `CONVERSATIONS × PER_CONVERSATION` events spread over the
/// outage and a little more, stops `service` once a tenth are stored,
/// starts it again after `outage`, and checks the result.
async fn outage_mid_stream(service: &'static str, outage: Duration) {
    let _one_at_a_time = SERVICES.lock().await;
    common::show_worker_log();
    let app = TestApp::new().await;
    let mut worker = app.start_worker().await;
    let ws = unique("ws");
    let events = interleaved(&ws, CONVERSATIONS, PER_CONVERSATION);
    let total = events.len() as i64;
    let rate = events.len() / (outage.as_secs() as usize + 20);
    let publisher = publish_at_rate(app.settings().amqp, events, rate);

    let stored = worker
        .while_running(wait_until_stored(&app, total / 10, Duration::from_secs(60)))
        .await;
    assert!(stored >= total / 10, "the worker did not start storing");
    let stopped = StoppedService::stop(service);
    let down_since = Instant::now();
    worker
        .while_running(tokio::time::sleep(
            outage.saturating_sub(down_since.elapsed()),
        ))
        .await;
    stopped.start();

    worker
        .while_running(async {
            tokio::time::timeout(Duration::from_secs(120), publisher)
                .await
                .expect("the stream is published")
                .expect("the publisher finishes")
        })
        .await;
    let stored = worker
        .while_running(wait_until_stored(&app, total, Duration::from_secs(120)))
        .await;
    assert_eq!(stored, total, "every event is stored");
    assert_stored_in_publish_order(&app, CONVERSATIONS, PER_CONVERSATION).await;
    assert_eq!(
        dead_letters_waiting(&app).await,
        0,
        "nothing is dead-lettered"
    );
    assert_eq!(worker.metrics.dead_lettered.get(), 0);
    let held = match service {
        "postgres" => worker.metrics.store_retries.get(),
        _ => worker.metrics.cache_errors.get(),
    };
    assert!(held > 0, "the outage of {service} reached the worker");
    eprintln!(
        "outages: {service} down {outage:?}: {total} events stored in order, {held} held retries"
    );
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_down_for_two_minutes_loses_and_reorders_nothing() {
    outage_mid_stream("postgres", Duration::from_secs(120)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_down_for_thirty_seconds_loses_and_reorders_nothing() {
    outage_mid_stream("redis", Duration::from_secs(30)).await;
}

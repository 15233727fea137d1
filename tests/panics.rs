//! Panics, injected with fail points (so this file is built only with the
//! `failpoints` feature, which `scripts/test` turns on):
//!
//! - a lane that panics takes the worker down with exit 1, so its supervisor
//!   restarts it; what the lane held goes back to the broker, and the
//!   restarted worker stores every event once, each conversation in publish
//!   order;
//! - a model job that panics is recorded as failed, its message stays
//!   stored, and the worker goes on with the next job.

mod common;

use std::time::{Duration, Instant};

use common::fake_llm::{FakeModel, proposal, tool_call};
use common::ordered_stream::{
    assert_stored_in_publish_order, dead_letters_waiting, interleaved, wait_until_stored,
};
use common::{TestApp, chat, unique};

const CONVERSATIONS: usize = 40;
const PER_CONVERSATION: usize = 25;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lane_that_panics_stops_the_worker_with_exit_1_and_loses_nothing() {
    let app = TestApp::new().await;
    app.declare_topology().await;
    let ws = unique("ws");
    let total = (CONVERSATIONS * PER_CONVERSATION) as i64;
    app.publish(&interleaved(&ws, CONVERSATIONS, PER_CONVERSATION))
        .await;

    // The fourth batch a lane takes panics.
    let mut worker = app.spawn_worker_process_with(&[("FAILPOINTS", "lane-batch=3*off->panic")]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = worker.try_wait().expect("the worker's status") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the worker kept running after a lane panicked"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        status.code(),
        Some(1),
        "a worker whose lane panicked exits 1, got {status:?}"
    );
    let at_exit = app.count("SELECT count(*) FROM enrich.messages").await;
    assert!(
        at_exit > 0 && at_exit < total,
        "the panic lands mid-stream: {at_exit} of {total} stored"
    );

    let _restarted = app.spawn_worker_process();
    let stored = wait_until_stored(&app, total, Duration::from_secs(120)).await;
    assert_eq!(stored, total, "the restarted worker stores the rest");
    assert_stored_in_publish_order(&app, CONVERSATIONS, PER_CONVERSATION).await;
    assert_eq!(
        dead_letters_waiting(&app).await,
        0,
        "nothing is dead-lettered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_model_job_that_panics_is_recorded_as_failed_and_the_worker_goes_on() {
    let model = FakeModel::start(|_, _| tool_call(proposal(&[], None))).await;
    let mut app = TestApp::new().await;
    app.set("ENRICHER__LLM__BASE_URL", &model.base_url());
    // This worker runs in the test's process, where the fail point is set:
    // the first model job panics, the next ones run.
    fail::cfg("model-job", "1*panic").expect("a valid fail point action");
    let mut worker = app.start_worker().await;
    let ws = unique("ws");
    let wait = Duration::from_secs(60);
    app.publish(&[chat(
        &ws,
        "m1",
        "c1",
        "u1",
        "customer",
        "Hi, could you send me the brochure",
    )])
    .await;
    worker
        .while_running(app.wait_for_count(
            "SELECT count(*) FROM enrich.messages WHERE event_id = 'm1' AND ai_status = 'failed'",
            1,
            wait,
        ))
        .await;
    assert_eq!(worker.metrics.model_jobs_panicked.get(), 1);
    assert_eq!(model.calls(), 0, "the panicked job made no call");

    app.publish(&[chat(
        &ws,
        "m2",
        "c2",
        "u2",
        "customer",
        "Hello, can you send me the price list?",
    )])
    .await;
    worker
        .while_running(app.wait_for_count(
            "SELECT count(*) FROM enrich.messages WHERE event_id = 'm2' AND ai_status = 'done'",
            1,
            wait,
        ))
        .await;
    assert_eq!(model.calls(), 1, "the next job called the model");
    assert_eq!(
        app.count("SELECT count(*) FROM enrich.messages").await,
        2,
        "both messages stay stored"
    );
    fail::remove("model-job");
    worker.stop().await;
}

//! A lane that panics takes the worker down with a non-zero exit, so its
//! supervisor restarts it; what the lane held goes back to the broker, and
//! the restarted worker stores every event once, each conversation in
//! publish order. The panic is injected with a fail point, so this test is
//! built only with the `failpoints` feature (`scripts/test` turns it on).

mod common;

use std::time::{Duration, Instant};

use common::ordered_stream::{
    assert_stored_in_publish_order, dead_letters_waiting, interleaved, wait_until_stored,
};
use common::{TestApp, unique};

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

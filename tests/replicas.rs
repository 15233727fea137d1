//! Several `enricher run` processes share the shard queues. Three replicas
//! consume 200 conversations × 20 messages while one of them is killed with
//! SIGKILL and restarted: every conversation is stored in publish order,
//! each message once, nothing is dead-lettered, and the broker hands the
//! killed replica's shards to the others within seconds.

mod common;

use std::time::Duration;

use common::ordered_stream::{
    assert_stored_in_publish_order, dead_letters_waiting, interleaved, publish_at_rate,
    wait_until_stored,
};
use common::{TestApp, WorkerProcess, unique};

const CONVERSATIONS: usize = 200;
const PER_CONVERSATION: usize = 20;
/// Events published per second: the stream lasts 16 s, so the kill and the
/// restart both land in the middle of it.
const RATE: usize = 250;
/// What "within seconds" means here: from the kill until every conversation
/// that was still receiving messages has stored one again (this includes up
/// to 0.8 s between two messages of one conversation at this rate).
const HANDOVER_LIMIT: Duration = Duration::from_secs(10);

fn assert_all_running(replicas: &mut [WorkerProcess]) {
    for (index, replica) in replicas.iter_mut().enumerate() {
        let status = replica.try_wait().expect("replica status");
        assert!(
            status.is_none(),
            "replica {index} exited by itself: {status:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_replicas_keep_every_conversation_in_order_through_a_kill() {
    let mut app = TestApp::new().await;
    app.set("ENRICHER__AMQP__SHARDS", "8");
    app.declare_topology().await;
    let mut replicas = Vec::new();
    for running in 1..=3 {
        replicas.push(app.spawn_worker_process());
        app.wait_for_registered_shard_consumers(running, Duration::from_secs(60))
            .await;
    }

    let ws = unique("ws");
    let events = interleaved(&ws, CONVERSATIONS, PER_CONVERSATION);
    let total = events.len() as i64;
    let publisher = publish_at_rate(app.settings().amqp, events, RATE);

    // Kill the first replica (the one that registered first on every shard)
    // a fifth of the way in.
    let stored = wait_until_stored(&app, total / 5, Duration::from_secs(60)).await;
    assert!(
        stored >= total / 5 && stored < total / 2,
        "the kill must land mid-stream (stored {stored} of {total})"
    );
    assert_all_running(&mut replicas);
    let killed_at = chrono::Utc::now();
    replicas[0].kill().expect("kill -9 the replica");
    replicas[0].wait().expect("the killed replica is reaped");

    // Restart it a few seconds later, still mid-stream.
    tokio::time::sleep(Duration::from_secs(3)).await;
    replicas[0] = app.spawn_worker_process();
    app.wait_for_registered_shard_consumers(3, Duration::from_secs(60))
        .await;
    let stored_at_restart = app.count("SELECT count(*) FROM enrich.messages").await;
    assert!(
        stored_at_restart < total,
        "the restart must land mid-stream (stored {stored_at_restart} of {total})"
    );

    tokio::time::timeout(Duration::from_secs(120), publisher)
        .await
        .expect("the stream is published within 2 minutes")
        .expect("the publisher finishes");
    let stored = wait_until_stored(&app, total, Duration::from_secs(120)).await;
    assert_all_running(&mut replicas);
    assert_eq!(stored, total, "every event is stored");
    assert_stored_in_publish_order(&app, CONVERSATIONS, PER_CONVERSATION).await;
    assert_eq!(
        dead_letters_waiting(&app).await,
        0,
        "nothing is dead-lettered"
    );

    // How long the conversations of the killed replica waited: for each
    // conversation, its first message stored after the kill.
    let (slowest, first_after): (f64, f64) = sqlx::query_as(
        "SELECT max(resumed), min(resumed) FROM (
             SELECT extract(epoch FROM min(stored_at) - $1)::float8 AS resumed
               FROM enrich.messages WHERE stored_at > $1 GROUP BY conversation_id) t",
    )
    .bind(killed_at)
    .fetch_one(&app.pool)
    .await
    .expect("resume times");
    eprintln!(
        "replicas: after the kill, the first message was stored in {first_after:.2} s and every \
         conversation had stored its next message within {slowest:.2} s"
    );
    assert!(
        slowest < HANDOVER_LIMIT.as_secs_f64(),
        "a conversation waited {slowest:.2} s after the kill"
    );
}

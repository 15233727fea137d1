//! `amqp.shards` against the shard queues the broker already holds: a count
//! lowered while nothing waits takes effect (surplus queues deleted); a
//! count lowered while events wait or a replica consumes is refused at
//! start-up, so no event is left in a queue nobody consumes.

mod common;

use std::time::Duration;

use common::{TestApp, chat_batch, unique};
use enricher::cli::send::EventSender;
use enricher::queue::inspect::{QueueState, queue_state};
use enricher::queue::topology::shard_queue;
use enricher::startup::Application;

const STORED: &str = "SELECT count(*) FROM enrich.messages";

/// What the broker holds of shard queue `index`, `None` when it is missing.
async fn shard(app: &TestApp, index: u16) -> Option<QueueState> {
    let settings = app.settings().amqp;
    let connection = enricher::queue::connect(&settings, "test-look")
        .await
        .expect("amqp");
    let state = queue_state(&connection, &shard_queue(&settings, index))
        .await
        .expect("look");
    connection.close(200, "done".into()).await.ok();
    state
}

async fn refusal(app: &TestApp) -> String {
    match Application::build(app.settings()).await {
        Ok(_) => panic!("the worker started with a shard count the broker's queues refuse"),
        Err(error) => error.to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_shard_count_changed_while_nothing_waits_takes_effect() {
    let mut app = TestApp::new().await;
    let ws = unique("ws");
    app.set("ENRICHER__AMQP__SHARDS", "4");
    let mut worker = app.start_worker().await;
    app.publish(&chat_batch(&ws, 0..20, 5)).await;
    worker
        .while_running(app.wait_for_count(STORED, 20, Duration::from_secs(30)))
        .await;
    worker.stop().await;

    // Fewer shards: the surplus queues go, the rest keep working.
    app.set("ENRICHER__AMQP__SHARDS", "2");
    let mut worker = app.start_worker().await;
    assert!(shard(&app, 1).await.is_some());
    assert_eq!(shard(&app, 2).await, None, "surplus shard queue 2 deleted");
    assert_eq!(shard(&app, 3).await, None, "surplus shard queue 3 deleted");
    app.publish(&chat_batch(&ws, 20..40, 5)).await;
    worker
        .while_running(app.wait_for_count(STORED, 40, Duration::from_secs(30)))
        .await;
    worker.stop().await;

    // More shards: the new queue is declared and consumed.
    app.set("ENRICHER__AMQP__SHARDS", "3");
    let mut worker = app.start_worker().await;
    assert!(
        shard(&app, 2).await.is_some(),
        "shard queue 2 declared again"
    );
    app.publish(&chat_batch(&ws, 40..60, 5)).await;
    worker
        .while_running(app.wait_for_count(STORED, 60, Duration::from_secs(30)))
        .await;
    worker.stop().await;
    assert_eq!(
        app.count("SELECT count(DISTINCT event_id) FROM enrich.messages")
            .await,
        60
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_shard_count_lowered_while_events_wait_or_a_replica_runs_is_refused() {
    let mut app = TestApp::new().await;
    let ws = unique("ws");
    app.set("ENRICHER__AMQP__SHARDS", "4");
    app.declare_topology().await;
    // Events wait in the four shard queues, no worker runs.
    app.publish(&chat_batch(&ws, 0..20, 5)).await;

    app.set("ENRICHER__AMQP__SHARDS", "2");
    let refused = refusal(&app).await;
    assert!(
        refused.contains("the broker has 4 shard queues")
            && refused.contains("amqp.shards is 2")
            && refused.contains("20 events wait"),
        "{refused}"
    );
    match EventSender::connect(&app.settings().amqp).await {
        Ok(_) => panic!("a sender with the wrong shard count connected"),
        Err(error) => assert!(error.to_string().contains("amqp.shards is 2"), "{error}"),
    }
    let waiting: u32 = [
        shard(&app, 0).await,
        shard(&app, 1).await,
        shard(&app, 2).await,
        shard(&app, 3).await,
    ]
    .iter()
    .map(|state| state.expect("every shard queue kept").messages)
    .sum();
    assert_eq!(waiting, 20, "nothing was taken from the shard queues");

    // With the broker's count, every waiting event is stored.
    app.set("ENRICHER__AMQP__SHARDS", "4");
    let mut worker = app.start_worker().await;
    worker
        .while_running(app.wait_for_count(STORED, 20, Duration::from_secs(30)))
        .await;

    // Nothing waits now, but a replica consumes: a second replica with a
    // lower count is refused and the first goes on.
    app.set("ENRICHER__AMQP__SHARDS", "2");
    let refused = worker.while_running(refusal(&app)).await;
    assert!(
        refused.contains("amqp.shards is 2") && refused.contains("0 events wait"),
        "{refused}"
    );
    assert!(
        !refused.contains("and 0 consumers are attached"),
        "{refused}"
    );
    assert!(shard(&app, 3).await.is_some(), "no shard queue retired");
    app.set("ENRICHER__AMQP__SHARDS", "4");
    app.publish(&chat_batch(&ws, 20..40, 5)).await;
    worker
        .while_running(app.wait_for_count(STORED, 40, Duration::from_secs(30)))
        .await;
    worker.stop().await;
}

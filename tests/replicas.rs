//! Several `enricher run` processes share the shard queues. Three replicas
//! consume 200 conversations × 20 messages while one of them is killed with
//! SIGKILL and restarted: every conversation is stored in publish order,
//! each message once, nothing is dead-lettered, and the broker hands the
//! killed replica's shards to the others within seconds. And an upgrade
//! from the single work queue of earlier versions: what waits there is
//! handled before the shards, in order, and the old queues are removed.

mod common;

use std::time::Duration;

use common::ordered_stream::{
    assert_stored_in_publish_order, dead_letters_waiting, interleaved, publish_at_rate,
    wait_until_stored,
};
use common::{TestApp, WorkerProcess, rabbitmqctl, unique};
use lapin::ExchangeKind;
use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::FieldTable;

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

/// Waits for the stream to be published and stored, then checks that every
/// replica still runs, every event was stored once and in publish order,
/// and nothing was dead-lettered.
async fn stream_ends_stored_in_order(
    app: &TestApp,
    publisher: tokio::task::JoinHandle<()>,
    replicas: &mut [WorkerProcess],
    total: i64,
) {
    tokio::time::timeout(Duration::from_secs(120), publisher)
        .await
        .expect("the stream is published within 2 minutes")
        .expect("the publisher finishes");
    let stored = wait_until_stored(app, total, Duration::from_secs(120)).await;
    assert_all_running(replicas);
    assert_eq!(stored, total, "every event is stored");
    assert_stored_in_publish_order(app, CONVERSATIONS, PER_CONVERSATION).await;
    assert_eq!(
        dead_letters_waiting(app).await,
        0,
        "nothing is dead-lettered"
    );
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

    stream_ends_stored_in_order(&app, publisher, &mut replicas, total).await;

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

/// How many shard queues each connection is the active consumer of, as
/// `rabbitmqctl` lists them, fewest first (one entry per replica that is
/// active on any shard).
fn active_shards_by_connection(app: &TestApp) -> Vec<usize> {
    let shard_queues = enricher::queue::topology::shard_queues(&app.settings().amqp);
    let active_channels: Vec<String> = rabbitmqctl(&[
        "list_consumers",
        "--no-table-headers",
        "queue_name",
        "channel_pid",
        "active",
    ])
    .iter()
    .filter_map(|line| {
        let mut columns = line.split('\t');
        let queue = columns.next()?;
        let channel = columns.next()?;
        let active = columns.next()?.trim();
        (shard_queues.iter().any(|shard| shard == queue) && active == "true")
            .then(|| channel.to_owned())
    })
    .collect();
    let channels = rabbitmqctl(&["list_channels", "--no-table-headers", "pid", "connection"]);
    let mut by_connection: std::collections::HashMap<String, usize> = Default::default();
    for channel in &active_channels {
        let connection = channels
            .iter()
            .filter_map(|line| line.split_once('\t'))
            .find(|(pid, _)| pid == channel)
            .map(|(_, connection)| connection.to_owned())
            .unwrap_or_else(|| format!("unknown {channel}"));
        *by_connection.entry(connection).or_default() += 1;
    }
    let mut counts: Vec<usize> = by_connection.into_values().collect();
    counts.sort();
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_started_later_takes_over_its_share_of_the_shards() {
    let mut app = TestApp::new().await;
    app.set("ENRICHER__AMQP__SHARDS", "8");
    app.set("ENRICHER__AMQP__REBALANCE_SECS", "1");
    app.declare_topology().await;
    let mut replicas = vec![app.spawn_worker_process()];
    app.wait_for_registered_shard_consumers(1, Duration::from_secs(60))
        .await;

    let ws = unique("ws");
    let events = interleaved(&ws, CONVERSATIONS, PER_CONVERSATION);
    let total = events.len() as i64;
    // Half the rate of the kill test: the stream lasts 32 s, so the
    // second replica's start (under a busy machine, several seconds) and
    // the rebalance still land in the middle of it.
    let publisher = publish_at_rate(app.settings().amqp, events, RATE / 2);
    wait_until_stored(&app, total / 5, Duration::from_secs(60)).await;
    assert_eq!(
        active_shards_by_connection(&app),
        vec![8],
        "the only replica is active on every shard"
    );

    // A second replica starts mid-stream and gets about half the shards.
    replicas.push(app.spawn_worker_process());
    app.wait_for_registered_shard_consumers(2, Duration::from_secs(60))
        .await;
    let joined = std::time::Instant::now();
    let shared = loop {
        let active = active_shards_by_connection(&app);
        if active.len() == 2 && active.iter().sum::<usize>() == 8 && active[0] >= 3 {
            break active;
        }
        assert!(
            joined.elapsed() < Duration::from_secs(30),
            "the shards were not shared out within 30 s (active per replica: {active:?})"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    eprintln!(
        "replicas: {:.1} s after the second replica registered, the replicas were active on {shared:?} shards",
        joined.elapsed().as_secs_f64()
    );
    let stored_then = app.count("SELECT count(*) FROM enrich.messages").await;
    assert!(
        stored_then < total,
        "the handover must land mid-stream (stored {stored_then} of {total})"
    );

    stream_ends_stored_in_order(&app, publisher, &mut replicas, total).await;
    // Still shared once the stream is over: no replica took the shards back.
    let active = active_shards_by_connection(&app);
    assert_eq!(active.len(), 2, "both replicas stay active: {active:?}");
}

/// The single-queue topology of earlier versions, declared as they did,
/// with `old` events waiting in the work queue and `parked` in the longest
/// retry queue.
async fn single_queue_version_with(
    app: &TestApp,
    old: &[serde_json::Value],
    parked: &serde_json::Value,
) {
    let amqp = app.settings().amqp;
    let (connection, channel) = app.broker_channel().await;
    channel
        .exchange_declare(
            amqp.inbound_exchange.as_str().into(),
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("inbound exchange");
    for (queue, args) in enricher::queue::legacy::old_queues(&amqp) {
        channel
            .queue_declare(
                queue.as_str().into(),
                QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                args,
            )
            .await
            .expect("old queue");
    }
    channel
        .queue_bind(
            amqp.work_queue.as_str().into(),
            amqp.inbound_exchange.as_str().into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("old binding");
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirms");
    let longest_retry = enricher::queue::topology::retry_queue(
        &amqp,
        *amqp.retry_delays_ms.last().expect("retry delays"),
    );
    let publishes = old
        .iter()
        .map(|event| (amqp.inbound_exchange.clone(), event))
        .chain(std::iter::once((String::new(), parked)));
    for (exchange, event) in publishes {
        let routing_key = if exchange.is_empty() {
            longest_retry.clone()
        } else {
            event["conversation_id"]
                .as_str()
                .expect("conversation")
                .to_owned()
        };
        channel
            .basic_publish(
                exchange.as_str().into(),
                routing_key.as_str().into(),
                BasicPublishOptions::default(),
                &serde_json::to_vec(event).expect("json"),
                enricher::queue::publisher::json_properties(),
            )
            .await
            .expect("publish")
            .await
            .expect("confirmed");
    }
    connection.close(200, "done".into()).await.ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_upgrade_handles_the_old_work_queue_first_and_removes_it() {
    let app = TestApp::new().await;
    let ws = unique("ws");
    let conversations = 20;
    let events = interleaved(&ws, conversations, PER_CONVERSATION);
    let (old, new) = events.split_at(events.len() / 2);
    let parked = common::chat(&ws, "parked", "c-parked", "u-parked", "customer", "0");
    single_queue_version_with(&app, old, &parked).await;

    let mut worker = app.start_worker().await;
    app.publish(new).await;
    let total = events.len() as i64 + 1;
    let stored = worker
        .while_running(wait_until_stored(&app, total, Duration::from_secs(60)))
        .await;
    assert_eq!(stored, total, "every event, old and new, is stored");

    // Messages 0..9 of each conversation waited in the old work queue,
    // 10..19 in the shards: every conversation is in publish order.
    let parked_stored = app
        .count("SELECT count(*) FROM enrich.messages WHERE event_id = 'parked'")
        .await;
    assert_eq!(
        parked_stored, 1,
        "the event parked in a retry queue is not lost"
    );
    let stored_in_order: Vec<(String, Vec<String>)> = sqlx::query_as(
        "SELECT c.external_id, array_agg(m.text ORDER BY m.id)
           FROM enrich.messages m JOIN enrich.conversations c ON c.id = m.conversation_id
          WHERE c.external_id <> 'c-parked' GROUP BY c.external_id",
    )
    .fetch_all(&app.pool)
    .await
    .expect("stored messages");
    let expected: Vec<String> = (0..PER_CONVERSATION).map(|k| k.to_string()).collect();
    assert_eq!(stored_in_order.len(), conversations);
    for (conversation, texts) in &stored_in_order {
        assert_eq!(texts, &expected, "{conversation} is out of publish order");
    }

    // The old queues are gone: the drain deletes them once it has acked
    // its last event, which can be a moment after that event's commit.
    let amqp = app.settings().amqp;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let listed = rabbitmqctl(&["list_queues", "--no-table-headers", "name"]);
        let left: Vec<String> = enricher::queue::legacy::old_queues(&amqp)
            .into_iter()
            .map(|(queue, _)| queue)
            .filter(|queue| listed.contains(queue))
            .collect();
        if left.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{left:?} still there 30 s after the last event was stored"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    worker.stop().await;
}

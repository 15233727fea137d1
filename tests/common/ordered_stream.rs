//! A steady stream of chat messages over many conversations, published at a
//! bounded rate while a test injects faults, and the checks that every
//! conversation was stored in publish order, each message once, with
//! nothing dead-lettered.

use std::time::{Duration, Instant};

use enricher::cli::send::EventSender;
use enricher::config::AmqpSettings;
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use serde_json::Value;
use tokio::task::JoinHandle;

use super::{TestApp, chat};

/// `per_conversation` messages in each of `conversations` conversations,
/// in publish order: round `k` carries message `k` (text `"k"`) of every
/// conversation, so consecutive messages of one conversation are
/// `conversations` events apart.
pub fn interleaved(ws: &str, conversations: usize, per_conversation: usize) -> Vec<Value> {
    (0..per_conversation)
        .flat_map(|k| {
            (0..conversations).map(move |c| {
                chat(
                    ws,
                    &format!("e-{c}-{k}"),
                    &format!("c-{c}"),
                    &format!("u-{c}"),
                    "customer",
                    &format!("{k}"),
                )
            })
        })
        .collect()
}

/// Publishes `events` in order at about `per_second`, with confirms, in a
/// task of its own; the task ends once every event is confirmed.
pub fn publish_at_rate(
    amqp: AmqpSettings,
    events: Vec<Value>,
    per_second: usize,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut sender = EventSender::connect(&amqp).await.expect("sender connects");
        let tick = Duration::from_millis(20);
        let per_tick = (per_second / 50).max(1);
        let started = Instant::now();
        for (index, chunk) in events.chunks(per_tick).enumerate() {
            for event in chunk {
                sender
                    .send(&serde_json::to_vec(event).expect("json"))
                    .await
                    .expect("publish");
            }
            sender.await_confirms().await.expect("confirms");
            let due = started + tick * (index as u32 + 1);
            tokio::time::sleep_until(due.into()).await;
        }
        sender.finish().await.expect("confirms");
    })
}

/// Asserts that every one of `conversations` conversations holds exactly
/// the messages `0..per_conversation`, once each, in that order.
pub async fn assert_stored_in_publish_order(
    app: &TestApp,
    conversations: usize,
    per_conversation: usize,
) {
    let total = (conversations * per_conversation) as i64;
    assert_eq!(
        app.count("SELECT count(*) FROM enrich.messages").await,
        total
    );
    assert_eq!(
        app.count("SELECT count(DISTINCT event_id) FROM enrich.messages")
            .await,
        total,
        "a message was stored twice"
    );
    let stored: Vec<(String, Vec<String>)> = sqlx::query_as(
        "SELECT c.external_id, array_agg(m.text ORDER BY m.id)
           FROM enrich.messages m JOIN enrich.conversations c ON c.id = m.conversation_id
          GROUP BY c.external_id",
    )
    .fetch_all(&app.pool)
    .await
    .expect("stored messages");
    assert_eq!(stored.len(), conversations, "every conversation is stored");
    let expected: Vec<String> = (0..per_conversation).map(|k| k.to_string()).collect();
    let out_of_order: Vec<&(String, Vec<String>)> = stored
        .iter()
        .filter(|(_, texts)| *texts != expected)
        .collect();
    assert!(
        out_of_order.is_empty(),
        "{} conversations out of publish order, e.g. {:?}",
        out_of_order.len(),
        out_of_order.first()
    );
    let miscounted = format!(
        "SELECT count(*) FROM enrich.conversations WHERE message_count <> {per_conversation}"
    );
    assert_eq!(
        app.count(&miscounted).await,
        0,
        "conversation counters match"
    );
}

/// Events waiting in the test's dead-letter queue.
pub async fn dead_letters_waiting(app: &TestApp) -> u32 {
    let (connection, channel) = app.broker_channel().await;
    let queue = channel
        .queue_declare(
            app.settings().amqp.dead_letter_queue.as_str().into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("the dead-letter queue exists");
    connection.close(200, "done".into()).await.ok();
    queue.message_count()
}

/// Polls until `stored` messages are in the database or `timeout` passes.
pub async fn wait_until_stored(app: &TestApp, stored: i64, timeout: Duration) -> i64 {
    let deadline = Instant::now() + timeout;
    loop {
        let now = app.count("SELECT count(*) FROM enrich.messages").await;
        if now >= stored || Instant::now() >= deadline {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A local service stopped by a test (`scripts/services stop NAME`), started
/// again by [`StoppedService::start`] or, if the test fails first, on drop,
/// so a failing test never leaves the services down for the next one.
pub struct StoppedService {
    name: &'static str,
    running: bool,
}

fn services(command: &str, name: &str) {
    let script = std::env::var("ENRICHER_SERVICES_SCRIPT")
        .expect("ENRICHER_SERVICES_SCRIPT is set by `scripts/services env`");
    let status = std::process::Command::new(&script)
        .args([command, name])
        .status()
        .unwrap_or_else(|error| panic!("scripts/services {command} {name}: {error}"));
    assert!(status.success(), "scripts/services {command} {name} failed");
}

impl StoppedService {
    /// Stops `name` (`postgres`, `redis`) with the same environment the
    /// tests run in (so the instance on `ENRICHER_*_PORT`).
    pub fn stop(name: &'static str) -> StoppedService {
        services("stop", name);
        StoppedService {
            name,
            running: false,
        }
    }

    /// Starts it again and waits until it is ready.
    pub fn start(mut self) {
        services("start", self.name);
        self.running = true;
    }
}

impl Drop for StoppedService {
    fn drop(&mut self) {
        if !self.running {
            services("start", self.name);
        }
    }
}

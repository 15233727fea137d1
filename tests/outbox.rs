//! Publishing the outbox: a batch of outbound events is sent together, each
//! with its outbox row's id as the message id, and each row leaves the
//! outbox once the broker confirmed it; what the broker could not take
//! stays for the relay.

mod common;

use std::time::Duration;

use common::{TestApp, unique};
use enricher::queue::outbox_relay::publish_pending;
use enricher::queue::publisher::Publisher;
use enricher::store::outbox::Pending;
use futures::StreamExt;
use serde_json::{Value, json};

const ROUTING_KEY: &str = "customer.merged";

/// Stores `count` outbound events as the handlers would, unpublished.
async fn stored_events(app: &TestApp, count: usize) -> Vec<Pending> {
    let workspace = unique("ws");
    let mut pending = Vec::with_capacity(count);
    for n in 0..count {
        let body = json!({ "workspace_id": workspace, "into": n, "from": n + 1 });
        let (id,): (i64,) = sqlx::query_as(
            "INSERT INTO enrich.outbox (routing_key, body) VALUES ($1, $2) RETURNING id",
        )
        .bind(ROUTING_KEY)
        .bind(&body)
        .fetch_one(&app.pool)
        .await
        .expect("outbox row");
        pending.push(Pending {
            id,
            routing_key: ROUTING_KEY.to_owned(),
            body,
        });
    }
    pending
}

async fn publisher(app: &TestApp) -> (lapin::Connection, Publisher) {
    let settings = app.settings();
    let connection = enricher::queue::connect(&settings.amqp, "test-outbox")
        .await
        .expect("amqp");
    let publisher = Publisher::open(&connection, &settings.amqp)
        .await
        .expect("publisher");
    (connection, publisher)
}

/// The next `count` events on `listener`: their message ids and bodies.
async fn receive(listener: &mut lapin::Consumer, count: usize) -> Vec<(Option<String>, Value)> {
    let mut received: Vec<(Option<String>, Value)> = Vec::new();
    while received.len() < count {
        let delivery = tokio::time::timeout(Duration::from_secs(10), listener.next())
            .await
            .unwrap_or_else(|_| panic!("only {} of {count} events arrived", received.len()))
            .expect("listener open")
            .expect("delivery");
        let message_id = delivery
            .properties
            .message_id()
            .as_ref()
            .map(|id| id.to_string());
        let body: Value = serde_json::from_slice(&delivery.data).expect("json body");
        received.push((message_id, body));
    }
    received
}

/// What a listener receives for `pending`: each row's id and body.
fn as_sent(pending: &[Pending]) -> Vec<(Option<String>, Value)> {
    pending
        .iter()
        .map(|event| (Some(event.id.to_string()), event.body.clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_outbound_events_is_published_whole_and_leaves_the_outbox() {
    let app = TestApp::new().await;
    let (_listening, mut listener) = app.outbound_listener(ROUTING_KEY).await;
    let (_connection, publisher) = publisher(&app).await;
    let pending = stored_events(&app, 40).await;

    publish_pending(&publisher, &app.pool, pending.clone()).await;

    let received = receive(&mut listener, pending.len()).await;
    assert_eq!(
        received,
        as_sent(&pending),
        "every event once, in the outbox's order"
    );
    assert_eq!(app.count("SELECT count(*) FROM enrich.outbox").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_the_broker_did_not_take_stay_in_the_outbox() {
    let app = TestApp::new().await;
    let (connection, publisher) = publisher(&app).await;
    let pending = stored_events(&app, 5).await;
    // The publisher's connection is gone: nothing can be sent.
    connection
        .close(200, "closed by the test".into())
        .await
        .expect("close");

    tokio::time::timeout(
        Duration::from_secs(90),
        publish_pending(&publisher, &app.pool, pending),
    )
    .await
    .expect("publishing gives up instead of hanging");

    assert_eq!(
        app.count("SELECT count(*) FROM enrich.outbox").await,
        5,
        "unpublished events stay for the relay"
    );
}

//! The outbox relay: outbound events are written to `enrich.outbox` in the
//! transaction that caused them and published after its commit; a row is
//! removed only once the broker confirmed it. What a crashed or failed
//! publish left behind is published again by [`relay`], so a crash delays
//! an outbound event but never loses it.

use std::time::Duration;

use sqlx::PgPool;

use super::publisher::{OutboundMessage, Publisher};
use crate::store::outbox::{self, Pending};

/// Publishes outbound events, all at once, and drops from the outbox those
/// the broker confirmed; the others stay for [`relay`].
pub async fn publish_pending(publisher: &Publisher, pool: &PgPool, pending: Vec<Pending>) {
    if pending.is_empty() {
        return;
    }
    let bodies: Vec<Vec<u8>> = pending
        .iter()
        .map(|event| serde_json::to_vec(&event.body).unwrap_or_default())
        .collect();
    let ids: Vec<String> = pending.iter().map(|event| event.id.to_string()).collect();
    let messages: Vec<OutboundMessage<'_>> = pending
        .iter()
        .zip(&bodies)
        .zip(&ids)
        .map(|((event, body), id)| OutboundMessage {
            routing_key: &event.routing_key,
            body,
            message_id: id,
        })
        .collect();
    let outcomes = publisher.publish_outbound_all(&messages).await;
    let mut confirmed = Vec::with_capacity(pending.len());
    let mut failures = 0usize;
    for (event, outcome) in pending.iter().zip(outcomes) {
        match outcome {
            Ok(()) => confirmed.push(event.id),
            Err(error) => {
                failures += 1;
                if failures == 1 {
                    tracing::warn!(error = %error, "outbound publish failed; the outbox relay will retry");
                }
            }
        }
    }
    if failures > 1 {
        tracing::warn!(
            failures,
            "outbound publishes failed; the outbox relay will retry them"
        );
    }
    if let Err(error) = outbox::remove(pool, &confirmed).await {
        tracing::warn!(error = %error, "could not clear published outbox rows; they may be sent twice");
    }
}

/// Publishes outbound events whose publisher died between commit and confirm.
pub async fn relay(publisher: Publisher, pool: PgPool) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tick.tick().await;
        match outbox::stranded(&pool, 10, 500).await {
            Ok(pending) if !pending.is_empty() => {
                tracing::info!(count = pending.len(), "publishing stranded outbound events");
                publish_pending(&publisher, &pool, pending).await;
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(error = %error, "outbox relay could not read the outbox"),
        }
    }
}

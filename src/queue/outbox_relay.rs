//! The outbox relay: outbound events are written to `enrich.outbox` in the
//! transaction that caused them and published after its commit; a row is
//! removed only once the broker confirmed it. What a crashed or failed
//! publish left behind is published again by [`relay`], so a crash delays
//! an outbound event but never loses it.

use std::time::Duration;

use sqlx::PgPool;

use super::publisher::Publisher;
use crate::store::outbox::{self, Pending};

/// Publishes outbound events and drops them from the outbox once confirmed.
pub async fn publish_pending(publisher: &Publisher, pool: &PgPool, pending: Vec<Pending>) {
    let mut confirmed = Vec::with_capacity(pending.len());
    for event in pending {
        let body = serde_json::to_vec(&event.body).unwrap_or_default();
        match publisher
            .publish_outbound(&event.routing_key, &body, &event.id.to_string())
            .await
        {
            Ok(()) => confirmed.push(event.id),
            Err(error) => {
                tracing::warn!(error = %error, "outbound publish failed; the outbox relay will retry");
                break;
            }
        }
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

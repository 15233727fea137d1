//! The transactional outbox: outbound events are stored with the change they
//! announce, so a crash between commit and publish delays them instead of
//! losing them.

use sqlx::{PgConnection, PgPool};

use super::StoreError;
use crate::event::Outbound;

/// An outbound event waiting to be published.
#[derive(Debug, Clone, PartialEq)]
pub struct Pending {
    /// Row id, also the AMQP message id.
    pub id: i64,
    /// Event type.
    pub routing_key: String,
    /// JSON body.
    pub body: serde_json::Value,
}

/// Stores an outbound event inside the caller's transaction.
pub async fn enqueue(conn: &mut PgConnection, event: &Outbound) -> Result<Pending, StoreError> {
    let body = event.to_value();
    let (id,): (i64,) = sqlx::query_as(
        "INSERT INTO enrich.outbox (routing_key, body) VALUES ($1, $2) RETURNING id",
    )
    .bind(event.routing_key())
    .bind(&body)
    .fetch_one(&mut *conn)
    .await?;
    Ok(Pending {
        id,
        routing_key: event.routing_key().to_owned(),
        body,
    })
}

/// Forgets events the broker has confirmed.
pub async fn remove(pool: &PgPool, ids: &[i64]) -> Result<(), StoreError> {
    if ids.is_empty() {
        return Ok(());
    }
    sqlx::query("DELETE FROM enrich.outbox WHERE id = ANY($1)")
        .bind(ids)
        .execute(pool)
        .await?;
    Ok(())
}

/// Events left behind for longer than `older_than_secs` (their publisher died).
pub async fn stranded(
    pool: &PgPool,
    older_than_secs: i64,
    limit: i64,
) -> Result<Vec<Pending>, StoreError> {
    let rows: Vec<(i64, String, serde_json::Value)> = sqlx::query_as(
        "SELECT id, routing_key, body FROM enrich.outbox
          WHERE created_at < now() - make_interval(secs => $1) ORDER BY id LIMIT $2",
    )
    .bind(older_than_secs as f64)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, routing_key, body)| Pending {
            id,
            routing_key,
            body,
        })
        .collect())
}

//! Conversation lifecycle: status changes, escalations and closing.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use super::StoreError;
use crate::event::{ConversationClosed, ConversationState, ConversationStatus};

/// enricher's id and customer of a conversation, by the backend's id.
pub async fn find(
    conn: &mut PgConnection,
    workspace_id: &str,
    external_id: &str,
) -> Result<Option<(i64, Uuid)>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT id, customer_id FROM enrich.conversations WHERE workspace_id = $1 AND external_id = $2",
    )
    .bind(workspace_id)
    .bind(external_id)
    .fetch_optional(&mut *conn)
    .await?)
}

/// The customer messages a conversation has had so far.
pub async fn customer_turns<'e>(
    db: impl sqlx::PgExecutor<'e>,
    conversation_id: i64,
) -> Result<i32, StoreError> {
    Ok(
        sqlx::query_scalar("SELECT customer_turns FROM enrich.conversations WHERE id = $1")
            .bind(conversation_id)
            .fetch_one(db)
            .await?,
    )
}

/// Records a status change; a `requesting` status is an escalation and counts
/// as an unresolved query of the customer.
pub async fn record_status(
    conn: &mut PgConnection,
    workspace_id: &str,
    conversation: (i64, Uuid),
    status: &ConversationStatus,
    at: DateTime<Utc>,
) -> Result<(), StoreError> {
    let (conversation_id, customer_id) = conversation;
    sqlx::query(
        "INSERT INTO enrich.conversation_statuses (conversation_id, status, agent_id, reason, occurred_at)
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(conversation_id)
    .bind(status.status.as_str())
    .bind(&status.agent_id)
    .bind(&status.reason)
    .bind(at)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "UPDATE enrich.conversations
            SET status = $2, ended_at = CASE WHEN $2 = 'closed' THEN coalesce(ended_at, $3) ELSE ended_at END
          WHERE id = $1",
    )
    .bind(conversation_id)
    .bind(status.status.as_str())
    .bind(at)
    .execute(&mut *conn)
    .await?;
    if status.status == ConversationState::Requesting {
        sqlx::query(
            "INSERT INTO enrich.escalations (workspace_id, conversation_id, customer_id, status, agent_id, reason, occurred_at)
             VALUES ($1, $2, $3, 'requesting', $4, $5, $6)",
        )
        .bind(workspace_id)
        .bind(conversation_id)
        .bind(customer_id)
        .bind(&status.agent_id)
        .bind(&status.reason)
        .bind(at)
        .execute(&mut *conn)
        .await?;
        sqlx::query(
            "UPDATE enrich.customers SET unresolved_queries = unresolved_queries + 1, updated_at = now() WHERE id = $1",
        )
        .bind(customer_id)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Closes a conversation with its resolution.
pub async fn close(
    conn: &mut PgConnection,
    conversation_id: i64,
    closed: &ConversationClosed,
    at: DateTime<Utc>,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE enrich.conversations
            SET status = 'closed', ended_at = $2, resolved_by = coalesce($3, resolved_by),
                resolution = coalesce($4, resolution)
          WHERE id = $1",
    )
    .bind(conversation_id)
    .bind(at)
    .bind(&closed.resolved_by)
    .bind(&closed.resolution)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

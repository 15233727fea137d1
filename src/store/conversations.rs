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

/// Records a status change. A `requesting` status is an escalation and
/// counts as an unresolved query of the customer (a repeated `requesting`
/// while one is open is the same escalation); leaving `requesting` (for
/// `active`, `intervened` or `closed`) resolves the open escalations,
/// `intervened` naming the agent who handled them.
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
            "WITH opened AS (
                  INSERT INTO enrich.escalation_requests
                         (workspace_id, conversation_id, customer_id, status, agent_id, reason, occurred_at)
                  SELECT $1, $2, $3, 'requesting', $4, $5, $6
                   WHERE NOT EXISTS (SELECT 1 FROM enrich.escalation_requests
                                      WHERE conversation_id = $2 AND resolved_at IS NULL)
                  RETURNING 1)
             UPDATE enrich.customers
                SET unresolved_queries = unresolved_queries + (SELECT count(*) FROM opened)::int,
                    updated_at = now()
              WHERE id = $3",
        )
        .bind(workspace_id)
        .bind(conversation_id)
        .bind(customer_id)
        .bind(&status.agent_id)
        .bind(&status.reason)
        .bind(at)
        .execute(&mut *conn)
        .await?;
    } else {
        let handled_by = match status.status {
            ConversationState::Intervened => status.agent_id.as_deref(),
            _ => None,
        };
        resolve_escalations(conn, conversation_id, customer_id, handled_by, at).await?;
    }
    Ok(())
}

/// Resolves the conversation's open escalations at `at` and takes them off
/// the customer's unresolved queries.
async fn resolve_escalations(
    conn: &mut PgConnection,
    conversation_id: i64,
    customer_id: Uuid,
    handled_by: Option<&str>,
    at: DateTime<Utc>,
) -> Result<(), StoreError> {
    sqlx::query(
        "WITH resolved AS (
              UPDATE enrich.escalation_requests
                 SET resolved = true, resolved_at = greatest(occurred_at, $3), handled_by = $4
               WHERE conversation_id = $1 AND resolved_at IS NULL
              RETURNING 1)
         UPDATE enrich.customers
            SET unresolved_queries = greatest(unresolved_queries - (SELECT count(*) FROM resolved)::int, 0),
                updated_at = now()
          WHERE id = $2 AND EXISTS (SELECT 1 FROM resolved)",
    )
    .bind(conversation_id)
    .bind(customer_id)
    .bind(at)
    .bind(handled_by)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Closes a conversation with its resolution; open escalations resolve.
pub async fn close(
    conn: &mut PgConnection,
    conversation: (i64, Uuid),
    closed: &ConversationClosed,
    at: DateTime<Utc>,
) -> Result<(), StoreError> {
    let (conversation_id, customer_id) = conversation;
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
    resolve_escalations(conn, conversation_id, customer_id, None, at).await
}

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

/// A status or close that arrived before its conversation's first message.
#[derive(Debug, Clone, PartialEq)]
pub enum EarlyEvent {
    /// A `conversation.status`, with when it occurred.
    Status(ConversationStatus, DateTime<Utc>),
    /// A `conversation.closed`, with when it occurred.
    Closed(ConversationClosed, DateTime<Utc>),
}

/// Keeps a status or close of a conversation that has no message yet, to
/// apply when its first message creates it ([`super::openings::check`]).
pub async fn hold_early(
    conn: &mut PgConnection,
    workspace_id: &str,
    event: &EarlyEvent,
) -> Result<(), StoreError> {
    let (event_type, external_id, status, agent_id, reason, resolved_by, resolution, at) =
        match event {
            EarlyEvent::Status(s, at) => (
                "conversation.status",
                &s.conversation_id,
                Some(s.status.as_str()),
                s.agent_id.as_deref(),
                s.reason.as_deref(),
                None,
                None,
                at,
            ),
            EarlyEvent::Closed(c, at) => (
                "conversation.closed",
                &c.conversation_id,
                None,
                None,
                None,
                c.resolved_by.as_deref(),
                c.resolution.as_deref(),
                at,
            ),
        };
    sqlx::query(
        "INSERT INTO enrich.early_conversation_events
             (workspace_id, external_id, event_type, status, agent_id, reason, resolved_by, resolution, occurred_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(workspace_id)
    .bind(external_id)
    .bind(event_type)
    .bind(status)
    .bind(agent_id)
    .bind(reason)
    .bind(resolved_by)
    .bind(resolution)
    .bind(at)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// A row of `enrich.early_conversation_events`: id, type, status, agent,
/// reason, resolver, resolution, time.
pub(super) type EarlyRow = (
    i64,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    DateTime<Utc>,
);

/// A held event as [`super::openings::check`] takes it back; `None` for a
/// status the contract no longer knows.
pub(super) fn early_event(external_id: &str, row: EarlyRow) -> Option<EarlyEvent> {
    let (_, event_type, status, agent_id, reason, resolved_by, resolution, at) = row;
    if event_type == "conversation.closed" {
        return Some(EarlyEvent::Closed(
            ConversationClosed {
                conversation_id: external_id.to_owned(),
                resolved_by,
                resolution,
            },
            at,
        ));
    }
    let status = serde_json::from_value(serde_json::Value::String(status?)).ok()?;
    Some(EarlyEvent::Status(
        ConversationStatus {
            conversation_id: external_id.to_owned(),
            status,
            agent_id,
            reason,
        },
        at,
    ))
}

/// Opens a closed conversation again, as a message after a close does.
pub async fn reopen(conn: &mut PgConnection, conversation_id: i64) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE enrich.conversations SET status = 'active', ended_at = NULL
          WHERE id = $1 AND status = 'closed'",
    )
    .bind(conversation_id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

//! A customer's escalations as `enrich.escalations` shows them: when the
//! bot handed over, why, and whether and by whom it was resolved.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use super::StoreError;

/// One escalation.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow)]
pub struct Escalation {
    /// The chat backend's conversation id.
    pub conversation_id: String,
    /// Platform of the conversation.
    pub platform: String,
    /// Why it was escalated.
    pub reason: Option<String>,
    /// When.
    pub escalated_at: DateTime<Utc>,
    /// When it was resolved.
    pub resolved_at: Option<DateTime<Utc>>,
    /// The agent who handled it.
    pub handled_by: Option<String>,
}

/// The customer's escalations inside `workspace_id`, newest first, at most `limit`.
pub async fn for_customer(
    conn: &mut PgConnection,
    workspace_id: &str,
    customer_id: Uuid,
    limit: i64,
) -> Result<Vec<Escalation>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT conversation_id, platform, reason, escalated_at, resolved_at, handled_by
           FROM enrich.escalations
          WHERE workspace_id = $1 AND customer_id = $2
          ORDER BY escalated_at DESC, escalation_id DESC
          LIMIT $3",
    )
    .bind(workspace_id)
    .bind(customer_id)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?)
}

//! Forgetting a customer: every row with personal data goes; an erasure record
//! that holds no personal data stays as proof.

use sqlx::PgConnection;
use uuid::Uuid;

use super::StoreError;

/// What was erased, for removing the matching cache keys.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Erased {
    /// Backend conversation ids the customer had.
    pub conversation_external_ids: Vec<String>,
}

/// Deletes the customer and everything hanging off it.
pub async fn forget(
    conn: &mut PgConnection,
    workspace_id: &str,
    customer_id: Uuid,
    requested_by: Option<&str>,
    event_id: Option<&str>,
) -> Result<Erased, StoreError> {
    let conversations: Vec<(String,)> = sqlx::query_as(
        "SELECT external_id FROM enrich.conversations WHERE customer_id = $1 AND workspace_id = $2",
    )
    .bind(customer_id)
    .bind(workspace_id)
    .fetch_all(&mut *conn)
    .await?;
    // Rows referencing the customer cascade: identities, fields, history,
    // declines, conversations, messages, asks, tags, escalations, insights.
    sqlx::query("DELETE FROM enrich.customers WHERE id = $1 AND workspace_id = $2")
        .bind(customer_id)
        .bind(workspace_id)
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM enrich.llm_calls WHERE customer_id = $1")
        .bind(customer_id)
        .execute(&mut *conn)
        .await?;
    sqlx::query(
        "INSERT INTO enrich.erasures (workspace_id, customer_id, requested_by, event_id) VALUES ($1, $2, $3, $4)",
    )
    .bind(workspace_id)
    .bind(customer_id)
    .bind(requested_by)
    .bind(event_id)
    .execute(&mut *conn)
    .await?;
    Ok(Erased {
        conversation_external_ids: conversations.into_iter().map(|(id,)| id).collect(),
    })
}

//! Customer insights in Postgres: the summaries waiting to be folded into a
//! customer's insights (`insights_status` on `enrich.conversations`), the
//! per-customer lock that serialises those updates, and the insights
//! themselves (`enrich.customer_insights`). What the insights say and how
//! they are checked lives in `insights::profile`.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::StoreError;

/// Takes the transaction-level lock on the customer's insights; false when
/// another transaction holds it (that updater will fold ours in too).
pub async fn try_lock_customer(
    conn: &mut PgConnection,
    customer_id: Uuid,
) -> Result<bool, StoreError> {
    Ok(
        sqlx::query_scalar("SELECT pg_try_advisory_xact_lock(hashtextextended($1, 0))")
            .bind(format!("enrich.insights:{customer_id}"))
            .fetch_one(&mut *conn)
            .await?,
    )
}

/// A summarised conversation whose summary is not yet in its customer's insights.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PendingSummary {
    /// enricher's conversation id.
    pub id: i64,
    /// Tenant.
    pub workspace_id: String,
    /// The backend's conversation id.
    pub external_id: String,
    /// First message.
    pub started_at: DateTime<Utc>,
    /// The summary; `None` when the conversation was never summarised.
    pub summary: Option<String>,
    /// Sentiment label.
    pub sentiment: Option<String>,
    /// In [-1, 1].
    pub sentiment_score: Option<f32>,
    /// Tags.
    pub topics: Vec<String>,
    /// Who resolved it.
    pub resolved_by: Option<String>,
    /// How.
    pub resolution: Option<String>,
}

/// The customer's oldest summary still pending for the insights.
pub async fn next_pending_summary(
    conn: &mut PgConnection,
    customer_id: Uuid,
) -> Result<Option<PendingSummary>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT id, workspace_id, external_id, started_at, summary, sentiment, sentiment_score, topics,
                resolved_by, resolution
           FROM enrich.conversations
          WHERE customer_id = $1 AND insights_status = 'pending'
          ORDER BY summarized_at, id LIMIT 1",
    )
    .bind(customer_id)
    .fetch_optional(&mut *conn)
    .await?)
}

/// Customers with summaries pending for the insights for more than a few
/// seconds (their updater lost a race or died), at most `limit`.
pub async fn customers_with_stale_pending(
    pool: &PgPool,
    limit: usize,
) -> Result<Vec<Uuid>, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT DISTINCT customer_id FROM enrich.conversations
          WHERE insights_status = 'pending' AND summarized_at < now() - interval '5 seconds'
          LIMIT $1",
    )
    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
    .fetch_all(pool)
    .await?)
}

/// Sets how the conversation's summary went into the insights (`done` or
/// `failed`).
pub async fn set_status(
    conn: &mut PgConnection,
    conversation_id: i64,
    status: &str,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE enrich.conversations SET insights_status = $2 WHERE id = $1")
        .bind(conversation_id)
        .bind(status)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Marks the conversation's summary `failed` for the insights if it is
/// still pending, outside any transaction (after an update could not be
/// stored: its call is spent and is not made again).
pub async fn fail_pending(pool: &PgPool, conversation_id: i64) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE enrich.conversations SET insights_status = 'failed'
          WHERE id = $1 AND insights_status = 'pending'",
    )
    .bind(conversation_id)
    .execute(pool)
    .await?;
    Ok(())
}

/// The customer's stored insights, as stored; `None` before the first.
pub async fn current(
    conn: &mut PgConnection,
    customer_id: Uuid,
) -> Result<Option<Value>, StoreError> {
    Ok(
        sqlx::query_scalar("SELECT insights FROM enrich.customer_insights WHERE customer_id = $1")
            .bind(customer_id)
            .fetch_optional(&mut *conn)
            .await?,
    )
}

/// The backend's ids of every conversation of the customer: what an
/// insight may cite.
pub async fn conversation_ids(
    conn: &mut PgConnection,
    customer_id: Uuid,
) -> Result<HashSet<String>, StoreError> {
    let ids: Vec<String> =
        sqlx::query_scalar("SELECT external_id FROM enrich.conversations WHERE customer_id = $1")
            .bind(customer_id)
            .fetch_all(&mut *conn)
            .await?;
    Ok(ids.into_iter().collect())
}

/// Replaces the customer's insights with `insights`, made by `model` with
/// `prompt_version`, and marks the customer updated.
pub async fn write(
    conn: &mut PgConnection,
    customer_id: Uuid,
    insights: &Value,
    model: &str,
    prompt_version: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO enrich.customer_insights (customer_id, insights, model, prompt_version, updated_at)
         VALUES ($1, $2, $3, $4, now())
         ON CONFLICT (customer_id) DO UPDATE
            SET insights = excluded.insights, model = excluded.model,
                prompt_version = excluded.prompt_version, updated_at = now()",
    )
    .bind(customer_id)
    .bind(insights)
    .bind(model)
    .bind(prompt_version)
    .execute(&mut *conn)
    .await?;
    sqlx::query("UPDATE enrich.customers SET updated_at = now() WHERE id = $1")
        .bind(customer_id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

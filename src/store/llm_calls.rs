//! The accounting of every model call (purpose, model, prompt version,
//! tokens, latency, attempts, outcome, what was refused), one row per call in
//! `enrich.llm_calls`, which the `llm_usage` view aggregates for dashboards.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::postgres::PgArguments;
use sqlx::query::Query;
use sqlx::{PgConnection, Postgres};
use uuid::Uuid;

use super::StoreError;
use super::model_queue::AiStatus;

/// What a call cost.
#[derive(Debug, Clone)]
pub struct Accounting {
    /// Model name.
    pub model: String,
    /// Version of the templates.
    pub prompt_version: String,
    /// Prompt tokens.
    pub prompt_tokens: u32,
    /// Completion tokens.
    pub completion_tokens: u32,
    /// HTTP attempts.
    pub attempts: u32,
    /// Wall time.
    pub latency: Duration,
}

impl Accounting {
    /// The accounting of a call that was never sent (its prompt failed to render).
    pub fn unsent(model: &str, prompt_version: &str) -> Accounting {
        Accounting {
            model: model.to_owned(),
            prompt_version: prompt_version.to_owned(),
            prompt_tokens: 0,
            completion_tokens: 0,
            attempts: 0,
            latency: Duration::ZERO,
        }
    }
}

/// The worker's own share of an enrichment call's message, apart from the
/// model (see migrations 0010 and 0011).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerTiming {
    /// When the worker received the event from the broker.
    pub received_at: DateTime<Utc>,
    /// How long the message waited in the model stage behind earlier
    /// messages of its conversation.
    pub queued: Duration,
}

/// The row of one call in `enrich.llm_calls`.
pub struct CallRow<'a> {
    /// Tenant.
    pub workspace_id: &'a str,
    /// enricher's conversation id.
    pub conversation_id: i64,
    /// The customer.
    pub customer_id: Uuid,
    /// The customer message the call was about, for enrichment calls.
    pub message_id: Option<i64>,
    /// `enrich`, `summary` or `insights`.
    pub purpose: &'static str,
    /// Stable outcome code.
    pub outcome: &'static str,
    /// What was dropped from the answer, by reason.
    pub rejections: BTreeMap<String, u32>,
    /// The worker's own timing, for enrichment calls of live messages.
    pub timing: Option<WorkerTiming>,
}

fn clamp(value: u128) -> i32 {
    i32::try_from(value).unwrap_or(i32::MAX)
}

fn micros(duration: Duration) -> i64 {
    i64::try_from(duration.as_micros()).unwrap_or(i64::MAX)
}

/// The columns every call row fills, bound by [`bind_call`] as `$1`–`$16`.
macro_rules! call_columns {
    () => {
        "INSERT INTO enrich.llm_calls (workspace_id, conversation_id, customer_id, purpose, model, prompt_version,
                                       prompt_tokens, completion_tokens, latency_ms, attempts, outcome, rejections,
                                       message_id, event_received_at, stage_queue_us, latency_us)"
    };
}

fn bind_call<'q>(
    query: Query<'q, Postgres, PgArguments>,
    row: &'q CallRow<'q>,
    accounting: &'q Accounting,
) -> Query<'q, Postgres, PgArguments> {
    query
        .bind(row.workspace_id)
        .bind(row.conversation_id)
        .bind(row.customer_id)
        .bind(row.purpose)
        .bind(&accounting.model)
        .bind(&accounting.prompt_version)
        .bind(clamp(u128::from(accounting.prompt_tokens)))
        .bind(clamp(u128::from(accounting.completion_tokens)))
        .bind(clamp(accounting.latency.as_millis()))
        .bind(clamp(u128::from(accounting.attempts)))
        .bind(row.outcome)
        .bind(sqlx::types::Json(&row.rejections))
        .bind(row.message_id)
        .bind(row.timing.map(|t| t.received_at))
        .bind(row.timing.map(|t| micros(t.queued)))
        .bind(micros(accounting.latency))
}

/// Records a call inside the caller's transaction.
pub async fn record(
    conn: &mut PgConnection,
    row: &CallRow<'_>,
    accounting: &Accounting,
) -> Result<(), StoreError> {
    let query = sqlx::query(concat!(
        call_columns!(),
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)"
    ));
    bind_call(query, row, accounting)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Records the call about a message and sets the message's `ai_status` to
/// `message_status` in one statement, only while the message is still
/// pending: false, with nothing written, when another worker finished the
/// message first. Outside a transaction the statement commits on its own.
pub async fn record_for_pending_message(
    conn: &mut PgConnection,
    row: &CallRow<'_>,
    accounting: &Accounting,
    message_status: AiStatus,
) -> Result<bool, StoreError> {
    let query = sqlx::query(concat!(
        "WITH finished AS (
             UPDATE enrich.messages SET ai_status = $17
              WHERE id = $13 AND ai_status = 'pending'
              RETURNING id) ",
        call_columns!(),
        " SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, finished.id, $14, $15, $16 FROM finished"
    ));
    let inserted = bind_call(query, row, accounting)
        .bind(message_status)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    Ok(inserted == 1)
}

//! What an operator asks of Postgres about a running deployment: the figures
//! the worker samples into its metrics (outbox backlog, messages waiting for
//! the model, asks by outcome) and the model usage `enricher status` shows.
//! Only counts, codes and versions: never a message, name or value.

use std::collections::BTreeMap;

use sqlx::PgPool;

use super::StoreError;

/// Database-wide figures sampled into gauges.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Backlogs {
    /// Outbound events not yet confirmed by the broker.
    pub outbox: i64,
    /// Messages waiting for the model (`pending` or `running`).
    pub model_pending: i64,
    /// Asks ever recorded, by outcome.
    pub asks_by_outcome: BTreeMap<String, i64>,
}

/// Reads the sampled figures.
pub async fn backlogs(pool: &PgPool) -> Result<Backlogs, StoreError> {
    let (outbox, model_pending): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM enrich.outbox),
                (SELECT count(*) FROM enrich.messages WHERE ai_status IN ('pending', 'running'))",
    )
    .fetch_one(pool)
    .await?;
    let asks: Vec<(String, i64)> =
        sqlx::query_as("SELECT outcome, count(*) FROM enrich.asks GROUP BY outcome")
            .fetch_all(pool)
            .await?;
    Ok(Backlogs {
        outbox,
        model_pending,
        asks_by_outcome: asks.into_iter().collect(),
    })
}

/// Model calls of one purpose over a window.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct CallWindow {
    /// `enrich`, `summary` or `insights`.
    pub purpose: String,
    /// Calls made.
    pub calls: i64,
    /// Calls whose outcome was not `ok`.
    pub failed: i64,
    /// Prompt tokens spent.
    pub prompt_tokens: i64,
    /// Completion tokens spent.
    pub completion_tokens: i64,
}

/// Model usage over the last hour and the last day, by purpose, and the
/// prompt version of the latest enrichment call.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ModelUsage {
    /// The last hour.
    pub last_hour: Vec<CallWindow>,
    /// The last 24 hours.
    pub last_day: Vec<CallWindow>,
    /// Prompt version of the most recent enrichment call, if any.
    pub latest_prompt_version: Option<String>,
    /// Messages whose model call failed in the last hour.
    pub failed_messages_last_hour: i64,
}

async fn window(pool: &PgPool, hours: i32) -> Result<Vec<CallWindow>, StoreError> {
    let rows: Vec<(String, i64, i64, i64, i64)> = sqlx::query_as(
        "SELECT purpose, count(*), count(*) FILTER (WHERE outcome <> 'ok'),
                COALESCE(sum(prompt_tokens), 0)::bigint, COALESCE(sum(completion_tokens), 0)::bigint
           FROM enrich.llm_calls
          WHERE created_at > now() - make_interval(hours => $1)
          GROUP BY purpose ORDER BY purpose",
    )
    .bind(hours)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(
            |(purpose, calls, failed, prompt_tokens, completion_tokens)| CallWindow {
                purpose,
                calls,
                failed,
                prompt_tokens,
                completion_tokens,
            },
        )
        .collect())
}

/// Reads the model usage.
pub async fn model_usage(pool: &PgPool) -> Result<ModelUsage, StoreError> {
    let last_hour = window(pool, 1).await?;
    let last_day = window(pool, 24).await?;
    let latest_prompt_version: Option<String> = sqlx::query_scalar(
        "SELECT prompt_version FROM enrich.llm_calls
          WHERE purpose = 'enrich' ORDER BY created_at DESC LIMIT 1",
    )
    .fetch_optional(pool)
    .await?
    .flatten();
    let failed_messages_last_hour = last_hour
        .iter()
        .filter(|w| w.purpose == "enrich")
        .map(|w| w.failed)
        .sum();
    Ok(ModelUsage {
        last_hour,
        last_day,
        latest_prompt_version,
        failed_messages_last_hour,
    })
}

/// Answers whether Postgres takes a query at all (for readiness).
pub async fn ping(pool: &PgPool) -> Result<(), StoreError> {
    sqlx::query("SELECT 1").execute(pool).await?;
    Ok(())
}

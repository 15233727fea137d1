//! Conversation summaries in Postgres: the sweepers' claim on an ended
//! conversation (`summary_status`, `summary_claim`, `summary_claimed_at` on
//! `enrich.conversations`), the transcript a summary is made from, and the
//! writes that land only while the claim is still the writer's. What a
//! summary says and how it is checked lives in `insights::summary`.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::StoreError;

/// A conversation this worker claimed, as the claim returned it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Claimed {
    /// enricher's id.
    pub id: i64,
    /// Tenant.
    pub workspace_id: String,
    /// The chat backend's id.
    pub external_id: String,
    /// The customer.
    pub customer_id: Uuid,
    /// Platform.
    pub platform: String,
    /// Status at the claim.
    pub status: String,
    /// First message.
    pub started_at: DateTime<Utc>,
    /// Last message (source time).
    pub last_message_at: Option<DateTime<Utc>>,
    /// Close time.
    pub ended_at: Option<DateTime<Utc>>,
    /// Who resolved it, as the backend said.
    pub resolved_by: Option<String>,
    /// How, as the backend said.
    pub resolution: Option<String>,
    /// Customer messages.
    pub customer_turns: i32,
    /// The claim token; writes land only while it is still ours.
    pub summary_claim: Uuid,
}

/// Claims the oldest due conversation: closed, or idle on both clocks, and
/// not yet summarised (or claimed by a worker that has not finished in time).
const CLAIM: &str = "
UPDATE enrich.conversations c
   SET summary_status = 'claimed', summary_claim = $3, summary_claimed_at = now()
 WHERE c.id = (
       SELECT d.id FROM enrich.conversations d
        WHERE d.summarized_at IS NULL
          AND (d.summary_status IS NULL
               OR (d.summary_status = 'claimed'
                   AND d.summary_claimed_at < now() - make_interval(secs => $2)))
          AND (d.status = 'closed'
               OR (coalesce(d.last_message_at, d.started_at) < now() - make_interval(secs => $1)
                   AND coalesce((SELECT m.stored_at FROM enrich.messages m
                                  WHERE m.conversation_id = d.id ORDER BY m.id DESC LIMIT 1),
                                '-infinity') < now() - make_interval(secs => $1)))
        ORDER BY d.last_message_at NULLS FIRST, d.id
        LIMIT 1
          FOR UPDATE SKIP LOCKED)
RETURNING c.id, c.workspace_id, c.external_id, c.customer_id, c.platform, c.status, c.started_at,
          c.last_message_at, c.ended_at, c.resolved_by, c.resolution, c.customer_turns, c.summary_claim";

/// Claims the oldest conversation due for its summary: closed, or idle for
/// `idle` on both clocks (the last message's source time and the time it
/// was stored), and not yet summarised, or claimed longer than `reclaim`
/// ago by a worker that never finished. `None` when nothing is due.
pub async fn claim(
    pool: &PgPool,
    idle: Duration,
    reclaim: Duration,
) -> Result<Option<Claimed>, StoreError> {
    Ok(sqlx::query_as(CLAIM)
        .bind(idle.as_secs_f64())
        .bind(reclaim.as_secs_f64())
        .bind(Uuid::new_v4())
        .fetch_optional(pool)
        .await?)
}

/// One stored message of the transcript.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TranscriptRow {
    /// `customer`, `bot`, `agent` or `system`.
    pub sender: String,
    /// The agent, for agent messages.
    pub agent_id: Option<String>,
    /// Text.
    pub text: String,
    /// Source time.
    pub occurred_at: DateTime<Utc>,
}

/// The last `max` messages of a conversation and how many earlier ones are left out.
pub async fn transcript(
    pool: &PgPool,
    conversation_id: i64,
    max: usize,
) -> Result<(Vec<TranscriptRow>, usize), StoreError> {
    let limit = i64::try_from(max.max(1)).unwrap_or(i64::MAX);
    let mut rows: Vec<TranscriptRow> = sqlx::query_as(
        "SELECT sender, agent_id, text, occurred_at FROM enrich.messages
          WHERE conversation_id = $1 ORDER BY id DESC LIMIT $2",
    )
    .bind(conversation_id)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.reverse();
    let total: i64 =
        sqlx::query_scalar("SELECT count(*) FROM enrich.messages WHERE conversation_id = $1")
            .bind(conversation_id)
            .fetch_one(pool)
            .await?;
    let omitted = usize::try_from(total)
        .unwrap_or(0)
        .saturating_sub(rows.len());
    Ok((rows, omitted))
}

/// A checked summary as it is stored on the conversation.
#[derive(Debug, Clone, PartialEq)]
pub struct SummaryWrite<'a> {
    /// The text.
    pub summary: &'a str,
    /// Sentiment label.
    pub sentiment: &'a str,
    /// In [-1, 1].
    pub sentiment_score: f32,
    /// Tags.
    pub topics: &'a [String],
    /// The model's reading of who resolved it; the backend's, if any, wins.
    pub resolved_by: Option<&'a str>,
    /// The model's resolution text; the backend's, if any, wins.
    pub resolution: &'a str,
    /// The model's resolution time; the backend's, if any, wins.
    pub resolved_at: Option<DateTime<Utc>>,
}

/// The conversation as the summary's write left it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Written {
    /// Its customer at the write (a merge may have moved it).
    pub customer_id: Uuid,
    /// Who resolved it, the backend's word first.
    pub resolved_by: Option<String>,
    /// How, the backend's word first.
    pub resolution: Option<String>,
    /// When, the backend's word first.
    pub resolved_at: Option<DateTime<Utc>>,
    /// Close time.
    pub ended_at: Option<DateTime<Utc>>,
}

/// Stores a summary on the claimed conversation, marks it done and its
/// customer's insights pending, and recomputes the customer's average
/// sentiment; `None`, with nothing written, when the claim is no longer ours.
pub async fn write(
    conn: &mut PgConnection,
    claimed: &Claimed,
    summary: &SummaryWrite<'_>,
) -> Result<Option<Written>, StoreError> {
    let written: Option<Written> = sqlx::query_as(
        "UPDATE enrich.conversations
            SET summary = $3, sentiment = $4, sentiment_score = $5, topics = $6,
                resolved_by = coalesce(resolved_by, $7), resolution = coalesce(resolution, $8),
                resolved_at = coalesce(resolved_at, $9),
                summary_status = 'done', summarized_at = now(), insights_status = 'pending'
          WHERE id = $1 AND summary_claim = $2 AND summary_status = 'claimed'
      RETURNING customer_id, resolved_by, resolution, resolved_at, ended_at",
    )
    .bind(claimed.id)
    .bind(claimed.summary_claim)
    .bind(summary.summary)
    .bind(summary.sentiment)
    .bind(summary.sentiment_score)
    .bind(summary.topics)
    .bind(summary.resolved_by)
    .bind(summary.resolution)
    .bind(summary.resolved_at)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(written) = &written {
        update_avg_sentiment(conn, written.customer_id).await?;
    }
    Ok(written)
}

/// Marks a claimed conversation as finished without a summary, with
/// `status` (`failed`, `offline` or `skipped`); false when the claim is no
/// longer ours.
pub async fn finish_claim(
    conn: &mut PgConnection,
    claimed: &Claimed,
    status: &str,
) -> Result<bool, StoreError> {
    let updated = sqlx::query(
        "UPDATE enrich.conversations SET summary_status = $3, summarized_at = now()
          WHERE id = $1 AND summary_claim = $2 AND summary_status = 'claimed'",
    )
    .bind(claimed.id)
    .bind(claimed.summary_claim)
    .bind(status)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(updated > 0)
}

/// Recomputes the customer's average sentiment from their conversations.
async fn update_avg_sentiment(
    conn: &mut PgConnection,
    customer_id: Uuid,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE enrich.customers
            SET avg_sentiment = (SELECT avg(sentiment_score)::real FROM enrich.conversations
                                  WHERE customer_id = $1 AND sentiment_score IS NOT NULL),
                updated_at = now()
          WHERE id = $1",
    )
    .bind(customer_id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

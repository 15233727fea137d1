//! The model queue: customer messages waiting for the model, kept in the
//! message's own row (`enrich.messages.ai_status`) so the queue commits with
//! the message and survives any crash. `record_chat_message` marks a message
//! [`AiStatus::Pending`] as it stores it; the lane clears the mark
//! ([`unmark`]) in the same transaction when the model is not needed; the
//! model stage finishes it as done (with its call's row, see
//! [`super::llm_calls::record_for_pending_message`]), skipped or failed
//! ([`finish`]), and after a restart scans what is still pending
//! ([`pending_page`]). Every write that finishes a message lands only while
//! it is still pending, so two workers racing on one message write once.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::postgres::{PgArgumentBuffer, PgTypeInfo, PgValueRef};
use sqlx::{PgConnection, PgPool, Postgres};
use uuid::Uuid;

use super::StoreError;

/// Where a message stands with the model (`enrich.messages.ai_status`; a
/// message the model never needed has none). Migration 0017's CHECK
/// constraint lists the same states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AiStatus {
    /// Stored and waiting for the model stage.
    Pending,
    /// The model was called and its decision written.
    Done,
    /// The stage decided not to call (gate, budget, unknown workspace).
    Skipped,
    /// The call or the writing of its outcome failed; the message stays
    /// stored without AI enrichment.
    Failed,
}

impl AiStatus {
    /// Every state, in lifecycle order.
    pub const ALL: [AiStatus; 4] = [
        AiStatus::Pending,
        AiStatus::Done,
        AiStatus::Skipped,
        AiStatus::Failed,
    ];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            AiStatus::Pending => "pending",
            AiStatus::Done => "done",
            AiStatus::Skipped => "skipped",
            AiStatus::Failed => "failed",
        }
    }
}

impl fmt::Display for AiStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A stored `ai_status` this build does not know.
#[derive(Debug, thiserror::Error)]
#[error("unknown ai_status {0:?}")]
pub struct UnknownAiStatus(String);

impl FromStr for AiStatus {
    type Err = UnknownAiStatus;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        AiStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == name)
            .ok_or_else(|| UnknownAiStatus(name.to_owned()))
    }
}

impl sqlx::Type<Postgres> for AiStatus {
    fn type_info() -> PgTypeInfo {
        <&str as sqlx::Type<Postgres>>::type_info()
    }

    fn compatible(ty: &PgTypeInfo) -> bool {
        <&str as sqlx::Type<Postgres>>::compatible(ty)
    }
}

impl sqlx::Encode<'_, Postgres> for AiStatus {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        <&str as sqlx::Encode<Postgres>>::encode(self.as_str(), buf)
    }
}

impl<'r> sqlx::Decode<'r, Postgres> for AiStatus {
    fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
        let name = <&str as sqlx::Decode<Postgres>>::decode(value)?;
        Ok(name.parse()?)
    }
}

/// A message left pending, with what the model stage needs to queue it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct PendingMessage {
    /// Tenant.
    pub workspace_id: String,
    /// The event that carried the message.
    pub event_id: String,
    /// The backend's conversation id.
    pub conversation: String,
    /// enricher's conversation id.
    pub conversation_id: i64,
    /// The message's customer.
    pub customer_id: Uuid,
    /// enricher's message id.
    pub message_id: i64,
    /// The message's customer turn.
    pub customer_turn: Option<i32>,
    /// Text.
    pub text: String,
}

/// One page of the messages still pending that were stored at least
/// `older_than` ago: those with ids above `after`, oldest first, at most
/// `limit`. The next page starts after the last id of this one; a page
/// shorter than `limit` is the last.
///
/// `'pending'` is written out rather than bound: the planner matches the
/// partial index `messages_ai_pending` only against a literal, also in the
/// generic plan of a prepared statement.
pub async fn pending_page(
    pool: &PgPool,
    older_than: Duration,
    after: i64,
    limit: u32,
) -> Result<Vec<PendingMessage>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT m.workspace_id, m.event_id, c.external_id AS conversation, m.conversation_id,
                m.customer_id, m.id AS message_id, m.customer_turn, m.text
           FROM enrich.messages m JOIN enrich.conversations c ON c.id = m.conversation_id
          WHERE m.ai_status = 'pending' AND m.id > $1
            AND m.stored_at <= now() - make_interval(secs => $2)
          ORDER BY m.id LIMIT $3",
    )
    .bind(after)
    .bind(older_than.as_secs_f64())
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await?)
}

/// Clears the pending mark `record_chat_message` set, for a message the
/// decision core left nothing for the model to do with (inside the message's
/// own transaction).
pub async fn unmark(conn: &mut PgConnection, message_id: i64) -> Result<(), StoreError> {
    sqlx::query("UPDATE enrich.messages SET ai_status = NULL WHERE id = $1")
        .bind(message_id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Finishes a pending message as `status` without a call row (skipped, or
/// failed before anything could be recorded); false when it was no longer
/// pending (another worker finished it, or it was erased).
pub async fn finish<'e>(
    db: impl sqlx::PgExecutor<'e>,
    message_id: i64,
    status: AiStatus,
) -> Result<bool, StoreError> {
    let updated =
        sqlx::query("UPDATE enrich.messages SET ai_status = $2 WHERE id = $1 AND ai_status = $3")
            .bind(message_id)
            .bind(status)
            .bind(AiStatus::Pending)
            .execute(db)
            .await?
            .rows_affected();
    Ok(updated == 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_reads_back_from_its_stored_name() {
        for status in AiStatus::ALL {
            assert_eq!(status.as_str().parse::<AiStatus>().ok(), Some(status));
            assert_eq!(status.to_string(), status.as_str());
        }
    }

    #[test]
    fn dropped_and_unknown_names_are_refused() {
        for name in ["running", "PENDING", ""] {
            assert!(name.parse::<AiStatus>().is_err(), "{name}");
        }
    }
}

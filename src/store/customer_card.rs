//! What the API's profile card, history, transcript and per-customer export
//! read beyond [`super::profiles::card`] (which the CLI's card also uses):
//! field evidence, visitor metadata, asks and their outcomes, the
//! conversations insights cite, and the paginated lists of conversations,
//! messages and field changes. Every query is scoped to one workspace, so a
//! customer or conversation of another workspace is simply not found.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use super::StoreError;

/// Whether the customer exists in this workspace.
pub async fn exists(
    conn: &mut PgConnection,
    workspace_id: &str,
    customer_id: Uuid,
) -> Result<bool, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM enrich.customers WHERE id = $1 AND workspace_id = $2)",
    )
    .bind(customer_id)
    .bind(workspace_id)
    .fetch_one(&mut *conn)
    .await?)
}

/// The current value of one field with its evidence.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct FieldDetail {
    /// Field name.
    pub field: String,
    /// Current value.
    pub value: String,
    /// Source of the value.
    pub source: String,
    /// Who wrote it.
    pub actor: Option<String>,
    /// The customer's words the value was taken from.
    pub evidence: Option<String>,
    /// Model confidence, for model values.
    pub confidence: Option<f32>,
    /// Model that proposed it.
    pub model: Option<String>,
    /// When it was written.
    pub updated_at: DateTime<Utc>,
}

/// Current fields, by name.
pub async fn fields(
    conn: &mut PgConnection,
    customer_id: Uuid,
) -> Result<Vec<FieldDetail>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT field, value, source, actor, evidence, confidence, model, updated_at
           FROM enrich.customer_fields WHERE customer_id = $1 ORDER BY field",
    )
    .bind(customer_id)
    .fetch_all(&mut *conn)
    .await?)
}

/// An identity with the visitor metadata the chat backend sent.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct IdentityDetail {
    /// Platform.
    pub platform: String,
    /// The user's id there.
    pub platform_user_id: String,
    /// First message from it.
    pub first_seen_at: DateTime<Utc>,
    /// Latest message from it.
    pub last_seen_at: DateTime<Utc>,
    /// Visitor metadata as sent (IP included: the caller decides what to show).
    pub visitor: Option<serde_json::Value>,
}

/// Identities, most recently seen first.
pub async fn identities(
    conn: &mut PgConnection,
    customer_id: Uuid,
) -> Result<Vec<IdentityDetail>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT platform, platform_user_id, first_seen_at, last_seen_at, visitor
           FROM enrich.customer_identities WHERE customer_id = $1
          ORDER BY last_seen_at DESC, platform, platform_user_id",
    )
    .bind(customer_id)
    .fetch_all(&mut *conn)
    .await?)
}

/// One ask and how it ended.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AskDetail {
    /// Conversation it was asked in (backend id).
    pub conversation_id: String,
    /// Field asked for.
    pub field: String,
    /// The question.
    pub question: String,
    /// Why it was asked.
    pub reason: String,
    /// `answered`, `declined`, `ignored` or `pending`.
    pub outcome: String,
    /// When.
    pub asked_at: DateTime<Utc>,
    /// When the outcome was known.
    pub outcome_at: Option<DateTime<Utc>>,
}

/// Asks, newest first, at most `limit`.
pub async fn asks(
    conn: &mut PgConnection,
    customer_id: Uuid,
    limit: i64,
) -> Result<Vec<AskDetail>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT conversation_id, field, question, reason, outcome, asked_at, outcome_at
           FROM enrich.ask_log WHERE customer_id = $1
          ORDER BY asked_at DESC LIMIT $2",
    )
    .bind(customer_id)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?)
}

/// A conversation an insight cites.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct CitedConversation {
    /// Backend id.
    pub conversation_id: String,
    /// First message.
    pub started_at: DateTime<Utc>,
    /// Its summary.
    pub summary: Option<String>,
}

/// The customer's conversations among `ids`.
pub async fn cited_conversations(
    conn: &mut PgConnection,
    customer_id: Uuid,
    ids: &[String],
) -> Result<Vec<CitedConversation>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT external_id AS conversation_id, started_at, summary
           FROM enrich.conversations WHERE customer_id = $1 AND external_id = ANY ($2)
          ORDER BY started_at DESC",
    )
    .bind(customer_id)
    .bind(ids)
    .fetch_all(&mut *conn)
    .await?)
}

/// One conversation of a customer's list.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ConversationDetail {
    /// Internal key (the pagination position).
    pub key: i64,
    /// Backend id.
    pub conversation_id: String,
    /// Platform.
    pub platform: String,
    /// Status.
    pub status: String,
    /// First message.
    pub started_at: DateTime<Utc>,
    /// Latest message.
    pub last_message_at: Option<DateTime<Utc>>,
    /// When it closed.
    pub ended_at: Option<DateTime<Utc>>,
    /// Messages of every sender.
    pub message_count: i32,
    /// Summary.
    pub summary: Option<String>,
    /// `positive`, `neutral`, `negative`.
    pub sentiment: Option<String>,
    /// -1 … 1.
    pub sentiment_score: Option<f32>,
    /// Topics.
    pub topics: Vec<String>,
    /// How it was resolved.
    pub resolution: Option<String>,
    /// Who resolved it.
    pub resolved_by: Option<String>,
    /// Escalations in it.
    pub escalations: i32,
    /// When it was resolved.
    pub resolved_at: Option<DateTime<Utc>>,
}

/// A customer's conversations, most recent first, after `before` (a key).
pub async fn conversations(
    conn: &mut PgConnection,
    customer_id: Uuid,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<ConversationDetail>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT cv.id AS key, cv.external_id AS conversation_id, cv.platform, cv.status,
                cv.started_at, cv.last_message_at, cv.ended_at, cv.message_count, cv.summary,
                cv.sentiment, cv.sentiment_score, cv.topics, cv.resolution, cv.resolved_by,
                (SELECT count(*) FROM enrich.escalation_requests e
                  WHERE e.conversation_id = cv.id)::int AS escalations, cv.resolved_at
           FROM enrich.conversations cv
          WHERE cv.customer_id = $1 AND ($2::bigint IS NULL OR cv.id < $2)
          ORDER BY cv.id DESC LIMIT $3",
    )
    .bind(customer_id)
    .bind(before)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?)
}

/// The internal key of a workspace's conversation, by backend id.
pub async fn conversation_key(
    conn: &mut PgConnection,
    workspace_id: &str,
    conversation_id: &str,
) -> Result<Option<i64>, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT id FROM enrich.conversations WHERE workspace_id = $1 AND external_id = $2",
    )
    .bind(workspace_id)
    .bind(conversation_id)
    .fetch_optional(&mut *conn)
    .await?)
}

/// One message of a transcript.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct MessageDetail {
    /// Internal key (the pagination position).
    pub key: i64,
    /// The chat backend's event id.
    pub event_id: String,
    /// `customer`, `bot`, `agent`, `system`.
    pub sender: String,
    /// The agent who wrote it.
    pub agent_id: Option<String>,
    /// Text.
    pub text: String,
    /// When it was sent.
    pub occurred_at: DateTime<Utc>,
}

/// A conversation's messages in order, after the key `after`.
pub async fn messages(
    conn: &mut PgConnection,
    conversation_key: i64,
    after: Option<i64>,
    limit: i64,
) -> Result<Vec<MessageDetail>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT id AS key, event_id, sender, agent_id, text, occurred_at
           FROM enrich.messages
          WHERE conversation_id = $1 AND ($2::bigint IS NULL OR id > $2)
          ORDER BY id LIMIT $3",
    )
    .bind(conversation_key)
    .bind(after)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?)
}

/// One field change.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ChangeDetail {
    /// Its id (the pagination position).
    pub change_id: i64,
    /// Field.
    pub field: String,
    /// Value before (`None`: the field was new).
    pub old_value: Option<String>,
    /// Value after (`None`: the field was cleared).
    pub new_value: Option<String>,
    /// Source.
    pub source: String,
    /// Who.
    pub actor: Option<String>,
    /// Model, for model values.
    pub model: Option<String>,
    /// When.
    pub changed_at: DateTime<Utc>,
}

/// A customer's field changes, newest first, before the id `before`.
pub async fn history(
    conn: &mut PgConnection,
    customer_id: Uuid,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<ChangeDetail>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT change_id, field, old_value, new_value, source, actor, model, changed_at
           FROM enrich.field_history
          WHERE customer_id = $1 AND ($2::bigint IS NULL OR change_id < $2)
          ORDER BY change_id DESC LIMIT $3",
    )
    .bind(customer_id)
    .bind(before)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?)
}

/// A message with the backend id of its conversation.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct CustomerMessage {
    /// Backend id of the conversation.
    pub conversation_id: String,
    /// The message.
    #[sqlx(flatten)]
    pub message: MessageDetail,
}

/// Every message of a customer, oldest first (the per-customer export).
pub async fn all_messages(
    conn: &mut PgConnection,
    customer_id: Uuid,
) -> Result<Vec<CustomerMessage>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT cv.external_id AS conversation_id, m.id AS key, m.event_id, m.sender,
                m.agent_id, m.text, m.occurred_at
           FROM enrich.messages m JOIN enrich.conversations cv ON cv.id = m.conversation_id
          WHERE m.customer_id = $1 ORDER BY m.id",
    )
    .bind(customer_id)
    .fetch_all(&mut *conn)
    .await?)
}

/// Current tags of a customer, sorted.
pub async fn tags(conn: &mut PgConnection, customer_id: Uuid) -> Result<Vec<String>, StoreError> {
    Ok(
        sqlx::query_scalar("SELECT tag FROM enrich.tags WHERE customer_id = $1 ORDER BY tag")
            .bind(customer_id)
            .fetch_all(&mut *conn)
            .await?,
    )
}

/// Attaches another identity to a customer; returns the customer the
/// identity belongs to afterwards (another one when it was taken).
pub async fn attach_identity(
    conn: &mut PgConnection,
    workspace_id: &str,
    platform: &str,
    platform_user_id: &str,
    customer_id: Uuid,
) -> Result<Uuid, StoreError> {
    sqlx::query(
        "INSERT INTO enrich.customer_identities (workspace_id, platform, platform_user_id, customer_id)
         VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
    )
    .bind(workspace_id)
    .bind(platform)
    .bind(platform_user_id)
    .bind(customer_id)
    .execute(&mut *conn)
    .await?;
    Ok(sqlx::query_scalar(
        "SELECT customer_id FROM enrich.customer_identities
          WHERE workspace_id = $1 AND platform = $2 AND platform_user_id = $3",
    )
    .bind(workspace_id)
    .bind(platform)
    .bind(platform_user_id)
    .fetch_one(&mut *conn)
    .await?)
}

/// The customer `customer_id` was merged into, if it was.
pub async fn merged_into(
    conn: &mut PgConnection,
    customer_id: Uuid,
) -> Result<Option<Uuid>, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT into_customer FROM enrich.merges WHERE from_customer = $1
          ORDER BY merged_at DESC LIMIT 1",
    )
    .bind(customer_id)
    .fetch_optional(&mut *conn)
    .await?)
}

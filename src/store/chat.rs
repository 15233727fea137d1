//! Recording chat messages, alone or in runs: one call that dedupes by event
//! id, finds or creates the customer through the identity, opens the
//! conversation and keeps every counter; and reading a conversation's turns
//! back.

use sqlx::PgConnection;
use uuid::Uuid;

use super::StoreError;
use crate::event::{ChatMessage, Envelope, Sender};
use crate::turn::Turn;

/// What recording a message produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    /// The event id was seen before: nothing was written.
    Duplicate,
    /// The message is stored.
    Stored(Box<StoredMessage>),
}

/// What recording a customer message prepares for the model stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelHandoff {
    /// No model is configured: the message is decided in its own transaction.
    None,
    /// A customer message of a workspace with enrichment on is marked
    /// `pending`, and the tokens its conversation spent come back with it.
    Pending {
        /// How many turns before the message the model sees.
        recent_turns: usize,
    },
}

/// Ids and counters of a freshly stored message: what only Postgres knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    /// The customer the message belongs to.
    pub customer_id: Uuid,
    /// enricher's conversation id.
    pub conversation_id: i64,
    /// The stored message's id.
    pub message_id: i64,
    /// The identity was new: an anonymous customer was created.
    pub new_customer: bool,
    /// The conversation was new.
    pub new_conversation: bool,
    /// The workspace's enrichment switch.
    pub enrichment_enabled: bool,
    /// The workspace's default phone region.
    pub default_region: Option<String>,
    /// Customer messages in this conversation so far, this one included.
    pub customer_turn: i32,
    /// Messages in this conversation so far, this one included.
    pub message_count: i64,
    /// The customer's decision-state version (`customers.state_version`).
    pub state_version: i64,
    /// Model tokens the conversation has spent, for a message marked `pending`.
    pub spent_tokens: Option<i64>,
}

/// Workspace defaults used when a message creates its workspace.
#[derive(Debug, Clone, Copy)]
pub struct WorkspaceDefaults<'a> {
    /// Enrichment on or off.
    pub enrichment: bool,
    /// Default phone region.
    pub default_region: Option<&'a str>,
}

#[derive(sqlx::FromRow)]
struct RecordRow {
    duplicate: bool,
    customer_id: Option<Uuid>,
    conversation_id: Option<i64>,
    message_id: Option<i64>,
    new_customer: Option<bool>,
    new_conversation: Option<bool>,
    enrichment_enabled: Option<bool>,
    default_region: Option<String>,
    customer_turn: Option<i32>,
    message_count: Option<i32>,
    state_version: Option<i64>,
    spent_tokens: Option<i64>,
}

impl RecordRow {
    fn into_recorded(self) -> Result<Recorded, StoreError> {
        if self.duplicate {
            return Ok(Recorded::Duplicate);
        }
        match (self.customer_id, self.conversation_id, self.message_id) {
            (Some(customer_id), Some(conversation_id), Some(message_id)) => {
                Ok(Recorded::Stored(Box::new(StoredMessage {
                    customer_id,
                    conversation_id,
                    message_id,
                    new_customer: self.new_customer.unwrap_or(false),
                    new_conversation: self.new_conversation.unwrap_or(false),
                    enrichment_enabled: self.enrichment_enabled.unwrap_or(true),
                    default_region: self.default_region,
                    customer_turn: self.customer_turn.unwrap_or(0),
                    message_count: i64::from(self.message_count.unwrap_or(1)),
                    state_version: self.state_version.unwrap_or(0),
                    spent_tokens: self.spent_tokens,
                })))
            }
            _ => Err(StoreError::Permanent(sqlx::Error::Protocol(
                "recording a chat message returned no ids".into(),
            ))),
        }
    }
}

/// One message of a run given to [`record_messages`].
#[derive(Debug, Clone, Copy)]
pub struct RunMessage<'a> {
    /// The event's envelope.
    pub envelope: &'a Envelope,
    /// The message.
    pub message: &'a ChatMessage,
    /// Its workspace's defaults.
    pub workspace: WorkspaceDefaults<'a>,
}

#[derive(sqlx::FromRow)]
struct RunRow {
    ord: i32,
    #[sqlx(flatten)]
    record: RecordRow,
}

/// Records a run of chat messages, given in arrival order, inside the
/// caller's transaction, in one call instead of one per message. Records
/// the longest leading part of the run it can (migration 0024): at least
/// the first message; the messages that open conversations at the start,
/// each finding or creating its customer alone; then, with one statement
/// per table, those and the messages after them while their conversations
/// existed before the call. Returns what
/// [`record_message`] would have returned for each message recorded, in
/// order; the caller records the rest with later calls.
pub async fn record_messages<'a>(
    conn: &mut PgConnection,
    run: &[RunMessage<'a>],
    model: ModelHandoff,
) -> Result<Vec<Recorded>, StoreError> {
    let visitors = run
        .iter()
        .map(|m| visitor_json(m.message))
        .collect::<Result<Vec<_>, _>>()?;
    let text =
        |get: fn(&RunMessage<'a>) -> &'a str| -> Vec<&'a str> { run.iter().map(get).collect() };
    let maybe = |get: fn(&RunMessage<'a>) -> Option<&'a str>| -> Vec<Option<&'a str>> {
        run.iter().map(get).collect()
    };
    let rows: Vec<RunRow> = sqlx::query_as(
        "SELECT ord, duplicate, customer_id, conversation_id, message_id, new_customer, new_conversation,
                enrichment_enabled, default_region, customer_turn, message_count, state_version, spent_tokens
           FROM enrich.record_chat_messages($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15)",
    )
    .bind(text(|m| &m.envelope.workspace_id))
    .bind(text(|m| &m.envelope.id))
    .bind(text(|m| &m.message.conversation_id))
    .bind(text(|m| m.message.platform.as_str()))
    .bind(text(|m| &m.message.platform_user_id))
    .bind(text(|m| m.message.sender.as_str()))
    .bind(text(|m| &m.message.text))
    .bind(maybe(|m| m.message.agent_id.as_deref()))
    .bind(run.iter().map(|m| m.envelope.occurred_at).collect::<Vec<_>>())
    .bind(visitors)
    .bind(maybe(|m| m.message.source.map(|s| s.as_str())))
    .bind(maybe(|m| m.message.first_message_tag.as_deref()))
    .bind(maybe(|m| m.workspace.default_region))
    .bind(run.iter().map(|m| m.workspace.enrichment).collect::<Vec<_>>())
    .bind(matches!(model, ModelHandoff::Pending { .. }))
    .fetch_all(&mut *conn)
    .await?;
    let mut recorded = Vec::with_capacity(rows.len());
    for (expected, row) in (1..).zip(rows) {
        if row.ord != expected {
            return Err(StoreError::Permanent(sqlx::Error::Protocol(format!(
                "record_chat_messages returned message {} where {expected} was due",
                row.ord
            ))));
        }
        recorded.push(row.record.into_recorded()?);
    }
    if recorded.is_empty() && !run.is_empty() {
        return Err(StoreError::Permanent(sqlx::Error::Protocol(
            "record_chat_messages recorded no message of its run".into(),
        )));
    }
    Ok(recorded)
}

/// Records one chat message inside the caller's transaction. With
/// [`ModelHandoff::Pending`], a customer message of a workspace with
/// enrichment on is stored pending for the model stage (see
/// [`super::model_queue`]); the caller clears that mark in the same
/// transaction when the model is not needed.
pub async fn record_message(
    conn: &mut PgConnection,
    envelope: &Envelope,
    message: &ChatMessage,
    workspace: WorkspaceDefaults<'_>,
    model: ModelHandoff,
) -> Result<Recorded, StoreError> {
    let await_model = matches!(model, ModelHandoff::Pending { .. });
    let visitor = visitor_json(message)?;
    let row: RecordRow = sqlx::query_as(
        "SELECT duplicate, customer_id, conversation_id, message_id, new_customer, new_conversation,
                enrichment_enabled, default_region, customer_turn, message_count, state_version, spent_tokens
           FROM enrich.record_chat_message($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15)",
    )
    .bind(&envelope.workspace_id)
    .bind(&envelope.id)
    .bind(&message.conversation_id)
    .bind(message.platform.as_str())
    .bind(&message.platform_user_id)
    .bind(message.sender.as_str())
    .bind(&message.text)
    .bind(&message.agent_id)
    .bind(envelope.occurred_at)
    .bind(visitor)
    .bind(message.source.map(|s| s.as_str()))
    .bind(&message.first_message_tag)
    .bind(workspace.default_region)
    .bind(workspace.enrichment)
    .bind(await_model)
    .fetch_one(&mut *conn)
    .await?;
    row.into_recorded()
}

/// A message's visitor metadata as the JSON the identity keeps.
fn visitor_json(message: &ChatMessage) -> Result<Option<serde_json::Value>, StoreError> {
    message
        .visitor
        .as_ref()
        .map(serde_json::to_value)
        .transpose()
        .map_err(|e| StoreError::Permanent(sqlx::Error::Encode(Box::new(e))))
}

/// Marks an event id as handled; false when it was handled before.
pub async fn claim_event(
    conn: &mut PgConnection,
    envelope: &Envelope,
    event_type: &str,
) -> Result<bool, StoreError> {
    let inserted = sqlx::query(
        "INSERT INTO enrich.processed_events (workspace_id, event_id, event_type)
         VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
    )
    .bind(&envelope.workspace_id)
    .bind(&envelope.id)
    .bind(event_type)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(inserted == 1)
}

/// Makes sure the workspace row exists (events may name a workspace first seen now).
pub async fn ensure_workspace(
    conn: &mut PgConnection,
    workspace_id: &str,
    workspace: WorkspaceDefaults<'_>,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO enrich.workspaces (id, enrichment_enabled, default_region)
         VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
    )
    .bind(workspace_id)
    .bind(workspace.enrichment)
    .bind(workspace.default_region)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Stores the avatar of a logged-in user on the customer.
pub async fn set_profile_picture(
    conn: &mut PgConnection,
    customer_id: Uuid,
    url: &str,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE enrich.customers SET profile_picture_url = $2 WHERE id = $1")
        .bind(customer_id)
        .bind(url)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

type TurnRow = (i64, String, String);

/// A conversation's message count beside one of its turns (none without turns).
type CountedTurnRow = (i32, Option<i64>, Option<String>, Option<String>);

fn turns_from_rows(rows: Vec<TurnRow>) -> Vec<Turn> {
    rows.into_iter()
        .filter_map(|(message_id, sender, text)| {
            let sender: Sender = serde_json::from_value(serde_json::Value::String(sender)).ok()?;
            Some(Turn {
                message_id,
                sender,
                text,
            })
        })
        .collect()
}

/// Up to `limit` turns of a conversation said before `message_id`, oldest first.
pub async fn turns_before<'e>(
    db: impl sqlx::PgExecutor<'e>,
    conversation_id: i64,
    message_id: i64,
    limit: usize,
) -> Result<Vec<Turn>, StoreError> {
    let rows: Vec<TurnRow> = sqlx::query_as(
        "SELECT id, sender, text FROM (SELECT id, sender, text FROM enrich.messages
                                        WHERE conversation_id = $1 AND id < $2 ORDER BY id DESC LIMIT $3) t
          ORDER BY id",
    )
    .bind(conversation_id)
    .bind(message_id)
    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
    .fetch_all(db)
    .await?;
    Ok(turns_from_rows(rows))
}

/// The last `limit` turns of a conversation named by the backend's id,
/// oldest first, with the conversation's message count; `None` when there
/// is no such conversation.
pub async fn recent_turns(
    pool: &sqlx::PgPool,
    workspace_id: &str,
    conversation: &str,
    limit: usize,
) -> Result<Option<(Vec<Turn>, i64)>, StoreError> {
    // One statement, so the count and the turns come from one snapshot.
    let rows: Vec<CountedTurnRow> = sqlx::query_as(
        "SELECT c.message_count, t.id, t.sender, t.text
           FROM enrich.conversations c
           LEFT JOIN LATERAL (SELECT m.id, m.sender, m.text FROM enrich.messages m
                               WHERE m.conversation_id = c.id ORDER BY m.id DESC LIMIT $3) t ON true
          WHERE c.workspace_id = $1 AND c.external_id = $2
          ORDER BY t.id",
    )
    .bind(workspace_id)
    .bind(conversation)
    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
    .fetch_all(pool)
    .await?;
    let Some(message_count) = rows.first().map(|row| row.0) else {
        return Ok(None);
    };
    let turns = turns_from_rows(
        rows.into_iter()
            .filter_map(|(_, id, sender, text)| Some((id?, sender?, text?)))
            .collect(),
    );
    Ok(Some((turns, i64::from(message_count))))
}

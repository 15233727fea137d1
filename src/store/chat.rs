//! Recording a chat message: one call that dedupes by event id, finds or
//! creates the customer through the identity, opens the conversation and keeps
//! every counter.

use std::collections::{BTreeMap, BTreeSet};

use sqlx::PgConnection;
use sqlx::types::Json;
use uuid::Uuid;

use super::StoreError;
use super::asks::DecisionState;
use crate::decide::{AskState, Known, PastAsk};
use crate::event::{ChatMessage, Envelope};

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
    /// `pending`, and what the stage needs besides the decision state comes
    /// back with it, the conversation's last `recent_turns` turns included.
    Pending {
        /// How many turns before the message the model sees.
        recent_turns: usize,
    },
}

/// One turn said before a message, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct PriorTurn {
    /// `customer`, `bot`, `agent` or `system`.
    pub sender: String,
    /// Text.
    pub text: String,
}

/// What the model stage needs of a message left to it, besides its
/// decision state, as the message's own transaction saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageExtras {
    /// Model tokens the conversation has spent so far.
    pub spent_tokens: i64,
    /// The customer's agent instructions.
    pub agent_instructions: Option<String>,
    /// The turns before the message, oldest first.
    pub prior_turns: Vec<PriorTurn>,
}

/// Ids and state of a freshly stored message.
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
    /// Known fields and ask state, for customer messages of enabled workspaces.
    pub state: Option<DecisionState>,
    /// The model stage's other inputs, for a message marked `pending`.
    pub stage_extras: Option<StageExtras>,
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
    known: Option<Json<BTreeMap<String, Known>>>,
    declined: Option<Vec<String>>,
    asks: Option<Json<Vec<PastAsk>>>,
    field_attempts: Option<Json<BTreeMap<String, u32>>>,
    spent_tokens: Option<i64>,
    agent_instructions: Option<String>,
    recent_turns: Option<Json<Vec<PriorTurn>>>,
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
    let (await_model, recent_turns) = match model {
        ModelHandoff::None => (false, 0),
        ModelHandoff::Pending { recent_turns } => {
            (true, i32::try_from(recent_turns).unwrap_or(i32::MAX))
        }
    };
    let visitor = message
        .visitor
        .as_ref()
        .map(serde_json::to_value)
        .transpose()
        .map_err(|e| StoreError::Permanent(sqlx::Error::Encode(Box::new(e))))?;
    let row: RecordRow = sqlx::query_as(
        "SELECT duplicate, customer_id, conversation_id, message_id, new_customer, new_conversation,
                enrichment_enabled, default_region, customer_turn, known, declined, asks, field_attempts,
                spent_tokens, agent_instructions, recent_turns
           FROM enrich.record_chat_message($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16)",
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
    .bind(recent_turns)
    .fetch_one(&mut *conn)
    .await?;
    if row.duplicate {
        return Ok(Recorded::Duplicate);
    }
    let customer_turn = row.customer_turn.unwrap_or(0);
    let state = match (row.known, row.declined, row.asks, row.field_attempts) {
        (Some(known), Some(declined), Some(asks), Some(attempts)) => Some(DecisionState {
            known: known.0,
            asks: AskState {
                customer_turn: customer_turn.max(0) as u32,
                asks: asks.0,
                field_attempts: attempts.0,
                declined: declined.into_iter().collect::<BTreeSet<_>>(),
            },
        }),
        _ => None,
    };
    let stage_extras = match (row.spent_tokens, row.recent_turns) {
        (Some(spent_tokens), Some(turns)) => Some(StageExtras {
            spent_tokens,
            agent_instructions: row.agent_instructions,
            prior_turns: turns.0,
        }),
        _ => None,
    };
    match (row.customer_id, row.conversation_id, row.message_id) {
        (Some(customer_id), Some(conversation_id), Some(message_id)) => {
            Ok(Recorded::Stored(Box::new(StoredMessage {
                customer_id,
                conversation_id,
                message_id,
                new_customer: row.new_customer.unwrap_or(false),
                new_conversation: row.new_conversation.unwrap_or(false),
                enrichment_enabled: row.enrichment_enabled.unwrap_or(true),
                default_region: row.default_region,
                customer_turn,
                state,
                stage_extras,
            })))
        }
        _ => Err(StoreError::Permanent(sqlx::Error::Protocol(
            "record_chat_message returned no ids".into(),
        ))),
    }
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

/// The last `limit` turns of a conversation before a message, oldest first
/// (for a message whose turns were not read with it).
pub async fn turns_before<'e>(
    db: impl sqlx::PgExecutor<'e>,
    conversation_id: i64,
    message_id: i64,
    limit: usize,
) -> Result<Vec<PriorTurn>, StoreError> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT sender, text FROM (SELECT id, sender, text FROM enrich.messages
                                    WHERE conversation_id = $1 AND id < $2 ORDER BY id DESC LIMIT $3) t
          ORDER BY id",
    )
    .bind(conversation_id)
    .bind(message_id)
    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(sender, text)| PriorTurn { sender, text })
        .collect())
}

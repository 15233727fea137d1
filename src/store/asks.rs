//! The state the ask policy reads (known fields, declines, earlier asks) and
//! the ask log it writes. Read inside the message's transaction, so the policy
//! always sees the truth, whatever the cache holds.

use std::collections::{BTreeMap, BTreeSet};

use sqlx::PgConnection;
use sqlx::types::Json;
use uuid::Uuid;

use super::StoreError;
use crate::decide::{AskState, Known, PastAsk};

/// Known fields and ask state of a customer in a conversation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DecisionState {
    /// Field values on the profile.
    pub known: BTreeMap<String, Known>,
    /// Asks and declines.
    pub asks: AskState,
}

type StateRow = (
    Json<BTreeMap<String, Known>>,
    Vec<String>,
    Json<Vec<PastAsk>>,
    Json<BTreeMap<String, u32>>,
);

/// The decision-state columns, for the customer `m.customer_id` in the
/// conversation `$2`; shared by the reads below so they cannot drift apart.
macro_rules! state_columns {
    () => {
        "(SELECT coalesce(jsonb_object_agg(field, jsonb_build_object('value', value, 'source', source)), '{}')
            FROM enrich.customer_fields WHERE customer_id = m.customer_id),
         (SELECT coalesce(array_agg(field ORDER BY field), '{}')
            FROM enrich.declined_fields WHERE customer_id = m.customer_id),
         (SELECT coalesce(jsonb_agg(jsonb_build_object('field', field, 'customer_turn', customer_turn,
                                                       'pending', outcome = 'pending') ORDER BY id), '[]')
            FROM enrich.asks WHERE conversation_id = $2),
         (SELECT coalesce(jsonb_object_agg(field, n), '{}')
            FROM (SELECT field, count(*) AS n FROM enrich.asks
                   WHERE customer_id = m.customer_id GROUP BY field) a)"
    };
}

impl DecisionState {
    fn from_row((known, declined, asks, attempts): StateRow, customer_turn: u32) -> DecisionState {
        DecisionState {
            known: known.0,
            asks: AskState {
                customer_turn,
                asks: asks.0,
                field_attempts: attempts.0,
                declined: declined.into_iter().collect::<BTreeSet<_>>(),
            },
        }
    }
}

/// Loads the decision state in one round trip.
pub async fn load_state(
    conn: &mut PgConnection,
    customer_id: Uuid,
    conversation_id: i64,
    customer_turn: u32,
) -> Result<DecisionState, StoreError> {
    let row: StateRow = sqlx::query_as(concat!(
        "SELECT ",
        state_columns!(),
        " FROM (SELECT $1::uuid AS customer_id) m"
    ))
    .bind(customer_id)
    .bind(conversation_id)
    .fetch_one(&mut *conn)
    .await?;
    Ok(DecisionState::from_row(row, customer_turn))
}

/// What the model stage reads before a call about one stored message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelInputs {
    /// The message's `ai_status`; the stage only calls while it is `pending`.
    pub ai_status: Option<String>,
    /// The customer the message belongs to now (a merge may have moved it).
    pub customer_id: Uuid,
    /// That customer's decision state in the message's conversation.
    pub state: DecisionState,
    /// Model tokens already spent on the conversation.
    pub spent_tokens: i64,
    /// The customer's agent instructions.
    pub agent_instructions: Option<String>,
}

type ModelInputsRow = (
    Option<String>,
    Uuid,
    Json<BTreeMap<String, Known>>,
    Vec<String>,
    Json<Vec<PastAsk>>,
    Json<BTreeMap<String, u32>>,
    i64,
    Option<String>,
);

/// Loads the message's status and customer, the decision state, the tokens
/// spent and the agent instructions in one round trip; `None` when the
/// message is gone (erased).
pub async fn load_model_inputs<'e>(
    db: impl sqlx::PgExecutor<'e>,
    message_id: i64,
    conversation_id: i64,
    customer_turn: u32,
) -> Result<Option<ModelInputs>, StoreError> {
    let row: Option<ModelInputsRow> = sqlx::query_as(concat!(
        "SELECT m.ai_status, m.customer_id, ",
        state_columns!(),
        ", (SELECT coalesce(sum(prompt_tokens + completion_tokens), 0)::bigint
              FROM enrich.llm_calls WHERE conversation_id = $2),
           (SELECT agent_instructions FROM enrich.customers WHERE id = m.customer_id)
          FROM enrich.messages m WHERE m.id = $1"
    ))
    .bind(message_id)
    .bind(conversation_id)
    .fetch_optional(db)
    .await?;
    Ok(row.map(
        |(
            ai_status,
            customer_id,
            known,
            declined,
            asks,
            attempts,
            spent_tokens,
            agent_instructions,
        )| {
            ModelInputs {
                ai_status,
                customer_id,
                state: DecisionState::from_row((known, declined, asks, attempts), customer_turn),
                spent_tokens,
                agent_instructions,
            }
        },
    ))
}

/// An ask to log.
#[derive(Debug, Clone, PartialEq)]
pub struct NewAsk<'a> {
    /// Tenant.
    pub workspace_id: &'a str,
    /// enricher's conversation id.
    pub conversation_id: i64,
    /// The customer.
    pub customer_id: Uuid,
    /// The field.
    pub field: &'a str,
    /// Suggested question.
    pub question: &'a str,
    /// Why now.
    pub reason: &'a str,
    /// Language of the question.
    pub language: &'a str,
    /// Event id of the customer message it answers.
    pub in_reply_to: &'a str,
    /// Customer turn it answers.
    pub customer_turn: u32,
}

/// Logs an ask as pending, unless the field has a value or was declined by
/// now: a value an agent (or anyone) set while the model was thinking
/// cancels the ask. `None` when it was cancelled.
pub async fn record_ask(
    conn: &mut PgConnection,
    ask: &NewAsk<'_>,
) -> Result<Option<i64>, StoreError> {
    let id: Option<(i64,)> = sqlx::query_as(
        "INSERT INTO enrich.asks (workspace_id, conversation_id, customer_id, field, question, reason, language,
                                  in_reply_to, customer_turn)
         SELECT $1,$2,$3,$4,$5,$6,$7,$8,$9
          WHERE NOT EXISTS (SELECT 1 FROM enrich.customer_fields WHERE customer_id = $3 AND field = $4)
            AND NOT EXISTS (SELECT 1 FROM enrich.declined_fields WHERE customer_id = $3 AND field = $4)
         RETURNING id",
    )
    .bind(ask.workspace_id)
    .bind(ask.conversation_id)
    .bind(ask.customer_id)
    .bind(ask.field)
    .bind(ask.question)
    .bind(ask.reason)
    .bind(ask.language)
    .bind(ask.in_reply_to)
    .bind(ask.customer_turn as i32)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(id.map(|(id,)| id))
}

/// Marks pending asks that went unanswered for `after_turns` customer turns as ignored.
pub async fn close_ignored(
    conn: &mut PgConnection,
    conversation_id: i64,
    customer_turn: u32,
    after_turns: u32,
) -> Result<u64, StoreError> {
    let closed = sqlx::query(
        "UPDATE enrich.asks SET outcome = 'ignored', outcome_at = now()
          WHERE conversation_id = $1 AND outcome = 'pending' AND customer_turn + $3 <= $2",
    )
    .bind(conversation_id)
    .bind(customer_turn as i32)
    .bind(after_turns as i32)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(closed)
}

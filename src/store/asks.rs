//! The state the ask policy reads (known fields, declines, earlier asks) and
//! the ask log it writes. Read inside the message's transaction, so the policy
//! always sees the truth, whatever the cache holds.

use std::collections::{BTreeMap, BTreeSet};

use sqlx::PgConnection;
use sqlx::types::Json;
use uuid::Uuid;

use super::StoreError;
use super::model_queue::AiStatus;
use super::outbox::Pending;
use crate::decide::{AskState, Known, PastAsk};
use crate::event::Outbound;

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
/// conversation `$2` (or the one given); shared by the reads below so they
/// cannot drift apart.
macro_rules! state_columns {
    () => {
        state_columns!("$2")
    };
    ($conversation:literal) => {
        concat!(
            "(SELECT coalesce(jsonb_object_agg(field, jsonb_build_object('value', value, 'source', source)), '{}')
            FROM enrich.customer_fields WHERE customer_id = m.customer_id),
         (SELECT coalesce(array_agg(field ORDER BY field), '{}')
            FROM enrich.declined_fields WHERE customer_id = m.customer_id),
         (SELECT coalesce(jsonb_agg(jsonb_build_object('field', field, 'customer_turn', customer_turn,
                                                       'pending', outcome = 'pending') ORDER BY id), '[]')
            FROM enrich.asks WHERE conversation_id = ",
            $conversation,
            "),
         (SELECT coalesce(jsonb_object_agg(field, n), '{}')
            FROM (SELECT field, count(*) AS n FROM enrich.asks
                   WHERE customer_id = m.customer_id GROUP BY field) a)"
        )
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

/// Everything the hot profile holds about a customer and one of their
/// conversations, as Postgres has it (see [`crate::state`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HotStateRead {
    /// `customers.state_version` the rest was read at.
    pub version: i64,
    /// Known field values.
    pub known: BTreeMap<String, Known>,
    /// Declined fields.
    pub declined: BTreeSet<String>,
    /// Asks of the conversation, oldest first.
    pub asks: Vec<PastAsk>,
    /// Asks per field of the customer in every conversation.
    pub ask_counts: BTreeMap<String, u32>,
    /// Tags.
    pub tags: Vec<String>,
    /// Agent instructions.
    pub agent_instructions: Option<String>,
}

/// A pair's customer and conversation, then its [`HotStateRow`].
type HotStatesRow = (
    Uuid,
    i64,
    i64,
    Json<BTreeMap<String, Known>>,
    Vec<String>,
    Json<Vec<PastAsk>>,
    Json<BTreeMap<String, u32>>,
    Vec<String>,
    Option<String>,
);

type HotStateRow = (
    i64,
    Json<BTreeMap<String, Known>>,
    Vec<String>,
    Json<Vec<PastAsk>>,
    Json<BTreeMap<String, u32>>,
    Vec<String>,
    Option<String>,
);

/// Reads a customer's hot profile and a conversation's ask state in one
/// round trip, with the state version they match; `None` when the customer
/// is gone.
pub async fn load_hot_state(
    conn: &mut PgConnection,
    customer_id: Uuid,
    conversation_id: i64,
) -> Result<Option<HotStateRead>, StoreError> {
    let row: Option<HotStateRow> = sqlx::query_as(concat!(
        "SELECT u.state_version, ",
        state_columns!(),
        ", (SELECT coalesce(array_agg(tag ORDER BY tag), '{}') FROM enrich.tags WHERE customer_id = m.customer_id),
           u.agent_instructions
          FROM (SELECT $1::uuid AS customer_id) m JOIN enrich.customers u ON u.id = m.customer_id"
    ))
    .bind(customer_id)
    .bind(conversation_id)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.map(HotStateRead::from_row))
}

impl HotStateRead {
    fn from_row(
        (version, known, declined, asks, ask_counts, tags, agent_instructions): HotStateRow,
    ) -> HotStateRead {
        HotStateRead {
            version,
            known: known.0,
            declined: declined.into_iter().collect(),
            asks: asks.0,
            ask_counts: ask_counts.0,
            tags,
            agent_instructions,
        }
    }
}

/// The hot state of several (customer, conversation) pairs in one round
/// trip, in no particular order; pairs whose customer is gone are left out.
pub async fn load_hot_states(
    conn: &mut PgConnection,
    pairs: &[(Uuid, i64)],
) -> Result<Vec<(Uuid, i64, HotStateRead)>, StoreError> {
    let customers: Vec<Uuid> = pairs.iter().map(|pair| pair.0).collect();
    let conversations: Vec<i64> = pairs.iter().map(|pair| pair.1).collect();
    let rows: Vec<HotStatesRow> = sqlx::query_as(concat!(
        "SELECT m.customer_id, m.conversation_id, u.state_version, ",
        state_columns!("m.conversation_id"),
        ", (SELECT coalesce(array_agg(tag ORDER BY tag), '{}') FROM enrich.tags WHERE customer_id = m.customer_id),
           u.agent_instructions
          FROM unnest($1::uuid[], $2::bigint[]) AS m(customer_id, conversation_id)
          JOIN enrich.customers u ON u.id = m.customer_id"
    ))
    .bind(customers)
    .bind(conversations)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(
            |(customer, conversation, version, known, declined, asks, counts, tags, agent)| {
                let row = (version, known, declined, asks, counts, tags, agent);
                (customer, conversation, HotStateRead::from_row(row))
            },
        )
        .collect())
}

/// What the model stage reads before a call about one stored message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelInputs {
    /// Where the message stands with the model; the stage only calls while
    /// it is pending.
    pub ai_status: Option<AiStatus>,
    /// The customer the message belongs to now (a merge may have moved it).
    pub customer_id: Uuid,
    /// That customer's decision state in the message's conversation.
    pub state: DecisionState,
    /// The customer's state version `state` was read at.
    pub state_version: i64,
    /// Model tokens already spent on the conversation.
    pub spent_tokens: i64,
    /// The customer's agent instructions.
    pub agent_instructions: Option<String>,
}

type ModelInputsRow = (
    Option<AiStatus>,
    Uuid,
    i64,
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
        "SELECT m.ai_status, m.customer_id,
                coalesce((SELECT state_version FROM enrich.customers WHERE id = m.customer_id), 0), ",
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
            state_version,
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
                state_version,
                spent_tokens,
                agent_instructions,
            }
        },
    ))
}

/// The customer's decision-state version, with the customer's row locked
/// until the transaction ends (so no other writer changes that state
/// meanwhile); `None` when the customer is gone.
pub async fn lock_state_version(
    conn: &mut PgConnection,
    customer_id: Uuid,
) -> Result<Option<i64>, StoreError> {
    let version =
        sqlx::query_scalar("SELECT state_version FROM enrich.customers WHERE id = $1 FOR UPDATE")
            .bind(customer_id)
            .fetch_optional(&mut *conn)
            .await?;
    Ok(version)
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

/// Logs an ask as pending and queues `announcement` in the outbox, in one
/// statement, unless the field has a value or was declined by now: a value
/// an agent (or anyone) set while the model was thinking cancels the ask.
/// The queued announcement, or `None` when the ask was cancelled.
pub async fn record_ask(
    conn: &mut PgConnection,
    ask: &NewAsk<'_>,
    announcement: &Outbound,
) -> Result<Option<Pending>, StoreError> {
    let body = announcement.to_value();
    let id: Option<(i64,)> = sqlx::query_as(
        "WITH ask AS (
             INSERT INTO enrich.asks (workspace_id, conversation_id, customer_id, field, question, reason,
                                      language, in_reply_to, customer_turn)
             SELECT $1,$2,$3,$4,$5,$6,$7,$8,$9
              WHERE NOT EXISTS (SELECT 1 FROM enrich.customer_fields WHERE customer_id = $3 AND field = $4)
                AND NOT EXISTS (SELECT 1 FROM enrich.declined_fields WHERE customer_id = $3 AND field = $4)
             RETURNING id
         )
         INSERT INTO enrich.outbox (routing_key, body) SELECT $10, $11 FROM ask RETURNING id",
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
    .bind(announcement.routing_key())
    .bind(&body)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(id.map(|(id,)| Pending {
        id,
        routing_key: announcement.routing_key().to_owned(),
        body,
    }))
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

//! Readies each new pooled connection for the worker's hot path before it
//! serves an event. A fresh Postgres backend compiles `record_chat_message`
//! (and `record_chat_messages`, which records a lane's runs)
//! and plans each of its statements the first time it runs them, and sqlx
//! prepares each statement on its first use on a connection. Measured in
//! `psql`, the first call of the recording function in a new session took
//! 8.9 ms against 0.5–1.4 ms for the calls after it; without warming, that
//! cost lands on the first events each connection serves, which is every
//! connection right after the worker starts.
//!
//! Warming runs the hot statements once inside a transaction that is rolled
//! back, so nothing is stored (sequences may skip a few ids). It never fails
//! a connection: before the migrations have created the function there is
//! nothing to warm, and the connection is handed out as it is.

use chrono::Utc;
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

use super::asks;
use super::chat::{self, ModelHandoff, Recorded, WorkspaceDefaults};
use super::llm_calls::{self, Accounting, CallRow};
use super::model_queue::{self, AiStatus};
use crate::event::{ChatMessage, Envelope, Platform, Sender};

/// The recording call warmed: the statement is the same whatever the turns.
const WARM_UP_HANDOFF: ModelHandoff = ModelHandoff::Pending { recent_turns: 10 };

/// What a pool's connections are readied for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HotPath {
    /// The lanes: recording chat messages.
    Lanes,
    /// The model stage: reading a message's inputs and writing the outcome.
    ModelStage,
}

impl HotPath {
    /// Run-time parameters every connection of the path's pool starts with.
    ///
    /// The model stage's pool runs nothing but the stage's statements, and
    /// each of them reads or updates rows by an indexed key (the message,
    /// its conversation, its customer). sqlx prepares them once per
    /// connection and Postgres soon settles on one plan for each, costed
    /// from the tables' sizes at that moment: on a new or emptied database
    /// that plan was a sequential scan of `messages` per model call, kept
    /// while the table grew. With sequential scans priced out, every lookup
    /// uses its index from the first call. The lanes' pool also serves the
    /// sweepers, whose scans may need a sequential plan, so the lanes get
    /// the same setting through `record_chat_message` itself (migration
    /// 0013) instead.
    ///
    /// The stage's commits do not wait for their WAL flush
    /// (`synchronous_commit = off`), except the transactions that write
    /// facts, declines, asks or merges, which open with
    /// [`crate::worker::model_stage::DURABLE_TRANSACTION`]. What is left is the
    /// outcome of a call that changed nothing but the message's status and
    /// the call's accounting row. A crash of Postgres or of the machine can
    /// lose the last fraction of a second of those; the message is then
    /// still `pending`, as its own durable commit left it, and the stage
    /// queues it again (`llm.resume_after_secs`, and at every start). The
    /// lost accounting row is the one trace that stays lost: the call is
    /// made and accounted again. Nothing the bot or a dashboard saw
    /// depended on the lost commit, and every commit after it (each chat
    /// message's, for one) flushes it anyway. The lanes always wait: their
    /// commit is what allows the broker's ack.
    pub fn session_parameters(self) -> &'static [(&'static str, &'static str)] {
        match self {
            HotPath::Lanes => &[],
            HotPath::ModelStage => &[("enable_seqscan", "off"), ("synchronous_commit", "off")],
        }
    }
}

/// The prefix of the workspace the rolled-back statements use; each
/// connection names its own, so connections opened together never wait on
/// each other's uncommitted rows.
const WORKSPACE_PREFIX: &str = "enricher-connection-warm-up";

/// Runs `path`'s statements once on `conn` and rolls them back; a failure is
/// logged at debug level and otherwise ignored.
pub async fn warm(conn: &mut PgConnection, path: HotPath) {
    match try_warm(conn, path).await {
        Ok(()) => tracing::debug!(?path, "connection warmed"),
        Err(error) => tracing::debug!(error = %error, ?path, "connection not warmed"),
    }
}

/// Runs `path`'s statements once on `conn` and rolls them back.
pub async fn try_warm(conn: &mut PgConnection, path: HotPath) -> Result<(), sqlx::Error> {
    let mut tx = conn.begin().await?;
    let outcome = run_statements(&mut tx, path).await;
    tx.rollback().await?;
    outcome
}

async fn run_statements(conn: &mut PgConnection, path: HotPath) -> Result<(), sqlx::Error> {
    let workspace = format!("{WORKSPACE_PREFIX}-{}", Uuid::new_v4().simple());
    let defaults = WorkspaceDefaults {
        enrichment: true,
        default_region: None,
    };
    // A new customer and conversation, then the same conversation again from
    // both sides: the function's two main branches; then a run of two
    // messages, recorded together as a lane records them.
    let opening = record(conn, &workspace, "1", Sender::Customer, defaults).await?;
    record(conn, &workspace, "2", Sender::Bot, defaults).await?;
    let (customer, customer_message) = warm_up_message(&workspace, "3", Sender::Customer);
    let (bot, bot_message) = warm_up_message(&workspace, "4", Sender::Bot);
    let run = [(&customer, &customer_message), (&bot, &bot_message)].map(|(envelope, message)| {
        chat::RunMessage {
            envelope,
            message,
            workspace: defaults,
        }
    });
    let follow_up = match chat::record_messages(conn, &run, WARM_UP_HANDOFF)
        .await
        .map_err(into_sqlx)?
        .into_iter()
        .next()
    {
        Some(Recorded::Stored(stored)) => Some(*stored),
        _ => None,
    };
    let (Some(opening), Some(follow_up)) = (opening, follow_up) else {
        return Ok(());
    };
    match path {
        HotPath::Lanes => {
            model_queue::unmark(conn, opening.message_id)
                .await
                .map_err(into_sqlx)?;
            // A miss of the hot profile: the state and turns rebuilt; and
            // the batch's read-back of what it changed.
            asks::load_hot_state(conn, follow_up.customer_id, follow_up.conversation_id)
                .await
                .map_err(into_sqlx)?;
            asks::load_hot_states(conn, &[(follow_up.customer_id, follow_up.conversation_id)])
                .await
                .map_err(into_sqlx)?;
            chat::turns_before(
                &mut *conn,
                follow_up.conversation_id,
                follow_up.message_id,
                10,
            )
            .await
            .map_err(into_sqlx)?;
        }
        HotPath::ModelStage => {
            asks::load_model_inputs(
                &mut *conn,
                follow_up.message_id,
                follow_up.conversation_id,
                follow_up.customer_turn.max(0) as u32,
            )
            .await
            .map_err(into_sqlx)?;
            let row = CallRow {
                workspace_id: &workspace,
                conversation_id: follow_up.conversation_id,
                customer_id: follow_up.customer_id,
                message_id: Some(follow_up.message_id),
                purpose: "enrich",
                outcome: "ok",
                rejections: Default::default(),
                timing: None,
            };
            asks::lock_state_version(conn, follow_up.customer_id)
                .await
                .map_err(into_sqlx)?;
            asks::load_hot_state(conn, follow_up.customer_id, follow_up.conversation_id)
                .await
                .map_err(into_sqlx)?;
            let accounting = Accounting::unsent("warm-up", "warm-up");
            llm_calls::record_for_pending_message(conn, &row, &accounting, AiStatus::Done)
                .await
                .map_err(into_sqlx)?;
        }
    }
    Ok(())
}

async fn record(
    conn: &mut PgConnection,
    workspace: &str,
    suffix: &str,
    sender: Sender,
    defaults: WorkspaceDefaults<'_>,
) -> Result<Option<chat::StoredMessage>, sqlx::Error> {
    let (envelope, message) = warm_up_message(workspace, suffix, sender);
    match chat::record_message(conn, &envelope, &message, defaults, WARM_UP_HANDOFF)
        .await
        .map_err(into_sqlx)?
    {
        Recorded::Stored(stored) => Ok(Some(*stored)),
        Recorded::Duplicate => Ok(None),
    }
}

fn warm_up_message(workspace: &str, suffix: &str, sender: Sender) -> (Envelope, ChatMessage) {
    let envelope = Envelope {
        id: format!("warm-up-{suffix}"),
        version: 1,
        workspace_id: workspace.to_owned(),
        occurred_at: Utc::now(),
    };
    let message = ChatMessage {
        conversation_id: "warm-up".to_owned(),
        platform: Platform::Web,
        platform_user_id: "warm-up".to_owned(),
        sender,
        text: "warm-up".to_owned(),
        agent_id: None,
        visitor: None,
        identity_hint: None,
        source: None,
        first_message_tag: None,
    };
    (envelope, message)
}

fn into_sqlx(error: super::StoreError) -> sqlx::Error {
    match error {
        super::StoreError::Transient(e) | super::StoreError::Permanent(e) => e,
    }
}

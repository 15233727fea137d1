//! Enrichment of one customer message inside a transaction: load the
//! decision state, run the decision core, and write what it decided (facts
//! with history, declines, the ask and its `ask.requested` event).
//!
//! Offline, the whole decision happens in the message's own transaction. With
//! a model, the message's transaction records the pattern facts and marks the
//! message for the model stage ([`super::ai`]), which runs after the commit so
//! a slow model never holds back other conversations.

use std::time::Instant;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use tokio::sync::oneshot;
use uuid::Uuid;

use super::handle::{Effects, HandleError, Workspace};
use crate::decide::policy::Source;
use crate::decide::{self, Decision, Gate, Origin, Proposal, TurnContext};
use crate::event::{AskRequested, ChatMessage, Envelope, FieldChange, Outbound};
use crate::llm::prompts::PromptTurn;
use crate::store::asks::{self, DecisionState, ModelInputs, NewAsk};
use crate::store::chat::StoredMessage;
use crate::store::fields::{self as field_store, FieldWrite};
use crate::store::outbox;

/// Resolves once the transaction that stored a message has committed. The
/// lane hands its model-path messages to the stage before its commit, so the
/// stage can build the prompt and start the call while the commit's WAL flush
/// is under way; the stage writes nothing about a message before this says
/// the message is committed, and drops the message if its transaction rolled
/// back (the broker then redelivers the event, and it is recorded again).
#[derive(Debug, Default)]
pub struct CommitSignal(CommitState);

#[derive(Debug, Default)]
enum CommitState {
    /// Committed before the stage got the message (a resumed message).
    #[default]
    Committed,
    Waiting(oneshot::Receiver<()>),
    RolledBack,
}

/// The lane's side of a [`CommitSignal`]: sent after its commit, dropped
/// when the transaction fails.
#[derive(Debug)]
pub struct CommitNotice(oneshot::Sender<()>);

impl CommitNotice {
    /// Tells the stage the transaction committed.
    pub fn committed(self) {
        // A stage that gave up on the message no longer listens.
        let _ = self.0.send(());
    }
}

impl CommitSignal {
    /// A signal and the notice the lane sends once it has committed.
    pub fn pair() -> (CommitNotice, CommitSignal) {
        let (sender, receiver) = oneshot::channel();
        (
            CommitNotice(sender),
            CommitSignal(CommitState::Waiting(receiver)),
        )
    }

    /// Waits for the transaction's outcome: true once it committed, false if
    /// it rolled back. Safe to cancel and to call again.
    pub async fn wait(&mut self) -> bool {
        if let CommitState::Waiting(receiver) = &mut self.0 {
            self.0 = match receiver.await {
                Ok(()) => CommitState::Committed,
                Err(_) => CommitState::RolledBack,
            };
        }
        matches!(self.0, CommitState::Committed)
    }
}

/// The model stage's inputs as the message's own transaction read them, and
/// when the statement that read them was sent. The stage uses them instead
/// of reading them again after the commit only when no earlier model call
/// of the conversation was unfinished or finished since then (see
/// [`super::ai::ModelStage::submit`]).
#[derive(Debug)]
pub struct LaneInputs {
    /// The inputs.
    pub inputs: ModelInputs,
    /// Sent before this instant.
    pub read_at: Instant,
}

/// What the recording statement read for the model stage, and when it was
/// sent.
#[derive(Debug)]
pub struct StageReads {
    /// Model tokens the conversation had spent.
    pub spent_tokens: i64,
    /// The customer's agent instructions.
    pub agent_instructions: Option<String>,
    /// When the statement was sent.
    pub sent_at: Instant,
}

/// The stored customer message a decision is about.
#[derive(Debug)]
pub struct MessageRef {
    /// Tenant.
    pub workspace_id: String,
    /// The message's event id (the ask's `in_reply_to`).
    pub event_id: String,
    /// Backend conversation id.
    pub conversation: String,
    /// enricher's conversation id.
    pub conversation_id: i64,
    /// The customer.
    pub customer_id: Uuid,
    /// The stored message.
    pub message_id: i64,
    /// Its customer turn number in the conversation.
    pub customer_turn: u32,
    /// The customer's text.
    pub text: String,
    /// Region for phone numbers.
    pub region: Option<String>,
    /// When the worker received the event (none for messages resumed after a
    /// restart), for the model path's timing.
    pub received_at: Option<DateTime<Utc>>,
    /// When the model stage queued the message.
    pub queued_at: Option<Instant>,
    /// The message opened its conversation, so no turns come before it.
    pub opened_conversation: bool,
    /// The turns before the message, oldest first, as its recording read
    /// them (none for a message resumed later: the stage reads them).
    pub prior_turns: Option<Vec<PromptTurn>>,
    /// The stage's inputs as the message's transaction read them.
    pub lane_inputs: Option<LaneInputs>,
    /// Whether the message's transaction has committed.
    pub committed: CommitSignal,
}

impl MessageRef {
    /// The reference of a message just stored.
    pub fn new(
        envelope: &Envelope,
        message: &ChatMessage,
        stored: &StoredMessage,
        region: Option<&str>,
    ) -> MessageRef {
        MessageRef {
            workspace_id: envelope.workspace_id.clone(),
            event_id: envelope.id.clone(),
            conversation: message.conversation_id.clone(),
            conversation_id: stored.conversation_id,
            customer_id: stored.customer_id,
            message_id: stored.message_id,
            customer_turn: stored.customer_turn.max(0) as u32,
            text: message.text.clone(),
            region: region.map(str::to_owned),
            received_at: None,
            queued_at: None,
            opened_conversation: stored.new_conversation,
            prior_turns: stored.stage_extras.as_ref().map(|extras| {
                extras
                    .prior_turns
                    .iter()
                    .map(|turn| PromptTurn {
                        sender: turn.sender.clone(),
                        text: turn.text.clone(),
                    })
                    .collect()
            }),
            lane_inputs: None,
            committed: CommitSignal::default(),
        }
    }
}

/// The region used to read phone numbers: the visitor's country, else the workspace's.
pub fn phone_region<'a>(
    workspace: &'a Workspace<'_>,
    stored: &'a StoredMessage,
    message: &'a ChatMessage,
) -> Option<&'a str> {
    message
        .visitor
        .as_ref()
        .and_then(|v| v.country.as_deref())
        .filter(|c| c.len() == 2 && c.chars().all(|ch| ch.is_ascii_uppercase()))
        .or(stored.default_region.as_deref())
        .or(workspace.settings.default_region.as_deref())
}

/// The decision context for a message, its state and the turns before it.
pub fn context<'a>(
    workspace: &'a Workspace<'_>,
    target: &'a MessageRef,
    state: &'a DecisionState,
    recent: &'a [PromptTurn],
) -> TurnContext<'a> {
    TurnContext {
        fields: workspace.fields,
        default_region: target.region.as_deref(),
        text: &target.text,
        known: &state.known,
        asks: &state.asks,
        policy: workspace.policy,
        triggers: workspace.triggers,
        recent,
    }
}

/// What the message's own transaction did about enrichment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirstPass {
    /// Decided completely (offline mode, or nothing for the model to do).
    Done,
    /// Pattern facts written; the model should look at the message.
    NeedsModel,
}

/// Runs the part of the decision that needs no model, inside the message's
/// transaction. Offline (`with_model` false) that is everything, asks from
/// keyword triggers included; with a model it is the pattern facts and
/// declines, plus the gate that decides whether the model is worth a call;
/// a message left to the model takes the stage's inputs along when `reads`
/// holds what the recording statement read for it.
#[allow(clippy::too_many_arguments)]
pub async fn first_pass(
    conn: &mut PgConnection,
    workspace: &Workspace<'_>,
    target: &mut MessageRef,
    preloaded: Option<DecisionState>,
    reads: Option<StageReads>,
    with_model: bool,
    changes: &mut Vec<FieldChange>,
    effects: &mut Effects,
) -> Result<FirstPass, HandleError> {
    let state = match preloaded {
        Some(state) => state,
        None => state_of(conn, target).await?,
    };
    let ctx = context(
        workspace,
        target,
        &state,
        target.prior_turns.as_deref().unwrap_or_default(),
    );
    let stage = decide::pattern_stage(&ctx);
    let proposal = if with_model {
        Proposal::default()
    } else {
        decide::offline_proposal(&ctx, &stage)
    };
    let decided = decide::decide(&ctx, &stage, &proposal);
    let mut closed_asks = 0;
    if state.asks.asks.iter().any(|a| a.pending) {
        closed_asks = asks::close_ignored(
            conn,
            target.conversation_id,
            target.customer_turn,
            workspace.policy.ignored_after_turns,
        )
        .await?;
    }
    let needs_model = with_model && decide::gate(&ctx, &stage, true, true) == Gate::CallModel;
    let customer_before = target.customer_id;
    target.customer_id = apply(conn, target, &decided, None, changes, effects).await?;
    if needs_model {
        // Recorded as pending for the model stage already.
        if let Some(reads) = reads
            && target.customer_id == customer_before
        {
            // What this pass wrote is read back in the same transaction.
            let changed_state = closed_asks > 0 || !decided.writes_nothing();
            let state = if changed_state {
                state_of(conn, target).await?
            } else {
                state
            };
            target.lane_inputs = Some(LaneInputs {
                inputs: ModelInputs {
                    ai_status: Some("pending".to_owned()),
                    customer_id: target.customer_id,
                    state,
                    spent_tokens: reads.spent_tokens,
                    agent_instructions: reads.agent_instructions,
                },
                read_at: reads.sent_at,
            });
        }
        return Ok(FirstPass::NeedsModel);
    }
    if with_model {
        // The message was recorded as pending; the model has nothing to do.
        crate::store::chat::clear_model_mark(conn, target.message_id).await?;
    }
    Ok(FirstPass::Done)
}

/// The message's customer's decision state in its conversation, as this
/// transaction sees it.
async fn state_of(
    conn: &mut PgConnection,
    target: &MessageRef,
) -> Result<DecisionState, crate::store::StoreError> {
    asks::load_state(
        conn,
        target.customer_id,
        target.conversation_id,
        target.customer_turn,
    )
    .await
}

/// Which model produced a decision, for the history.
#[derive(Debug, Clone, Copy)]
pub struct ModelStamp<'a> {
    /// Model name.
    pub model: &'a str,
    /// Prompt version hash.
    pub prompt_version: &'a str,
}

/// Writes a decision: facts (by source rank, with history), declines, the ask.
pub async fn apply(
    conn: &mut PgConnection,
    target: &MessageRef,
    decided: &Decision,
    model: Option<ModelStamp<'_>>,
    changes: &mut Vec<FieldChange>,
    effects: &mut Effects,
) -> Result<Uuid, HandleError> {
    for rejected in &decided.rejections {
        effects.rejections.push(rejected.reason);
    }
    // A new email may merge this customer into an older one mid-way.
    let mut customer_id = target.customer_id;
    for fact in &decided.facts {
        let (actor, stamp) = match fact.origin {
            Origin::Pattern => ("pattern", None),
            Origin::Model => ("model", model),
        };
        let write = FieldWrite {
            workspace_id: &target.workspace_id,
            customer_id,
            field: &fact.field,
            value: &fact.value,
            source: Source::Customer,
            actor: Some(actor),
            evidence: Some(&fact.quote),
            message_id: Some(target.message_id),
            confidence: None,
            model: stamp.map(|s| s.model),
            prompt_version: stamp.map(|s| s.prompt_version),
        };
        customer_id = super::handle::record_write(conn, &write, changes, effects).await?;
    }
    for field in &decided.declined {
        field_store::record_decline(conn, customer_id, field, target.message_id).await?;
    }
    if let Some(ask) = &decided.ask {
        asks::record_ask(
            conn,
            &NewAsk {
                workspace_id: &target.workspace_id,
                conversation_id: target.conversation_id,
                customer_id,
                field: &ask.field,
                question: &ask.question,
                reason: &ask.reason,
                language: &ask.language,
                in_reply_to: &target.event_id,
                customer_turn: target.customer_turn,
            },
        )
        .await?;
        let event = Outbound::AskRequested(AskRequested {
            workspace_id: target.workspace_id.clone(),
            conversation_id: target.conversation.clone(),
            customer_id,
            field: ask.field.clone(),
            question: ask.question.clone(),
            language: ask.language.clone(),
            reason: ask.reason.clone(),
            in_reply_to: target.event_id.clone(),
        });
        effects.outbox.push(outbox::enqueue(conn, &event).await?);
    }
    Ok(customer_id)
}

//! A model job: a stored customer message the decision core left for the
//! model, with what its lane already read for the model stage and a signal
//! of whether its transaction committed. The lane creates jobs; the model
//! stage runs them.

use std::time::Instant;

use chrono::{DateTime, Utc};
use tokio::sync::oneshot;
use uuid::Uuid;

use crate::event::{ChatMessage, Envelope};
use crate::store::asks::ModelInputs;
use crate::store::chat::StoredMessage;
use crate::turn::Turn;

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
/// [`super::model_stage::ModelStage::submit`]).
#[derive(Debug)]
pub struct LaneInputs {
    /// The inputs.
    pub inputs: ModelInputs,
    /// Sent before this instant.
    pub read_at: Instant,
}

/// The stored customer message a decision is about.
#[derive(Debug)]
pub struct ModelJob {
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
    /// The turns before the message, oldest first, as its lane read them
    /// (none for a message resumed later: the stage reads them).
    pub prior_turns: Option<Vec<Turn>>,
    /// The stage's inputs as the message's transaction read them.
    pub lane_inputs: Option<LaneInputs>,
    /// Whether the message's transaction has committed.
    pub committed: CommitSignal,
}

impl ModelJob {
    /// The reference of a message just stored.
    pub fn new(
        envelope: &Envelope,
        message: &ChatMessage,
        stored: &StoredMessage,
        region: Option<&str>,
    ) -> ModelJob {
        ModelJob {
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
            prior_turns: None,
            lane_inputs: None,
            committed: CommitSignal::default(),
        }
    }
}

//! Enrichment of one customer message inside a transaction: load the
//! decision state, run the decision core, and write what it decided (facts
//! with history, declines, the ask and its `ask.requested` event).
//!
//! Offline, the whole decision happens in the message's own transaction. With
//! a model, the message's transaction records the pattern facts and marks the
//! message for the model stage ([`super::model_stage`]), which runs after the commit so
//! a slow model never holds back other conversations.

use sqlx::PgConnection;
use uuid::Uuid;

use super::effects::Effects;
use super::error::HandleError;
use super::field_writes::record_write;
use super::model_job::ModelJob;
use crate::decide::policy::Source;
use crate::decide::{self, Decision, Gate, Origin, Proposal, TurnContext};
use crate::event::{AskRequested, ChatMessage, FieldChange, Outbound};
use crate::store::asks::{self, DecisionState, NewAsk};
use crate::store::chat::StoredMessage;
use crate::store::fields::{self as field_store, FieldWrite};
use crate::store::model_queue;
use crate::turn::Turn;
use crate::workspaces::Workspace;

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

/// The decision context for a message and its state.
pub fn context<'a>(
    workspace: &'a Workspace<'_>,
    target: &'a ModelJob,
    state: &'a DecisionState,
    recent: &'a [Turn],
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

/// The first pass's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PassOutcome {
    /// Whether the model should look at the message.
    pub pass: FirstPass,
    /// The pass wrote to the decision state (facts, declines, asks, or
    /// closed asks), so the state it read is out of date.
    pub changed_state: bool,
}

/// Runs the part of the decision that needs no model, inside the message's
/// transaction, on `state` (current as of this transaction). Offline
/// (`with_model` false) that is everything, asks from keyword triggers
/// included; with a model it is the pattern facts and declines, plus the
/// gate that decides whether the model is worth a call.
#[allow(clippy::too_many_arguments)]
pub async fn first_pass(
    conn: &mut PgConnection,
    workspace: &Workspace<'_>,
    target: &mut ModelJob,
    state: &DecisionState,
    recent: &[Turn],
    with_model: bool,
    changes: &mut Vec<FieldChange>,
    effects: &mut Effects,
) -> Result<PassOutcome, HandleError> {
    let ctx = context(workspace, target, state, recent);
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
    target.customer_id = apply(conn, target, &decided, None, changes, effects).await?;
    let changed_state = closed_asks > 0 || !decided.writes_nothing();
    if needs_model {
        // Recorded as pending for the model stage already.
        return Ok(PassOutcome {
            pass: FirstPass::NeedsModel,
            changed_state,
        });
    }
    if with_model {
        // The message was recorded as pending; the model has nothing to do.
        model_queue::unmark(conn, target.message_id).await?;
    }
    Ok(PassOutcome {
        pass: FirstPass::Done,
        changed_state,
    })
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
    target: &ModelJob,
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
        customer_id = record_write(conn, &write, changes, effects).await?;
    }
    for field in &decided.declined {
        field_store::record_decline(conn, customer_id, field, target.message_id).await?;
    }
    if let Some(ask) = &decided.ask {
        let announcement = Outbound::AskRequested(AskRequested {
            workspace_id: target.workspace_id.clone(),
            conversation_id: target.conversation.clone(),
            customer_id,
            field: ask.field.clone(),
            question: ask.question.clone(),
            language: ask.language.clone(),
            reason: ask.reason.clone(),
            in_reply_to: target.event_id.clone(),
        });
        let recorded = asks::record_ask(
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
            &announcement,
        )
        .await?;
        match recorded {
            Some(queued) => effects.outbox.push(queued),
            // The field got a value (or a refusal) after the decision read
            // the state: asking now would ask for what is known.
            None => effects.rejections.push("known_at_commit"),
        }
    }
    Ok(customer_id)
}

//! Enrichment of one customer message inside its transaction: load the
//! decision state, run the decision core, and write what it decided (facts
//! with history, declines, the ask and its `ask.requested` event).

use sqlx::PgConnection;

use super::handle::{Effects, HandleError, Workspace};
use crate::event::{AskRequested, ChatMessage, Envelope, FieldChange, Outbound};
use crate::extract::decision::{self, Decision, Origin, TurnContext};
use crate::policy::Source;
use crate::store::asks::{self, NewAsk};
use crate::store::chat::StoredMessage;
use crate::store::fields::{self as field_store, FieldWrite};
use crate::store::outbox;

/// Runs the offline decision (patterns and keyword triggers) for a customer
/// message and writes the result.
pub async fn enrich_offline(
    conn: &mut PgConnection,
    workspace: &Workspace<'_>,
    envelope: &Envelope,
    message: &ChatMessage,
    stored: &StoredMessage,
    changes: &mut Vec<FieldChange>,
    effects: &mut Effects,
) -> Result<(), HandleError> {
    let turn = stored.customer_turn.max(0) as u32;
    let state = asks::load_state(conn, stored.customer_id, stored.conversation_id, turn).await?;
    let region = phone_region(workspace, stored, message);
    let ctx = TurnContext {
        fields: workspace.fields,
        default_region: region,
        text: &message.text,
        known: &state.known,
        asks: &state.asks,
        policy: workspace.policy,
        triggers: workspace.triggers,
    };
    let stage = decision::pattern_stage(&ctx);
    let proposal = decision::offline_proposal(&ctx, &stage);
    let decided = decision::decide(&ctx, &stage, &proposal);
    if state.asks.asks.iter().any(|a| a.pending) {
        asks::close_ignored(
            conn,
            stored.conversation_id,
            turn,
            workspace.policy.ignored_after_turns,
        )
        .await?;
    }
    apply(
        conn, envelope, message, stored, &decided, None, changes, effects,
    )
    .await
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

/// Which model produced a decision, for the history.
#[derive(Debug, Clone, Copy)]
pub struct ModelStamp<'a> {
    /// Model name.
    pub model: &'a str,
    /// Prompt version hash.
    pub prompt_version: &'a str,
}

/// Writes a decision: facts (by source rank, with history), declines, the ask.
#[allow(clippy::too_many_arguments)]
pub async fn apply(
    conn: &mut PgConnection,
    envelope: &Envelope,
    message: &ChatMessage,
    stored: &StoredMessage,
    decided: &Decision,
    model: Option<ModelStamp<'_>>,
    changes: &mut Vec<FieldChange>,
    effects: &mut Effects,
) -> Result<(), HandleError> {
    for rejected in &decided.rejections {
        effects.rejections.push(rejected.reason);
    }
    for fact in &decided.facts {
        let (actor, stamp) = match fact.origin {
            Origin::Pattern => ("pattern", None),
            Origin::Model => ("model", model),
        };
        let write = FieldWrite {
            workspace_id: &envelope.workspace_id,
            customer_id: stored.customer_id,
            field: &fact.field,
            value: &fact.value,
            source: Source::Customer,
            actor: Some(actor),
            evidence: Some(&fact.quote),
            message_id: Some(stored.message_id),
            confidence: None,
            model: stamp.map(|s| s.model),
            prompt_version: stamp.map(|s| s.prompt_version),
        };
        super::handle::record_write(conn, &write, changes, effects).await?;
    }
    for field in &decided.declined {
        field_store::record_decline(conn, stored.customer_id, field, stored.message_id).await?;
    }
    if let Some(ask) = &decided.ask {
        let turn = stored.customer_turn.max(0) as u32;
        asks::record_ask(
            conn,
            &NewAsk {
                workspace_id: &envelope.workspace_id,
                conversation_id: stored.conversation_id,
                customer_id: stored.customer_id,
                field: &ask.field,
                question: &ask.question,
                reason: &ask.reason,
                language: &ask.language,
                in_reply_to: &envelope.id,
                customer_turn: turn,
            },
        )
        .await?;
        let event = Outbound::AskRequested(AskRequested {
            workspace_id: envelope.workspace_id.clone(),
            conversation_id: message.conversation_id.clone(),
            customer_id: stored.customer_id,
            field: ask.field.clone(),
            question: ask.question.clone(),
            language: ask.language.clone(),
            reason: ask.reason.clone(),
            in_reply_to: envelope.id.clone(),
        });
        effects.outbox.push(outbox::enqueue(conn, &event).await?);
    }
    Ok(())
}

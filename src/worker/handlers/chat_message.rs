//! `chat.message`: store the message (identity, conversation, counters),
//! apply a login hint, and run the decision core's first pass on customer
//! messages, on the decision state the hot profile holds; messages that need
//! the model leave as model jobs.

use std::time::Instant;

use sqlx::PgConnection;
use uuid::Uuid;

use crate::decide::policy::Source;
use crate::event::{ChatMessage, Envelope, FieldChange, IdentityHint, Sender};
use crate::state::{CacheUpdate, hot};
use crate::store::asks::ModelInputs;
use crate::store::chat::{self, ModelHandoff, Recorded, StoredMessage};
use crate::store::conversations;
use crate::store::erasure;
use crate::store::fields::FieldWrite;
use crate::store::model_queue::AiStatus;
use crate::store::openings::{self, Opening, OpeningChecks};
use crate::turn::Turn;
use crate::worker::decision::{self, FirstPass};
use crate::worker::effects::Effects;
use crate::worker::error::HandleError;
use crate::worker::field_writes::{announce_changes, record_write};
use crate::worker::hot_profile::{self, BatchView};
use crate::worker::model_job::{LaneInputs, ModelJob};
use crate::workspaces::Workspace;

pub(super) async fn handle(
    conn: &mut PgConnection,
    workspace: &Workspace<'_>,
    model: ModelHandoff,
    envelope: &Envelope,
    message: &ChatMessage,
    view: &mut BatchView,
    effects: &mut Effects,
) -> Result<(), HandleError> {
    let sent_at = Instant::now();
    let recorded =
        chat::record_message(conn, envelope, message, workspace.defaults(), model).await?;
    let opening = openings::check(conn, &[opening(envelope, message, &recorded)])
        .await?
        .pop()
        .unwrap_or_default();
    let record = RecordedMessage {
        recorded,
        sent_at,
        merged_into: None,
        opening,
    };
    handle_recorded(
        conn, workspace, model, envelope, message, record, view, effects,
    )
    .await
}

/// A chat message as Postgres recorded it, alone or in a run of messages.
pub(super) struct RecordedMessage {
    /// What recording it returned.
    pub recorded: Recorded,
    /// When it was sent to Postgres.
    pub sent_at: Instant,
    /// The customer that an earlier message of its run merged the
    /// message's customer into, after the run was recorded.
    pub merged_into: Option<Uuid>,
    /// What the checks of a new customer or conversation found.
    pub opening: OpeningChecks,
}

/// A recorded message as [`openings::check`] reads it (a duplicate opened
/// nothing).
pub(super) fn opening<'a>(
    envelope: &'a Envelope,
    message: &'a ChatMessage,
    recorded: &Recorded,
) -> Opening<'a> {
    let (new_customer, new_conversation) = match recorded {
        Recorded::Stored(stored) => (stored.new_customer, stored.new_conversation),
        Recorded::Duplicate => (false, false),
    };
    Opening {
        workspace_id: &envelope.workspace_id,
        conversation: &message.conversation_id,
        platform: message.platform.as_str(),
        platform_user_id: &message.platform_user_id,
        occurred_at: envelope.occurred_at,
        new_customer,
        new_conversation,
    }
}

/// Everything after recording: a late copy of an erased customer's message
/// dropped, early conversation events applied, the turn kept, the identity
/// hint applied and the decision core's first pass run.
#[allow(clippy::too_many_arguments)]
pub(super) async fn handle_recorded(
    conn: &mut PgConnection,
    workspace: &Workspace<'_>,
    model: ModelHandoff,
    envelope: &Envelope,
    message: &ChatMessage,
    record: RecordedMessage,
    view: &mut BatchView,
    effects: &mut Effects,
) -> Result<(), HandleError> {
    let RecordedMessage {
        recorded,
        sent_at,
        merged_into,
        opening,
    } = record;
    let workspace_id = &envelope.workspace_id;
    let conversation = &message.conversation_id;
    let stored = match recorded {
        Recorded::Duplicate => {
            effects.duplicate = true;
            // A redelivery may follow a crash between commit and cache write.
            effects.cache.push(CacheUpdate::InvalidateConversation {
                workspace_id: workspace_id.clone(),
                conversation: conversation.clone(),
            });
            if let Some((_, customer_id)) =
                conversations::find(conn, workspace_id, conversation).await?
            {
                effects.cache.push(CacheUpdate::InvalidateProfile {
                    workspace_id: workspace_id.clone(),
                    customer_id,
                });
            }
            return Ok(());
        }
        Recorded::Stored(stored) => stored,
    };
    if opening.erased {
        // A late copy (a retry, a redelivery) of a message from a customer
        // erased after it was sent: it must not bring them back.
        erasure::discard_recreated(conn, &envelope.workspace_id, stored.customer_id).await?;
        tracing::info!("message from an erased customer dropped");
        return Ok(());
    }
    if stored.new_conversation {
        super::conversation::apply_early(
            conn,
            &envelope.workspace_id,
            (stored.conversation_id, stored.customer_id),
            &opening.early,
        )
        .await?;
    }
    let turn = Turn {
        message_id: stored.message_id,
        sender: message.sender,
        text: message.text.clone(),
    };
    view.saw_message(workspace_id, conversation, &turn, stored.message_count);
    effects.cache.push(CacheUpdate::AppendTurn {
        workspace_id: workspace_id.clone(),
        conversation: conversation.clone(),
        turn: turn.clone(),
        message_count: stored.message_count,
    });
    let mut changes = Vec::new();
    let mut customer_id = merged_into.unwrap_or(stored.customer_id);
    if let Some(hint) = &message.identity_hint {
        customer_id = apply_identity_hint(
            conn,
            workspace,
            envelope,
            &stored,
            hint,
            &mut changes,
            effects,
        )
        .await?;
    }
    if stored.enrichment_enabled && message.sender == Sender::Customer {
        customer_id = decide_first_pass(
            conn,
            workspace,
            model,
            envelope,
            message,
            &stored,
            &turn,
            customer_id,
            sent_at,
            &mut changes,
            view,
            effects,
        )
        .await?;
    } else if message.identity_hint.is_some() {
        // The hint may have changed the profile the cache holds.
        effects.cache.push(CacheUpdate::InvalidateProfile {
            workspace_id: workspace_id.clone(),
            customer_id,
        });
    }
    announce_changes(conn, workspace_id, customer_id, changes, effects).await
}

/// Reads the message's decision state from the hot profile (or Postgres),
/// runs the decision core's first pass on it, keeps the hot profile current
/// and hands a message that needs the model to the stage with what it
/// needs. Returns the customer the message belongs to now.
#[allow(clippy::too_many_arguments)]
async fn decide_first_pass(
    conn: &mut PgConnection,
    workspace: &Workspace<'_>,
    model: ModelHandoff,
    envelope: &Envelope,
    message: &ChatMessage,
    stored: &StoredMessage,
    turn: &Turn,
    customer_id: Uuid,
    sent_at: Instant,
    changes: &mut Vec<FieldChange>,
    view: &mut BatchView,
    effects: &mut Effects,
) -> Result<Uuid, HandleError> {
    let workspace_id = &envelope.workspace_id;
    let conversation = &message.conversation_id;
    let region = decision::phone_region(workspace, stored, message);
    let mut target = ModelJob::new(envelope, message, stored, region);
    target.customer_id = customer_id;
    // An identity hint's writes since the message was recorded make the
    // version it read old.
    let trusted = message.identity_hint.is_none();
    let Some(state) = hot_profile::state_for(
        conn,
        view,
        workspace.fields,
        workspace_id,
        conversation,
        stored,
        customer_id,
        trusted,
    )
    .await?
    else {
        // The customer is gone (erased in this batch): nothing to decide.
        return Ok(customer_id);
    };
    let decision_state =
        hot::decision_state(&state.profile, &state.conversation, target.customer_turn);
    // The turns before the message: the decision core reads the bot's and
    // agents' last words (a question just asked, a value of their own), and
    // the model sees them.
    let recent_turns = match model {
        ModelHandoff::Pending { recent_turns } => recent_turns,
        ModelHandoff::None => view.recent_turns_kept(),
    };
    let turns = hot_profile::turns_for(
        conn,
        view,
        workspace_id,
        conversation,
        stored,
        turn,
        recent_turns,
        effects,
    )
    .await?;
    let with_model = model != ModelHandoff::None;
    let outcome = decision::first_pass(
        conn,
        workspace,
        &mut target,
        &decision_state,
        &turns,
        with_model,
        changes,
        effects,
    )
    .await?;
    let state = if target.customer_id != customer_id {
        // A merge moved the customer: the next message reads it afresh.
        view.forget(
            workspace_id,
            conversation,
            &[customer_id, target.customer_id],
        );
        None
    } else if outcome.changed_state && outcome.pass == FirstPass::NeedsModel {
        // What this pass wrote is read back in the same transaction, for
        // the model stage.
        hot_profile::read_from_postgres(
            conn,
            workspace.fields,
            target.customer_id,
            stored.conversation_id,
        )
        .await?
    } else if outcome.changed_state {
        // Read back once for the whole batch, before its commit.
        view.changed(
            workspace_id,
            conversation,
            target.customer_id,
            stored.conversation_id,
        );
        None
    } else {
        Some(state)
    };
    if let Some(state) = &state {
        view.keep(workspace_id, conversation, state, effects);
    }
    if outcome.pass == FirstPass::NeedsModel {
        target.prior_turns = Some(turns);
        if let (Some(state), Some(spent_tokens)) = (state, stored.spent_tokens) {
            target.lane_inputs = Some(LaneInputs {
                inputs: ModelInputs {
                    ai_status: Some(AiStatus::Pending),
                    customer_id: target.customer_id,
                    state: hot::decision_state(
                        &state.profile,
                        &state.conversation,
                        target.customer_turn,
                    ),
                    state_version: state.profile.version,
                    spent_tokens,
                    agent_instructions: state.profile.agent_instructions,
                },
                read_at: sent_at,
            });
        }
        let customer_id = target.customer_id;
        effects.model_jobs.push(target);
        return Ok(customer_id);
    }
    Ok(target.customer_id)
}

async fn apply_identity_hint(
    conn: &mut PgConnection,
    workspace: &Workspace<'_>,
    envelope: &Envelope,
    stored: &StoredMessage,
    hint: &IdentityHint,
    changes: &mut Vec<FieldChange>,
    effects: &mut Effects,
) -> Result<Uuid, HandleError> {
    let mut customer_id = stored.customer_id;
    if let Some(url) = &hint.profile_picture_url {
        chat::set_profile_picture(conn, stored.customer_id, url).await?;
    }
    let region = stored.default_region.as_deref();
    let hinted = [
        ("name", &hint.name),
        ("email", &hint.email),
        ("phone", &hint.phone),
    ];
    for (field, raw) in hinted {
        let Some(raw) = raw else { continue };
        let value = match workspace.fields.normalize(field, raw, region) {
            Ok(value) => value,
            Err(rejection) => {
                effects.rejections.push(rejection.as_str());
                continue;
            }
        };
        let write = FieldWrite {
            workspace_id: &envelope.workspace_id,
            customer_id,
            field,
            value: &value,
            source: Source::Api,
            actor: Some("identity_hint"),
            evidence: None,
            message_id: Some(stored.message_id),
            confidence: None,
            model: None,
            prompt_version: None,
        };
        customer_id = record_write(conn, &write, changes, effects).await?;
    }
    Ok(customer_id)
}

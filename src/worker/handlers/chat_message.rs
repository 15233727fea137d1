//! `chat.message`: store the message (identity, conversation, counters),
//! apply a login hint, and run the decision core's first pass on customer
//! messages; messages that need the model leave as model jobs.

use std::time::Instant;

use sqlx::PgConnection;
use uuid::Uuid;

use super::event_claim::workspace_defaults;
use crate::decide::policy::Source;
use crate::event::{ChatMessage, Envelope, FieldChange, IdentityHint, Sender};
use crate::state::{CacheUpdate, Turn};
use crate::store::chat::{self, ModelHandoff, Recorded, StoredMessage};
use crate::store::conversations;
use crate::store::fields::FieldWrite;
use crate::worker::decision::{self, FirstPass};
use crate::worker::effects::Effects;
use crate::worker::error::HandleError;
use crate::worker::field_writes::{announce_changes, record_write};
use crate::worker::model_job::{ModelJob, StageReads};
use crate::workspaces::Workspace;

pub(super) async fn handle(
    conn: &mut PgConnection,
    workspace: &Workspace<'_>,
    model: ModelHandoff,
    envelope: &Envelope,
    message: &ChatMessage,
    effects: &mut Effects,
) -> Result<(), HandleError> {
    let sent_at = Instant::now();
    let stored = match chat::record_message(
        conn,
        envelope,
        message,
        workspace_defaults(workspace),
        model,
    )
    .await?
    {
        Recorded::Duplicate => {
            // A redelivery may follow a crash between commit and cache write.
            effects.cache.push(CacheUpdate::InvalidateConversation {
                workspace_id: envelope.workspace_id.clone(),
                conversation: message.conversation_id.clone(),
            });
            if let Some((_, customer_id)) =
                conversations::find(conn, &envelope.workspace_id, &message.conversation_id).await?
            {
                effects.cache.push(CacheUpdate::InvalidateProfile {
                    workspace_id: envelope.workspace_id.clone(),
                    customer_id,
                });
            }
            return Ok(());
        }
        Recorded::Stored(stored) => stored,
    };
    if stored.new_conversation {
        super::conversation::apply_early(
            conn,
            &envelope.workspace_id,
            &message.conversation_id,
            (stored.conversation_id, stored.customer_id),
        )
        .await?;
    }
    effects.cache.push(CacheUpdate::AppendTurn {
        workspace_id: envelope.workspace_id.clone(),
        conversation: message.conversation_id.clone(),
        turn: Turn {
            message_id: stored.message_id,
            sender: message.sender,
            text: message.text.clone(),
        },
        opens_conversation: stored.new_conversation,
    });
    let mut changes = Vec::new();
    let mut customer_id = stored.customer_id;
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
        let region = decision::phone_region(workspace, &stored, message);
        let mut target = ModelJob::new(envelope, message, &stored, region);
        target.customer_id = customer_id;
        // The state came back with the message; hint writes since make it stale.
        let preloaded = if message.identity_hint.is_some() {
            None
        } else {
            stored.state.clone()
        };
        // A hint that merged the customer away makes the stage's reads stale.
        let reads = stored
            .stage_extras
            .as_ref()
            .filter(|_| customer_id == stored.customer_id)
            .map(|extras| StageReads {
                spent_tokens: extras.spent_tokens,
                agent_instructions: extras.agent_instructions.clone(),
                sent_at,
            });
        let pass = decision::first_pass(
            conn,
            workspace,
            &mut target,
            preloaded,
            reads,
            model != ModelHandoff::None,
            &mut changes,
            effects,
        )
        .await?;
        customer_id = target.customer_id;
        if pass == FirstPass::NeedsModel {
            effects.model_jobs.push(target);
        }
    }
    announce_changes(conn, &envelope.workspace_id, customer_id, changes, effects).await
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

//! What each event does to the stores, inside the batch's transaction. The
//! handler returns the effects that must wait for the commit (cache updates,
//! outbound events) instead of performing them, so nothing outside Postgres
//! changes for a transaction that rolls back. Its messages for the model go
//! to the model stage just before the commit, which writes nothing about
//! them until the commit is confirmed (see [`super::enrich::CommitSignal`]).

use std::collections::HashMap;
use std::time::Instant;

use sqlx::PgConnection;
use uuid::Uuid;

use crate::config::{AsksSettings, WorkspaceSettings, WorkspacesSettings};
use crate::decide::policy::AskPolicy;
use crate::decide::policy::Source;
use crate::decide::triggers::Triggers;
use crate::event::{
    ChatMessage, ConversationClosed, ConversationStatus, CustomerForget, CustomerMerged,
    CustomerRef, Envelope, Event, EventBody, FieldChange, IdentityHint, Outbound, ProfileUpdate,
    ProfileUpdated, Sender,
};
use crate::fields::FieldSet;
use crate::state::{CacheUpdate, Turn};
use crate::store::chat::{self, ModelHandoff, Recorded, StoredMessage, WorkspaceDefaults};
use crate::store::fields::{self as field_store, FieldWrite, WriteOutcome};
use crate::store::outbox::{self, Pending};
use crate::store::{StoreError, conversations, customers, erasure, merges};

/// Per-workspace settings resolved once at start-up.
pub struct Workspaces {
    settings: WorkspacesSettings,
    field_sets: HashMap<String, FieldSet>,
    default_fields: FieldSet,
    policy: AskPolicy,
    triggers: Triggers,
    model: ModelHandoff,
}

/// A configured workspace: its settings and fields.
pub struct Workspace<'a> {
    /// Switches and defaults.
    pub settings: &'a WorkspaceSettings,
    /// Profile fields.
    pub fields: &'a FieldSet,
    /// Ask limits.
    pub policy: &'a AskPolicy,
    /// Natural moments to ask.
    pub triggers: &'a Triggers,
}

impl Workspaces {
    /// Resolves the field sets of every configured workspace.
    pub fn new(
        settings: WorkspacesSettings,
        asks: &AsksSettings,
        model: ModelHandoff,
    ) -> Result<Workspaces, crate::config::ConfigError> {
        let default_fields = settings.default.field_set()?;
        let field_sets = settings
            .list
            .iter()
            .map(|(id, workspace)| Ok((id.clone(), workspace.field_set()?)))
            .collect::<Result<_, crate::config::ConfigError>>()?;
        let triggers = Triggers::new(&asks.triggers, &asks.lexicon)
            .map_err(|e| crate::config::ConfigError::Invalid(format!("asks.triggers: {e}")))?;
        Ok(Workspaces {
            settings,
            field_sets,
            default_fields,
            policy: asks.policy.clone(),
            triggers,
            model,
        })
    }

    /// The workspace, or `None` when workspaces are restricted and it is not listed.
    pub fn get(&self, workspace_id: &str) -> Option<Workspace<'_>> {
        let settings = self.settings.for_workspace(workspace_id)?;
        let fields = self
            .field_sets
            .get(workspace_id)
            .unwrap_or(&self.default_fields);
        Some(Workspace {
            settings,
            fields,
            policy: &self.policy,
            triggers: &self.triggers,
        })
    }

    /// Runs the decision core once on sample messages with every configured
    /// field set, so its one-time costs are paid before the first event.
    pub fn prime_decision_core(&self) {
        for fields in std::iter::once(&self.default_fields).chain(self.field_sets.values()) {
            crate::decide::priming::prime(fields, &self.policy, &self.triggers);
        }
    }
}

/// Work that must follow the commit.
#[derive(Debug, Default)]
pub struct Effects {
    /// Cache changes.
    pub cache: Vec<CacheUpdate>,
    /// Outbound events stored in the outbox, to publish.
    pub outbox: Vec<Pending>,
    /// Values proposed but not written, by reason (for metrics).
    pub rejections: Vec<&'static str>,
    /// Customer messages for the model stage.
    pub model_jobs: Vec<super::enrich::MessageRef>,
}

/// Why an event could not be handled.
#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    /// The event is well-formed but refers to something that cannot be used;
    /// it goes to the dead-letter queue with this reason.
    #[error("{0}")]
    Unprocessable(String),
    /// Postgres failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Handles one event inside the caller's transaction.
#[tracing::instrument(skip_all, fields(event_id = %event.envelope.id, kind = event.type_name()))]
pub async fn handle(
    conn: &mut PgConnection,
    workspaces: &Workspaces,
    event: &Event,
) -> Result<Effects, HandleError> {
    let workspace = workspaces
        .get(&event.envelope.workspace_id)
        .ok_or_else(|| {
            HandleError::Unprocessable(format!(
                "unknown workspace `{}`",
                event.envelope.workspace_id
            ))
        })?;
    let mut effects = Effects::default();
    match &event.body {
        EventBody::ChatMessage(message) => {
            chat_message(
                conn,
                &workspace,
                workspaces.model,
                &event.envelope,
                message,
                &mut effects,
            )
            .await?
        }
        EventBody::ProfileUpdate(update) => {
            profile_update(conn, &workspace, &event.envelope, update, &mut effects).await?
        }
        EventBody::ConversationStatus(status) => {
            conversation_status(conn, &workspace, &event.envelope, status).await?
        }
        EventBody::ConversationClosed(closed) => {
            conversation_closed(conn, &workspace, &event.envelope, closed).await?
        }
        EventBody::CustomerForget(forget) => {
            customer_forget(conn, &workspace, &event.envelope, forget, &mut effects).await?
        }
    }
    Ok(effects)
}

fn defaults<'a>(workspace: &'a Workspace<'_>) -> WorkspaceDefaults<'a> {
    WorkspaceDefaults {
        enrichment: workspace.settings.enrichment,
        default_region: workspace.settings.default_region.as_deref(),
    }
}

async fn chat_message(
    conn: &mut PgConnection,
    workspace: &Workspace<'_>,
    model: ModelHandoff,
    envelope: &Envelope,
    message: &ChatMessage,
    effects: &mut Effects,
) -> Result<(), HandleError> {
    let sent_at = Instant::now();
    let stored = match chat::record_message(conn, envelope, message, defaults(workspace), model)
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
        let region = super::enrich::phone_region(workspace, &stored, message);
        let mut target = super::enrich::MessageRef::new(envelope, message, &stored, region);
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
            .map(|extras| super::enrich::StageReads {
                spent_tokens: extras.spent_tokens,
                agent_instructions: extras.agent_instructions.clone(),
                sent_at,
            });
        let pass = super::enrich::first_pass(
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
        if pass == super::enrich::FirstPass::NeedsModel {
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

/// Writes one value and returns the customer it now belongs to: a new email
/// may merge this customer into an older one with the same email.
pub(crate) async fn record_write(
    conn: &mut PgConnection,
    write: &FieldWrite<'_>,
    changes: &mut Vec<FieldChange>,
    effects: &mut Effects,
) -> Result<Uuid, HandleError> {
    let is_email = write.field == "email";
    if is_email {
        merges::lock_email(conn, write.workspace_id, write.value).await?;
    }
    let outcome = field_store::apply(conn, write).await?;
    match &outcome {
        WriteOutcome::Changed { old } => changes.push(FieldChange {
            field: write.field.to_owned(),
            old: old.clone(),
            new: write.value.to_owned(),
            source: write.source.as_str().to_owned(),
        }),
        WriteOutcome::Unchanged => {}
        WriteOutcome::Blocked { .. } => effects.rejections.push("outranked"),
    }
    if !is_email || matches!(outcome, WriteOutcome::Blocked { .. }) {
        return Ok(write.customer_id);
    }
    let Some(merged) =
        merges::merge_by_email(conn, write.workspace_id, write.customer_id, write.value).await?
    else {
        return Ok(write.customer_id);
    };
    tracing::info!(into = %merged.into, from = %merged.from, "customers merged on a shared email");
    for customer_id in [merged.into, merged.from] {
        effects.cache.push(CacheUpdate::InvalidateProfile {
            workspace_id: write.workspace_id.to_owned(),
            customer_id,
        });
    }
    let event = Outbound::CustomerMerged(CustomerMerged {
        workspace_id: write.workspace_id.to_owned(),
        into: merged.into,
        from: merged.from,
        moved: merged.moved,
    });
    effects.outbox.push(outbox::enqueue(conn, &event).await?);
    Ok(merged.into)
}

pub(crate) async fn announce_changes(
    conn: &mut PgConnection,
    workspace_id: &str,
    customer_id: Uuid,
    changes: Vec<FieldChange>,
    effects: &mut Effects,
) -> Result<(), HandleError> {
    if changes.is_empty() {
        return Ok(());
    }
    effects.cache.push(CacheUpdate::InvalidateProfile {
        workspace_id: workspace_id.to_owned(),
        customer_id,
    });
    let event = Outbound::ProfileUpdated(ProfileUpdated {
        workspace_id: workspace_id.to_owned(),
        customer_id,
        changes,
    });
    effects.outbox.push(outbox::enqueue(conn, &event).await?);
    Ok(())
}

async fn claim(
    conn: &mut PgConnection,
    workspace: &Workspace<'_>,
    envelope: &Envelope,
    kind: &str,
) -> Result<bool, HandleError> {
    chat::ensure_workspace(conn, &envelope.workspace_id, defaults(workspace)).await?;
    Ok(chat::claim_event(conn, envelope, kind).await?)
}

async fn profile_update(
    conn: &mut PgConnection,
    workspace: &Workspace<'_>,
    envelope: &Envelope,
    update: &ProfileUpdate,
    effects: &mut Effects,
) -> Result<(), HandleError> {
    if !claim(conn, workspace, envelope, "profile.update").await? {
        return Ok(());
    }
    let workspace_id = envelope.workspace_id.as_str();
    let mut customer_id = match customers::resolve(conn, workspace_id, &update.customer).await? {
        Some(id) => id,
        None => match &update.customer {
            CustomerRef::Identity {
                platform,
                platform_user_id,
            } => {
                customers::create_for_identity(
                    conn,
                    workspace_id,
                    platform.as_str(),
                    platform_user_id,
                )
                .await?
            }
            CustomerRef::Email(_) => customers::create_bare(conn, workspace_id).await?,
            CustomerRef::Id(id) => {
                return Err(HandleError::Unprocessable(format!("unknown customer {id}")));
            }
        },
    };
    let source = Source::from(update.source);
    let region = workspace.settings.default_region.as_deref();
    let mut values: Vec<(String, String)> = Vec::new();
    if let CustomerRef::Email(email) = &update.customer
        && !update.fields.contains_key("email")
    {
        values.push(("email".to_owned(), email.clone()));
    }
    for (field, raw) in &update.fields {
        let raw = match raw {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Number(n) => n.to_string(),
            serde_json::Value::Array(items) => items
                .iter()
                .filter_map(|v| v.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            _ => {
                effects.rejections.push("unsupported_value");
                continue;
            }
        };
        values.push((field.clone(), raw));
    }
    let mut changes = Vec::new();
    for (field, raw) in &values {
        let value = match workspace.fields.normalize(field, raw, region) {
            Ok(value) => value,
            Err(rejection) => {
                tracing::info!(field = %field, reason = rejection.as_str(), "profile.update value rejected");
                effects.rejections.push(rejection.as_str());
                continue;
            }
        };
        let write = FieldWrite {
            workspace_id,
            customer_id,
            field,
            value: &value,
            source,
            actor: update.actor.as_deref(),
            evidence: None,
            message_id: None,
            confidence: None,
            model: None,
            prompt_version: None,
        };
        customer_id = record_write(conn, &write, &mut changes, effects).await?;
    }
    customers::update_tags(
        conn,
        customer_id,
        &update.tags_add,
        &update.tags_remove,
        source.as_str(),
    )
    .await?;
    // Instructions reach the model's prompt: only agents and APIs give them.
    if let Some(instructions) = &update.agent_instructions {
        if matches!(source, Source::Agent | Source::Api) {
            customers::set_agent_instructions(conn, customer_id, instructions).await?;
        } else {
            effects.rejections.push("instructions_source");
        }
    }
    announce_changes(conn, workspace_id, customer_id, changes, effects).await
}

async fn known_conversation(
    conn: &mut PgConnection,
    envelope: &Envelope,
    conversation_id: &str,
) -> Result<(i64, Uuid), HandleError> {
    conversations::find(conn, &envelope.workspace_id, conversation_id)
        .await?
        .ok_or_else(|| {
            HandleError::Unprocessable(format!("unknown conversation `{conversation_id}`"))
        })
}

async fn conversation_status(
    conn: &mut PgConnection,
    workspace: &Workspace<'_>,
    envelope: &Envelope,
    status: &ConversationStatus,
) -> Result<(), HandleError> {
    if !claim(conn, workspace, envelope, "conversation.status").await? {
        return Ok(());
    }
    let conversation = known_conversation(conn, envelope, &status.conversation_id).await?;
    conversations::record_status(
        conn,
        &envelope.workspace_id,
        conversation,
        status,
        envelope.occurred_at,
    )
    .await?;
    Ok(())
}

async fn conversation_closed(
    conn: &mut PgConnection,
    workspace: &Workspace<'_>,
    envelope: &Envelope,
    closed: &ConversationClosed,
) -> Result<(), HandleError> {
    if !claim(conn, workspace, envelope, "conversation.closed").await? {
        return Ok(());
    }
    let (conversation_id, _) = known_conversation(conn, envelope, &closed.conversation_id).await?;
    conversations::close(conn, conversation_id, closed, envelope.occurred_at).await?;
    Ok(())
}

async fn customer_forget(
    conn: &mut PgConnection,
    workspace: &Workspace<'_>,
    envelope: &Envelope,
    forget: &CustomerForget,
    effects: &mut Effects,
) -> Result<(), HandleError> {
    if !claim(conn, workspace, envelope, "customer.forget").await? {
        return Ok(());
    }
    let Some(customer_id) =
        customers::resolve(conn, &envelope.workspace_id, &forget.customer).await?
    else {
        tracing::info!("customer.forget for a customer that does not exist; nothing to erase");
        return Ok(());
    };
    let erased = erasure::forget(
        conn,
        &envelope.workspace_id,
        customer_id,
        forget.actor.as_deref(),
        Some(&envelope.id),
    )
    .await?;
    effects.cache.push(CacheUpdate::ForgetCustomer {
        workspace_id: envelope.workspace_id.clone(),
        customer_id,
        conversations: erased.conversation_external_ids,
    });
    Ok(())
}

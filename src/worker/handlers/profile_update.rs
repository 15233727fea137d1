//! `profile.update`: agent edits, form submissions and API updates write
//! configured fields at their source's rank (`null` clears a field), tags
//! and agent instructions.

use sqlx::PgConnection;

use super::event_claim::claim;
use crate::decide::policy::Source;
use crate::event::{CustomerRef, Envelope, ProfileUpdate};
use crate::fields::Rejection;
use crate::store::customers::{self, TagAuthor};
use crate::store::fields::{FieldClear, FieldWrite};
use crate::worker::effects::Effects;
use crate::worker::error::HandleError;
use crate::worker::field_writes::{announce_changes, record_clear, record_write};
use crate::workspaces::Workspace;

pub(super) async fn handle(
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
    let mut clears: Vec<&str> = Vec::new();
    if let CustomerRef::Email(email) = &update.customer
        && !update.fields.contains_key("email")
    {
        values.push(("email".to_owned(), email.clone()));
    }
    for (field, raw) in &update.fields {
        let raw = match raw {
            serde_json::Value::Null => {
                if workspace.fields.get(field).is_some() {
                    clears.push(field);
                } else {
                    tracing::info!(field = %field, "profile.update clear of an unknown field rejected");
                    effects.rejections.push(Rejection::UnknownField.as_str());
                }
                continue;
            }
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
    for field in clears {
        let clear = FieldClear {
            workspace_id,
            customer_id,
            field,
            source,
            actor: update.actor.as_deref(),
        };
        record_clear(conn, &clear, &mut changes, effects).await?;
    }
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
        TagAuthor {
            workspace_id,
            source: source.as_str(),
            actor: update.actor.as_deref(),
        },
    )
    .await?;
    if let Some(instructions) = &update.agent_instructions {
        customers::set_agent_instructions(conn, customer_id, instructions).await?;
    }
    announce_changes(conn, workspace_id, customer_id, changes, effects).await
}

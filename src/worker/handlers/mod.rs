//! The event handlers: what each inbound event does to the stores, inside
//! the batch's transaction. A handler returns the [`Effects`] that must wait
//! for the commit instead of performing them. One file per event family.

mod chat_message;
mod conversation;
mod event_claim;
mod forget;
mod note;
mod profile_update;

use sqlx::PgConnection;

use super::effects::Effects;
use super::error::HandleError;
use crate::event::{Event, EventBody};
use crate::workspaces::Workspaces;

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
            chat_message::handle(
                conn,
                &workspace,
                workspaces.model_handoff(),
                &event.envelope,
                message,
                &mut effects,
            )
            .await?
        }
        EventBody::ProfileUpdate(update) => {
            profile_update::handle(conn, &workspace, &event.envelope, update, &mut effects).await?
        }
        EventBody::ConversationStatus(status) => {
            conversation::status(conn, &workspace, &event.envelope, status).await?
        }
        EventBody::ConversationClosed(closed) => {
            conversation::closed(conn, &workspace, &event.envelope, closed).await?
        }
        EventBody::CustomerForget(forget) => {
            forget::handle(conn, &workspace, &event.envelope, forget, &mut effects).await?
        }
        EventBody::NoteAdded(note) => {
            note::handle(conn, &workspace, &event.envelope, note, &mut effects).await?
        }
    }
    Ok(effects)
}

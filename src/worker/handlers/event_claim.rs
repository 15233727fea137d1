//! Claiming a non-message event: its workspace row exists and its id is
//! recorded once, so a redelivered event is a no-op.

use sqlx::PgConnection;

use super::super::error::HandleError;
use crate::event::Envelope;
use crate::store::chat;
use crate::workspaces::Workspace;

/// Records the event's id; false when it was handled before.
pub(super) async fn claim(
    conn: &mut PgConnection,
    workspace: &Workspace<'_>,
    envelope: &Envelope,
    kind: &str,
) -> Result<bool, HandleError> {
    chat::ensure_workspace(conn, &envelope.workspace_id, workspace.defaults()).await?;
    Ok(chat::claim_event(conn, envelope, kind).await?)
}

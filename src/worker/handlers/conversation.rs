//! `conversation.status` and `conversation.closed`: escalations, status
//! counters and the close that lets the summary sweeper take the conversation.

use sqlx::PgConnection;
use uuid::Uuid;

use super::event_claim::claim;
use crate::event::{ConversationClosed, ConversationStatus, Envelope};
use crate::store::conversations;
use crate::worker::error::HandleError;
use crate::workspaces::Workspace;

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

pub(super) async fn status(
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

pub(super) async fn closed(
    conn: &mut PgConnection,
    workspace: &Workspace<'_>,
    envelope: &Envelope,
    closed: &ConversationClosed,
) -> Result<(), HandleError> {
    if !claim(conn, workspace, envelope, "conversation.closed").await? {
        return Ok(());
    }
    let conversation = known_conversation(conn, envelope, &closed.conversation_id).await?;
    conversations::close(conn, conversation, closed, envelope.occurred_at).await?;
    Ok(())
}

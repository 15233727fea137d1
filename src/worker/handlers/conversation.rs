//! `conversation.status` and `conversation.closed`: escalations, status
//! counters and the close that lets the summary sweeper take the conversation.
//! One that arrives before the conversation's first message is held in
//! Postgres and applied when that message creates the conversation
//! ([`apply_early`]), instead of being dead-lettered; a late one about a
//! conversation whose customer was forgotten since is dropped.

use sqlx::PgConnection;
use uuid::Uuid;

use super::event_claim::claim;
use crate::event::{ConversationClosed, ConversationStatus, Envelope};
use crate::store::conversations::{self, EarlyEvent};
use crate::store::erasure::{self, Subject};
use crate::worker::error::HandleError;
use crate::workspaces::Workspace;

/// Whether the conversation was erased (its customer forgotten) after the
/// event occurred: a late copy of such an event is dropped, not held for a
/// first message that will never come.
async fn erased_since(
    conn: &mut PgConnection,
    envelope: &Envelope,
    conversation: &str,
) -> Result<bool, HandleError> {
    Ok(erasure::erased_after(
        &mut *conn,
        &envelope.workspace_id,
        &[Subject::Conversation(conversation)],
        envelope.occurred_at,
    )
    .await?)
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
    match conversations::find(conn, &envelope.workspace_id, &status.conversation_id).await? {
        Some(conversation) => {
            conversations::record_status(
                conn,
                &envelope.workspace_id,
                conversation,
                status,
                envelope.occurred_at,
            )
            .await?
        }
        None if erased_since(conn, envelope, &status.conversation_id).await? => {}
        None => {
            let early = EarlyEvent::Status(status.clone(), envelope.occurred_at);
            conversations::hold_early(conn, &envelope.workspace_id, &early).await?
        }
    }
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
    match conversations::find(conn, &envelope.workspace_id, &closed.conversation_id).await? {
        Some(conversation) => {
            conversations::close(conn, conversation, closed, envelope.occurred_at).await?
        }
        None if erased_since(conn, envelope, &closed.conversation_id).await? => {}
        None => {
            let early = EarlyEvent::Closed(closed.clone(), envelope.occurred_at);
            conversations::hold_early(conn, &envelope.workspace_id, &early).await?
        }
    }
    Ok(())
}

/// Applies, in arrival order, the statuses and closes held for a
/// conversation its first message just created (taken out of the holding
/// table by [`crate::store::openings::check`]), as if they had come right
/// before that message: a held close leaves it open again, as a message
/// after a close always does.
pub(super) async fn apply_early(
    conn: &mut PgConnection,
    workspace_id: &str,
    conversation: (i64, Uuid),
    held: &[EarlyEvent],
) -> Result<(), HandleError> {
    if held.is_empty() {
        return Ok(());
    }
    for event in held {
        match event {
            EarlyEvent::Status(status, at) => {
                conversations::record_status(conn, workspace_id, conversation, status, *at).await?
            }
            EarlyEvent::Closed(closed, at) => {
                conversations::close(conn, conversation, closed, *at).await?
            }
        }
    }
    conversations::reopen(conn, conversation.0).await?;
    Ok(())
}

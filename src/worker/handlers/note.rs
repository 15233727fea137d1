//! `note.added`: an agent's note about a customer is stored and announced
//! (`note.added` on the outbound exchange). An identity reference the
//! worker has not seen yet gets an anonymous customer to hold the note, as
//! `profile.update` does; an unknown customer id or email is refused.

use sqlx::PgConnection;

use super::event_claim::claim;
use crate::event::{CustomerRef, Envelope, NoteAdded, NoteStored, Outbound};
use crate::store::notes::{self, NewNote};
use crate::store::{customers, outbox};
use crate::worker::effects::Effects;
use crate::worker::error::HandleError;
use crate::workspaces::Workspace;

pub(super) async fn handle(
    conn: &mut PgConnection,
    workspace: &Workspace<'_>,
    envelope: &Envelope,
    note: &NoteAdded,
    effects: &mut Effects,
) -> Result<(), HandleError> {
    if !claim(conn, workspace, envelope, "note.added").await? {
        return Ok(());
    }
    let workspace_id = envelope.workspace_id.as_str();
    let customer_id = match customers::resolve(conn, workspace_id, &note.customer).await? {
        Some(id) => id,
        None => match &note.customer {
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
            CustomerRef::Id(id) => {
                return Err(HandleError::Unprocessable(format!("unknown customer {id}")));
            }
            CustomerRef::Email(_) => {
                return Err(HandleError::Unprocessable(
                    "no customer has that email".to_owned(),
                ));
            }
        },
    };
    let note_id = notes::add(
        conn,
        &NewNote {
            workspace_id,
            customer_id,
            text: &note.text,
            author: &note.author,
            event_id: Some(&envelope.id),
            created_at: envelope.occurred_at,
        },
    )
    .await?;
    let event = Outbound::NoteAdded(NoteStored {
        workspace_id: workspace_id.to_owned(),
        customer_id,
        note_id,
        text: note.text.clone(),
        author: note.author.clone(),
        created_at: envelope.occurred_at,
    });
    effects.outbox.push(outbox::enqueue(conn, &event).await?);
    Ok(())
}

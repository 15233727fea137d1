//! `customer.forget`: erase a customer in the batch's transaction and drop
//! their cache keys after the commit.

use sqlx::PgConnection;

use super::event_claim::claim;
use crate::event::{CustomerForget, Envelope};
use crate::state::CacheUpdate;
use crate::store::{customers, erasure};
use crate::worker::effects::Effects;
use crate::worker::error::HandleError;
use crate::workspaces::Workspace;

pub(super) async fn handle(
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
        erasure::Request {
            requested_by: forget.actor.as_deref(),
            event_id: Some(&envelope.id),
            occurred_at: Some(envelope.occurred_at),
        },
    )
    .await?;
    effects.cache.push(CacheUpdate::ForgetCustomer {
        workspace_id: envelope.workspace_id.clone(),
        customer_id,
        conversations: erased.conversation_external_ids,
    });
    Ok(())
}

//! The write path every mutating route shares: the request becomes the
//! inbound event it stands for, the event handlers run it in a transaction,
//! and after the commit its effects (cache, outbound events) are applied,
//! exactly as for an event from the broker.

use chrono::Utc;
use uuid::Uuid;

use super::Api;
use super::auth::Caller;
use super::problem::Problem;
use crate::event::{Envelope, Event, EventBody};
use crate::worker::handlers;
use crate::worker::hot_profile::BatchView;

/// A fresh envelope for an event the API makes on the caller's behalf.
pub fn envelope(caller: &Caller) -> Envelope {
    Envelope {
        id: format!("api:{}", Uuid::new_v4()),
        version: 1,
        workspace_id: caller.workspace_id.clone(),
        occurred_at: Utc::now(),
    }
}

/// Runs one event through the handlers and commits it; returns the reasons
/// of the values it did not write.
pub async fn run(api: &Api, caller: &Caller, body: EventBody) -> Result<Vec<String>, Problem> {
    let event = Event {
        envelope: envelope(caller),
        body,
    };
    let mut tx = api.pool.begin().await?;
    let mut view = BatchView::empty(&api.after_commit.cache);
    let effects = handlers::handle(&mut tx, &api.workspaces, &event, &mut view).await?;
    tx.commit().await?;
    let rejected = effects
        .rejections
        .iter()
        .map(|reason| (*reason).to_owned())
        .collect();
    api.after_commit.apply([effects]).await;
    Ok(rejected)
}

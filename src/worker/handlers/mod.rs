//! The event handlers: what each inbound event does to the stores, inside
//! the batch's transaction. A handler returns the [`Effects`] that must wait
//! for the commit instead of performing them. One file per event family.

mod chat_message;
mod conversation;
mod event_claim;
mod forget;
mod note;
mod profile_update;

use std::collections::HashMap;
use std::time::Instant;

use sqlx::PgConnection;
use tracing::Instrument;
use uuid::Uuid;

use super::effects::Effects;
use super::error::HandleError;
use super::hot_profile::BatchView;
use crate::event::{Event, EventBody};
use crate::store::chat::{self, RunMessage};
use crate::store::openings;
use crate::workspaces::Workspaces;

/// The fewest chat messages recorded together. A run's call costs Postgres
/// a fixed share (about 0.2 ms, migration 0024) that runs of four or more
/// messages pay back; shorter ones are recorded one by one.
const SHORTEST_RUN: usize = 4;

/// Handles a batch's events in order inside the caller's transaction, with
/// what [`handle`] does for each. A run of chat messages (no identity hint,
/// a known workspace) is recorded in one call ([`chat::record_messages`])
/// and then handled message by message; a message whose customer an
/// earlier message of the run merged into another is handled as the kept
/// customer's.
pub async fn handle_all(
    conn: &mut PgConnection,
    workspaces: &Workspaces,
    events: &[&Event],
    view: &mut BatchView,
) -> Result<Vec<Effects>, HandleError> {
    let mut all = Vec::with_capacity(events.len());
    let mut next = 0;
    while next < events.len() {
        let run = chat_run(workspaces, &events[next..]);
        if run.len() < SHORTEST_RUN {
            all.push(handle(conn, workspaces, events[next], view).await?);
            next += 1;
            continue;
        }
        let sent_at = Instant::now();
        let recorded = chat::record_messages(conn, &run, workspaces.model_handoff()).await?;
        let opened: Vec<_> = run
            .iter()
            .zip(&recorded)
            .map(|(m, recorded)| chat_message::opening(m.envelope, m.message, recorded))
            .collect();
        let checked = openings::check(conn, &opened).await?;
        let mut merged: HashMap<Uuid, Uuid> = HashMap::new();
        for (recorded, opening) in recorded.into_iter().zip(checked) {
            let event = events[next];
            next += 1;
            let (EventBody::ChatMessage(message), Some(workspace)) =
                (&event.body, workspaces.get(&event.envelope.workspace_id))
            else {
                // `chat_run` took only chat messages of known workspaces.
                return Err(HandleError::Unprocessable(
                    "a recorded run held an event that is not a chat message".into(),
                ));
            };
            let merged_into = match &recorded {
                chat::Recorded::Stored(stored) => kept_customer(&merged, stored.customer_id),
                chat::Recorded::Duplicate => None,
            };
            let record = chat_message::RecordedMessage {
                recorded,
                sent_at,
                merged_into,
                opening,
            };
            let mut effects = Effects::default();
            chat_message::handle_recorded(
                conn,
                &workspace,
                workspaces.model_handoff(),
                &event.envelope,
                message,
                record,
                view,
                &mut effects,
            )
            .instrument(tracing::info_span!("handle", event_id = %event.envelope.id, kind = event.type_name()))
            .await?;
            merged.extend(effects.merges.iter().copied());
            all.push(effects);
        }
    }
    Ok(all)
}

/// The chat messages at the start of `events` that can be recorded as one
/// run: no identity hint (its writes may move the customer before the next
/// message is recorded) and a known workspace.
fn chat_run<'a>(workspaces: &'a Workspaces, events: &[&'a Event]) -> Vec<RunMessage<'a>> {
    let mut run = Vec::new();
    for event in events {
        let EventBody::ChatMessage(message) = &event.body else {
            break;
        };
        if message.identity_hint.is_some() {
            break;
        }
        let Some(workspace) = workspaces.get(&event.envelope.workspace_id) else {
            break;
        };
        run.push(RunMessage {
            envelope: &event.envelope,
            message,
            workspace: workspace.defaults(),
        });
    }
    run
}

/// The customer `customer_id` belongs to after the merges so far, when one
/// moved it.
fn kept_customer(merged: &HashMap<Uuid, Uuid>, customer_id: Uuid) -> Option<Uuid> {
    let mut current = customer_id;
    // Each merge keeps an older customer, so the chain ends; the bound
    // guards against a cycle all the same.
    for _ in 0..=merged.len() {
        match merged.get(&current) {
            Some(into) if *into != current => current = *into,
            _ => break,
        }
    }
    (current != customer_id).then_some(current)
}

/// Handles one event inside the caller's transaction; `view` is what the
/// batch knows of the hot profile.
#[tracing::instrument(skip_all, fields(event_id = %event.envelope.id, kind = event.type_name()))]
pub async fn handle(
    conn: &mut PgConnection,
    workspaces: &Workspaces,
    event: &Event,
    view: &mut BatchView,
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
                view,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_customer_merged_twice_in_a_run_is_handled_as_the_last_kept() {
        let [a, b, c, d] = [1u128, 2, 3, 4].map(Uuid::from_u128);
        let merged = HashMap::from([(a, b), (b, c)]);
        assert_eq!(kept_customer(&merged, a), Some(c));
        assert_eq!(kept_customer(&merged, b), Some(c));
        assert_eq!(kept_customer(&merged, c), None);
        assert_eq!(kept_customer(&merged, d), None);
        let cycle = HashMap::from([(a, b), (b, a)]);
        assert!(kept_customer(&cycle, a).is_some(), "a cycle ends");
    }
}

//! Writing or clearing one field value with its history, and announcing a
//! customer's changes: shared by the handlers, the decision writes and the
//! model stage, so a value is written the same way whoever proposed it. A new email may
//! merge the customer into an older one; the merge is announced here too.

use sqlx::PgConnection;
use uuid::Uuid;

use super::effects::Effects;
use super::error::HandleError;
use crate::event::{CustomerMerged, FieldChange, Outbound, ProfileUpdated};
use crate::state::CacheUpdate;
use crate::store::fields::{self as field_store, FieldClear, FieldWrite, WriteOutcome};
use crate::store::{merges, outbox};

/// Writes one value and returns the customer it now belongs to: a new email
/// may merge this customer into an older one with the same email.
pub async fn record_write(
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
            new: Some(write.value.to_owned()),
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
    effects.merges.push((merged.from, merged.into));
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

/// Clears one field (`null` in `profile.update`): the change is announced
/// with `new: null`; a higher-ranked value stays and counts as `outranked`.
pub async fn record_clear(
    conn: &mut PgConnection,
    clear: &FieldClear<'_>,
    changes: &mut Vec<FieldChange>,
    effects: &mut Effects,
) -> Result<(), HandleError> {
    match field_store::clear(conn, clear).await? {
        WriteOutcome::Changed { old } => changes.push(FieldChange {
            field: clear.field.to_owned(),
            old,
            new: None,
            source: clear.source.as_str().to_owned(),
        }),
        WriteOutcome::Unchanged => {}
        WriteOutcome::Blocked { .. } => effects.rejections.push("outranked"),
    }
    Ok(())
}

/// Announces a customer's field changes (`profile.updated`). The caller
/// keeps the hot profile current: it writes the state it read back, or
/// invalidates it.
pub async fn announce_changes(
    conn: &mut PgConnection,
    workspace_id: &str,
    customer_id: Uuid,
    changes: Vec<FieldChange>,
    effects: &mut Effects,
) -> Result<(), HandleError> {
    if changes.is_empty() {
        return Ok(());
    }
    let event = Outbound::ProfileUpdated(ProfileUpdated {
        workspace_id: workspace_id.to_owned(),
        customer_id,
        changes,
    });
    effects.outbox.push(outbox::enqueue(conn, &event).await?);
    Ok(())
}

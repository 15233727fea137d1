//! What a chat message that created its customer or opened its conversation
//! checks before anything else is done with it: whether that customer or
//! conversation was erased after the message occurred (a late copy, a retry
//! or a redelivery, must not bring them back), and the statuses and closes
//! held for the conversation until its first message. One round trip covers
//! a whole run of recorded messages, instead of two per message.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use super::StoreError;
use super::conversations::{EarlyEvent, EarlyRow, early_event};
use super::erasure::Subject;

/// A recorded chat message, as the checks need it.
#[derive(Debug, Clone, Copy)]
pub struct Opening<'a> {
    /// Tenant.
    pub workspace_id: &'a str,
    /// The conversation's external id.
    pub conversation: &'a str,
    /// The sender's platform.
    pub platform: &'a str,
    /// The sender's id there.
    pub platform_user_id: &'a str,
    /// When the message occurred.
    pub occurred_at: DateTime<Utc>,
    /// Recording it created the customer.
    pub new_customer: bool,
    /// Recording it opened the conversation.
    pub new_conversation: bool,
}

/// What the checks found for one message.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OpeningChecks {
    /// The message created its customer, and the identity or conversation
    /// was erased after the message occurred.
    pub erased: bool,
    /// The events held for the conversation it opened, in arrival order,
    /// now taken out of the holding table.
    pub early: Vec<EarlyEvent>,
}

/// A result row: the message's position (from 1), then either `erased` or
/// one held event.
type CheckRow = (
    i64,
    bool,
    Option<i64>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<DateTime<Utc>>,
);

/// Checks every message of `openings` that created its customer or opened
/// its conversation, in one statement, and returns one result per message
/// in order (the default for the others). The held events it returns are
/// removed, so the caller applies them in the same transaction.
pub async fn check(
    conn: &mut PgConnection,
    openings: &[Opening<'_>],
) -> Result<Vec<OpeningChecks>, StoreError> {
    let mut checks = vec![OpeningChecks::default(); openings.len()];
    if !openings
        .iter()
        .any(|o| o.new_customer || o.new_conversation)
    {
        return Ok(checks);
    }
    let column =
        |get: fn(&Opening<'_>) -> String| -> Vec<String> { openings.iter().map(get).collect() };
    let identity_digests = column(|o| {
        Subject::Identity {
            platform: o.platform,
            platform_user_id: o.platform_user_id,
        }
        .digest()
    });
    let conversation_digests = column(|o| Subject::Conversation(o.conversation).digest());
    let rows: Vec<CheckRow> = sqlx::query_as(
        "WITH input AS (
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[],
                                  $6::boolean[], $7::boolean[])
                      WITH ORDINALITY AS i(workspace_id, external_id, identity_digest, conversation_digest,
                                           occurred_at, new_customer, new_conversation, ord)
         ),
         early AS (
             DELETE FROM enrich.early_conversation_events e
              USING input i
              WHERE i.new_conversation AND e.workspace_id = i.workspace_id AND e.external_id = i.external_id
             RETURNING i.ord, e.id, e.event_type, e.status, e.agent_id, e.reason, e.resolved_by,
                       e.resolution, e.occurred_at
         )
         SELECT i.ord, true, NULL::bigint, NULL::text, NULL::text, NULL::text, NULL::text, NULL::text,
                NULL::text, NULL::timestamptz
           FROM input i
          WHERE i.new_customer
            AND EXISTS (SELECT 1 FROM enrich.erasures x
                         WHERE x.workspace_id = i.workspace_id
                           AND x.subject_digests && ARRAY[i.identity_digest, i.conversation_digest]
                           AND coalesce(x.occurred_at, x.erased_at) > i.occurred_at)
         UNION ALL
         SELECT ord, false, id, event_type, status, agent_id, reason, resolved_by, resolution, occurred_at
           FROM early",
    )
    .bind(openings.iter().map(|o| o.workspace_id).collect::<Vec<_>>())
    .bind(openings.iter().map(|o| o.conversation).collect::<Vec<_>>())
    .bind(&identity_digests)
    .bind(&conversation_digests)
    .bind(openings.iter().map(|o| o.occurred_at).collect::<Vec<_>>())
    .bind(openings.iter().map(|o| o.new_customer).collect::<Vec<_>>())
    .bind(openings.iter().map(|o| o.new_conversation).collect::<Vec<_>>())
    .fetch_all(&mut *conn)
    .await?;
    let mut held: Vec<(usize, EarlyRow)> = Vec::new();
    for (ord, erased, id, event_type, status, agent_id, reason, resolved_by, resolution, at) in rows
    {
        let Some(index) = usize::try_from(ord).ok().and_then(|ord| ord.checked_sub(1)) else {
            continue;
        };
        if index >= checks.len() {
            continue;
        }
        if erased {
            checks[index].erased = true;
        } else if let (Some(id), Some(event_type), Some(at)) = (id, event_type, at) {
            held.push((
                index,
                (
                    id,
                    event_type,
                    status,
                    agent_id,
                    reason,
                    resolved_by,
                    resolution,
                    at,
                ),
            ));
        }
    }
    // Arrival order is the order the events were held in.
    held.sort_by_key(|(_, row)| row.0);
    for (index, row) in held {
        if let Some(event) = early_event(openings[index].conversation, row) {
            checks[index].early.push(event);
        }
    }
    Ok(checks)
}

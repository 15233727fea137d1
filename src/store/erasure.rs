//! Forgetting a customer: every row with personal data goes (the customer
//! and what cascades from it, their model calls, merges, unpublished outbox
//! rows and dead letters); an erasure record that holds no personal data
//! stays as proof, with digests of what it covered so that retries and
//! redeliveries of older events about the customer are dropped instead of
//! recreating them.

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use sqlx::PgConnection;
use uuid::Uuid;

use super::StoreError;

/// What was erased, for removing the matching cache keys.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Erased {
    /// Backend conversation ids the customer had.
    pub conversation_external_ids: Vec<String>,
}

/// Something an erasure covers, as an event names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject<'a> {
    /// enricher's customer id.
    Customer(Uuid),
    /// An identity on a platform.
    Identity {
        /// Platform name.
        platform: &'a str,
        /// The user's id there.
        platform_user_id: &'a str,
    },
    /// An email address (lower-case).
    Email(&'a str),
    /// A backend conversation id.
    Conversation(&'a str),
}

impl Subject<'_> {
    /// SHA-256 of the subject's kind and parts, hex: what the erasure record
    /// keeps instead of the subject itself.
    pub fn digest(&self) -> String {
        let mut hasher = Sha256::new();
        match self {
            Subject::Customer(id) => {
                hasher.update(b"customer\0");
                hasher.update(id.to_string().as_bytes());
            }
            Subject::Identity {
                platform,
                platform_user_id,
            } => {
                hasher.update(b"identity\0");
                hasher.update(platform.as_bytes());
                hasher.update([0]);
                hasher.update(platform_user_id.as_bytes());
            }
            Subject::Email(email) => {
                hasher.update(b"email\0");
                hasher.update(email.trim().to_lowercase().as_bytes());
            }
            Subject::Conversation(id) => {
                hasher.update(b"conversation\0");
                hasher.update(id.as_bytes());
            }
        }
        hex::encode(hasher.finalize())
    }
}

/// Who asked for an erasure and when.
#[derive(Debug, Clone, Copy, Default)]
pub struct Request<'a> {
    /// Who asked (an agent id, `cli`).
    pub requested_by: Option<&'a str>,
    /// The `customer.forget` event's id.
    pub event_id: Option<&'a str>,
    /// When the erasure was asked for at the source; events about the
    /// customer that occurred before are dropped. `None`: when it runs.
    pub occurred_at: Option<DateTime<Utc>>,
}

/// Deletes the customer and everything hanging off it.
pub async fn forget(
    conn: &mut PgConnection,
    workspace_id: &str,
    customer_id: Uuid,
    request: Request<'_>,
) -> Result<Erased, StoreError> {
    let conversations: Vec<(String,)> = sqlx::query_as(
        "SELECT external_id FROM enrich.conversations WHERE customer_id = $1 AND workspace_id = $2",
    )
    .bind(customer_id)
    .bind(workspace_id)
    .fetch_all(&mut *conn)
    .await?;
    let conversations: Vec<String> = conversations.into_iter().map(|(id,)| id).collect();
    let identities: Vec<(String, String)> = sqlx::query_as(
        "SELECT platform, platform_user_id FROM enrich.identities WHERE customer_id = $1",
    )
    .bind(customer_id)
    .fetch_all(&mut *conn)
    .await?;
    let emails: Vec<(String,)> = sqlx::query_as(
        "SELECT value FROM enrich.customer_fields WHERE customer_id = $1 AND field = 'email'
         UNION
         SELECT new_value FROM enrich.field_changes
          WHERE customer_id = $1 AND field = 'email' AND new_value IS NOT NULL",
    )
    .bind(customer_id)
    .fetch_all(&mut *conn)
    .await?;
    let emails: Vec<String> = emails
        .into_iter()
        .map(|(email,)| email.trim().to_lowercase())
        .collect();
    let (platforms, user_ids): (Vec<String>, Vec<String>) = identities.iter().cloned().unzip();

    let mut digests = vec![Subject::Customer(customer_id).digest()];
    digests.extend(identities.iter().map(|(platform, platform_user_id)| {
        Subject::Identity {
            platform,
            platform_user_id,
        }
        .digest()
    }));
    digests.extend(emails.iter().map(|email| Subject::Email(email).digest()));
    digests.extend(
        conversations
            .iter()
            .map(|id| Subject::Conversation(id).digest()),
    );

    super::dead_letters::erase_subject(
        conn,
        workspace_id,
        &super::dead_letters::ErasedSubject {
            customer_id,
            platforms: &platforms,
            platform_user_ids: &user_ids,
            emails: &emails,
            conversations: &conversations,
        },
    )
    .await?;
    // Outbound events not yet published (old and new values, questions,
    // summaries, insights, merges): never sent now.
    sqlx::query(
        "DELETE FROM enrich.outbox
          WHERE body->>'workspace_id' = $1
            AND (body->>'customer_id' = $2 OR body->>'into' = $2 OR body->>'from' = $2)",
    )
    .bind(workspace_id)
    .bind(customer_id.to_string())
    .execute(&mut *conn)
    .await?;
    // Rows referencing the customer cascade: identities, fields, history,
    // declines, conversations, messages, asks, tags, escalations, insights.
    sqlx::query("DELETE FROM enrich.customers WHERE id = $1 AND workspace_id = $2")
        .bind(customer_id)
        .bind(workspace_id)
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM enrich.llm_calls WHERE customer_id = $1")
        .bind(customer_id)
        .execute(&mut *conn)
        .await?;
    sqlx::query(
        "DELETE FROM enrich.merges WHERE workspace_id = $1 AND (into_customer = $2 OR from_customer = $2)",
    )
    .bind(workspace_id)
    .bind(customer_id)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "INSERT INTO enrich.erasures (workspace_id, customer_id, requested_by, event_id, subject_digests, occurred_at)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(workspace_id)
    .bind(customer_id)
    .bind(request.requested_by)
    .bind(request.event_id)
    .bind(&digests)
    .bind(request.occurred_at)
    .execute(&mut *conn)
    .await?;
    Ok(Erased {
        conversation_external_ids: conversations,
    })
}

/// Whether one of `subjects` was erased by an erasure asked for after
/// `occurred_at`: an event about it that occurred then is a late copy (a
/// retry, a redelivery) and must not bring the customer back.
pub async fn erased_after<'e, E>(
    executor: E,
    workspace_id: &str,
    subjects: &[Subject<'_>],
    occurred_at: DateTime<Utc>,
) -> Result<bool, StoreError>
where
    E: sqlx::PgExecutor<'e>,
{
    if subjects.is_empty() {
        return Ok(false);
    }
    let digests: Vec<String> = subjects.iter().map(Subject::digest).collect();
    let erased: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM enrich.erasures
                         WHERE workspace_id = $1 AND subject_digests && $2
                           AND coalesce(occurred_at, erased_at) > $3)",
    )
    .bind(workspace_id)
    .bind(&digests)
    .bind(occurred_at)
    .fetch_one(executor)
    .await?;
    Ok(erased)
}

/// Removes a customer that a late copy of an event recreated a moment ago,
/// in the same transaction (everything it wrote cascades from the customer).
pub async fn discard_recreated(
    conn: &mut PgConnection,
    workspace_id: &str,
    customer_id: Uuid,
) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM enrich.customers WHERE id = $1 AND workspace_id = $2")
        .bind(customer_id)
        .bind(workspace_id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_tell_subjects_apart_and_hold_no_plain_text() {
        let identity = Subject::Identity {
            platform: "web",
            platform_user_id: "u-1",
        }
        .digest();
        assert_eq!(identity.len(), 64);
        assert!(!identity.contains("u-1"));
        assert_ne!(identity, Subject::Conversation("u-1").digest());
        assert_ne!(
            identity,
            Subject::Identity {
                platform: "webu",
                platform_user_id: "-1"
            }
            .digest()
        );
        assert_eq!(
            Subject::Email("Ann@Example.com ").digest(),
            Subject::Email("ann@example.com").digest()
        );
    }
}

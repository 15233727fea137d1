//! Dead letters kept in Postgres: what the worker could not handle, with
//! the reason, where operators list, replay and purge them and where
//! erasing a customer finds theirs. The keys that say whom an event is
//! about are copied out of its body when it parses.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::StoreError;

/// Whom a dead event is about, read leniently from its body.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Subjects {
    /// `workspace_id`.
    pub workspace_id: Option<String>,
    /// Envelope `id`.
    pub event_id: Option<String>,
    /// `type`.
    pub event_type: Option<String>,
    /// `conversation_id`.
    pub conversation_id: Option<String>,
    /// `platform`.
    pub platform: Option<String>,
    /// `platform_user_id`.
    pub platform_user_id: Option<String>,
    /// `customer_id`, as sent.
    pub customer_id: Option<String>,
    /// `email`, lower-case.
    pub email: Option<String>,
    /// `occurred_at`, when it parses.
    pub occurred_at: Option<DateTime<Utc>>,
}

impl Subjects {
    /// Reads the keys from an event body; whatever is missing or of the
    /// wrong type stays `None`.
    pub fn read(body: &[u8]) -> Subjects {
        let Ok(serde_json::Value::Object(event)) = serde_json::from_slice(body) else {
            return Subjects::default();
        };
        let text = |key: &str| {
            event
                .get(key)
                .and_then(serde_json::Value::as_str)
                .map(|s| s.replace('\0', ""))
        };
        Subjects {
            workspace_id: text("workspace_id"),
            event_id: text("id"),
            event_type: text("type"),
            conversation_id: text("conversation_id"),
            platform: text("platform"),
            platform_user_id: text("platform_user_id"),
            customer_id: text("customer_id"),
            email: text("email").map(|e| e.trim().to_lowercase()),
            occurred_at: text("occurred_at")
                .and_then(|at| DateTime::parse_from_rfc3339(&at).ok())
                .map(|at| at.with_timezone(&Utc)),
        }
    }
}

/// A stored dead letter.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct DeadLetter {
    /// Row id.
    pub id: i64,
    /// The routing key it was published with.
    pub routing_key: String,
    /// The event, byte for byte.
    pub body: Vec<u8>,
    /// Why it was dead-lettered.
    pub reason: String,
    /// Its workspace, when the body names one.
    pub workspace_id: Option<String>,
    /// Its id, when the body has one.
    pub event_id: Option<String>,
    /// Its type, when the body has one.
    pub event_type: Option<String>,
    /// When it reached the table.
    pub dead_at: DateTime<Utc>,
}

/// Which dead letters a command applies to.
#[derive(Debug, Clone, Default)]
pub struct Filter<'a> {
    /// Only this workspace's.
    pub workspace_id: Option<&'a str>,
    /// Only these rows.
    pub ids: &'a [i64],
    /// At most this many (oldest first).
    pub limit: i64,
}

/// The reasons of the newest `limit` dead letters, oldest of them first.
pub async fn newest_reasons(pool: &PgPool, limit: i64) -> Result<Vec<String>, StoreError> {
    let mut reasons: Vec<String> =
        sqlx::query_scalar("SELECT reason FROM enrich.dead_letters ORDER BY id DESC LIMIT $1")
            .bind(limit)
            .fetch_all(pool)
            .await?;
    reasons.reverse();
    Ok(reasons)
}

/// Stores one dead letter.
pub async fn insert(
    pool: &PgPool,
    routing_key: &str,
    body: &[u8],
    reason: &str,
    subjects: &Subjects,
) -> Result<i64, StoreError> {
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO enrich.dead_letters
                (routing_key, body, reason, workspace_id, event_id, event_type, conversation_id,
                 platform, platform_user_id, customer_id, email, occurred_at)
         VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12) RETURNING id",
    )
    .bind(routing_key)
    .bind(body)
    .bind(reason)
    .bind(&subjects.workspace_id)
    .bind(&subjects.event_id)
    .bind(&subjects.event_type)
    .bind(&subjects.conversation_id)
    .bind(&subjects.platform)
    .bind(&subjects.platform_user_id)
    .bind(&subjects.customer_id)
    .bind(&subjects.email)
    .bind(subjects.occurred_at)
    .fetch_one(pool)
    .await?;
    Ok(id)
}

/// Dead letters matching `filter`, oldest first.
pub async fn list(pool: &PgPool, filter: &Filter<'_>) -> Result<Vec<DeadLetter>, StoreError> {
    let rows = sqlx::query_as(
        "SELECT id, routing_key, body, reason, workspace_id, event_id, event_type, dead_at
           FROM enrich.dead_letters
          WHERE ($1::text IS NULL OR workspace_id = $1)
            AND (cardinality($2::bigint[]) = 0 OR id = ANY($2))
          ORDER BY id LIMIT $3",
    )
    .bind(filter.workspace_id)
    .bind(filter.ids)
    .bind(filter.limit)
    .fetch_all(pool)
    .await?;
    Ok(rows)
}

/// Deletes dead letters by id; how many went.
pub async fn remove(pool: &PgPool, ids: &[i64]) -> Result<u64, StoreError> {
    let removed = sqlx::query("DELETE FROM enrich.dead_letters WHERE id = ANY($1)")
        .bind(ids)
        .execute(pool)
        .await?
        .rows_affected();
    Ok(removed)
}

/// What a forgotten customer was known by, for finding their dead letters.
#[derive(Debug, Clone)]
pub struct ErasedSubject<'a> {
    /// The customer.
    pub customer_id: Uuid,
    /// Platforms of their identities, paired with `platform_user_ids`.
    pub platforms: &'a [String],
    /// Their user ids on those platforms.
    pub platform_user_ids: &'a [String],
    /// Their email addresses, lower-case.
    pub emails: &'a [String],
    /// Their conversations' backend ids.
    pub conversations: &'a [String],
}

/// Deletes every dead letter about the customer, inside the erasure's
/// transaction.
pub async fn erase_subject(
    conn: &mut PgConnection,
    workspace_id: &str,
    subject: &ErasedSubject<'_>,
) -> Result<u64, StoreError> {
    let removed = sqlx::query(
        "DELETE FROM enrich.dead_letters
          WHERE workspace_id = $1
            AND (customer_id = $2
                 OR (platform, platform_user_id) IN (SELECT * FROM unnest($3::text[], $4::text[]))
                 OR email = ANY($5)
                 OR conversation_id = ANY($6))",
    )
    .bind(workspace_id)
    .bind(subject.customer_id.to_string())
    .bind(subject.platforms)
    .bind(subject.platform_user_ids)
    .bind(subject.emails)
    .bind(subject.conversations)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_are_read_leniently() {
        let body = br#"{"type":"chat.message","id":"e1","workspace_id":"w","conversation_id":"c",
            "platform":"web","platform_user_id":"u","occurred_at":"2026-01-01T00:00:00Z",
            "email":" Ann@Example.com","customer_id":5}"#;
        let subjects = Subjects::read(body);
        assert_eq!(subjects.workspace_id.as_deref(), Some("w"));
        assert_eq!(subjects.platform_user_id.as_deref(), Some("u"));
        assert_eq!(subjects.email.as_deref(), Some("ann@example.com"));
        assert_eq!(subjects.customer_id, None);
        assert!(subjects.occurred_at.is_some());
        assert_eq!(Subjects::read(b"{not json"), Subjects::default());
    }
}

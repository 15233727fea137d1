//! Notes agents write about a customer (`note.added`, SPEC §5): text of at
//! most 2,000 characters with its author and time. Notes go with their
//! customer: a merge moves them, forgetting the customer erases them.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use super::StoreError;

/// A note to store.
#[derive(Debug, Clone, PartialEq)]
pub struct NewNote<'a> {
    /// Tenant.
    pub workspace_id: &'a str,
    /// The customer it is about.
    pub customer_id: Uuid,
    /// The note (checked to be 1 to 2,000 characters by the caller; the
    /// table refuses anything else).
    pub text: &'a str,
    /// Who wrote it.
    pub author: &'a str,
    /// The event that carried it, if any.
    pub event_id: Option<&'a str>,
    /// When it was written.
    pub created_at: DateTime<Utc>,
}

/// A stored note, as `enrich.notes` shows it.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct Note {
    /// The note's id.
    pub note_id: i64,
    /// The customer it is about.
    pub customer_id: Uuid,
    /// Tenant.
    pub workspace_id: String,
    /// The note.
    pub text: String,
    /// Who wrote it.
    pub author: String,
    /// When it was written.
    pub created_at: DateTime<Utc>,
}

/// Stores a note and marks the customer updated; returns the note's id.
pub async fn add(conn: &mut PgConnection, note: &NewNote<'_>) -> Result<i64, StoreError> {
    let (note_id,): (i64,) = sqlx::query_as(
        "WITH note AS (
              INSERT INTO enrich.customer_notes (workspace_id, customer_id, text, author, event_id, created_at)
              VALUES ($1, $2, $3, $4, $5, $6)
              RETURNING id),
              touched AS (UPDATE enrich.customers SET updated_at = now() WHERE id = $2)
         SELECT id FROM note",
    )
    .bind(note.workspace_id)
    .bind(note.customer_id)
    .bind(note.text)
    .bind(note.author)
    .bind(note.event_id)
    .bind(note.created_at)
    .fetch_one(&mut *conn)
    .await?;
    Ok(note_id)
}

/// A customer's notes inside `workspace_id`, latest stored first, at most
/// `limit`, stored before note `before` when given: pages of a profile's
/// notes (pass the last page's smallest `note_id`).
pub async fn for_customer(
    conn: &mut PgConnection,
    workspace_id: &str,
    customer_id: Uuid,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<Note>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT note_id, customer_id, workspace_id, text, author, created_at
           FROM enrich.notes
          WHERE workspace_id = $1 AND customer_id = $2 AND ($3::bigint IS NULL OR note_id < $3)
          ORDER BY note_id DESC
          LIMIT $4",
    )
    .bind(workspace_id)
    .bind(customer_id)
    .bind(before)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?)
}

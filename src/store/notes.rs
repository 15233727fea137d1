//! Placeholder until the notes store lands (replaced by the merge).

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use super::StoreError;

/// A stored note.
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

/// Placeholder.
pub async fn for_customer(
    _conn: &mut PgConnection,
    _workspace_id: &str,
    _customer_id: Uuid,
    _before: Option<i64>,
    _limit: i64,
) -> Result<Vec<Note>, StoreError> {
    Ok(Vec::new())
}

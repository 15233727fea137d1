//! API bearer tokens: one workspace each, stored as their SHA-256 only, so a
//! copy of the database reveals no usable token. Revoking keeps the row (its
//! name stays the actor of the writes it made).

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use super::StoreError;

/// A token as stored (without the secret).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StoredToken {
    /// Row id.
    pub id: Uuid,
    /// The one workspace the token reaches.
    pub workspace_id: String,
    /// Who holds it; recorded as the actor of its writes.
    pub name: String,
    /// `read`, `write`, `pii`.
    pub scopes: Vec<String>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// Last request made with it.
    pub last_used_at: Option<DateTime<Utc>>,
    /// When it was revoked.
    pub revoked_at: Option<DateTime<Utc>>,
}

/// Stores a new token; fails with a unique violation when an active token of
/// the workspace already has this name.
pub async fn insert(
    conn: &mut PgConnection,
    workspace_id: &str,
    name: &str,
    scopes: &[String],
    token_sha256: &[u8],
) -> Result<StoredToken, StoreError> {
    Ok(sqlx::query_as(
        "INSERT INTO enrich.api_tokens (id, workspace_id, name, scopes, token_sha256)
         VALUES ($1, $2, $3, $4, $5)
         RETURNING id, workspace_id, name, scopes, created_at, last_used_at, revoked_at",
    )
    .bind(Uuid::new_v4())
    .bind(workspace_id)
    .bind(name)
    .bind(scopes)
    .bind(token_sha256)
    .fetch_one(&mut *conn)
    .await?)
}

/// The active token with this hash, marking it used.
pub async fn authenticate(
    conn: &mut PgConnection,
    token_sha256: &[u8],
) -> Result<Option<StoredToken>, StoreError> {
    Ok(sqlx::query_as(
        "UPDATE enrich.api_tokens SET last_used_at = now()
          WHERE token_sha256 = $1 AND revoked_at IS NULL
          RETURNING id, workspace_id, name, scopes, created_at, last_used_at, revoked_at",
    )
    .bind(token_sha256)
    .fetch_optional(&mut *conn)
    .await?)
}

/// Tokens of a workspace, newest first, revoked ones included.
pub async fn list(
    conn: &mut PgConnection,
    workspace_id: &str,
) -> Result<Vec<StoredToken>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT id, workspace_id, name, scopes, created_at, last_used_at, revoked_at
           FROM enrich.api_tokens WHERE workspace_id = $1
          ORDER BY created_at DESC, name",
    )
    .bind(workspace_id)
    .fetch_all(&mut *conn)
    .await?)
}

/// Revokes the active token of that name (or id); false when there is none.
pub async fn revoke(
    conn: &mut PgConnection,
    workspace_id: &str,
    name_or_id: &str,
) -> Result<bool, StoreError> {
    let id = Uuid::parse_str(name_or_id).ok();
    let revoked = sqlx::query(
        "UPDATE enrich.api_tokens SET revoked_at = now()
          WHERE workspace_id = $1 AND revoked_at IS NULL AND (name = $2 OR id = $3)",
    )
    .bind(workspace_id)
    .bind(name_or_id)
    .bind(id)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(revoked > 0)
}

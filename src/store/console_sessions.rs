//! Sessions of the web console: the SHA-256 of a browser's session secret
//! and the API token it signed in with. A session is valid while it has not
//! expired and its token is not revoked, so revoking a token signs its
//! browsers out.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use super::StoreError;
use super::tokens::StoredToken;

/// Opens a session for `token_id` until `expires_at`, and drops the
/// sessions that have expired since.
pub async fn open(
    conn: &mut PgConnection,
    secret_sha256: &[u8],
    token_id: Uuid,
    expires_at: DateTime<Utc>,
) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM enrich.console_sessions WHERE expires_at < now()")
        .execute(&mut *conn)
        .await?;
    sqlx::query(
        "INSERT INTO enrich.console_sessions (secret_sha256, token_id, expires_at)
         VALUES ($1, $2, $3)",
    )
    .bind(secret_sha256)
    .bind(token_id)
    .bind(expires_at)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The active token behind a live session, marking the token used.
pub async fn token(
    conn: &mut PgConnection,
    secret_sha256: &[u8],
) -> Result<Option<StoredToken>, StoreError> {
    Ok(sqlx::query_as(
        "UPDATE enrich.api_tokens t SET last_used_at = now()
           FROM enrich.console_sessions s
          WHERE s.secret_sha256 = $1 AND s.expires_at > now()
            AND t.id = s.token_id AND t.revoked_at IS NULL
          RETURNING t.id, t.workspace_id, t.name, t.scopes, t.created_at, t.last_used_at,
                    t.revoked_at",
    )
    .bind(secret_sha256)
    .fetch_optional(&mut *conn)
    .await?)
}

/// Ends a session (signing out); false when there was none.
pub async fn close(conn: &mut PgConnection, secret_sha256: &[u8]) -> Result<bool, StoreError> {
    let closed = sqlx::query("DELETE FROM enrich.console_sessions WHERE secret_sha256 = $1")
        .bind(secret_sha256)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    Ok(closed > 0)
}

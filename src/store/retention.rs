//! Retention of anonymous profiles: only a truly anonymous visitor expires,
//! one whose profile has no email, no phone, no value from a source ranked
//! like a form or higher (agent, form, api: source_rank >= 3), no note and
//! no tag, and who has been inactive for the configured period; it is
//! removed with everything hanging off it. Every other profile persists. Inactive means both: no message
//! dated within the period, and no change recorded within it, so history
//! imported with old timestamps is not swept away as it arrives.

use sqlx::PgPool;

use super::StoreError;

/// Removes up to `batch` anonymous customers inactive for `days` days;
/// returns how many were removed.
pub async fn remove_inactive_anonymous(
    pool: &PgPool,
    days: u32,
    batch: i64,
) -> Result<u64, StoreError> {
    let removed = sqlx::query(
        "DELETE FROM enrich.customers
          WHERE id IN (
                SELECT c.id FROM enrich.customers c
                 WHERE c.updated_at < now() - make_interval(days => $1)
                   AND coalesce(c.last_seen_at, c.created_at) < now() - make_interval(days => $1)
                   AND NOT EXISTS (SELECT 1 FROM enrich.customer_fields f
                                    WHERE f.customer_id = c.id
                                      AND (f.field IN ('email', 'phone') OR f.source_rank >= 3))
                   AND NOT EXISTS (SELECT 1 FROM enrich.customer_notes n WHERE n.customer_id = c.id)
                   AND NOT EXISTS (SELECT 1 FROM enrich.tags t WHERE t.customer_id = c.id)
                 ORDER BY c.last_seen_at
                 LIMIT $2
                   FOR UPDATE SKIP LOCKED)",
    )
    .bind(days as i32)
    .bind(batch)
    .execute(pool)
    .await?
    .rows_affected();
    Ok(removed)
}

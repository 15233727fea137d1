//! Field values with their provenance: the source-rank rule (a lower rank never
//! overwrites or clears a higher one), the append-only history and declined
//! fields.

use sqlx::PgConnection;
use uuid::Uuid;

use super::StoreError;
use crate::decide::policy::Source;

/// One value to write, with where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldWrite<'a> {
    /// Tenant.
    pub workspace_id: &'a str,
    /// The customer.
    pub customer_id: Uuid,
    /// Field name.
    pub field: &'a str,
    /// Normalised value.
    pub value: &'a str,
    /// Where it came from.
    pub source: Source,
    /// Who wrote it (agent id, form id, `pattern`, model name).
    pub actor: Option<&'a str>,
    /// The customer's words the value rests on.
    pub evidence: Option<&'a str>,
    /// The message it came from.
    pub message_id: Option<i64>,
    /// Extractor confidence in [0, 1].
    pub confidence: Option<f32>,
    /// Model that proposed it.
    pub model: Option<&'a str>,
    /// Prompt version that produced it.
    pub prompt_version: Option<&'a str>,
}

/// What happened to a write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOutcome {
    /// The value changed from `old`.
    Changed {
        /// Previous value, if any.
        old: Option<String>,
    },
    /// The same value was already stored.
    Unchanged,
    /// A higher-ranked source holds the field.
    Blocked {
        /// That source.
        by: String,
    },
}

/// Writes a value if its source ranks at least as high as the current one's,
/// appending the change to the history.
pub async fn apply(
    conn: &mut PgConnection,
    write: &FieldWrite<'_>,
) -> Result<WriteOutcome, StoreError> {
    let (changed, old, blocked_by): (bool, Option<String>, Option<String>) = sqlx::query_as(
        "SELECT changed, old_value, blocked_by FROM enrich.apply_field($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11)",
    )
    .bind(write.workspace_id)
    .bind(write.customer_id)
    .bind(write.field)
    .bind(write.value)
    .bind(write.source.as_str())
    .bind(write.actor)
    .bind(write.evidence)
    .bind(write.message_id)
    .bind(write.confidence)
    .bind(write.model)
    .bind(write.prompt_version)
    .fetch_one(&mut *conn)
    .await?;
    Ok(match (changed, blocked_by) {
        (true, _) => WriteOutcome::Changed { old },
        (false, Some(by)) => WriteOutcome::Blocked { by },
        (false, None) => WriteOutcome::Unchanged,
    })
}

/// A field to clear (`null` in `profile.update`), with who clears it.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldClear<'a> {
    /// Tenant.
    pub workspace_id: &'a str,
    /// The customer.
    pub customer_id: Uuid,
    /// Field name.
    pub field: &'a str,
    /// Who clears it, by source.
    pub source: Source,
    /// Who clears it (agent id, form id, system name).
    pub actor: Option<&'a str>,
}

/// Removes a field's value if the clearing source ranks at least as high as
/// the value's; the history keeps the old value with the clearing source
/// and actor (`new_value` NULL). `Unchanged` when the field had no value.
pub async fn clear(
    conn: &mut PgConnection,
    clear: &FieldClear<'_>,
) -> Result<WriteOutcome, StoreError> {
    let (changed, old, blocked_by): (bool, Option<String>, Option<String>) = sqlx::query_as(
        "SELECT changed, old_value, blocked_by FROM enrich.clear_field($1, $2, $3, $4, $5)",
    )
    .bind(clear.workspace_id)
    .bind(clear.customer_id)
    .bind(clear.field)
    .bind(clear.source.as_str())
    .bind(clear.actor)
    .fetch_one(&mut *conn)
    .await?;
    Ok(match (changed, blocked_by) {
        (true, _) => WriteOutcome::Changed { old },
        (false, Some(by)) => WriteOutcome::Blocked { by },
        (false, None) => WriteOutcome::Unchanged,
    })
}

/// Records that the customer declined to give a field.
pub async fn record_decline(
    conn: &mut PgConnection,
    customer_id: Uuid,
    field: &str,
    message_id: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO enrich.declined_fields (customer_id, field, message_id) VALUES ($1, $2, $3)
         ON CONFLICT (customer_id, field) DO NOTHING",
    )
    .bind(customer_id)
    .bind(field)
    .bind(message_id)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "UPDATE enrich.asks SET outcome = 'declined', outcome_at = now()
          WHERE customer_id = $1 AND field = $2 AND outcome = 'pending'",
    )
    .bind(customer_id)
    .bind(field)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Current values of a customer's fields with their sources.
pub async fn current_values(
    conn: &mut PgConnection,
    customer_id: Uuid,
) -> Result<Vec<(String, String, String)>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT field, value, source FROM enrich.customer_fields WHERE customer_id = $1 ORDER BY field",
    )
    .bind(customer_id)
    .fetch_all(&mut *conn)
    .await?)
}

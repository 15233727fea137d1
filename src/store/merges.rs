//! Email is the identifier across platforms: when a customer's email becomes
//! known and another customer of the workspace already has it, the two become
//! one, the older profile surviving. A transaction-scoped advisory lock per
//! (workspace, email) makes two conversations that state the same email at the
//! same moment end as one customer rather than two.

use sqlx::PgConnection;
use uuid::Uuid;

use super::StoreError;

/// A merge that happened.
#[derive(Debug, Clone, PartialEq)]
pub struct Merged {
    /// The surviving (older) customer.
    pub into: Uuid,
    /// The customer merged away.
    pub from: Uuid,
    /// What moved, as recorded in `enrich.merges`.
    pub moved: serde_json::Value,
}

/// Serialises writers of one email in one workspace until the transaction ends.
pub async fn lock_email(
    conn: &mut PgConnection,
    workspace_id: &str,
    email: &str,
) -> Result<(), StoreError> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1 || chr(31) || $2, 7))")
        .bind(workspace_id)
        .bind(email)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Merges `customer_id` with the other customer of the workspace that has
/// `email`, if any, into whichever of the two is older.
pub async fn merge_by_email(
    conn: &mut PgConnection,
    workspace_id: &str,
    customer_id: Uuid,
    email: &str,
) -> Result<Option<Merged>, StoreError> {
    let other: Option<(Uuid, bool)> = sqlx::query_as(
        "SELECT o.id, (o.created_at, o.id) < (me.created_at, me.id) AS other_is_older
           FROM enrich.customer_fields f
           JOIN enrich.customers o ON o.id = f.customer_id
           JOIN enrich.customers me ON me.id = $3
          WHERE o.workspace_id = $1 AND f.field = 'email' AND f.value = $2 AND o.id <> $3
          ORDER BY o.created_at LIMIT 1",
    )
    .bind(workspace_id)
    .bind(email)
    .bind(customer_id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some((other, other_is_older)) = other else {
        return Ok(None);
    };
    let (into, from) = if other_is_older {
        (other, customer_id)
    } else {
        (customer_id, other)
    };
    let moved: Option<serde_json::Value> =
        sqlx::query_scalar("SELECT enrich.merge_customers($1, $2, $3, $4)")
            .bind(workspace_id)
            .bind(into)
            .bind(from)
            .bind("same email")
            .fetch_one(&mut *conn)
            .await?;
    let Some(moved) = moved else {
        return Ok(None);
    };
    // The survivor's average sentiment now covers both customers' conversations.
    sqlx::query(
        "UPDATE enrich.customers SET avg_sentiment =
                (SELECT avg(sentiment_score) FROM enrich.conversations
                  WHERE customer_id = $1 AND sentiment_score IS NOT NULL)
          WHERE id = $1",
    )
    .bind(into)
    .execute(&mut *conn)
    .await?;
    Ok(Some(Merged { into, from, moved }))
}

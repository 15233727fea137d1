//! Finding customers by reference and the customer-level data that is not a
//! field: tags and agent instructions.

use sqlx::PgConnection;
use uuid::Uuid;

use super::StoreError;
use crate::event::CustomerRef;

/// The customer a reference points to inside `workspace_id`, if any.
pub async fn resolve(
    conn: &mut PgConnection,
    workspace_id: &str,
    customer: &CustomerRef,
) -> Result<Option<Uuid>, StoreError> {
    let found: Option<(Uuid,)> = match customer {
        CustomerRef::Id(id) => {
            sqlx::query_as("SELECT id FROM enrich.customers WHERE workspace_id = $1 AND id = $2")
                .bind(workspace_id)
                .bind(id)
                .fetch_optional(&mut *conn)
                .await?
        }
        CustomerRef::Identity {
            platform,
            platform_user_id,
        } => {
            sqlx::query_as(
                "SELECT customer_id FROM enrich.customer_identities
                  WHERE workspace_id = $1 AND platform = $2 AND platform_user_id = $3",
            )
            .bind(workspace_id)
            .bind(platform.as_str())
            .bind(platform_user_id)
            .fetch_optional(&mut *conn)
            .await?
        }
        CustomerRef::Email(email) => {
            sqlx::query_as(
                "SELECT c.id FROM enrich.customers c
                   JOIN enrich.customer_fields f ON f.customer_id = c.id AND f.field = 'email'
                  WHERE c.workspace_id = $1 AND f.value = $2
                  ORDER BY c.created_at LIMIT 1",
            )
            .bind(workspace_id)
            .bind(email)
            .fetch_optional(&mut *conn)
            .await?
        }
    };
    Ok(found.map(|(id,)| id))
}

/// Creates the customer a `profile.update` names when it does not exist yet:
/// an identity reference gets an anonymous customer with that identity.
pub async fn create_for_identity(
    conn: &mut PgConnection,
    workspace_id: &str,
    platform: &str,
    platform_user_id: &str,
) -> Result<Uuid, StoreError> {
    let (id,): (Uuid,) = sqlx::query_as(
        "SELECT customer_id FROM enrich.customer_for_identity($1, $2, $3, now(), NULL)",
    )
    .bind(workspace_id)
    .bind(platform)
    .bind(platform_user_id)
    .fetch_one(&mut *conn)
    .await?;
    Ok(id)
}

/// Creates an anonymous customer with no identity yet (for updates by email).
pub async fn create_bare(conn: &mut PgConnection, workspace_id: &str) -> Result<Uuid, StoreError> {
    let id = Uuid::new_v4();
    sqlx::query("INSERT INTO enrich.customers (id, workspace_id) VALUES ($1, $2)")
        .bind(id)
        .bind(workspace_id)
        .execute(&mut *conn)
        .await?;
    Ok(id)
}

/// Who changes a customer's tags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TagAuthor<'a> {
    /// Tenant (recorded with the history).
    pub workspace_id: &'a str,
    /// Source of the change (`agent`, `form`, `api`, `system`).
    pub source: &'a str,
    /// Who made it (agent id, token name, system name).
    pub actor: Option<&'a str>,
}

/// Tags that actually changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TagChanges {
    /// Tags the customer did not have before.
    pub added: Vec<String>,
    /// Tags the customer had and no longer has.
    pub removed: Vec<String>,
}

impl TagChanges {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty()
    }
}

/// Adds, then removes tags. Each tag that actually changes is recorded in
/// `enrich.tag_changes` with its source and actor, and any change moves
/// the customer's `updated_at` (so `customers export --since` sees it).
pub async fn update_tags(
    conn: &mut PgConnection,
    customer_id: Uuid,
    add: &[String],
    remove: &[String],
    author: TagAuthor<'_>,
) -> Result<TagChanges, StoreError> {
    let mut changes = TagChanges::default();
    if !add.is_empty() {
        changes.added = sqlx::query_scalar(
            "WITH added AS (
                  INSERT INTO enrich.tags (customer_id, tag, source, actor)
                  SELECT $1, t, $3, $4 FROM unnest($2::text[]) t ON CONFLICT DO NOTHING
                  RETURNING tag),
                  history AS (
                  INSERT INTO enrich.tag_changes (workspace_id, customer_id, tag, change, source, actor)
                  SELECT $5, $1, tag, 'added', $3, $4 FROM added)
             SELECT tag FROM added ORDER BY tag",
        )
        .bind(customer_id)
        .bind(add)
        .bind(author.source)
        .bind(author.actor)
        .bind(author.workspace_id)
        .fetch_all(&mut *conn)
        .await?;
    }
    if !remove.is_empty() {
        changes.removed = sqlx::query_scalar(
            "WITH removed AS (
                  DELETE FROM enrich.tags WHERE customer_id = $1 AND tag = ANY($2)
                  RETURNING tag),
                  history AS (
                  INSERT INTO enrich.tag_changes (workspace_id, customer_id, tag, change, source, actor)
                  SELECT $5, $1, tag, 'removed', $3, $4 FROM removed)
             SELECT tag FROM removed ORDER BY tag",
        )
        .bind(customer_id)
        .bind(remove)
        .bind(author.source)
        .bind(author.actor)
        .bind(author.workspace_id)
        .fetch_all(&mut *conn)
        .await?;
    }
    if !changes.is_empty() {
        sqlx::query("UPDATE enrich.customers SET updated_at = now() WHERE id = $1")
            .bind(customer_id)
            .execute(&mut *conn)
            .await?;
    }
    Ok(changes)
}

/// Sets how the bot should address the customer.
pub async fn set_agent_instructions(
    conn: &mut PgConnection,
    customer_id: Uuid,
    instructions: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE enrich.customers SET agent_instructions = $2, updated_at = now() WHERE id = $1",
    )
    .bind(customer_id)
    .bind(instructions)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

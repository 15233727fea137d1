//! Keeps the workspaces and field-definitions tables in step with
//! configuration, so dashboards can label fields and the worker's switches are
//! visible in the database.

use sqlx::PgPool;

use super::StoreError;
use crate::config::{WorkspaceSettings, WorkspacesSettings};
use crate::fields::{BUILTIN_FIELDS, FieldDef};

/// Writes every configured workspace and its field definitions.
pub async fn sync(pool: &PgPool, workspaces: &WorkspacesSettings) -> Result<(), StoreError> {
    for (id, settings) in &workspaces.list {
        sync_one(pool, id, settings).await?;
    }
    Ok(())
}

/// Writes one workspace and its field definitions.
pub async fn sync_one(
    pool: &PgPool,
    id: &str,
    settings: &WorkspaceSettings,
) -> Result<(), StoreError> {
    let field_set = settings
        .field_set()
        .map_err(|e| StoreError::Permanent(sqlx::Error::Configuration(e.to_string().into())))?;
    let mut tx = pool.begin().await?;
    sqlx::query(
        "INSERT INTO enrich.workspaces (id, enrichment_enabled, default_region) VALUES ($1, $2, $3)
         ON CONFLICT (id) DO UPDATE SET enrichment_enabled = excluded.enrichment_enabled,
                                        default_region = excluded.default_region",
    )
    .bind(id)
    .bind(settings.enrichment)
    .bind(&settings.default_region)
    .execute(&mut *tx)
    .await?;
    let names: Vec<String> = field_set.iter().map(|f| f.name.clone()).collect();
    sqlx::query("DELETE FROM enrich.field_definitions WHERE workspace_id = $1 AND name <> ALL($2)")
        .bind(id)
        .bind(&names)
        .execute(&mut *tx)
        .await?;
    for field in field_set.iter() {
        upsert_definition(&mut tx, id, field).await?;
    }
    tx.commit().await?;
    Ok(())
}

async fn upsert_definition(
    conn: &mut sqlx::PgConnection,
    workspace_id: &str,
    field: &FieldDef,
) -> Result<(), StoreError> {
    let format = serde_json::to_value(field.format)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| "text".to_owned());
    sqlx::query(
        "INSERT INTO enrich.field_definitions
             (workspace_id, name, label, format, options, validation, description, required, ask_priority, ai_writable, builtin)
         VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11)
         ON CONFLICT (workspace_id, name) DO UPDATE SET
             label = excluded.label, format = excluded.format, options = excluded.options,
             validation = excluded.validation, description = excluded.description,
             required = excluded.required, ask_priority = excluded.ask_priority,
             ai_writable = excluded.ai_writable, builtin = excluded.builtin, updated_at = now()",
    )
    .bind(workspace_id)
    .bind(&field.name)
    .bind(&field.label)
    .bind(format)
    .bind(&field.options)
    .bind(&field.validation)
    .bind(&field.description)
    .bind(field.required)
    .bind(field.ask_priority)
    .bind(field.ai_writable)
    .bind(BUILTIN_FIELDS.contains(&field.name.as_str()))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

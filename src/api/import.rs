//! `POST /v1/import`: existing customers from a CSV or JSONL file, with
//! fields, tags and identities. Each row becomes a `profile.update` with the
//! `import` source (ranked with form and api, so it never overrides an
//! agent's edit) and runs through the event handlers; a row names its
//! customer by identity or email, so importing the same file again finds the
//! same customers and changes nothing. The report says which rows were taken
//! and why the others were refused (by row number and field name, never by
//! value).

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use serde::{Deserialize, Serialize};
use sqlx::Acquire;
use utoipa::ToSchema;

use super::Api;
use super::auth::{Caller, Scope};
use super::problem::Problem;
use super::writes;
use crate::event::{CustomerRef, Event, EventBody, Platform, ProfileUpdate, UpdateSource};
use crate::store::customer_card;
use crate::worker::handlers;
use crate::worker::hot_profile::BatchView;

/// Rows committed in one transaction.
const ROWS_PER_TRANSACTION: usize = 500;
/// Reasons listed in a report, at most (the count is always exact).
const MAX_REASONS: usize = 1000;

/// An identity of an imported customer.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct ImportIdentity {
    /// Platform (`web`, `whatsapp`, `line`, …).
    pub platform: String,
    /// The user's id there.
    pub platform_user_id: String,
}

/// One JSONL line of an import.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct ImportRow {
    /// Field values by name (`email`, `name`, `phone`, configured fields).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub fields: serde_json::Map<String, serde_json::Value>,
    /// Tags to add.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Identities; the first one (or else the email) names the customer.
    #[serde(default)]
    pub identities: Vec<ImportIdentity>,
}

/// A refused row.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RefusedRow {
    /// Row number (1 is the first data row).
    pub row: u64,
    /// Why.
    pub reason: String,
}

/// What an import did.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct ImportReport {
    /// Data rows read.
    pub rows: u64,
    /// Rows written (or already up to date).
    pub taken: u64,
    /// Rows refused.
    pub refused: u64,
    /// Reasons for the first refused rows.
    pub refusals: Vec<RefusedRow>,
}

impl ImportReport {
    fn refuse(&mut self, row: u64, reason: String) {
        self.refused += 1;
        if self.refusals.len() < MAX_REASONS {
            self.refusals.push(RefusedRow { row, reason });
        }
    }
}

/// Reads a CSV: `tags` is `|`-separated, `identities` is
/// `platform:user_id|…` (or `platform` and `platform_user_id` columns), and
/// every other column is a field; empty cells are skipped.
fn parse_csv(body: &[u8]) -> Result<Vec<Result<ImportRow, String>>, Problem> {
    let mut reader = csv::ReaderBuilder::new().flexible(false).from_reader(body);
    let headers: Vec<String> = reader
        .headers()
        .map_err(|e| Problem::bad_request(format!("unreadable CSV header: {e}")))?
        .iter()
        .map(|h| h.trim().to_lowercase())
        .collect();
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = match record {
            Ok(record) => record,
            Err(error) => {
                rows.push(Err(format!(
                    "unreadable CSV row ({})",
                    csv_error_kind(&error)
                )));
                continue;
            }
        };
        let mut row = ImportRow::default();
        let mut platform = None;
        let mut platform_user_id = None;
        for (name, cell) in headers.iter().zip(record.iter()) {
            let cell = cell.trim();
            if cell.is_empty() {
                continue;
            }
            match name.as_str() {
                "tags" => row.tags.extend(
                    cell.split('|')
                        .map(str::trim)
                        .filter(|t| !t.is_empty())
                        .map(str::to_owned),
                ),
                "identities" => {
                    for pair in cell.split('|').map(str::trim).filter(|p| !p.is_empty()) {
                        let (platform, user) = pair.split_once(':').unwrap_or((pair, ""));
                        row.identities.push(ImportIdentity {
                            platform: platform.trim().to_owned(),
                            platform_user_id: user.trim().to_owned(),
                        });
                    }
                }
                "platform" => platform = Some(cell.to_owned()),
                "platform_user_id" => platform_user_id = Some(cell.to_owned()),
                field => {
                    row.fields
                        .insert(field.to_owned(), serde_json::Value::String(cell.to_owned()));
                }
            }
        }
        match (platform, platform_user_id) {
            (Some(platform), Some(platform_user_id)) => row.identities.insert(
                0,
                ImportIdentity {
                    platform,
                    platform_user_id,
                },
            ),
            (None, None) => {}
            _ => {
                rows.push(Err(
                    "`platform` and `platform_user_id` go together".to_owned()
                ));
                continue;
            }
        }
        rows.push(Ok(row));
    }
    Ok(rows)
}

fn csv_error_kind(error: &csv::Error) -> &'static str {
    match error.kind() {
        csv::ErrorKind::UnequalLengths { .. } => "wrong number of cells",
        csv::ErrorKind::Utf8 { .. } => "not UTF-8",
        _ => "malformed",
    }
}

/// Reads JSONL: one [`ImportRow`] per non-empty line.
fn parse_jsonl(body: &[u8]) -> Vec<Result<ImportRow, String>> {
    body.split(|b| *b == b'\n')
        .filter(|line| !line.iter().all(u8::is_ascii_whitespace))
        .map(|line| {
            serde_json::from_slice::<ImportRow>(line)
                .map_err(|e| format!("not an import row: {}", json_error_kind(&e)))
        })
        .collect()
}

fn json_error_kind(error: &serde_json::Error) -> String {
    // serde's messages may quote the value; keep only the position and class.
    format!("{:?} error at column {}", error.classify(), error.column()).to_lowercase()
}

/// Turns a row into the `profile.update` it stands for, or why it cannot be.
fn update_for(
    api: &Api,
    caller: &Caller,
    row: ImportRow,
) -> Result<(ProfileUpdate, Vec<(Platform, String)>), String> {
    let workspace = api
        .workspaces
        .get(&caller.workspace_id)
        .ok_or_else(|| "this workspace is not configured".to_owned())?;
    let region = workspace.settings.default_region.as_deref();
    let mut identities = Vec::with_capacity(row.identities.len());
    for identity in &row.identities {
        let platform: Platform =
            serde_json::from_value(serde_json::Value::String(identity.platform.clone()))
                .map_err(|_| "unknown platform in an identity".to_owned())?;
        let user = identity.platform_user_id.trim();
        if user.is_empty() || user.chars().count() > 200 {
            return Err("an identity's platform_user_id is empty or too long".to_owned());
        }
        identities.push((platform, user.to_owned()));
    }
    let mut email = None;
    for (field, value) in &row.fields {
        let raw = match value {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Number(n) => n.to_string(),
            serde_json::Value::Array(items) => items
                .iter()
                .filter_map(|v| v.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            _ => return Err(format!("`{field}`: expected a string, number or list")),
        };
        let value = workspace
            .fields
            .normalize(field, &raw, region)
            .map_err(|rejection| format!("`{field}`: {rejection}"))?;
        if field == "email" {
            email = Some(value);
        }
    }
    if row
        .tags
        .iter()
        .any(|t| t.trim().is_empty() || t.chars().count() > super::tags::MAX_TAG_CHARS)
    {
        return Err("a tag is empty or too long".to_owned());
    }
    let customer = match (identities.first(), email) {
        (Some((platform, user)), _) => CustomerRef::Identity {
            platform: *platform,
            platform_user_id: user.clone(),
        },
        (None, Some(email)) => CustomerRef::Email(email),
        (None, None) => return Err("no email or identity names the customer".to_owned()),
    };
    let update = ProfileUpdate {
        customer,
        fields: row.fields,
        source: UpdateSource::Import,
        actor: Some(caller.name.clone()),
        conversation_id: None,
        tags_add: row.tags.iter().map(|t| t.trim().to_owned()).collect(),
        tags_remove: Vec::new(),
        agent_instructions: None,
    };
    Ok((update, identities.into_iter().skip(1).collect()))
}

/// Import customers from CSV (`text/csv`) or JSONL (`application/x-ndjson`).
#[utoipa::path(post, path = "/v1/import", tag = "import",
    request_body(content(
        (String = "text/csv"),
        (ImportRow = "application/x-ndjson"),
    ), description = "CSV with a header (field columns, `tags` as `a|b`, `identities` as `platform:id|…`) or one JSON object per line"),
    responses(
        (status = 200, description = "What was taken and refused", body = ImportReport),
        (status = 403, description = "The token lacks `write`", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Neither CSV nor JSONL", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub async fn import(
    State(api): State<Api>,
    caller: Caller,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<ImportReport>, Problem> {
    caller.require(Scope::Write)?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let rows = if content_type.starts_with("text/csv") {
        parse_csv(&body)?
    } else if content_type.starts_with("application/x-ndjson")
        || content_type.starts_with("application/jsonl")
        || content_type.starts_with("application/json")
    {
        parse_jsonl(&body)
    } else {
        return Err(Problem::unsupported_media_type(
            "send `text/csv` or `application/x-ndjson`",
        ));
    };
    drop(body);
    let mut report = ImportReport::default();
    let mut numbered = rows.into_iter().enumerate().peekable();
    while numbered.peek().is_some() {
        let mut effects = Vec::new();
        let mut tx = api.pool.begin().await?;
        for (index, row) in numbered.by_ref().take(ROWS_PER_TRANSACTION) {
            let number = index as u64 + 1;
            report.rows += 1;
            let (update, extra_identities) =
                match row.and_then(|row| update_for(&api, &caller, row)) {
                    Ok(parsed) => parsed,
                    Err(reason) => {
                        report.refuse(number, reason);
                        continue;
                    }
                };
            let event = Event {
                envelope: writes::envelope(&caller),
                body: EventBody::ProfileUpdate(update),
            };
            let mut savepoint = tx.begin().await?;
            match import_row(&api, &mut savepoint, &caller, &event, &extra_identities).await {
                Ok((row_effects, None)) => {
                    savepoint.commit().await?;
                    effects.push(row_effects);
                    report.taken += 1;
                }
                Ok((_, Some(reason))) | Err(reason) => {
                    savepoint.rollback().await?;
                    report.refuse(number, reason);
                }
            }
        }
        tx.commit().await?;
        api.after_commit.apply(effects).await;
    }
    Ok(Json(report))
}

/// Runs one row; a reason instead of effects refuses it (its savepoint is
/// rolled back by the caller).
async fn import_row(
    api: &Api,
    conn: &mut sqlx::PgConnection,
    caller: &Caller,
    event: &Event,
    extra_identities: &[(Platform, String)],
) -> Result<(crate::worker::effects::Effects, Option<String>), String> {
    let mut view = BatchView::empty(&api.after_commit.cache);
    let effects = handlers::handle(conn, &api.workspaces, event, &mut view)
        .await
        .map_err(|error| match error {
            crate::worker::error::HandleError::Unprocessable(reason) => reason,
            crate::worker::error::HandleError::Store(error) => {
                tracing::warn!(error = %error, "an import row failed in the store");
                "the database refused the row".to_owned()
            }
        })?;
    if extra_identities.is_empty() {
        return Ok((effects, None));
    }
    let EventBody::ProfileUpdate(update) = &event.body else {
        return Ok((effects, None));
    };
    let store_failed = |error: crate::store::StoreError| {
        tracing::warn!(error = %error, "an import row's identities failed in the store");
        "the database refused the row".to_owned()
    };
    let customer = crate::store::customers::resolve(conn, &caller.workspace_id, &update.customer)
        .await
        .map_err(store_failed)?
        .ok_or_else(|| "the customer disappeared while importing".to_owned())?;
    for (platform, user) in extra_identities {
        let owner = customer_card::attach_identity(
            conn,
            &caller.workspace_id,
            platform.as_str(),
            user,
            customer,
        )
        .await
        .map_err(store_failed)?;
        if owner != customer {
            return Ok((
                effects,
                Some(format!(
                    "the {} identity belongs to another customer",
                    platform.as_str()
                )),
            ));
        }
    }
    Ok((effects, None))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_rows_split_tags_identities_and_fields() {
        let body = b"email,name,tags,identities\nann@example.com,Ann,vip|b2b,whatsapp:+15550001|web:v-1\n,,,\n";
        let rows = parse_csv(body).expect("parses");
        assert_eq!(rows.len(), 2);
        let first = rows[0].as_ref().expect("row");
        assert_eq!(first.tags, vec!["vip", "b2b"]);
        assert_eq!(first.identities.len(), 2);
        assert_eq!(first.identities[1].platform, "web");
        assert_eq!(first.fields.len(), 2);
        let second = rows[1].as_ref().expect("row");
        assert!(second.fields.is_empty());
    }

    #[test]
    fn jsonl_rows_report_errors_without_values() {
        let rows = parse_jsonl(b"{\"fields\":{\"email\":\"a@b.co\"}}\n\nnot json secret@x.com\n");
        assert_eq!(rows.len(), 2);
        assert!(rows[0].is_ok());
        let reason = rows[1].as_ref().expect_err("refused");
        assert!(!reason.contains("secret"), "{reason}");
    }
}

//! Read side of customer profiles for operators (`enricher customers …`):
//! finding a customer by id or email across workspaces, gathering everything
//! a support agent needs for one profile card, counting what an erasure will
//! remove, and streaming `enrich.customer_profiles` row by row for exports.
//!
//! Unlike the rest of the store, these are reads on behalf of a person at a
//! terminal, not steps of an event batch, so most take a pool or a connection
//! the CLI owns. Queries never select visitor IP addresses or user agents.

use std::borrow::Cow;

use chrono::{DateTime, NaiveDate, NaiveDateTime, SecondsFormat, Utc};
use futures::{Stream, StreamExt};
use serde::ser::{Serialize, SerializeSeq, Serializer};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, PgPool, Row};
use uuid::Uuid;

/// The workspace a customer id belongs to, if the customer exists.
pub async fn workspace_of(
    conn: &mut PgConnection,
    customer_id: Uuid,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT workspace_id FROM enrich.customers WHERE id = $1")
        .bind(customer_id)
        .fetch_optional(&mut *conn)
        .await
}

/// Workspaces holding a customer whose `email` field is `email` (already
/// lower-cased), sorted.
pub async fn workspaces_with_email(
    conn: &mut PgConnection,
    email: &str,
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT DISTINCT c.workspace_id FROM enrich.customers c
           JOIN enrich.customer_fields f ON f.customer_id = c.id AND f.field = 'email'
          WHERE f.value = $1
          ORDER BY 1",
    )
    .bind(email)
    .fetch_all(&mut *conn)
    .await
}

/// The profile view's row of one customer, the parts a card shows.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ProfileSummary {
    /// The customer.
    pub customer_id: Uuid,
    /// Tenant.
    pub workspace_id: String,
    /// Name, or `Guest User`.
    pub display_name: String,
    /// Platforms the customer has written from.
    pub platforms: Vec<String>,
    /// How the customer arrived (`organic`, `api`, `campaign`, `import`).
    pub source: Option<String>,
    /// Tag of the customer's first message.
    pub first_message_tag: Option<String>,
    /// When the customer row was created.
    pub created_at: DateTime<Utc>,
    /// First message.
    pub first_seen_at: Option<DateTime<Utc>>,
    /// Latest message.
    pub last_seen_at: Option<DateTime<Utc>>,
    /// Conversations started.
    pub conversation_count: i32,
    /// Customer messages.
    pub message_count: i32,
    /// Open questions.
    pub unresolved_queries: i32,
    /// Average sentiment over conversations, -1 … 1.
    pub avg_sentiment: Option<f32>,
    /// Tags, sorted.
    pub tags: Vec<String>,
    /// How the bot should address the customer.
    pub agent_instructions: Option<String>,
    /// What the model concluded about the customer.
    pub insights: Option<serde_json::Value>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

/// One identity of a customer, without visitor IP or user agent.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct IdentityRow {
    /// Platform.
    pub platform: String,
    /// The user's id on that platform.
    pub platform_user_id: String,
    /// First message from it.
    pub first_seen_at: DateTime<Utc>,
    /// Latest message from it.
    pub last_seen_at: DateTime<Utc>,
    /// Visitor country, as the chat backend reported it.
    pub country: Option<String>,
    /// Visitor device, as the chat backend reported it.
    pub device: Option<String>,
}

/// The current value of one field and where it came from.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct FieldRow {
    /// Field name.
    pub field: String,
    /// Current value.
    pub value: String,
    /// `agent`, `form`, `api`, `customer` or `system`.
    pub source: String,
    /// Who wrote it.
    pub actor: Option<String>,
    /// Model that proposed it, when it came from the model.
    pub model: Option<String>,
    /// When it was written.
    pub updated_at: DateTime<Utc>,
}

/// One conversation, as `enrich.conversation_overview` shows it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ConversationRow {
    /// The backend's conversation id.
    pub conversation_id: String,
    /// Platform.
    pub platform: String,
    /// `active`, `requesting`, `intervened` or `closed`.
    pub status: String,
    /// First message.
    pub started_at: DateTime<Utc>,
    /// Latest message.
    pub last_message_at: Option<DateTime<Utc>>,
    /// Messages of every sender.
    pub message_count: i32,
    /// Summary, once written.
    pub summary: Option<String>,
    /// `positive`, `neutral` or `negative`.
    pub sentiment: Option<String>,
    /// -1 … 1.
    pub sentiment_score: Option<f32>,
    /// Escalations in this conversation.
    pub escalations: i32,
}

/// One row of `enrich.field_history`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct HistoryRow {
    /// Field name.
    pub field: String,
    /// Value before.
    pub old_value: Option<String>,
    /// Value after.
    pub new_value: Option<String>,
    /// Source of the change.
    pub source: String,
    /// Who made it.
    pub actor: Option<String>,
    /// When.
    pub changed_at: DateTime<Utc>,
}

/// Everything a profile card shows.
#[derive(Debug, Clone)]
pub struct ProfileCard {
    /// The profile view's row.
    pub summary: ProfileSummary,
    /// Identities, most recently seen first.
    pub identities: Vec<IdentityRow>,
    /// Current fields, by name.
    pub fields: Vec<FieldRow>,
    /// Conversations, most recent first, at most `conversation_limit`.
    pub conversations: Vec<ConversationRow>,
    /// Escalations over all conversations.
    pub escalations: i64,
    /// Latest field changes, newest first, at most `history_limit`.
    pub history: Vec<HistoryRow>,
}

/// Reads the card of one customer; `None` when the customer does not exist.
pub async fn card(
    conn: &mut PgConnection,
    customer_id: Uuid,
    conversation_limit: i64,
    history_limit: i64,
) -> Result<Option<ProfileCard>, sqlx::Error> {
    let Some(summary) = sqlx::query_as::<_, ProfileSummary>(
        "SELECT customer_id, workspace_id, display_name, platforms, source, first_message_tag,
                created_at, first_seen_at, last_seen_at, conversation_count, message_count,
                unresolved_queries, avg_sentiment, tags, agent_instructions, insights, updated_at
           FROM enrich.customer_profiles WHERE customer_id = $1",
    )
    .bind(customer_id)
    .fetch_optional(&mut *conn)
    .await?
    else {
        return Ok(None);
    };
    // Only the visitor's country and device: IP and user agent stay in the database.
    let identities = sqlx::query_as::<_, IdentityRow>(
        "SELECT platform, platform_user_id, first_seen_at, last_seen_at,
                visitor ->> 'country' AS country, visitor ->> 'device' AS device
           FROM enrich.customer_identities WHERE customer_id = $1
          ORDER BY last_seen_at DESC, platform, platform_user_id",
    )
    .bind(customer_id)
    .fetch_all(&mut *conn)
    .await?;
    let fields = sqlx::query_as::<_, FieldRow>(
        "SELECT field, value, source, actor, model, updated_at
           FROM enrich.customer_fields WHERE customer_id = $1 ORDER BY field",
    )
    .bind(customer_id)
    .fetch_all(&mut *conn)
    .await?;
    let conversations = sqlx::query_as::<_, ConversationRow>(
        "SELECT conversation_id, platform, status, started_at, last_message_at, message_count,
                summary, sentiment, sentiment_score, escalations
           FROM enrich.conversation_overview WHERE customer_id = $1
          ORDER BY started_at DESC, conversation_id LIMIT $2",
    )
    .bind(customer_id)
    .bind(conversation_limit)
    .fetch_all(&mut *conn)
    .await?;
    let escalations: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM enrich.escalation_requests WHERE customer_id = $1",
    )
    .bind(customer_id)
    .fetch_one(&mut *conn)
    .await?;
    let history = sqlx::query_as::<_, HistoryRow>(
        "SELECT field, old_value, new_value, source, actor, changed_at
           FROM enrich.field_history WHERE customer_id = $1
          ORDER BY changed_at DESC, change_id DESC LIMIT $2",
    )
    .bind(customer_id)
    .bind(history_limit)
    .fetch_all(&mut *conn)
    .await?;
    Ok(Some(ProfileCard {
        summary,
        identities,
        fields,
        conversations,
        escalations,
        history,
    }))
}

/// Rows that forgetting a customer removes, by table; no personal data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, sqlx::FromRow)]
pub struct ErasureCounts {
    /// `enrich.customer_identities`.
    pub identities: i64,
    /// `enrich.customer_fields`.
    pub fields: i64,
    /// `enrich.field_changes`.
    pub field_changes: i64,
    /// `enrich.declined_fields`.
    pub declined_fields: i64,
    /// `enrich.conversations`.
    pub conversations: i64,
    /// `enrich.messages`.
    pub messages: i64,
    /// `enrich.asks`.
    pub asks: i64,
    /// `enrich.tags`.
    pub tags: i64,
    /// `enrich.tag_changes`.
    pub tag_changes: i64,
    /// `enrich.customer_notes`.
    pub notes: i64,
    /// `enrich.escalation_requests`.
    pub escalations: i64,
    /// `enrich.customer_insights`.
    pub insights: i64,
    /// `enrich.llm_calls`.
    pub llm_calls: i64,
}

/// Counts the rows hanging off a customer; run it in the erasing transaction,
/// before the erasure, to report what went.
pub async fn erasure_counts(
    conn: &mut PgConnection,
    customer_id: Uuid,
) -> Result<ErasureCounts, sqlx::Error> {
    sqlx::query_as(
        "SELECT (SELECT count(*) FROM enrich.customer_identities WHERE customer_id = $1) AS identities,
                (SELECT count(*) FROM enrich.customer_fields WHERE customer_id = $1)   AS fields,
                (SELECT count(*) FROM enrich.field_changes WHERE customer_id = $1)     AS field_changes,
                (SELECT count(*) FROM enrich.declined_fields WHERE customer_id = $1)   AS declined_fields,
                (SELECT count(*) FROM enrich.conversations WHERE customer_id = $1)     AS conversations,
                (SELECT count(*) FROM enrich.messages WHERE customer_id = $1)          AS messages,
                (SELECT count(*) FROM enrich.asks WHERE customer_id = $1)              AS asks,
                (SELECT count(*) FROM enrich.tags WHERE customer_id = $1)              AS tags,
                (SELECT count(*) FROM enrich.tag_changes WHERE customer_id = $1)       AS tag_changes,
                (SELECT count(*) FROM enrich.customer_notes WHERE customer_id = $1)    AS notes,
                (SELECT count(*) FROM enrich.escalation_requests WHERE customer_id = $1) AS escalations,
                (SELECT count(*) FROM enrich.customer_insights WHERE customer_id = $1) AS insights,
                (SELECT count(*) FROM enrich.llm_calls WHERE customer_id = $1)         AS llm_calls",
    )
    .bind(customer_id)
    .fetch_one(&mut *conn)
    .await
}

/// Which profiles an export covers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportFilter {
    /// Only this workspace.
    pub workspace: Option<String>,
    /// Only profiles with `updated_at >= since`.
    pub since: Option<DateTime<Utc>>,
}

/// How a column of the view is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Uuid,
    Text,
    TextArray,
    Int2,
    Int4,
    Int8,
    Float4,
    Float8,
    Bool,
    Timestamptz,
    Timestamp,
    Date,
    Json,
}

impl Kind {
    /// The reader of a Postgres type; any other type is selected as `::text`.
    fn of(type_name: &str) -> Option<Kind> {
        Some(match type_name {
            "uuid" => Kind::Uuid,
            "text" | "varchar" | "bpchar" | "name" => Kind::Text,
            "_text" | "_varchar" => Kind::TextArray,
            "int2" => Kind::Int2,
            "int4" => Kind::Int4,
            "int8" => Kind::Int8,
            "float4" => Kind::Float4,
            "float8" => Kind::Float8,
            "bool" => Kind::Bool,
            "timestamptz" => Kind::Timestamptz,
            "timestamp" => Kind::Timestamp,
            "date" => Kind::Date,
            "json" | "jsonb" => Kind::Json,
            _ => return None,
        })
    }
}

/// One value of an exported row.
#[derive(Debug, Clone, PartialEq)]
pub enum ExportValue {
    /// SQL NULL.
    Null,
    /// Text, ids, and timestamps (RFC 3339, UTC).
    Text(String),
    /// Any integer.
    Integer(i64),
    /// `real`, kept single precision so it prints as stored.
    Real(f32),
    /// `double precision`.
    Double(f64),
    /// Boolean.
    Bool(bool),
    /// A text array (`platforms`, `tags`).
    TextArray(Vec<Option<String>>),
    /// `json` / `jsonb`.
    Json(serde_json::Value),
}

impl ExportValue {
    /// The value as one CSV field: NULL is empty, arrays are joined with `|`,
    /// JSON is compact.
    pub fn csv_field(&self) -> Cow<'_, str> {
        match self {
            ExportValue::Null => Cow::Borrowed(""),
            ExportValue::Text(text) => Cow::Borrowed(text),
            ExportValue::Integer(n) => Cow::Owned(n.to_string()),
            ExportValue::Real(x) => Cow::Owned(x.to_string()),
            ExportValue::Double(x) => Cow::Owned(x.to_string()),
            ExportValue::Bool(b) => Cow::Borrowed(if *b { "true" } else { "false" }),
            ExportValue::TextArray(items) => Cow::Owned(
                items
                    .iter()
                    .map(|item| item.as_deref().unwrap_or(""))
                    .collect::<Vec<_>>()
                    .join("|"),
            ),
            ExportValue::Json(value) => Cow::Owned(value.to_string()),
        }
    }
}

impl Serialize for ExportValue {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            ExportValue::Null => serializer.serialize_none(),
            ExportValue::Text(text) => serializer.serialize_str(text),
            ExportValue::Integer(n) => serializer.serialize_i64(*n),
            ExportValue::Real(x) => serializer.serialize_f32(*x),
            ExportValue::Double(x) => serializer.serialize_f64(*x),
            ExportValue::Bool(b) => serializer.serialize_bool(*b),
            ExportValue::TextArray(items) => {
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            ExportValue::Json(value) => value.serialize(serializer),
        }
    }
}

struct ExportColumn {
    name: String,
    kind: Kind,
}

/// An export of `enrich.customer_profiles`: every column of the view, in the
/// view's order, read from the catalog so columns added later are exported
/// without a code change.
pub struct ProfileExport {
    columns: Vec<ExportColumn>,
    sql: String,
}

fn timestamp(value: DateTime<Utc>) -> String {
    value.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

impl ProfileExport {
    /// Reads the view's columns and builds the query.
    pub async fn prepare(pool: &PgPool) -> Result<ProfileExport, sqlx::Error> {
        let catalog: Vec<(String, String, String)> = sqlx::query_as(
            "SELECT a.attname::text, quote_ident(a.attname), t.typname::text
               FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
              WHERE a.attrelid = 'enrich.customer_profiles'::regclass
                AND a.attnum > 0 AND NOT a.attisdropped
              ORDER BY a.attnum",
        )
        .fetch_all(pool)
        .await?;
        let mut select = Vec::with_capacity(catalog.len());
        let mut columns = Vec::with_capacity(catalog.len());
        for (name, quoted, type_name) in catalog {
            let kind = match Kind::of(&type_name) {
                Some(kind) => {
                    select.push(quoted);
                    kind
                }
                None => {
                    select.push(format!("{quoted}::text AS {quoted}"));
                    Kind::Text
                }
            };
            columns.push(ExportColumn { name, kind });
        }
        let sql = format!(
            "SELECT {} FROM enrich.customer_profiles
              WHERE ($1::text IS NULL OR workspace_id = $1)
                AND ($2::timestamptz IS NULL OR updated_at >= $2)
              ORDER BY updated_at, customer_id",
            select.join(", ")
        );
        Ok(ProfileExport { columns, sql })
    }

    /// Column names, in the view's order.
    pub fn column_names(&self) -> impl Iterator<Item = &str> {
        self.columns.iter().map(|column| column.name.as_str())
    }

    /// How many profiles the filter covers (for a progress bar).
    pub async fn count(pool: &PgPool, filter: &ExportFilter) -> Result<i64, sqlx::Error> {
        sqlx::query_scalar(
            "SELECT count(*) FROM enrich.customers
              WHERE ($1::text IS NULL OR workspace_id = $1)
                AND ($2::timestamptz IS NULL OR updated_at >= $2)",
        )
        .bind(filter.workspace.as_deref())
        .bind(filter.since)
        .fetch_one(pool)
        .await
    }

    /// The rows, decoded one at a time as Postgres sends them: memory stays
    /// flat however many profiles there are.
    pub fn rows<'a>(
        &'a self,
        pool: &'a PgPool,
        filter: &'a ExportFilter,
    ) -> impl Stream<Item = Result<Vec<ExportValue>, sqlx::Error>> + 'a {
        // The statement text is built from catalog names quoted by Postgres
        // itself (`quote_ident`); values are bound.
        sqlx::query(sqlx::AssertSqlSafe(self.sql.clone()))
            .bind(filter.workspace.as_deref())
            .bind(filter.since)
            .fetch(pool)
            .map(move |row| row.and_then(|row| self.decode(&row)))
    }

    fn decode(&self, row: &PgRow) -> Result<Vec<ExportValue>, sqlx::Error> {
        let mut values = Vec::with_capacity(self.columns.len());
        for (index, column) in self.columns.iter().enumerate() {
            let value = match column.kind {
                Kind::Uuid => row
                    .try_get::<Option<Uuid>, _>(index)?
                    .map(|id| ExportValue::Text(id.to_string())),
                Kind::Text => row
                    .try_get::<Option<String>, _>(index)?
                    .map(ExportValue::Text),
                Kind::TextArray => row
                    .try_get::<Option<Vec<Option<String>>>, _>(index)?
                    .map(ExportValue::TextArray),
                Kind::Int2 => row
                    .try_get::<Option<i16>, _>(index)?
                    .map(|n| ExportValue::Integer(n.into())),
                Kind::Int4 => row
                    .try_get::<Option<i32>, _>(index)?
                    .map(|n| ExportValue::Integer(n.into())),
                Kind::Int8 => row
                    .try_get::<Option<i64>, _>(index)?
                    .map(ExportValue::Integer),
                Kind::Float4 => row.try_get::<Option<f32>, _>(index)?.map(ExportValue::Real),
                Kind::Float8 => row
                    .try_get::<Option<f64>, _>(index)?
                    .map(ExportValue::Double),
                Kind::Bool => row
                    .try_get::<Option<bool>, _>(index)?
                    .map(ExportValue::Bool),
                Kind::Timestamptz => row
                    .try_get::<Option<DateTime<Utc>>, _>(index)?
                    .map(|at| ExportValue::Text(timestamp(at))),
                Kind::Timestamp => row
                    .try_get::<Option<NaiveDateTime>, _>(index)?
                    .map(|at| ExportValue::Text(at.format("%Y-%m-%dT%H:%M:%S%.f").to_string())),
                Kind::Date => row
                    .try_get::<Option<NaiveDate>, _>(index)?
                    .map(|day| ExportValue::Text(day.to_string())),
                Kind::Json => row
                    .try_get::<Option<serde_json::Value>, _>(index)?
                    .map(ExportValue::Json),
            };
            values.push(value.unwrap_or(ExportValue::Null));
        }
        Ok(values)
    }
}

/// Reads an export's `since` (the CLI's `--since`, the API's `?since=`):
/// an RFC 3339 timestamp or a date (midnight UTC).
pub fn parse_since(value: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(at) = DateTime::parse_from_rfc3339(value) {
        return Ok(at.with_timezone(&Utc));
    }
    NaiveDate::parse_from_str(value, "%Y-%m-%d")
        .ok()
        .and_then(|day| day.and_hms_opt(0, 0, 0))
        .map(|midnight| midnight.and_utc())
        .ok_or_else(|| {
            format!("`{value}` is neither an RFC 3339 time (2026-03-01T10:00:00Z) nor a date (2026-03-01)")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_join_arrays_and_compact_json() {
        assert_eq!(ExportValue::Null.csv_field(), "");
        assert_eq!(
            ExportValue::TextArray(vec![Some("web".into()), Some("line".into())]).csv_field(),
            "web|line"
        );
        assert_eq!(
            ExportValue::Json(serde_json::json!({"a": [1, 2]})).csv_field(),
            r#"{"a":[1,2]}"#
        );
        assert_eq!(ExportValue::Real(0.3).csv_field(), "0.3");
        assert_eq!(ExportValue::Bool(true).csv_field(), "true");
    }

    #[test]
    fn json_keeps_types() {
        let values = vec![
            ExportValue::Null,
            ExportValue::Integer(3),
            ExportValue::Real(0.5),
            ExportValue::TextArray(vec![Some("vip".into())]),
            ExportValue::Json(serde_json::json!({"k": "v"})),
        ];
        assert_eq!(
            serde_json::to_string(&values).ok().as_deref(),
            Some(r#"[null,3,0.5,["vip"],{"k":"v"}]"#)
        );
    }

    #[test]
    fn unknown_types_are_read_as_text() {
        assert_eq!(Kind::of("jsonb"), Some(Kind::Json));
        assert_eq!(Kind::of("_text"), Some(Kind::TextArray));
        assert_eq!(Kind::of("numeric"), None);
    }
}

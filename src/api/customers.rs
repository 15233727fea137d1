//! `/v1/customers`: the searchable list, the profile card, a customer's
//! conversations and field history, field edits and forgetting.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::Api;
use super::auth::{Caller, Scope};
use super::pagination;
use super::problem::Problem;
use super::writes;
use crate::event::{CustomerForget, CustomerRef, EventBody, ProfileUpdate, UpdateSource, Visitor};
use crate::store::customer_card::{self, ChangeDetail, ConversationDetail, FieldDetail};
use crate::store::search::{self, Matchers, Search};
use crate::store::{notes, profiles};

/// Conversations the card lists.
const CARD_CONVERSATIONS: i64 = 20;
/// Field changes the card lists.
const CARD_HISTORY: i64 = 10;
/// Asks the card lists.
const CARD_ASKS: i64 = 50;
/// Notes the card lists.
const CARD_NOTES: i64 = 50;

/// Query of `GET /v1/customers`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Part of a name, an email, a phone number (any common format) or a platform user id.
    pub q: Option<String>,
    /// Only customers who wrote from this platform.
    pub platform: Option<String>,
    /// Only customers with this tag.
    pub tag: Option<String>,
    /// Only customers with a conversation in this status (`active`, `requesting`, `intervened`, `closed`).
    pub status: Option<String>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Rows per page (1 to 500, default 50).
    pub limit: Option<i64>,
}

/// A customer in a list.
#[derive(Debug, Serialize, ToSchema)]
pub struct CustomerSummary {
    /// The customer.
    pub id: Uuid,
    /// Name, or `Guest User`.
    pub display_name: String,
    /// Email.
    pub email: Option<String>,
    /// Phone, E.164.
    pub phone: Option<String>,
    /// Platforms the customer wrote from.
    pub platforms: Vec<String>,
    /// The latest message.
    pub last_message: Option<String>,
    /// First interaction.
    pub first_seen_at: Option<DateTime<Utc>>,
    /// Latest message of anyone in the customer's conversations.
    pub last_seen_at: Option<DateTime<Utc>>,
    /// The customer's own latest message.
    pub last_customer_message_at: Option<DateTime<Utc>>,
    /// Latest activity (the list's order).
    pub activity_at: DateTime<Utc>,
    /// Conversations.
    pub conversation_count: i32,
    /// Open questions.
    pub unresolved_queries: i32,
    /// Tags.
    pub tags: Vec<String>,
    /// Status of the latest conversation.
    pub status: Option<String>,
}

/// A page of customers.
#[derive(Debug, Serialize, ToSchema)]
pub struct CustomerPage {
    /// Newest activity first.
    pub customers: Vec<CustomerSummary>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// What a searched text may be: every reading that parses is tried.
pub fn matchers(api: &Api, workspace_id: &str, q: &str) -> Option<Matchers> {
    let q = q.trim();
    if q.is_empty() {
        return None;
    }
    let workspace = api.workspaces.get(workspace_id)?;
    let mut matchers = Matchers {
        platform_user_id: Some(q.to_owned()),
        ..Matchers::default()
    };
    if q.contains('@') {
        matchers.email = Some(q.to_lowercase());
        return Some(matchers);
    }
    let digits = q.chars().filter(char::is_ascii_digit).count();
    let phone_like = q
        .chars()
        .all(|c| c.is_ascii_digit() || " +-().".contains(c));
    if phone_like && digits >= 6 {
        matchers.phone = workspace
            .fields
            .normalize("phone", q, workspace.settings.default_region.as_deref())
            .ok();
        // Digits alone may also be part of a name only in odd data; skip the name.
        return Some(matchers);
    }
    matchers.name_contains = Some(q.to_owned());
    Some(matchers)
}

/// Search and list customers.
#[utoipa::path(get, path = "/v1/customers", tag = "customers",
    params(ListQuery),
    responses(
        (status = 200, description = "A page of customers", body = CustomerPage),
        (status = 400, description = "Bad query", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub async fn list(
    State(api): State<Api>,
    caller: Caller,
    Query(query): Query<ListQuery>,
) -> Result<Json<CustomerPage>, Problem> {
    let limit = pagination::limit(query.limit)?;
    let after = query
        .cursor
        .as_deref()
        .map(pagination::decode_activity)
        .transpose()?;
    let matchers = match query.q.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(q) => Some(matchers(&api, &caller.workspace_id, q).unwrap_or_default()),
    };
    let search = Search {
        workspace_id: caller.workspace_id.clone(),
        matchers,
        platform: query.platform.filter(|p| !p.is_empty()),
        tag: query.tag.filter(|t| !t.is_empty()),
        status: query.status.filter(|s| !s.is_empty()),
        after,
        limit,
    };
    let mut conn = api.pool.acquire().await?;
    let rows = search::customers(&mut conn, &search).await?;
    let next_cursor = pagination::next(&rows, limit, |row| {
        pagination::encode_activity(row.activity_at, row.customer_id)
    });
    let customers = rows
        .into_iter()
        .map(|row| CustomerSummary {
            id: row.customer_id,
            display_name: row.display_name,
            email: row.email,
            phone: row.phone,
            platforms: row.platforms,
            last_message: row.last_message,
            first_seen_at: row.first_seen_at,
            last_seen_at: row.last_seen_at,
            last_customer_message_at: row.last_customer_message_at,
            activity_at: row.activity_at,
            conversation_count: row.conversation_count,
            unresolved_queries: row.unresolved_queries,
            tags: row.tags,
            status: row.status,
        })
        .collect();
    Ok(Json(CustomerPage {
        customers,
        next_cursor,
    }))
}

/// A field's current value and where it came from.
#[derive(Debug, Serialize, ToSchema)]
pub struct FieldValue {
    /// Field name.
    pub field: String,
    /// Value.
    pub value: String,
    /// `agent`, `form`, `api`, `import`, `customer` or `system`.
    pub source: String,
    /// Who wrote it (agent id, token name, form id).
    pub actor: Option<String>,
    /// The customer's words the value was taken from.
    pub evidence: Option<String>,
    /// Model confidence, for model values.
    pub confidence: Option<f32>,
    /// Model, for model values.
    pub model: Option<String>,
    /// When it was written.
    pub updated_at: DateTime<Utc>,
}

impl From<FieldDetail> for FieldValue {
    fn from(f: FieldDetail) -> FieldValue {
        FieldValue {
            field: f.field,
            value: f.value,
            source: f.source,
            actor: f.actor,
            evidence: f.evidence,
            confidence: f.confidence,
            model: f.model,
            updated_at: f.updated_at,
        }
    }
}

/// Visitor metadata of an identity; `ip` and `user_agent` only with the `pii` scope.
#[derive(Debug, Default, Serialize, ToSchema)]
pub struct VisitorInfo {
    /// Browser.
    pub browser: Option<String>,
    /// Operating system.
    pub os: Option<String>,
    /// Device type.
    pub device: Option<String>,
    /// Country (ISO 3166 alpha-2).
    pub country: Option<String>,
    /// Browser locale.
    pub locale: Option<String>,
    /// Page the chat was opened on.
    pub page_url: Option<String>,
    /// Referring page.
    pub referrer: Option<String>,
    /// First visit of the session.
    pub first_visit_at: Option<DateTime<Utc>>,
    /// Seconds from the first visit to the latest message.
    pub time_on_site_secs: Option<i64>,
    /// IP address (`pii` scope).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// User agent (`pii` scope).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
}

/// An identity on a platform.
#[derive(Debug, Serialize, ToSchema)]
pub struct IdentityInfo {
    /// Platform.
    pub platform: String,
    /// The user's id there.
    pub platform_user_id: String,
    /// First message from it.
    pub first_seen_at: DateTime<Utc>,
    /// Latest message from it.
    pub last_seen_at: DateTime<Utc>,
    /// What the chat backend sent about the visitor.
    pub visitor: Option<VisitorInfo>,
}

fn identity_info(identity: customer_card::IdentityDetail, pii: bool) -> IdentityInfo {
    let visitor = identity
        .visitor
        .and_then(|raw| serde_json::from_value::<Visitor>(raw).ok())
        .map(|v| VisitorInfo {
            time_on_site_secs: v
                .session_started_at
                .map(|start| (identity.last_seen_at - start).num_seconds().max(0)),
            first_visit_at: v.session_started_at,
            browser: v.browser,
            os: v.os,
            device: v.device,
            country: v.country,
            locale: v.locale,
            page_url: v.page_url,
            referrer: v.referrer,
            ip: v.ip.filter(|_| pii),
            user_agent: v.user_agent.filter(|_| pii),
        });
    IdentityInfo {
        platform: identity.platform,
        platform_user_id: identity.platform_user_id,
        first_seen_at: identity.first_seen_at,
        last_seen_at: identity.last_seen_at,
        visitor,
    }
}

/// Counters of a profile.
#[derive(Debug, Serialize, ToSchema)]
pub struct Counters {
    /// Conversations.
    pub conversations: i32,
    /// Customer messages.
    pub customer_messages: i32,
    /// Open questions.
    pub unresolved_queries: i32,
    /// Escalations.
    pub escalations: i64,
    /// Average sentiment, -1 … 1.
    pub avg_sentiment: Option<f32>,
}

/// A note an agent left.
#[derive(Debug, Serialize, ToSchema)]
pub struct NoteInfo {
    /// Note id.
    pub id: i64,
    /// Text (up to 2,000 characters).
    pub text: String,
    /// Who wrote it (the token name for notes added through the API).
    pub author: String,
    /// When.
    pub created_at: DateTime<Utc>,
}

impl From<notes::Note> for NoteInfo {
    fn from(note: notes::Note) -> NoteInfo {
        NoteInfo {
            id: note.note_id,
            text: note.text,
            author: note.author,
            created_at: note.created_at,
        }
    }
}

/// A conversation an insight cites.
#[derive(Debug, Serialize, ToSchema)]
pub struct CitedConversation {
    /// Backend id.
    pub conversation_id: String,
    /// First message.
    pub started_at: DateTime<Utc>,
    /// Summary.
    pub summary: Option<String>,
}

/// What the model concluded about the customer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Insights {
    /// Sections of cited items: `communication_preferences`, `topics_of_interest`, `purchase_patterns`, `key_characteristics`.
    #[schema(value_type = Object)]
    pub sections: serde_json::Value,
    /// The conversations the items cite.
    pub cited_conversations: Vec<CitedConversation>,
}

/// One conversation.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConversationInfo {
    /// Backend id.
    pub conversation_id: String,
    /// Platform.
    pub platform: String,
    /// `active`, `requesting`, `intervened` or `closed`.
    pub status: String,
    /// First message.
    pub started_at: DateTime<Utc>,
    /// Latest message.
    pub last_message_at: Option<DateTime<Utc>>,
    /// When it closed.
    pub ended_at: Option<DateTime<Utc>>,
    /// Messages of every sender.
    pub message_count: i32,
    /// Summary.
    pub summary: Option<String>,
    /// `positive`, `neutral` or `negative`.
    pub sentiment: Option<String>,
    /// -1 … 1.
    pub sentiment_score: Option<f32>,
    /// Topics.
    pub topics: Vec<String>,
    /// How it was resolved.
    pub resolution: Option<String>,
    /// Who resolved it.
    pub resolved_by: Option<String>,
    /// Escalations in it.
    pub escalations: i32,
    /// When it was resolved.
    pub resolved_at: Option<DateTime<Utc>>,
}

impl From<ConversationDetail> for ConversationInfo {
    fn from(c: ConversationDetail) -> ConversationInfo {
        ConversationInfo {
            conversation_id: c.conversation_id,
            platform: c.platform,
            status: c.status,
            started_at: c.started_at,
            last_message_at: c.last_message_at,
            ended_at: c.ended_at,
            message_count: c.message_count,
            summary: c.summary,
            sentiment: c.sentiment,
            sentiment_score: c.sentiment_score,
            topics: c.topics,
            resolution: c.resolution,
            resolved_by: c.resolved_by,
            escalations: c.escalations,
            resolved_at: c.resolved_at,
        }
    }
}

/// An ask and its outcome.
#[derive(Debug, Serialize, ToSchema)]
pub struct AskInfo {
    /// Conversation (backend id).
    pub conversation_id: String,
    /// Field asked for.
    pub field: String,
    /// The question.
    pub question: String,
    /// Why.
    pub reason: String,
    /// `answered`, `declined`, `ignored` or `pending`.
    pub outcome: String,
    /// When asked.
    pub asked_at: DateTime<Utc>,
    /// When the outcome was known.
    pub outcome_at: Option<DateTime<Utc>>,
}

/// A field change.
#[derive(Debug, Serialize, ToSchema)]
pub struct FieldChangeInfo {
    /// Change id.
    pub id: i64,
    /// Field.
    pub field: String,
    /// Before (`null`: the field was new).
    pub old_value: Option<String>,
    /// After (`null`: the field was cleared).
    pub new_value: Option<String>,
    /// Source.
    pub source: String,
    /// Who.
    pub actor: Option<String>,
    /// Model, for model values.
    pub model: Option<String>,
    /// When.
    pub changed_at: DateTime<Utc>,
}

impl From<ChangeDetail> for FieldChangeInfo {
    fn from(c: ChangeDetail) -> FieldChangeInfo {
        FieldChangeInfo {
            id: c.change_id,
            field: c.field,
            old_value: c.old_value,
            new_value: c.new_value,
            source: c.source,
            actor: c.actor,
            model: c.model,
            changed_at: c.changed_at,
        }
    }
}

/// The profile card.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProfileCard {
    /// The customer.
    pub id: Uuid,
    /// Tenant.
    pub workspace_id: String,
    /// Name, or `Guest User`.
    pub display_name: String,
    /// How the customer arrived (`organic`, `api`, `campaign`, `import`).
    pub source: Option<String>,
    /// Tag of the first message.
    pub first_message_tag: Option<String>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// First message.
    pub first_seen_at: Option<DateTime<Utc>>,
    /// Latest message.
    pub last_seen_at: Option<DateTime<Utc>>,
    /// Platforms.
    pub platforms: Vec<String>,
    /// Counters.
    pub counters: Counters,
    /// Current fields.
    pub fields: Vec<FieldValue>,
    /// Identities, most recently seen first.
    pub identities: Vec<IdentityInfo>,
    /// Tags.
    pub tags: Vec<String>,
    /// How the bot should address the customer.
    pub agent_instructions: Option<String>,
    /// Notes, newest first.
    pub notes: Vec<NoteInfo>,
    /// AI insights.
    pub insights: Option<Insights>,
    /// Latest conversations (20 at most; the full list is paginated).
    pub conversations: Vec<ConversationInfo>,
    /// Asks and their outcomes, newest first.
    pub asks: Vec<AskInfo>,
    /// Latest field changes (10 at most; the full history is paginated).
    pub recent_changes: Vec<FieldChangeInfo>,
}

/// Builds the card; `None` when the customer is not in the caller's workspace.
pub async fn card(api: &Api, caller: &Caller, id: Uuid) -> Result<Option<ProfileCard>, Problem> {
    let mut conn = api.pool.acquire().await?;
    if !customer_card::exists(&mut conn, &caller.workspace_id, id).await? {
        return Ok(None);
    }
    let Some(base) = profiles::card(&mut conn, id, CARD_CONVERSATIONS, CARD_HISTORY).await? else {
        return Ok(None);
    };
    let pii = caller.has(Scope::Pii);
    let fields = customer_card::fields(&mut conn, id).await?;
    let identities = customer_card::identities(&mut conn, id).await?;
    let asks = customer_card::asks(&mut conn, id, CARD_ASKS).await?;
    let notes = notes::for_customer(&mut conn, &caller.workspace_id, id, None, CARD_NOTES).await?;
    let conversations =
        customer_card::conversations(&mut conn, id, None, CARD_CONVERSATIONS).await?;
    let recent = customer_card::history(&mut conn, id, None, CARD_HISTORY).await?;
    let summary = base.summary;
    let insights = match summary.insights {
        None | Some(serde_json::Value::Null) => None,
        Some(sections) => {
            let cited = cited_ids(&sections);
            let cited_conversations = customer_card::cited_conversations(&mut conn, id, &cited)
                .await?
                .into_iter()
                .map(|c| CitedConversation {
                    conversation_id: c.conversation_id,
                    started_at: c.started_at,
                    summary: c.summary,
                })
                .collect();
            Some(Insights {
                sections,
                cited_conversations,
            })
        }
    };
    Ok(Some(ProfileCard {
        id,
        workspace_id: summary.workspace_id,
        display_name: summary.display_name,
        source: summary.source,
        first_message_tag: summary.first_message_tag,
        created_at: summary.created_at,
        updated_at: summary.updated_at,
        first_seen_at: summary.first_seen_at,
        last_seen_at: summary.last_seen_at,
        platforms: summary.platforms,
        counters: Counters {
            conversations: summary.conversation_count,
            customer_messages: summary.message_count,
            unresolved_queries: summary.unresolved_queries,
            escalations: base.escalations,
            avg_sentiment: summary.avg_sentiment,
        },
        fields: fields.into_iter().map(FieldValue::from).collect(),
        identities: identities
            .into_iter()
            .map(|i| identity_info(i, pii))
            .collect(),
        tags: summary.tags,
        agent_instructions: summary.agent_instructions,
        notes: notes.into_iter().map(NoteInfo::from).collect(),
        insights,
        conversations: conversations
            .into_iter()
            .map(ConversationInfo::from)
            .collect(),
        asks: asks
            .into_iter()
            .map(|a| AskInfo {
                conversation_id: a.conversation_id,
                field: a.field,
                question: a.question,
                reason: a.reason,
                outcome: a.outcome,
                asked_at: a.asked_at,
                outcome_at: a.outcome_at,
            })
            .collect(),
        recent_changes: recent.into_iter().map(FieldChangeInfo::from).collect(),
    }))
}

/// Conversation ids cited anywhere in the insights.
fn cited_ids(sections: &serde_json::Value) -> Vec<String> {
    let mut ids: Vec<String> = sections
        .as_object()
        .into_iter()
        .flat_map(|o| o.values())
        .filter_map(|section| section.as_array())
        .flatten()
        .filter_map(|item| item.get("conversation_ids")?.as_array())
        .flatten()
        .filter_map(|id| id.as_str().map(str::to_owned))
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

fn customer_not_found() -> Problem {
    Problem::not_found("no such customer in this workspace")
}

/// The profile card of one customer.
#[utoipa::path(get, path = "/v1/customers/{id}", tag = "customers",
    params(("id" = Uuid, Path, description = "Customer id")),
    responses(
        (status = 200, description = "The profile card", body = ProfileCard),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Not in this token's workspace", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub async fn show(
    State(api): State<Api>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<Json<ProfileCard>, Problem> {
    card(&api, &caller, id)
        .await?
        .map(Json)
        .ok_or_else(customer_not_found)
}

/// Query of paginated sub-lists.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Rows per page (1 to 500, default 50).
    pub limit: Option<i64>,
}

/// A page of conversations.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConversationPage {
    /// Most recent first.
    pub conversations: Vec<ConversationInfo>,
    /// The next page's cursor; absent on the last page.
    pub next_cursor: Option<String>,
}

async fn require_customer(api: &Api, caller: &Caller, id: Uuid) -> Result<(), Problem> {
    let mut conn = api.pool.acquire().await?;
    if customer_card::exists(&mut conn, &caller.workspace_id, id).await? {
        Ok(())
    } else {
        Err(customer_not_found())
    }
}

/// A customer's conversations with summary, sentiment, topics and resolution.
#[utoipa::path(get, path = "/v1/customers/{id}/conversations", tag = "customers",
    params(("id" = Uuid, Path, description = "Customer id"), PageQuery),
    responses(
        (status = 200, description = "A page of conversations", body = ConversationPage),
        (status = 404, description = "Not in this token's workspace", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub async fn conversations(
    State(api): State<Api>,
    caller: Caller,
    Path(id): Path<Uuid>,
    Query(page): Query<PageQuery>,
) -> Result<Json<ConversationPage>, Problem> {
    let limit = pagination::limit(page.limit)?;
    let before = pagination::key_after(page.cursor.as_deref())?;
    require_customer(&api, &caller, id).await?;
    let mut conn = api.pool.acquire().await?;
    let rows = customer_card::conversations(&mut conn, id, before, limit).await?;
    let next_cursor = pagination::next(&rows, limit, |c| pagination::encode_key(c.key));
    Ok(Json(ConversationPage {
        conversations: rows.into_iter().map(ConversationInfo::from).collect(),
        next_cursor,
    }))
}

/// A page of field changes.
#[derive(Debug, Serialize, ToSchema)]
pub struct HistoryPage {
    /// Newest first.
    pub changes: Vec<FieldChangeInfo>,
    /// The next page's cursor; absent on the last page.
    pub next_cursor: Option<String>,
}

/// Every change of a customer's fields (clears included), newest first.
#[utoipa::path(get, path = "/v1/customers/{id}/history", tag = "customers",
    params(("id" = Uuid, Path, description = "Customer id"), PageQuery),
    responses(
        (status = 200, description = "A page of field changes", body = HistoryPage),
        (status = 404, description = "Not in this token's workspace", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub async fn history(
    State(api): State<Api>,
    caller: Caller,
    Path(id): Path<Uuid>,
    Query(page): Query<PageQuery>,
) -> Result<Json<HistoryPage>, Problem> {
    let limit = pagination::limit(page.limit)?;
    let before = pagination::key_after(page.cursor.as_deref())?;
    require_customer(&api, &caller, id).await?;
    let mut conn = api.pool.acquire().await?;
    let rows = customer_card::history(&mut conn, id, before, limit).await?;
    let next_cursor = pagination::next(&rows, limit, |c| pagination::encode_key(c.change_id));
    Ok(Json(HistoryPage {
        changes: rows.into_iter().map(FieldChangeInfo::from).collect(),
        next_cursor,
    }))
}

/// Body of `PATCH /v1/customers/{id}/fields`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct FieldsPatch {
    /// New values by field name; `null` clears the field (its history keeps the old value).
    #[schema(value_type = Object)]
    pub fields: serde_json::Map<String, serde_json::Value>,
}

/// The customer's fields after an edit.
#[derive(Debug, Serialize, ToSchema)]
pub struct FieldsUpdated {
    /// The customer (another id when a new email merged it into an older customer).
    pub id: Uuid,
    /// Current fields.
    pub fields: Vec<FieldValue>,
}

/// Checks every value as `profile.update` will, so a bad value refuses the
/// whole edit with the field named instead of being skipped silently.
fn check_values(
    api: &Api,
    caller: &Caller,
    fields: &serde_json::Map<String, serde_json::Value>,
) -> Result<(), Problem> {
    let workspace = api
        .workspaces
        .get(&caller.workspace_id)
        .ok_or_else(|| Problem::unprocessable("this workspace is not configured"))?;
    let region = workspace.settings.default_region.as_deref();
    let mut problems = Vec::new();
    for (field, value) in fields {
        let raw = match value {
            serde_json::Value::Null => {
                if workspace.fields.get(field).is_none() {
                    problems.push(format!("`{field}`: unknown field"));
                }
                continue;
            }
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Number(n) => n.to_string(),
            serde_json::Value::Array(items) => items
                .iter()
                .filter_map(|v| v.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            _ => {
                problems.push(format!(
                    "`{field}`: expected a string, number, list or null"
                ));
                continue;
            }
        };
        if let Err(rejection) = workspace.fields.normalize(field, &raw, region) {
            problems.push(format!("`{field}`: {rejection}"));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Problem::unprocessable(problems.join("; ")))
    }
}

/// Edit fields as an agent (the token's name is the actor).
#[utoipa::path(patch, path = "/v1/customers/{id}/fields", tag = "customers",
    params(("id" = Uuid, Path, description = "Customer id")),
    request_body = FieldsPatch,
    responses(
        (status = 200, description = "The fields after the edit", body = FieldsUpdated),
        (status = 403, description = "The token lacks `write`", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Not in this token's workspace", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A value was refused", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub async fn update_fields(
    State(api): State<Api>,
    caller: Caller,
    Path(id): Path<Uuid>,
    Json(patch): Json<FieldsPatch>,
) -> Result<Json<FieldsUpdated>, Problem> {
    caller.require(Scope::Write)?;
    require_customer(&api, &caller, id).await?;
    check_values(&api, &caller, &patch.fields)?;
    let update = ProfileUpdate {
        customer: CustomerRef::Id(id),
        fields: patch.fields,
        source: UpdateSource::Agent,
        actor: Some(caller.name.clone()),
        conversation_id: None,
        tags_add: Vec::new(),
        tags_remove: Vec::new(),
        agent_instructions: None,
    };
    writes::run(&api, &caller, EventBody::ProfileUpdate(update)).await?;
    let mut conn = api.pool.acquire().await?;
    let current = if customer_card::exists(&mut conn, &caller.workspace_id, id).await? {
        id
    } else {
        // Merged away by a new email: follow it.
        customer_card::merged_into(&mut conn, id)
            .await?
            .unwrap_or(id)
    };
    let fields = customer_card::fields(&mut conn, current).await?;
    Ok(Json(FieldsUpdated {
        id: current,
        fields: fields.into_iter().map(FieldValue::from).collect(),
    }))
}

/// Forget a customer everywhere, as `customer.forget` does.
#[utoipa::path(delete, path = "/v1/customers/{id}", tag = "customers",
    params(("id" = Uuid, Path, description = "Customer id")),
    responses(
        (status = 204, description = "Erased"),
        (status = 403, description = "The token lacks `write`", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Not in this token's workspace", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub async fn forget(
    State(api): State<Api>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<StatusCode, Problem> {
    caller.require(Scope::Write)?;
    require_customer(&api, &caller, id).await?;
    let forget = CustomerForget {
        customer: CustomerRef::Id(id),
        actor: Some(caller.name.clone()),
    };
    writes::run(&api, &caller, EventBody::CustomerForget(forget)).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cited_ids_are_collected_once() {
        let sections = serde_json::json!({
            "topics_of_interest": [{"text": "a", "conversation_ids": ["c1", "c2"]}],
            "purchase_patterns": [{"text": "b", "conversation_ids": ["c2"]}],
        });
        assert_eq!(cited_ids(&sections), vec!["c1", "c2"]);
    }
}

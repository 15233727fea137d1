//! `GET /v1/conversations/{id}/messages`: a conversation's transcript, in
//! order, a page at a time.

use axum::Json;
use axum::extract::{Path, Query, State};
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use super::Api;
use super::auth::Caller;
use super::customers::PageQuery;
use super::pagination;
use super::problem::Problem;
use crate::store::customer_card::{self, MessageDetail};

/// One message.
#[derive(Debug, Serialize, ToSchema)]
pub struct MessageInfo {
    /// The chat backend's event id.
    pub event_id: String,
    /// `customer`, `bot`, `agent` or `system`.
    pub sender: String,
    /// The agent who wrote it.
    pub agent_id: Option<String>,
    /// Text.
    pub text: String,
    /// When it was sent.
    pub occurred_at: DateTime<Utc>,
}

impl From<MessageDetail> for MessageInfo {
    fn from(m: MessageDetail) -> MessageInfo {
        MessageInfo {
            event_id: m.event_id,
            sender: m.sender,
            agent_id: m.agent_id,
            text: m.text,
            occurred_at: m.occurred_at,
        }
    }
}

/// A page of a transcript.
#[derive(Debug, Serialize, ToSchema)]
pub struct MessagePage {
    /// The conversation (backend id).
    pub conversation_id: String,
    /// Oldest first.
    pub messages: Vec<MessageInfo>,
    /// The next page's cursor; absent on the last page.
    pub next_cursor: Option<String>,
}

/// A conversation's transcript.
#[utoipa::path(get, path = "/v1/conversations/{id}/messages", tag = "conversations",
    params(("id" = String, Path, description = "The chat backend's conversation id"), PageQuery),
    responses(
        (status = 200, description = "A page of messages", body = MessagePage),
        (status = 404, description = "Not in this token's workspace", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub async fn messages(
    State(api): State<Api>,
    caller: Caller,
    Path(id): Path<String>,
    Query(page): Query<PageQuery>,
) -> Result<Json<MessagePage>, Problem> {
    let limit = pagination::limit(page.limit)?;
    let after = pagination::key_after(page.cursor.as_deref())?;
    let mut conn = api.pool.acquire().await?;
    let key = customer_card::conversation_key(&mut conn, &caller.workspace_id, &id)
        .await?
        .ok_or_else(|| Problem::not_found("no such conversation in this workspace"))?;
    let rows = customer_card::messages(&mut conn, key, after, limit).await?;
    let next_cursor = pagination::next(&rows, limit, |m| pagination::encode_key(m.key));
    Ok(Json(MessagePage {
        conversation_id: id,
        messages: rows.into_iter().map(MessageInfo::from).collect(),
        next_cursor,
    }))
}

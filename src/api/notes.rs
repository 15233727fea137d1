//! `POST /v1/customers/{id}/notes`: an agent's note, stored as the
//! `note.added` event stores it, with the token's name as author.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::Api;
use super::auth::{Caller, Scope};
use super::customers::NoteInfo;
use super::problem::Problem;
use super::writes;
use crate::event::{CustomerRef, EventBody, NoteAdded};
use crate::store::{customer_card, notes};

/// Longest note, in characters.
pub const MAX_NOTE_CHARS: usize = 2000;

/// Body of `POST /v1/customers/{id}/notes`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct NewNote {
    /// The note, 1 to 2,000 characters.
    pub text: String,
}

/// Add a note to a customer.
#[utoipa::path(post, path = "/v1/customers/{id}/notes", tag = "customers",
    params(("id" = Uuid, Path, description = "Customer id")),
    request_body = NewNote,
    responses(
        (status = 201, description = "The stored note", body = NoteInfo),
        (status = 403, description = "The token lacks `write`", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Not in this token's workspace", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Empty or too long", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub async fn add(
    State(api): State<Api>,
    caller: Caller,
    Path(id): Path<Uuid>,
    Json(note): Json<NewNote>,
) -> Result<(StatusCode, Json<NoteInfo>), Problem> {
    caller.require(Scope::Write)?;
    let text = note.text.trim();
    if text.is_empty() || text.chars().count() > MAX_NOTE_CHARS {
        return Err(Problem::unprocessable(format!(
            "a note has 1 to {MAX_NOTE_CHARS} characters"
        )));
    }
    {
        let mut conn = api.pool.acquire().await?;
        if !customer_card::exists(&mut conn, &caller.workspace_id, id).await? {
            return Err(Problem::not_found("no such customer in this workspace"));
        }
    }
    let body = EventBody::NoteAdded(NoteAdded {
        customer: CustomerRef::Id(id),
        text: text.to_owned(),
        author: caller.name.clone(),
    });
    writes::run(&api, &caller, body).await?;
    let mut conn = api.pool.acquire().await?;
    let stored = notes::for_customer(&mut conn, &caller.workspace_id, id, None, 1)
        .await?
        .into_iter()
        .next()
        .ok_or_else(Problem::internal)?;
    Ok((StatusCode::CREATED, Json(NoteInfo::from(stored))))
}

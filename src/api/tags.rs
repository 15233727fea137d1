//! `PUT /v1/customers/{id}/tags`: replace a customer's tags. The difference
//! with the current tags goes through `profile.update` (`tags_add`,
//! `tags_remove`) with the agent source and the token's name as actor.

use axum::Json;
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::Api;
use super::auth::{Caller, Scope};
use super::problem::Problem;
use super::writes;
use crate::event::{CustomerRef, EventBody, ProfileUpdate, UpdateSource};
use crate::store::customer_card;

/// Longest tag, in characters.
pub const MAX_TAG_CHARS: usize = 100;

/// A customer's tags.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Tags {
    /// The tags (sorted in responses).
    pub tags: Vec<String>,
}

/// Replace a customer's tags.
#[utoipa::path(put, path = "/v1/customers/{id}/tags", tag = "customers",
    params(("id" = Uuid, Path, description = "Customer id")),
    request_body = Tags,
    responses(
        (status = 200, description = "The tags now", body = Tags),
        (status = 403, description = "The token lacks `write`", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Not in this token's workspace", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "An empty or too long tag", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub async fn replace(
    State(api): State<Api>,
    caller: Caller,
    Path(id): Path<Uuid>,
    Json(wanted): Json<Tags>,
) -> Result<Json<Tags>, Problem> {
    caller.require(Scope::Write)?;
    let mut wanted: Vec<String> = wanted.tags.iter().map(|t| t.trim().to_owned()).collect();
    if wanted
        .iter()
        .any(|t| t.is_empty() || t.chars().count() > MAX_TAG_CHARS)
    {
        return Err(Problem::unprocessable(format!(
            "a tag has 1 to {MAX_TAG_CHARS} characters"
        )));
    }
    wanted.sort();
    wanted.dedup();
    let current = {
        let mut conn = api.pool.acquire().await?;
        if !customer_card::exists(&mut conn, &caller.workspace_id, id).await? {
            return Err(Problem::not_found("no such customer in this workspace"));
        }
        customer_card::tags(&mut conn, id).await?
    };
    let tags_add: Vec<String> = wanted
        .iter()
        .filter(|t| !current.contains(t))
        .cloned()
        .collect();
    let tags_remove: Vec<String> = current
        .iter()
        .filter(|t| !wanted.contains(t))
        .cloned()
        .collect();
    if !tags_add.is_empty() || !tags_remove.is_empty() {
        let update = ProfileUpdate {
            customer: CustomerRef::Id(id),
            fields: serde_json::Map::new(),
            source: UpdateSource::Agent,
            actor: Some(caller.name.clone()),
            conversation_id: None,
            tags_add,
            tags_remove,
            agent_instructions: None,
        };
        writes::run(&api, &caller, EventBody::ProfileUpdate(update)).await?;
    }
    let mut conn = api.pool.acquire().await?;
    Ok(Json(Tags {
        tags: customer_card::tags(&mut conn, id).await?,
    }))
}

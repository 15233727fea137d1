//! `PUT /v1/customers/{id}/instructions`: how the bot should address a
//! customer, set through `profile.update`'s `agent_instructions`.

use axum::Json;
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::Api;
use super::auth::{Caller, Scope};
use super::problem::Problem;
use super::writes;
use crate::event::{
    CustomerRef, EventBody, MAX_AGENT_INSTRUCTIONS_CHARS, ProfileUpdate, UpdateSource,
};
use crate::store::customer_card;

/// A customer's agent instructions.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Instructions {
    /// Up to 2,000 characters; an empty string leaves none.
    pub instructions: String,
}

/// Set a customer's agent instructions.
#[utoipa::path(put, path = "/v1/customers/{id}/instructions", tag = "customers",
    params(("id" = Uuid, Path, description = "Customer id")),
    request_body = Instructions,
    responses(
        (status = 200, description = "The instructions now", body = Instructions),
        (status = 403, description = "The token lacks `write`", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Not in this token's workspace", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Too long", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub async fn replace(
    State(api): State<Api>,
    caller: Caller,
    Path(id): Path<Uuid>,
    Json(body): Json<Instructions>,
) -> Result<Json<Instructions>, Problem> {
    caller.require(Scope::Write)?;
    let text = body.instructions.trim().to_owned();
    if text.chars().count() > MAX_AGENT_INSTRUCTIONS_CHARS {
        return Err(Problem::unprocessable(format!(
            "agent instructions have at most {MAX_AGENT_INSTRUCTIONS_CHARS} characters"
        )));
    }
    {
        let mut conn = api.pool.acquire().await?;
        if !customer_card::exists(&mut conn, &caller.workspace_id, id).await? {
            return Err(Problem::not_found("no such customer in this workspace"));
        }
    }
    let update = ProfileUpdate {
        customer: CustomerRef::Id(id),
        fields: serde_json::Map::new(),
        source: UpdateSource::Agent,
        actor: Some(caller.name.clone()),
        conversation_id: None,
        tags_add: Vec::new(),
        tags_remove: Vec::new(),
        agent_instructions: Some(text.clone()),
    };
    writes::run(&api, &caller, EventBody::ProfileUpdate(update)).await?;
    Ok(Json(Instructions { instructions: text }))
}

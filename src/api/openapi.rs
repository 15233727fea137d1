//! The OpenAPI 3.1 document, generated from the handlers' and types'
//! annotations, served at `/openapi.json` and committed as
//! `docs/openapi.json` (a test fails when the two drift).

use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{conversations, customers, export, import, instructions, notes, problem, tags};

/// The API's description.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "enricher API",
        description = "Customer profiles built from chat traffic: search, profile cards, transcripts, edits, notes, tags, exports and imports. Every request carries a workspace's bearer token; another workspace's data is never found (404).",
    ),
    paths(
        customers::list,
        customers::show,
        customers::conversations,
        customers::history,
        customers::update_fields,
        customers::forget,
        notes::add,
        tags::replace,
        instructions::replace,
        conversations::messages,
        export::all,
        export::one,
        import::import,
    ),
    components(schemas(problem::Problem)),
    modifiers(&BearerAuth),
    tags(
        (name = "customers", description = "Search, profile cards and edits"),
        (name = "conversations", description = "Transcripts"),
        (name = "export", description = "Bulk and per-customer exports"),
        (name = "import", description = "Bulk import of existing customers"),
    )
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A workspace token from `enricher tokens create` (scopes: read, write, pii)",
                    ))
                    .build(),
            ),
        );
    }
}

/// The document as pretty JSON with a trailing newline (the committed form).
pub fn pretty() -> String {
    let mut text = ApiDoc::openapi()
        .to_pretty_json()
        .unwrap_or_else(|_| "{}".to_owned());
    text.push('\n');
    text
}

/// `GET /openapi.json` (no token needed).
pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

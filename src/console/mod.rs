//! The web console under `/ui`: the chat-users list and the customer page
//! support agents and operators look at, server-rendered HTML on top of the
//! API (every read and write calls the API's own handlers with the
//! signed-in token's identity, so the console sees and changes exactly
//! what the API would). Sign-in takes a workspace API token and opens a
//! server-side session; forms carry CSRF tokens; pages go out with a strict
//! Content-Security-Policy (scripts and styles from the console only).

pub mod csrf;
pub mod routes;
pub mod session;
pub mod views;

use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::api::Api;
use crate::api::problem::Problem;
use crate::store::StoreError;

/// Why a console page could not be shown.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    /// A template failed to render (a bug).
    #[error("template: {0}")]
    Template(#[from] minijinja::Error),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The API refused or failed (its problem says why).
    #[error("{}", .0.detail.clone().unwrap_or_else(|| .0.title.clone()))]
    Api(Problem),
    /// A form without this session's CSRF token, or from another origin.
    #[error("the form was not sent from this console")]
    Forgery,
    /// Nothing here.
    #[error("not found")]
    NotFound,
}

impl From<Problem> for ConsoleError {
    fn from(problem: Problem) -> ConsoleError {
        ConsoleError::Api(problem)
    }
}

impl From<sqlx::Error> for ConsoleError {
    fn from(error: sqlx::Error) -> ConsoleError {
        ConsoleError::Store(StoreError::from(error))
    }
}

impl ConsoleError {
    /// The HTTP status the error page goes out with.
    pub fn status(&self) -> StatusCode {
        match self {
            ConsoleError::Template(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ConsoleError::Store(error) if error.is_transient() => StatusCode::SERVICE_UNAVAILABLE,
            ConsoleError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ConsoleError::Api(problem) => {
                StatusCode::from_u16(problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
            }
            ConsoleError::Forgery => StatusCode::FORBIDDEN,
            ConsoleError::NotFound => StatusCode::NOT_FOUND,
        }
    }

    /// What the page says (never personal data: store errors are not quoted).
    fn message(&self) -> String {
        match self {
            ConsoleError::Template(_) | ConsoleError::Store(_) => {
                "Something went wrong on the server. Try again in a moment.".to_owned()
            }
            ConsoleError::Forgery => {
                "This form was not sent from this console page. Reload the page and try again."
                    .to_owned()
            }
            ConsoleError::NotFound => "There is nothing here.".to_owned(),
            ConsoleError::Api(_) => self.to_string(),
        }
    }
}

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        let status = self.status();
        match &self {
            ConsoleError::Template(error) => {
                tracing::error!(error = %error, "console template failed")
            }
            ConsoleError::Store(error) => tracing::error!(error = %error, "console store failed"),
            _ => {}
        }
        let context = serde_json::json!({
            "title": status.canonical_reason().unwrap_or("Error"),
            "message": self.message(),
        });
        match views::page(status, "error.html", context) {
            Ok(response) => response,
            Err(_) => (status, self.message()).into_response(),
        }
    }
}

/// The API's routes with the console's beside them: what `enricher serve` serves.
pub fn app(api: Api) -> Router {
    crate::api::router(api.clone()).merge(router(api))
}

/// The console's routes.
pub fn router(api: Api) -> Router {
    Router::new()
        .route("/ui", get(routes::home))
        .route("/ui/", get(routes::home))
        .route(
            "/ui/sign-in",
            get(routes::sign_in_page).post(routes::sign_in),
        )
        .route("/ui/sign-out", post(routes::sign_out))
        .route("/ui/customers", get(routes::customers))
        .route("/ui/customers/{id}", get(routes::customer))
        .route("/ui/customers/{id}/fields", post(routes::edit_field))
        .route("/ui/customers/{id}/notes", post(routes::add_note))
        .route(
            "/ui/customers/{id}/instructions",
            post(routes::set_instructions),
        )
        .route(
            "/ui/customers/{id}/conversations/{conversation_id}",
            get(routes::transcript),
        )
        .route("/ui/export.csv", get(routes::export_csv))
        .route("/ui/assets/console.css", get(routes::stylesheet))
        .route("/ui/assets/console.js", get(routes::script))
        .route("/ui/{*rest}", get(routes::not_found))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(api)
}

/// What every console response carries: no framing, no sniffing, no
/// referrer leaving the console, scripts and styles from the console only,
/// and pages (which hold customer data) never cached.
async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

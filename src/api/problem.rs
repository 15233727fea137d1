//! Errors as RFC 9457 problem details (`application/problem+json`). Details
//! name what was wrong with the request, never personal data, and a store
//! failure is reported without its message (it may quote values).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::store::StoreError;
use crate::worker::error::HandleError;

/// The media type of a problem.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// An RFC 9457 problem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Problem {
    /// A URI naming the kind of problem (`about:blank` or an enricher tag URI).
    #[serde(rename = "type")]
    pub kind: String,
    /// Short summary of the kind.
    pub title: String,
    /// HTTP status.
    pub status: u16,
    /// What went wrong with this request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl Problem {
    fn new(status: StatusCode, kind: &str, detail: Option<String>) -> Problem {
        Problem {
            kind: format!("tag:enricher,2026:problem:{kind}"),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail,
        }
    }

    /// 400: the request is malformed.
    pub fn bad_request(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::BAD_REQUEST, "bad-request", Some(detail.into()))
    }

    /// 401: no usable token.
    pub fn unauthorized(detail: impl Into<String>) -> Problem {
        Problem::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            Some(detail.into()),
        )
    }

    /// 403: the token lacks a scope.
    pub fn forbidden(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::FORBIDDEN, "forbidden", Some(detail.into()))
    }

    /// 404: nothing here for this token's workspace.
    pub fn not_found(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::NOT_FOUND, "not-found", Some(detail.into()))
    }

    /// 422: well-formed, but not applicable.
    pub fn unprocessable(detail: impl Into<String>) -> Problem {
        Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "unprocessable",
            Some(detail.into()),
        )
    }

    /// 415: the body is in a format the route does not read.
    pub fn unsupported_media_type(detail: impl Into<String>) -> Problem {
        Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            Some(detail.into()),
        )
    }

    /// 503: a store is unavailable; the request may be retried.
    pub fn unavailable() -> Problem {
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            Some("the database is unavailable; retry later".to_owned()),
        )
    }

    /// 500: a bug or a constraint.
    pub fn internal() -> Problem {
        Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", None)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&self).unwrap_or_default();
        let mut response = (status, body).into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        response
    }
}

impl From<StoreError> for Problem {
    fn from(error: StoreError) -> Problem {
        tracing::error!(error = %error, "API request failed in the store");
        if error.is_transient() {
            Problem::unavailable()
        } else {
            Problem::internal()
        }
    }
}

impl From<sqlx::Error> for Problem {
    fn from(error: sqlx::Error) -> Problem {
        Problem::from(StoreError::from(error))
    }
}

impl From<HandleError> for Problem {
    fn from(error: HandleError) -> Problem {
        match error {
            HandleError::Unprocessable(reason) => Problem::unprocessable(reason),
            HandleError::Store(error) => Problem::from(error),
        }
    }
}

/// Any route that does not exist.
pub async fn not_found() -> Problem {
    Problem::not_found("no such route")
}

/// Turns the framework's own error responses (a path that is not a UUID, a
/// malformed query or body, a wrong method, a body over the limit) into
/// problems, so every error the API returns has the same shape.
pub async fn framework_errors_as_problems(response: Response) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes() == PROBLEM_JSON.as_bytes());
    if is_problem {
        return response;
    }
    let kind = match status {
        StatusCode::BAD_REQUEST => "bad-request",
        StatusCode::NOT_FOUND => "not-found",
        StatusCode::METHOD_NOT_ALLOWED => "method-not-allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "payload-too-large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported-media-type",
        StatusCode::UNPROCESSABLE_ENTITY => "unprocessable",
        _ if status.is_server_error() => "internal",
        _ => "client-error",
    };
    let detail = axum::body::to_bytes(response.into_body(), 4096)
        .await
        .ok()
        .map(|bytes| String::from_utf8_lossy(&bytes).trim().to_owned())
        .filter(|text| !text.is_empty() && !status.is_server_error());
    Problem::new(status, kind, detail).into_response()
}

//! The console's HTML: minijinja templates compiled into the binary (so it
//! serves them from any directory), rendered with HTML auto-escaping on, so
//! every customer-written text reaches the browser as text, never markup.
//! Timestamps are rendered as `<time datetime="…">` in UTC; the console's
//! script shows them in the viewer's time zone.

use std::sync::LazyLock;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use chrono::{DateTime, Utc};
use minijinja::{AutoEscape, Environment};
use serde::Serialize;

use super::ConsoleError;

/// The stylesheet, served at `/ui/assets/console.css`.
pub const STYLESHEET: &str = include_str!("../../templates/console/console.css");
/// The script (time zones, character counter), served at `/ui/assets/console.js`.
pub const SCRIPT: &str = include_str!("../../templates/console/console.js");

const TEMPLATES: &[(&str, &str)] = &[
    (
        "macros.html",
        include_str!("../../templates/console/macros.html"),
    ),
    (
        "base.html",
        include_str!("../../templates/console/base.html"),
    ),
    (
        "sign_in.html",
        include_str!("../../templates/console/sign_in.html"),
    ),
    (
        "customers.html",
        include_str!("../../templates/console/customers.html"),
    ),
    (
        "customer.html",
        include_str!("../../templates/console/customer.html"),
    ),
    (
        "transcript.html",
        include_str!("../../templates/console/transcript.html"),
    ),
    (
        "error.html",
        include_str!("../../templates/console/error.html"),
    ),
];

static TEMPLATE_ENV: LazyLock<Result<Environment<'static>, minijinja::Error>> =
    LazyLock::new(environment);

fn environment() -> Result<Environment<'static>, minijinja::Error> {
    let mut env = Environment::new();
    env.set_auto_escape_callback(|name| {
        if name.ends_with(".html") {
            AutoEscape::Html
        } else {
            AutoEscape::None
        }
    });
    env.add_filter("utc", utc);
    env.add_filter("initial", initial);
    for (name, source) in TEMPLATES {
        env.add_template(name, source)?;
    }
    Ok(env)
}

/// An RFC 3339 timestamp as `2026-03-01 10:00 UTC` (the text shown until
/// the script localises it, and when scripts are off).
fn utc(value: String) -> String {
    DateTime::parse_from_rfc3339(&value)
        .map(|at| {
            at.with_timezone(&Utc)
                .format("%Y-%m-%d %H:%M UTC")
                .to_string()
        })
        .unwrap_or(value)
}

/// The avatar letter of a display name.
fn initial(name: String) -> String {
    name.chars()
        .find(|c| c.is_alphanumeric())
        .map(|c| c.to_uppercase().collect())
        .unwrap_or_else(|| "?".to_owned())
}

/// Renders a template with `context` to a string.
pub fn render_string(name: &str, context: impl Serialize) -> Result<String, ConsoleError> {
    let env = TEMPLATE_ENV.as_ref().map_err(|error| {
        ConsoleError::Template(minijinja::Error::new(
            error.kind(),
            format!("templates did not compile: {error}"),
        ))
    })?;
    let context = minijinja::Value::from(minijinja::value::Serde(&context));
    Ok(env.get_template(name)?.render(context)?)
}

/// Renders a page with `status`.
pub fn page(
    status: StatusCode,
    name: &str,
    context: impl Serialize,
) -> Result<Response, ConsoleError> {
    let html = render_string(name, context)?;
    Ok((status, Html(html)).into_response())
}

/// A static asset with its media type, cacheable for a while.
pub fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_compiles() {
        assert!(TEMPLATE_ENV.is_ok(), "{:?}", TEMPLATE_ENV.as_ref().err());
    }

    #[test]
    fn customer_text_is_escaped() {
        let html = render_string(
            "error.html",
            serde_json::json!({"title": "x", "message": "<script>alert(\"1\")</script>'"}),
        )
        .unwrap_or_default();
        assert!(!html.contains("<script>alert"), "{html}");
        assert!(html.contains("&lt;script&gt;"), "{html}");
    }

    #[test]
    fn timestamps_and_initials() {
        assert_eq!(
            utc("2026-03-01T10:00:05Z".to_owned()),
            "2026-03-01 10:00 UTC"
        );
        assert_eq!(utc("garbage".to_owned()), "garbage");
        assert_eq!(initial("ann Lee".to_owned()), "A");
        assert_eq!(initial("<script>".to_owned()), "S");
        assert_eq!(initial("".to_owned()), "?");
    }
}

//! Console sessions: signing in with a workspace's API token opens a
//! server-side session (`enrich.console_sessions`) and gives the browser
//! its random secret in a cookie that scripts cannot read (HttpOnly), that
//! other sites' requests do not carry (SameSite=Strict) and that travels
//! only over TLS when the console is served over TLS. The raw API token is
//! never stored in the browser. Every console page and form takes a
//! [`Session`]; without a live one the browser is sent to the sign-in page.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::{Duration, Utc};
use uuid::Uuid;

use super::ConsoleError;
use super::csrf;
use crate::api::Api;
use crate::api::auth::{Caller, token_hash};
use crate::store::{console_sessions, tokens};

/// The session cookie.
pub const SESSION_COOKIE: &str = "enricher_session";
/// The sign-in form's double-submit cookie.
pub const SIGN_IN_COOKIE: &str = "enricher_sign_in";
/// How long a session lasts from sign-in.
pub const SESSION_HOURS: i64 = 12;
/// How long a sign-in form stays usable.
const SIGN_IN_FORM_SECS: i64 = 30 * 60;
/// Where the console lives; its cookies are sent nowhere else.
pub const CONSOLE_PATH: &str = "/ui";
/// The sign-in page.
pub const SIGN_IN_PAGE: &str = "/ui/sign-in";

/// A signed-in browser.
#[derive(Debug, Clone)]
pub struct Session {
    /// The token's workspace, name (the actor of edits) and scopes.
    pub caller: Caller,
    secret: String,
}

impl Session {
    /// The CSRF token every form of this session carries.
    pub fn csrf_token(&self) -> String {
        csrf::token_for(&self.secret)
    }

    /// Refuses a form whose CSRF token is not this session's or that comes
    /// from another origin.
    pub fn check_form(&self, headers: &HeaderMap, given: &str) -> Result<(), ConsoleError> {
        if csrf::same_origin(headers) && csrf::matches(&self.csrf_token(), given) {
            Ok(())
        } else {
            Err(ConsoleError::Forgery)
        }
    }

    fn secret_hash(&self) -> Vec<u8> {
        token_hash(&self.secret)
    }
}

/// A new random secret (244 bits from the OS generator).
pub fn new_secret() -> String {
    format!("{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple())
}

/// The value of cookie `name`, if the request carries it.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
        .filter(|value| !value.is_empty())
}

/// Whether the browser reached the console over TLS (directly or through a
/// proxy that says so with `X-Forwarded-Proto: https`).
pub fn over_tls(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|proto| proto.trim().eq_ignore_ascii_case("https"))
}

/// A `Set-Cookie` value for a console cookie; `max_age` 0 deletes it.
pub fn set_cookie(name: &str, value: &str, max_age_secs: i64, tls: bool) -> HeaderValue {
    let secure = if tls { "; Secure" } else { "" };
    let cookie = format!(
        "{name}={value}; Path={CONSOLE_PATH}; Max-Age={max_age_secs}; HttpOnly; SameSite=Strict{secure}"
    );
    // Names and values are ASCII hex: always a valid header value.
    HeaderValue::from_str(&cookie).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The sign-in form's nonce cookie.
pub fn sign_in_cookie(nonce: &str, tls: bool) -> HeaderValue {
    set_cookie(SIGN_IN_COOKIE, nonce, SIGN_IN_FORM_SECS, tls)
}

/// Signs in with an API token: opens a session and returns its secret, or
/// `None` when the token is unknown or revoked.
pub async fn open(api: &Api, token: &str) -> Result<Option<String>, ConsoleError> {
    let mut conn = api.pool.acquire().await?;
    let Some(stored) = tokens::authenticate(&mut conn, &token_hash(token.trim())).await? else {
        return Ok(None);
    };
    let secret = new_secret();
    let expires_at = Utc::now() + Duration::hours(SESSION_HOURS);
    console_sessions::open(&mut conn, &token_hash(&secret), stored.id, expires_at).await?;
    Ok(Some(secret))
}

/// Signs out: the session ends on the server, whatever the browser keeps.
pub async fn close(api: &Api, session: &Session) -> Result<(), ConsoleError> {
    let mut conn = api.pool.acquire().await?;
    console_sessions::close(&mut conn, &session.secret_hash()).await?;
    Ok(())
}

/// The live session a request's cookie names, if any.
pub async fn current(api: &Api, headers: &HeaderMap) -> Result<Option<Session>, ConsoleError> {
    let Some(secret) = cookie(headers, SESSION_COOKIE) else {
        return Ok(None);
    };
    let mut conn = api.pool.acquire().await?;
    let stored = console_sessions::token(&mut conn, &token_hash(secret)).await?;
    Ok(stored.map(|stored| Session {
        caller: Caller::from(stored),
        secret: secret.to_owned(),
    }))
}

impl FromRequestParts<Api> for Session {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, api: &Api) -> Result<Session, Response> {
        match current(api, &parts.headers).await {
            Ok(Some(session)) => Ok(session),
            Ok(None) => Err(Redirect::to(SIGN_IN_PAGE).into_response()),
            Err(error) => Err(error.into_response()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_read_by_name() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; enricher_session=abc; b=2"),
        );
        assert_eq!(cookie(&headers, SESSION_COOKIE), Some("abc"));
        assert_eq!(cookie(&headers, "b"), Some("2"));
        assert_eq!(cookie(&headers, "enricher"), None);
    }

    #[test]
    fn the_cookie_is_http_only_strict_and_secure_over_tls() {
        let plain = set_cookie(SESSION_COOKIE, "abc", 60, false);
        let plain = plain.to_str().unwrap_or_default();
        assert!(plain.contains("HttpOnly"));
        assert!(plain.contains("SameSite=Strict"));
        assert!(plain.contains("Path=/ui"));
        assert!(!plain.contains("Secure"));
        let tls = set_cookie(SESSION_COOKIE, "abc", 60, true);
        assert!(tls.to_str().unwrap_or_default().ends_with("; Secure"));
        let mut headers = HeaderMap::new();
        assert!(!over_tls(&headers));
        headers.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        assert!(over_tls(&headers));
    }

    #[test]
    fn secrets_are_random() {
        assert_ne!(new_secret(), new_secret());
        assert_eq!(new_secret().len(), 64);
    }
}

//! Cross-site request forgery defences for the console's forms. Every form
//! of a signed-in page carries a synchronizer token derived from the
//! session's secret (which only the browser's HttpOnly cookie and the page
//! rendered for it know); the sign-in form, before any session exists,
//! carries a nonce that must equal the one in a short-lived cookie
//! (double submit). A request whose `Origin` names another host is refused
//! whatever it carries.

use axum::http::{HeaderMap, header};
use sha2::{Digest, Sha256};

/// Domain separation: a CSRF token is never equal to anything else derived
/// from the session secret.
const CSRF_CONTEXT: &[u8] = b"enricher console csrf v1\0";

/// The CSRF token of the session whose secret is `secret`.
pub fn token_for(secret: &str) -> String {
    let mut digest = Sha256::new();
    digest.update(CSRF_CONTEXT);
    digest.update(secret.as_bytes());
    hex::encode(digest.finalize())
}

/// Whether `given` equals `expected`, in time independent of where they differ.
pub fn matches(expected: &str, given: &str) -> bool {
    let (a, b) = (expected.as_bytes(), given.as_bytes());
    if a.len() != b.len() || a.is_empty() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// False when the request says it comes from a page of another origin
/// (its `Origin` host differs from the `Host` it was sent to). Browsers send
/// `Origin` on every form POST; a request without one is judged by its token.
pub fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    let origin_host = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"))
        .unwrap_or("");
    !origin_host.is_empty() && origin_host.eq_ignore_ascii_case(host)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn tokens_are_tied_to_the_session() {
        let a = token_for("secret-a");
        assert_eq!(a, token_for("secret-a"));
        assert_ne!(a, token_for("secret-b"));
        assert!(matches(&a, &token_for("secret-a")));
        assert!(!matches(&a, &token_for("secret-b")));
        assert!(!matches(&a, ""));
        assert!(!matches("", ""));
    }

    #[test]
    fn another_origin_is_refused() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8080"));
        assert!(same_origin(&headers));
        headers.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:8080"),
        );
        assert!(same_origin(&headers));
        headers.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://evil.example"),
        );
        assert!(!same_origin(&headers));
        headers.insert(header::ORIGIN, HeaderValue::from_static("null"));
        assert!(!same_origin(&headers));
    }
}

//! Opaque cursors: a page's last position, hex-encoded so clients treat it
//! as a token rather than something to build. A cursor from one list makes
//! no sense in another and is refused there.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::problem::Problem;

/// Rows per page unless `limit` says otherwise.
pub const DEFAULT_LIMIT: i64 = 50;
/// Rows per page at most.
pub const MAX_LIMIT: i64 = 500;

/// The page size a request asked for, within bounds.
pub fn limit(requested: Option<i64>) -> Result<i64, Problem> {
    match requested {
        None => Ok(DEFAULT_LIMIT),
        Some(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        Some(_) => Err(Problem::bad_request(format!(
            "`limit` must be between 1 and {MAX_LIMIT}"
        ))),
    }
}

/// A position in the customer list: activity time and customer id.
pub fn encode_activity(at: DateTime<Utc>, id: Uuid) -> String {
    hex::encode(format!("a:{}:{id}", at.timestamp_micros()))
}

/// Reads a customer-list cursor.
pub fn decode_activity(cursor: &str) -> Result<(DateTime<Utc>, Uuid), Problem> {
    let text = decoded(cursor)?;
    let parsed = text.strip_prefix("a:").and_then(|rest| {
        let (micros, id) = rest.split_once(':')?;
        let at = DateTime::from_timestamp_micros(micros.parse().ok()?)?;
        Some((at, Uuid::parse_str(id).ok()?))
    });
    parsed.ok_or_else(invalid)
}

/// A position in a list ordered by an internal key.
pub fn encode_key(key: i64) -> String {
    hex::encode(format!("k:{key}"))
}

/// The key a page continues after: none for the first page.
pub fn key_after(cursor: Option<&str>) -> Result<Option<i64>, Problem> {
    cursor.map(decode_key).transpose()
}

/// Reads a key cursor.
pub fn decode_key(cursor: &str) -> Result<i64, Problem> {
    decoded(cursor)?
        .strip_prefix("k:")
        .and_then(|key| key.parse().ok())
        .ok_or_else(invalid)
}

fn decoded(cursor: &str) -> Result<String, Problem> {
    hex::decode(cursor)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .ok_or_else(invalid)
}

fn invalid() -> Problem {
    Problem::bad_request("`cursor` is not a cursor this list returned")
}

/// The next page's cursor: present only when this page is full.
pub fn next<T>(rows: &[T], limit: i64, encode: impl Fn(&T) -> String) -> Option<String> {
    if rows.len() as i64 == limit {
        rows.last().map(encode)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_do_not_mix() {
        let at = DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap();
        let id = Uuid::new_v4();
        assert_eq!(
            decode_activity(&encode_activity(at, id)).ok(),
            Some((at, id))
        );
        assert_eq!(decode_key(&encode_key(42)).ok(), Some(42));
        assert!(decode_key(&encode_activity(at, id)).is_err());
        assert!(decode_activity("zz").is_err());
    }

    #[test]
    fn limits_are_bounded() {
        assert_eq!(limit(None).ok(), Some(DEFAULT_LIMIT));
        assert!(limit(Some(0)).is_err());
        assert!(limit(Some(MAX_LIMIT + 1)).is_err());
    }
}

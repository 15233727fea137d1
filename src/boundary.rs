//! The boundary rules: what an inbound event may hold beyond its shape.
//! [`crate::event`] checks that an event has the contract's keys and types;
//! these rules keep out the values that would hurt further in (a NUL byte
//! that Postgres refuses and that rolls back a whole batch, an `occurred_at`
//! in the year 200000 that keeps a customer active for good, a tag too long
//! for its index, an id that reads as another tenant's Redis key). They run
//! on the raw JSON before the typed decode, so they need nothing from it.
//!
//! Most refusals dead-letter the event. Two things are cleaned instead,
//! because a customer's message is worth more than what is wrong with it:
//! NUL bytes are removed from a chat message's `text`, and a `visitor` or
//! `identity_hint` value that holds a NUL byte or is over its cap is
//! dropped. Every reason names the key and the problem, never the value
//! (reasons travel to the dead-letter table and the logs).
//! `docs/input-validation.md` lists the rules.

use chrono::{DateTime, TimeZone, Utc};
use serde_json::Value;

/// Longest tag, in characters.
pub const MAX_TAG_CHARS: usize = 100;
/// Most tags one `profile.update` may add and remove together.
pub const MAX_TAGS_PER_UPDATE: usize = 100;
/// Longest agent id, `resolved_by` and `actor`, in characters.
pub const MAX_AGENT_ID_CHARS: usize = 200;
/// Longest `resolution` of a closed conversation, in characters.
pub const MAX_RESOLUTION_CHARS: usize = 2000;
/// Longest `reason` of a status change, in characters.
pub const MAX_REASON_CHARS: usize = 1000;
/// Longest value of `visitor` and `identity_hint`, in characters.
pub const MAX_METADATA_CHARS: usize = 2048;
/// Longest customer `email` reference, in characters.
pub const MAX_EMAIL_CHARS: usize = 320;
/// Characters an id may hold besides ASCII letters and digits.
pub const ID_PUNCTUATION: &str = "._-@+=~|#:";
/// How far in the future `occurred_at` may be (clocks drift).
pub const MAX_FUTURE_SKEW: chrono::Duration = chrono::Duration::days(1);

/// The ids whose characters are restricted: they name rows, cache keys and
/// routing keys.
const ID_KEYS: [&str; 5] = [
    "id",
    "workspace_id",
    "conversation_id",
    "platform_user_id",
    "customer_id",
];

/// Keys whose length is capped, and their caps.
const CAPPED_KEYS: [(&str, usize); 6] = [
    ("agent_id", MAX_AGENT_ID_CHARS),
    ("resolved_by", MAX_AGENT_ID_CHARS),
    ("actor", MAX_AGENT_ID_CHARS),
    ("resolution", MAX_RESOLUTION_CHARS),
    ("reason", MAX_REASON_CHARS),
    ("first_message_tag", MAX_TAG_CHARS),
];

/// Metadata objects of a chat message whose bad values are dropped.
const METADATA_KEYS: [&str; 2] = ["visitor", "identity_hint"];

/// Why an event breaks a boundary rule: names the key and the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Violation(pub String);

fn violation(reason: impl Into<String>) -> Violation {
    Violation(reason.into())
}

/// Cleans what is cleaned and checks the rest, on an event's JSON object.
/// Values of the wrong type are left for the typed decode to refuse.
pub fn enforce(event: &mut Value, now: DateTime<Utc>) -> Result<(), Violation> {
    let Some(object) = event.as_object_mut() else {
        return Ok(());
    };
    if let Some(Value::String(text)) = object.get_mut("text")
        && text.contains('\0')
    {
        text.retain(|c| c != '\0');
    }
    for key in METADATA_KEYS {
        if let Some(Value::Object(metadata)) = object.get_mut(key) {
            metadata.retain(|_, value| match value {
                Value::String(s) => !s.contains('\0') && s.chars().count() <= MAX_METADATA_CHARS,
                _ => true,
            });
        }
    }
    for (key, value) in object.iter() {
        if key.contains('\0') {
            return Err(violation("a key contains a NUL byte"));
        }
        if holds_nul(value) {
            return Err(violation(format!(
                "`{}` contains a NUL byte",
                printable(key)
            )));
        }
    }
    if let Some(Value::String(at)) = object.get("occurred_at")
        && let Ok(at) = DateTime::parse_from_rfc3339(at)
    {
        check_time("occurred_at", at.with_timezone(&Utc), now)?;
    }
    for key in ID_KEYS {
        if let Some(Value::String(id)) = object.get(key) {
            check_id_chars(key, id)?;
        }
    }
    if let Some(Value::String(email)) = object.get("email") {
        if email.chars().count() > MAX_EMAIL_CHARS {
            return Err(violation(format!(
                "`email` is longer than {MAX_EMAIL_CHARS} characters"
            )));
        }
        if email.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(violation("`email` contains a space or a control character"));
        }
    }
    for (key, cap) in CAPPED_KEYS {
        if let Some(Value::String(value)) = object.get(key)
            && value.chars().count() > cap
        {
            return Err(violation(format!(
                "`{key}` is longer than {cap} characters"
            )));
        }
    }
    check_tags(object)
}

fn holds_nul(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(holds_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || holds_nul(v)),
        _ => false,
    }
}

/// A key as it may appear in a reason: the contract's keys are plain words;
/// anything else a producer sent is not repeated.
fn printable(key: &str) -> &str {
    if key.len() <= 40 && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        key
    } else {
        "a key"
    }
}

fn check_time(key: &str, at: DateTime<Utc>, now: DateTime<Utc>) -> Result<(), Violation> {
    if at > now + MAX_FUTURE_SKEW {
        return Err(violation(format!(
            "`{key}` is more than a day in the future"
        )));
    }
    let earliest = Utc.with_ymd_and_hms(2000, 1, 1, 0, 0, 0).single();
    if earliest.is_some_and(|earliest| at < earliest) {
        return Err(violation(format!("`{key}` is before the year 2000")));
    }
    Ok(())
}

/// Whether `c` may appear in an id.
pub fn is_id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || ID_PUNCTUATION.contains(c)
}

fn check_id_chars(key: &str, id: &str) -> Result<(), Violation> {
    if id.chars().all(is_id_char) {
        Ok(())
    } else {
        Err(violation(format!(
            "`{key}` holds a character outside ASCII letters, digits and {ID_PUNCTUATION}"
        )))
    }
}

fn check_tags(object: &serde_json::Map<String, Value>) -> Result<(), Violation> {
    let mut count = 0;
    for key in ["tags_add", "tags_remove"] {
        let Some(Value::Array(tags)) = object.get(key) else {
            continue;
        };
        count += tags.len();
        let too_long = tags.iter().any(|tag| {
            tag.as_str()
                .is_some_and(|t| t.chars().count() > MAX_TAG_CHARS)
        });
        if too_long {
            return Err(violation(format!(
                "`{key}` has a tag longer than {MAX_TAG_CHARS} characters"
            )));
        }
    }
    if count > MAX_TAGS_PER_UPDATE {
        return Err(violation(format!(
            "`tags_add` and `tags_remove` hold more than {MAX_TAGS_PER_UPDATE} tags together"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 6, 1, 12, 0, 0)
            .single()
            .expect("time")
    }

    fn refused(mut event: Value) -> String {
        enforce(&mut event, now()).expect_err("must be refused").0
    }

    fn chat() -> Value {
        json!({"type": "chat.message", "id": "e1", "workspace_id": "w1",
            "occurred_at": "2026-06-01T11:00:00Z", "conversation_id": "c1",
            "platform": "web", "platform_user_id": "u1", "sender": "customer", "text": "hi"})
    }

    fn with(key: &str, value: Value) -> Value {
        let mut event = chat();
        event[key] = value;
        event
    }

    #[test]
    fn a_plain_event_passes_untouched() {
        let mut event = chat();
        enforce(&mut event, now()).expect("valid");
        assert_eq!(event, chat());
    }

    #[test]
    fn nul_bytes_are_refused_naming_the_key_but_not_the_value() {
        let reason = refused(with("agent_id", json!("secret\u{0}value")));
        assert_eq!(reason, "`agent_id` contains a NUL byte");
        let mut update = json!({"type": "profile.update", "id": "e", "workspace_id": "w",
            "fields": {"name": "Ann\u{0}"}, "tags_add": ["ok"]});
        assert_eq!(
            enforce(&mut update, now()).expect_err("nul").0,
            "`fields` contains a NUL byte"
        );
        assert_eq!(
            refused(with("some\u{0}key", json!(1))),
            "a key contains a NUL byte"
        );
        assert_eq!(
            refused(with("strange key!", json!(["\u{0}"]))),
            "`a key` contains a NUL byte"
        );
    }

    #[test]
    fn nul_bytes_are_removed_from_message_text_and_bad_metadata_dropped() {
        let mut event = with("text", json!("he\u{0}llo"));
        event["visitor"] = json!({"browser": "Fire\u{0}fox", "os": "Linux",
            "user_agent": "x".repeat(MAX_METADATA_CHARS + 1)});
        event["identity_hint"] = json!({"name": "Ann\u{0}", "email": "ann@example.com"});
        enforce(&mut event, now()).expect("cleaned");
        assert_eq!(event["text"], "hello");
        assert_eq!(event["visitor"], json!({"os": "Linux"}));
        assert_eq!(event["identity_hint"], json!({"email": "ann@example.com"}));
    }

    #[test]
    fn occurred_at_must_be_after_2000_and_at_most_a_day_ahead() {
        assert!(
            enforce(
                &mut with("occurred_at", json!("2026-06-02T11:00:00Z")),
                now()
            )
            .is_ok()
        );
        assert_eq!(
            refused(with("occurred_at", json!("2026-06-02T12:00:01Z"))),
            "`occurred_at` is more than a day in the future"
        );
        assert_eq!(
            refused(with("occurred_at", json!("1999-12-31T23:59:59Z"))),
            "`occurred_at` is before the year 2000"
        );
        // Unparseable times are the typed decode's to refuse.
        assert!(enforce(&mut with("occurred_at", json!("yesterday")), now()).is_ok());
    }

    #[test]
    fn ids_hold_only_the_documented_characters() {
        for good in [
            "c-1",
            "user@example.com",
            "+6681234567",
            "auth0|abc",
            "a.b_c=d~e#f",
            "whatsapp:6681234567",
        ] {
            assert!(
                enforce(&mut with("conversation_id", json!(good)), now()).is_ok(),
                "{good}"
            );
        }
        for (key, bad) in [
            ("conversation_id", "c/1"),
            ("workspace_id", "w/1"),
            ("id", "e 1"),
            ("platform_user_id", "ü"),
            ("customer_id", "x\ny"),
        ] {
            let reason = refused(with(key, json!(bad)));
            assert!(
                reason.starts_with(&format!("`{key}` holds a character")),
                "{reason}"
            );
            assert!(!reason.contains(bad), "{reason}");
        }
    }

    #[test]
    fn capped_keys_and_tags() {
        assert_eq!(
            refused(with("agent_id", json!("a".repeat(201)))),
            "`agent_id` is longer than 200 characters"
        );
        assert_eq!(
            refused(with("resolution", json!("r".repeat(2001)))),
            "`resolution` is longer than 2000 characters"
        );
        assert_eq!(
            refused(with("reason", json!("r".repeat(1001)))),
            "`reason` is longer than 1000 characters"
        );
        assert_eq!(
            refused(with("tags_add", json!(["t".repeat(101)]))),
            "`tags_add` has a tag longer than 100 characters"
        );
        let many: Vec<String> = (0..60).map(|i| format!("t{i}")).collect();
        let mut update = with("tags_add", json!(many));
        update["tags_remove"] = json!(many);
        assert!(enforce(&mut update, now()).is_err());
        assert!(enforce(&mut with("tags_add", json!(many)), now()).is_ok());
        assert_eq!(
            refused(with("email", json!("ann @example.com"))),
            "`email` contains a space or a control character"
        );
    }
}

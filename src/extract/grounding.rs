//! Grounding checks for facts the language model proposes.
//!
//! The model must back every fact with a quote from the customer's message.
//! Before such a fact is written, [`find_quote`] confirms the quote really is
//! a span of the message, and [`value_supported_by_quote`] confirms the value
//! is what the quote says, so a model that paraphrases, guesses or copies a
//! value from elsewhere in the conversation cannot put it in a profile.

use std::ops::Range;
use std::sync::LazyLock;

use regex::Regex;

use super::spelled::spelled_emails;
use crate::fields::{FieldFormat, FieldSet, collapse_whitespace, region_id};

/// Shortest quote, in characters, accepted as evidence.
const MIN_QUOTE_CHARS: usize = 2;

/// Most whitespace-separated groups tried together as one phone number.
const MAX_PHONE_GROUPS: usize = 12;

static NUMBER_RUN: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\+?\(?[0-9](?:[0-9 \t\u{a0}().\-/]*[0-9])?").expect("valid regex")
});

static SPOKEN_PLUS: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?i)\bplus\s*$").expect("valid regex"));

static EMAIL_IN_TEXT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)[a-z0-9.!#$%&'*+/=?^_`{|}~-]+@[a-z0-9](?:[a-z0-9.-]*[a-z0-9])?\.[a-z]{2,63}")
        .expect("valid regex")
});

static NUMBER_IN_TEXT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"[+-]?(?:[0-9]{1,3}(?:,[0-9]{3})+|[0-9]+)(?:\.[0-9]+)?").expect("valid regex")
});

static DATES_IN_TEXT: LazyLock<[Regex; 4]> = LazyLock::new(|| {
    [
        Regex::new(r"\b[0-9]{4}[-/.][0-9]{1,2}[-/.][0-9]{1,2}\b").expect("valid regex"),
        Regex::new(r"\b[0-9]{1,2}[-/.][0-9]{1,2}[-/.][0-9]{4}\b").expect("valid regex"),
        Regex::new(r"(?i)\b[a-z]{3,9}\.?\s+[0-9]{1,2}(?:st|nd|rd|th)?,?\s+[0-9]{4}\b")
            .expect("valid regex"),
        Regex::new(r"(?i)\b[0-9]{1,2}(?:st|nd|rd|th)?\s+(?:of\s+)?[a-z]{3,9}\.?,?\s+[0-9]{4}\b")
            .expect("valid regex"),
    ]
});

/// Where `quote` occurs in `text`, comparing without regard to case and
/// treating any run of whitespace as equal to any other. Surrounding
/// whitespace in the quote is ignored; quotes shorter than two characters
/// are never accepted.
pub fn find_quote(quote: &str, text: &str) -> Option<Range<usize>> {
    let quote = quote.trim();
    if quote.chars().count() < MIN_QUOTE_CHARS {
        return None;
    }
    text.char_indices()
        .find_map(|(start, _)| match_loose_at(text, start, quote).map(|end| start..end))
}

/// Whether `quote` backs `value` for `field`.
///
/// True when the value itself occurs in the quote as whole words (ignoring
/// case and whitespace runs), or when the quote holds something that
/// normalises to the same stored value: the same phone number written
/// differently, the same email, the chosen option(s), the same number or the
/// same day.
pub fn value_supported_by_quote(
    fields: &FieldSet,
    field: &str,
    value: &str,
    quote: &str,
    default_region: Option<&str>,
) -> bool {
    let Some(def) = fields.get(field) else {
        return false;
    };
    let value = value.trim();
    let quote = quote.trim();
    if value.is_empty() || quote.is_empty() {
        return false;
    }
    if def.format.has_options()
        && let Ok(chosen) = fields.chosen_options(field, value)
    {
        let mentioned: Vec<usize> = option_mentions(quote, &def.options)
            .into_iter()
            .map(|(i, _)| i)
            .collect();
        return chosen.iter().all(|i| mentioned.contains(i));
    }
    if !find_words_loose(quote, value).is_empty() {
        return true;
    }
    let Ok(expected) = fields.normalize(field, value, default_region) else {
        return false;
    };
    let same = |candidate: &str, region: Option<&str>| {
        fields
            .normalize(field, candidate, region)
            .is_ok_and(|v| v == expected)
    };
    match def.format {
        FieldFormat::Phone => {
            let value_region = phonenumber::parse(None, &expected)
                .ok()
                .and_then(|n| n.country().id())
                .map(|id| id.as_ref().to_owned());
            let mut regions: Vec<Option<&str>> = vec![default_region];
            if let Some(region) = value_region.as_deref()
                && region_id(default_region)
                    .map(|id| id.as_ref().to_owned())
                    .as_deref()
                    != Some(region)
            {
                regions.push(Some(region));
            }
            phone_candidates(quote)
                .iter()
                .any(|c| regions.iter().any(|region| same(c, *region)))
        }
        FieldFormat::Email => {
            EMAIL_IN_TEXT
                .find_iter(quote)
                .any(|m| same(m.as_str(), None))
                || spelled_emails(quote)
                    .iter()
                    .any(|spelled| same(&spelled.address, None))
        }
        FieldFormat::Number => NUMBER_IN_TEXT
            .find_iter(quote)
            .any(|m| same(m.as_str(), None)),
        FieldFormat::Date => DATES_IN_TEXT
            .iter()
            .any(|re| re.find_iter(quote).any(|m| same(m.as_str(), None))),
        _ => false,
    }
}

/// Every way of reading a span of digit groups in `text` as one number:
/// each run of digits and separators, and each stretch of its
/// whitespace-separated groups; a run after a spoken "plus" is also read
/// with a `+` ("plus 44 7911 …").
fn phone_candidates(text: &str) -> Vec<String> {
    let mut candidates = Vec::new();
    for run in NUMBER_RUN.find_iter(text) {
        let run_text = run.as_str();
        let spoken_plus = SPOKEN_PLUS.is_match(&text[..run.start()]);
        let groups: Vec<Range<usize>> = whitespace_tokens(run_text);
        for i in 0..groups.len() {
            for j in i..groups.len().min(i + MAX_PHONE_GROUPS) {
                let candidate = &run_text[groups[i].start..groups[j].end];
                if spoken_plus && i == 0 && !candidate.starts_with('+') {
                    candidates.push(format!("+{candidate}"));
                }
                candidates.push(candidate.to_owned());
            }
        }
    }
    candidates
}

/// Byte ranges of the whitespace-separated tokens of `s`.
pub(crate) fn whitespace_tokens(s: &str) -> Vec<Range<usize>> {
    let mut tokens = Vec::new();
    let mut start = None;
    for (i, c) in s.char_indices() {
        match (c.is_whitespace(), start) {
            (true, Some(s0)) => {
                tokens.push(s0..i);
                start = None;
            }
            (false, None) => start = Some(i),
            _ => {}
        }
    }
    if let Some(s0) = start {
        tokens.push(s0..s.len());
    }
    tokens
}

/// `s` lower-cased one character at a time, the same way
/// [`match_loose_at`] compares characters.
fn lowercase_chars(s: &str) -> String {
    s.chars().flat_map(char::to_lowercase).collect()
}

/// Whether lowercasing `s` would leave it as it is (no allocation needed).
fn is_lowercase_already(s: &str) -> bool {
    s.chars().all(|c| {
        let mut lower = c.to_lowercase();
        lower.next() == Some(c) && lower.next().is_none()
    })
}

fn chars_equal_ignoring_case(a: char, b: char) -> bool {
    a == b || a.to_lowercase().eq(b.to_lowercase())
}

/// If `needle` occurs in `text` at byte `start` (ignoring case, any
/// whitespace run matching any other), the byte offset where the match ends.
/// `needle` should not start or end with whitespace.
pub(crate) fn match_loose_at(text: &str, start: usize, needle: &str) -> Option<usize> {
    let rest = text.get(start..)?;
    let mut hay = rest.char_indices().peekable();
    let mut pins = needle.chars().peekable();
    while let Some(n) = pins.next() {
        if n.is_whitespace() {
            while pins.peek().is_some_and(|c| c.is_whitespace()) {
                pins.next();
            }
            match hay.next() {
                Some((_, h)) if h.is_whitespace() => {}
                _ => return None,
            }
            while hay.peek().is_some_and(|(_, h)| h.is_whitespace()) {
                hay.next();
            }
        } else {
            match hay.next() {
                Some((_, h)) if chars_equal_ignoring_case(n, h) => {}
                _ => return None,
            }
        }
    }
    Some(hay.peek().map_or(text.len(), |(i, _)| start + i))
}

/// Whether `c` belongs to a script that does not separate words with spaces,
/// where a word has no visible edge to match against (trigger keywords and
/// grounded values in it are found inside longer runs of letters).
pub(crate) fn is_unspaced_script(c: char) -> bool {
    matches!(c,
        '\u{0E00}'..='\u{0EFF}' // Thai, Lao
        | '\u{1000}'..='\u{109F}' // Myanmar
        | '\u{1780}'..='\u{17FF}' // Khmer
        | '\u{3040}'..='\u{30FF}' // Hiragana, Katakana
        | '\u{3400}'..='\u{4DBF}' // CJK extension A
        | '\u{4E00}'..='\u{9FFF}' // CJK unified ideographs
        | '\u{F900}'..='\u{FAFF}' // CJK compatibility ideographs
    )
}

/// Whether a match that starts or ends with `c` must sit at a word edge.
fn needs_word_edge(c: char) -> bool {
    c.is_alphanumeric() && !is_unspaced_script(c)
}

/// Non-overlapping occurrences of `needle` in `text` as whole words: a match
/// that starts (ends) with a letter or digit must not be preceded (followed)
/// by one, except in scripts written without spaces (Thai, Japanese …),
/// where words have no visible edges. Case and whitespace runs are ignored as
/// in [`match_loose_at`].
pub(crate) fn find_words_loose(text: &str, needle: &str) -> Vec<Range<usize>> {
    let needle = collapse_whitespace(needle);
    let (Some(first), Some(last)) = (needle.chars().next(), needle.chars().last()) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    let mut from = 0;
    for (start, _) in text.char_indices() {
        if start < from {
            continue;
        }
        let Some(end) = match_loose_at(text, start, &needle) else {
            continue;
        };
        let before_ok = !needs_word_edge(first)
            || !text[..start]
                .chars()
                .next_back()
                .is_some_and(char::is_alphanumeric);
        let after_ok = !needs_word_edge(last)
            || !text[end..]
                .chars()
                .next()
                .is_some_and(char::is_alphanumeric);
        if before_ok && after_ok {
            found.push(start..end);
            from = end;
        }
    }
    found
}

/// Mentions of `options` in `text` as `(option index, byte range)`, sorted by
/// position. A mention inside a longer option's mention ("Premium" inside
/// "Premium Plus") does not count.
pub(crate) fn option_mentions<S: AsRef<str>>(
    text: &str,
    options: &[S],
) -> Vec<(usize, Range<usize>)> {
    let lower = lowercase_chars(text);
    let all: Vec<(usize, Range<usize>)> = options
        .iter()
        .map(AsRef::as_ref)
        .enumerate()
        .filter(|(_, option)| {
            // Cheap pre-check: an option whose first word is absent cannot match.
            option.split_whitespace().next().is_some_and(|word| {
                if is_lowercase_already(word) {
                    lower.contains(word)
                } else {
                    lower.contains(&lowercase_chars(word))
                }
            })
        })
        .flat_map(|(i, option)| {
            find_words_loose(text, option)
                .into_iter()
                .map(move |r| (i, r))
        })
        .collect();
    let mut kept: Vec<(usize, Range<usize>)> = all
        .iter()
        .filter(|(_, r)| {
            !all.iter().any(|(_, other)| {
                other.start <= r.start && r.end <= other.end && other.len() > r.len()
            })
        })
        .cloned()
        .collect();
    kept.sort_by_key(|(i, r)| (r.start, *i));
    kept
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fields::FieldDef;

    fn fields() -> FieldSet {
        let custom = vec![
            FieldDef {
                options: vec!["Premium".into(), "Premium Plus".into(), "Basic".into()],
                ..FieldDef::new("plan", FieldFormat::Select)
            },
            FieldDef {
                options: vec!["Email".into(), "SMS".into(), "WhatsApp".into()],
                ..FieldDef::new("channels", FieldFormat::Checkbox)
            },
            FieldDef::new("seats", FieldFormat::Number),
            FieldDef::new("birthday", FieldFormat::Date),
            FieldDef::new("company", FieldFormat::Text),
        ];
        FieldSet::new(custom, &[]).expect("valid field set")
    }

    #[test]
    fn find_quote_exact_case_and_whitespace() {
        let text = "Hi there!\nMy name is  Maria José, and my email is Maria@Example.com.";
        let cases: &[(&str, Option<&str>)] = &[
            ("My name is  Maria José", Some("My name is  Maria José")),
            ("my NAME is maria josé", Some("My name is  Maria José")),
            ("my name is Maria José", Some("My name is  Maria José")),
            ("  there!   my name ", Some("there!\nMy name")),
            ("maria@example.com", Some("Maria@Example.com")),
            ("Hi", Some("Hi")),
        ];
        for (quote, expected) in cases {
            let got = find_quote(quote, text).map(|r| &text[r]);
            assert_eq!(got, *expected, "{quote:?}");
        }
    }

    #[test]
    fn find_quote_rejects_non_spans() {
        let text = "My name is Maria José and I live in Lisbon";
        for quote in [
            "",
            "   ",
            "M",
            "My name is Maria Jose",
            "my name is Mariajosé",
            "I live in Porto",
            "name: Maria",
            "My name is Maria José and I live in Lisbon, Portugal",
        ] {
            assert_eq!(find_quote(quote, text), None, "{quote:?}");
        }
    }

    #[test]
    fn find_quote_returns_byte_range_with_multibyte_text() {
        let text = "Olá! Meu nome é João";
        let range = find_quote("meu nome é joão", text).expect("found");
        assert_eq!(&text[range.clone()], "Meu nome é João");
        assert_eq!(range, 6..text.len());
    }

    #[test]
    fn value_supported_direct() {
        let f = fields();
        let cases: &[(&str, &str, &str, bool)] = &[
            ("name", "Mike", "my name is Mike", true),
            ("name", "mike", "My name is MIKE", true),
            ("name", "Maria José", "I'm Maria   José", true),
            ("name", "John", "my name is Mike", false),
            ("name", "John", "my name is Johnson", false),
            // Thai and Japanese put no spaces around words.
            ("name", "สมชาย", "ผมชื่อสมชายครับ", true),
            ("name", "田中", "私の名前は田中です", true),
            ("name", "สมหญิง", "ผมชื่อสมชายครับ", false),
            (
                "company",
                "Acme Corp",
                "I work at acme corp in Lisbon",
                true,
            ),
            ("company", "Acme Corp", "I work at Acme", false),
            ("unknown_field", "x", "x", false),
            ("name", "", "my name is Mike", false),
            ("name", "Mike", "", false),
        ];
        for (field, value, quote, expected) in cases {
            assert_eq!(
                value_supported_by_quote(&f, field, value, quote, None),
                *expected,
                "{field} {value:?} in {quote:?}"
            );
        }
    }

    #[test]
    fn value_supported_phone() {
        let f = fields();
        let cases: &[(&str, &str, Option<&str>, bool)] = &[
            (
                "+14155550100",
                "call me at (415) 555-0100",
                Some("US"),
                true,
            ),
            ("+14155550100", "call me at 415.555.0100!", Some("US"), true),
            ("(415) 555-0100", "my cell is 4155550100", Some("US"), true),
            ("+14155550100", "call me at (415) 555-0100", None, true),
            ("+442079460958", "ring me on 020 7946 0958", None, true),
            (
                "+442079460958",
                "ring me on +44 (0)20 7946 0958",
                None,
                true,
            ),
            (
                "+5511912345678",
                "meu whats é (11) 91234-5678",
                Some("BR"),
                true,
            ),
            ("+66812345678", "โทร 081-234-5678 ครับ", Some("TH"), true),
            (
                "+14155550100",
                "call me at (415) 555-0199",
                Some("US"),
                false,
            ),
            ("+14155550100", "my order is 2024", Some("US"), false),
            ("+14155550100", "call me tomorrow", Some("US"), false),
            (
                "not a phone",
                "call me at (415) 555-0100",
                Some("US"),
                false,
            ),
        ];
        for (value, quote, region, expected) in cases {
            assert_eq!(
                value_supported_by_quote(&f, "phone", value, quote, *region),
                *expected,
                "{value:?} in {quote:?}"
            );
        }
    }

    #[test]
    fn value_supported_email() {
        let f = fields();
        let cases: &[(&str, &str, bool)] = &[
            ("john@example.com", "it's John@Example.com.", true),
            ("JOHN@example.com", "email: john@example.com", true),
            (
                "john+shop@example.com",
                "use john+shop@example.com please",
                true,
            ),
            ("john@example.co", "it's john@example.com", false),
            ("jane@example.com", "it's john@example.com", false),
        ];
        for (value, quote, expected) in cases {
            assert_eq!(
                value_supported_by_quote(&f, "email", value, quote, None),
                *expected,
                "{value:?} in {quote:?}"
            );
        }
    }

    #[test]
    fn value_supported_options() {
        let f = fields();
        let cases: &[(&str, &str, &str, bool)] = &[
            ("plan", "Premium", "I'd like premium please", true),
            ("plan", "premium plus", "we're on PREMIUM  PLUS", true),
            ("plan", "Premium", "we're on Premium Plus", false),
            ("plan", "Basic", "we're on Premium Plus", false),
            ("plan", "Gold", "I want gold", true),
            ("plan", "Gold", "I want silver", false),
            (
                "channels",
                "SMS, WhatsApp",
                "text me via sms or whatsapp",
                true,
            ),
            (
                "channels",
                "whatsapp and email",
                "whatsapp or email is fine",
                true,
            ),
            ("channels", "SMS, WhatsApp", "sms only", false),
            ("channels", "Email", "my emails bounce", false),
        ];
        for (field, value, quote, expected) in cases {
            assert_eq!(
                value_supported_by_quote(&f, field, value, quote, None),
                *expected,
                "{field} {value:?} in {quote:?}"
            );
        }
    }

    #[test]
    fn value_supported_number_and_date() {
        let f = fields();
        let cases: &[(&str, &str, &str, bool)] = &[
            ("seats", "1200", "we need 1,200 seats", true),
            ("seats", "1,200", "about 1200 people", true),
            ("seats", "12", "we need 12 seats", true),
            ("seats", "12", "we need 120 seats", false),
            ("seats", "12.5", "maybe 12.50 of them", true),
            ("birthday", "2024-03-05", "born on 5 March 2024", true),
            (
                "birthday",
                "2024-03-05",
                "it was March 5th, 2024 I think",
                true,
            ),
            ("birthday", "2024-03-05", "it's 05/03/2024", true),
            ("birthday", "2024-03-05", "it's 2024-3-5", true),
            ("birthday", "2024-03-05", "it's 06/03/2024", false),
            ("birthday", "2024-03-05", "sometime in March", false),
        ];
        for (field, value, quote, expected) in cases {
            assert_eq!(
                value_supported_by_quote(&f, field, value, quote, None),
                *expected,
                "{field} {value:?} in {quote:?}"
            );
        }
    }

    #[test]
    fn option_mentions_prefers_longer_options() {
        let options = vec![
            "Premium".to_owned(),
            "Premium Plus".to_owned(),
            "Basic".to_owned(),
        ];
        let text = "Basic or premium plus? Premium!";
        let got: Vec<(usize, &str)> = option_mentions(text, &options)
            .into_iter()
            .map(|(i, r)| (i, &text[r]))
            .collect();
        assert_eq!(got, vec![(2, "Basic"), (1, "premium plus"), (0, "Premium")]);
    }

    #[test]
    fn find_words_loose_respects_word_boundaries() {
        let text = "SMS, smsing, MMS-SMS and sms";
        let got: Vec<&str> = find_words_loose(text, "sms")
            .into_iter()
            .map(|r| &text[r])
            .collect();
        assert_eq!(got, vec!["SMS", "SMS", "sms"]);
    }
}

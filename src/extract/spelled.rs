//! Email addresses written out for people rather than for mail programs:
//! spoken ("john dot smith at gmail dot com", "carlos arroba gmail punto
//! com"), bracketed ("kim [at] proton [dot] me", "paul(at)firm(dot)ie") or
//! defanged ("d.nguyen[@]vnmail[.]vn"). Customers write them this way in
//! chats to dodge spam filters or because a voice transcript did. The
//! extractor reads them as addresses, and the grounding check accepts an
//! address whose quote is its written-out form.

use std::ops::Range;
use std::sync::LazyLock;

use regex::Regex;

/// The words for "@" and "." in the languages the extractor reads, and
/// their bracketed and defanged forms.
const AT_WORDS: &str = "at|arroba|arobase|chiocciola|apenstaartje|klammeraffe|собака";
const DOT_WORDS: &str = "dot|punto|ponto|point|punkt|punt|titik|точка";
const UNDERSCORE_WORDS: &str = "underscore|guion\\s+bajo|underline";
const DASH_WORDS: &str = "dash|hyphen|guion|tiret|h[ií]fen";

/// One spelled-out address: `local AT domain`, where at least one of the
/// separators is written out or bracketed.
static SPELLED: LazyLock<Regex> = LazyLock::new(|| {
    let bracket = |inner: &str| format!(r"\s*[\[({{<]\s*(?:{inner})\s*[\])}}>]\s*");
    let at = format!(
        r"(?:{}|\s+(?:{AT_WORDS})\s+|@)",
        bracket(&format!("{AT_WORDS}|@"))
    );
    let dot = format!(
        r"(?:{}|\s+(?:{DOT_WORDS})\s+|\.)",
        bracket(&format!("{DOT_WORDS}|\\."))
    );
    let local_sep =
        format!(r"(?:{dot}|\s+(?:{UNDERSCORE_WORDS})\s+|\s+(?:{DASH_WORDS})\s+|[_\-+])");
    let piece = r"[a-z0-9](?:[a-z0-9'+_\-]*[a-z0-9])?";
    let label = r"[a-z0-9](?:[a-z0-9\-]*[a-z0-9])?";
    Regex::new(&format!(
        r"(?i)(?:^|[^\p{{L}}\p{{N}}._@\-])({piece}(?:{local_sep}{piece})*{at}{label}(?:{dot}{label})*{dot}[a-z]{{2,24}})(?:$|[^\p{{L}}\p{{N}}@\-]|\.(?:$|\s))"
    ))
    .expect("valid regex")
});

/// The written-out separators, for turning a match into an address.
static AT_TOKEN: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(&format!(
        r"(?i)\s*[\[({{<]\s*(?:{AT_WORDS}|@)\s*[\])}}>]\s*|\s+(?:{AT_WORDS})\s+"
    ))
    .expect("valid regex")
});
static DOT_TOKEN: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(&format!(
        r"(?i)\s*[\[({{<]\s*(?:{DOT_WORDS}|\.)\s*[\])}}>]\s*|\s+(?:{DOT_WORDS})\s+"
    ))
    .expect("valid regex")
});
static UNDERSCORE_TOKEN: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(&format!(r"(?i)\s+(?:{UNDERSCORE_WORDS})\s+")).expect("valid regex")
});
static DASH_TOKEN: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(&format!(r"(?i)\s+(?:{DASH_WORDS})\s+")).expect("valid regex"));

/// Words that come before a spoken "at" without being an address's local
/// part ("reach me at …", "I'm at work").
const NOT_LOCAL_PARTS: &[&str] = &[
    "me", "us", "you", "him", "her", "it", "them", "we", "i", "im", "i'm", "home", "work", "lunch",
    "school", "least", "all", "once", "first", "last", "that", "this", "what", "look", "looking",
    "is", "are", "was", "were", "be", "stay", "staying", "meet", "see", "arrive", "arrived",
    "here", "there", "back", "email", "mail", "address", "contact", "reach", "write",
];

/// Whether the local part before a spoken "at" is an ordinary word.
fn ordinary_word_before_at(raw: &str) -> bool {
    let Some(at) = AT_TOKEN.find(raw) else {
        return false;
    };
    let local = &raw[..at.start()];
    !at.as_str().contains(['[', '(', '{', '<'])
        && NOT_LOCAL_PARTS.contains(&local.to_lowercase().as_str())
}

/// A spelled-out address found in a text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpelledEmail {
    /// Where it is written, verbatim.
    pub span: Range<usize>,
    /// The address it spells (not yet validated or lower-cased).
    pub address: String,
    /// Whether a separator is a bracketed or defanged form (`[at]`,
    /// `(dot)`, `[@]`) rather than a spoken word: such a form is written
    /// only to spell an address, while "at" and "dot" are ordinary words.
    pub bracketed: bool,
}

/// Every spelled-out address in `text`, in order. Plain addresses
/// (`a@b.com`) are not returned: [`crate::extract::patterns`] finds them.
pub fn spelled_emails(text: &str) -> Vec<SpelledEmail> {
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(caps) = SPELLED.captures_at(text, from) {
        let Some(m) = caps.get(1) else { break };
        from = next_boundary(text, m.end().max(from + 1));
        let raw = m.as_str();
        let at = AT_TOKEN.replace_all(raw, "@");
        let dotted = DOT_TOKEN.replace_all(&at, ".");
        let underscored = UNDERSCORE_TOKEN.replace_all(&dotted, "_");
        let address: String = DASH_TOKEN
            .replace_all(&underscored, "-")
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        if address == raw || address.matches('@').count() != 1 || ordinary_word_before_at(raw) {
            // Look again from the next word: "reach me at kim [at] …".
            from = next_boundary(text, m.start() + 1);
            continue;
        }
        let bracketed = raw.contains(['[', '(', '{', '<']);
        found.push(SpelledEmail {
            span: m.range(),
            address,
            bracketed,
        });
        from = next_boundary(text, from);
    }
    found
}

/// The first character boundary of `text` at or after `at`.
fn next_boundary(text: &str, mut at: usize) -> usize {
    while at < text.len() && !text.is_char_boundary(at) {
        at += 1;
    }
    at.min(text.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addresses(text: &str) -> Vec<String> {
        spelled_emails(text)
            .into_iter()
            .map(|s| s.address)
            .collect()
    }

    #[test]
    fn spoken_and_bracketed_forms_read_as_addresses() {
        for (text, address) in [
            ("john dot smith at gmail dot com", "john.smith@gmail.com"),
            (
                "maria underscore lopez at yahoo dot com",
                "maria_lopez@yahoo.com",
            ),
            (
                "kim.lee [at] protonmail [dot] com",
                "kim.lee@protonmail.com",
            ),
            ("paul(at)brennan-law(dot)ie", "paul@brennan-law.ie"),
            (
                "aisha at aishadesigns dot co dot uk",
                "aisha@aishadesigns.co.uk",
            ),
            (
                "carlos punto ruiz arroba gmail punto com",
                "carlos.ruiz@gmail.com",
            ),
            ("ana arroba uol ponto com ponto br", "ana@uol.com.br"),
            ("luc.martin arobase orange point fr", "luc.martin@orange.fr"),
            ("tom AT tomfoolery DOT net", "tom@tomfoolery.net"),
            ("d.nguyen[@]vnmail[.]vn", "d.nguyen@vnmail.vn"),
            ("alex [at] studio-nine.com", "alex@studio-nine.com"),
            (
                "reach me at kim.lee [at] protonmail [dot] com",
                "kim.lee@protonmail.com",
            ),
            ("zoe-b at icloud dot com", "zoe-b@icloud.com"),
            (
                "giulia punto rossi chiocciola libero punto it",
                "giulia.rossi@libero.it",
            ),
        ] {
            assert_eq!(addresses(text), [address], "{text}");
        }
    }

    #[test]
    fn plain_addresses_and_ordinary_words_are_not_spelled_addresses() {
        for text in [
            "mail me at jo@example.com",
            "I'm at lunch right now, back at 2",
            "we met at the expo at the convention centre dot dot dot",
            "look at this",
            "",
        ] {
            assert!(addresses(text).is_empty(), "{text}: {:?}", addresses(text));
        }
    }

    #[test]
    fn the_span_is_the_written_form() {
        let text = "sure: kim [at] proton [dot] me thanks";
        let found = spelled_emails(text);
        assert_eq!(&text[found[0].span.clone()], "kim [at] proton [dot] me");
        assert!(found[0].bracketed);
    }
}

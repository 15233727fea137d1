//! Keyword triggers: the natural moments to ask, spotted without a model.
//! With no LLM configured they are the whole ask decision; with one, they
//! still tell the policy when an optional field (a phone for a call-back) may
//! be asked. Keywords come from configuration so operators can add their
//! customers' phrasings.

use regex::Regex;
use serde::Deserialize;

use crate::extract::grounding::is_unspaced_script;

/// One trigger as configured under `[[asks.triggers]]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct TriggerConfig {
    /// Short name, used as the ask's reason code.
    pub name: String,
    /// Why asking now makes sense, as the bot would explain it.
    pub reason: String,
    /// Fields to ask, in order; the first one missing is asked.
    pub fields: Vec<String>,
    /// Phrases that fire the trigger (case-insensitive, whole words).
    pub keywords: Vec<String>,
}

/// Compiled triggers.
#[derive(Debug, Clone)]
pub struct Triggers {
    triggers: Vec<(TriggerConfig, Regex)>,
}

/// A trigger that fired on a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fired<'a> {
    /// Its name.
    pub name: &'a str,
    /// Its reason.
    pub reason: &'a str,
    /// The fields it would ask, in order.
    pub fields: &'a [String],
}

impl Triggers {
    /// Compiles the configured triggers; a keyword is matched literally, as
    /// whole words, except in scripts written without spaces between words
    /// (Thai, Japanese, Chinese …), where it is matched anywhere.
    pub fn new(configs: &[TriggerConfig]) -> Result<Triggers, regex::Error> {
        let triggers = configs
            .iter()
            .filter(|c| !c.keywords.is_empty())
            .map(|config| {
                let (unspaced, spaced): (Vec<&String>, Vec<&String>) = config
                    .keywords
                    .iter()
                    .partition(|k| k.chars().any(is_unspaced_script));
                let literal = |keywords: Vec<&String>| -> String {
                    keywords
                        .iter()
                        .map(|k| regex::escape(k.trim()).replace(' ', r"\s+"))
                        .collect::<Vec<_>>()
                        .join("|")
                };
                let mut branches = Vec::new();
                if !spaced.is_empty() {
                    branches.push(format!(
                        r"(?:^|[^\p{{L}}\p{{N}}])(?:{})(?:$|[^\p{{L}}\p{{N}}])",
                        literal(spaced)
                    ));
                }
                if !unspaced.is_empty() {
                    branches.push(format!("(?:{})", literal(unspaced)));
                }
                let pattern = format!("(?iu){}", branches.join("|"));
                Ok((config.clone(), Regex::new(&pattern)?))
            })
            .collect::<Result<_, regex::Error>>()?;
        Ok(Triggers { triggers })
    }

    /// Every trigger the text fires, in configuration order.
    pub fn fired<'a>(&'a self, text: &str) -> Vec<Fired<'a>> {
        self.triggers
            .iter()
            .filter(|(_, regex)| regex.is_match(text))
            .map(|(config, _)| Fired {
                name: &config.name,
                reason: &config.reason,
                fields: &config.fields,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn triggers() -> Triggers {
        Triggers::new(&[
            TriggerConfig {
                name: "send".into(),
                reason: "wants something sent".into(),
                fields: vec!["email".into()],
                keywords: vec!["send me".into(), "brochure".into(), "envíame".into()],
            },
            TriggerConfig {
                name: "booking".into(),
                reason: "wants to book".into(),
                fields: vec!["name".into(), "phone".into()],
                keywords: vec!["book".into(), "call me".into()],
            },
        ])
        .expect("valid")
    }

    #[test]
    fn keywords_match_whole_words_in_any_case() {
        let t = triggers();
        assert_eq!(t.fired("Can you SEND  me the price list?")[0].name, "send");
        assert_eq!(
            t.fired("I'd like to book a table")[0].fields,
            ["name", "phone"]
        );
        assert_eq!(t.fired("¿Me envíame el catálogo?")[0].name, "send");
        assert!(
            t.fired("I read a facebook post").is_empty(),
            "book inside facebook"
        );
        assert!(t.fired("hello there").is_empty());
    }

    #[test]
    fn keywords_in_scripts_without_spaces_match_inside_words() {
        let t = Triggers::new(&[TriggerConfig {
            name: "booking".into(),
            reason: "wants to book".into(),
            fields: vec!["name".into()],
            keywords: vec!["book".into(), "予約".into(), "จอง".into()],
        }])
        .expect("valid");
        assert_eq!(t.fired("予約したいです")[0].name, "booking");
        assert_eq!(t.fired("อยากจองห้องพักวันเสาร์นี้ครับ")[0].name, "booking");
        assert!(
            t.fired("my facebook page").is_empty(),
            "spaced keywords stay whole words"
        );
        assert!(t.fired("こんにちは").is_empty());
    }
}

//! Natural moments to ask, spotted without a model. With no LLM configured
//! they are the whole ask decision; with one, they still tell the policy
//! when an optional field (a phone for a call-back) may be asked.
//!
//! A moment is a need: something to send or a copy of something (ask the
//! email), a call, call-back or appointment (ask the name, then the phone),
//! an order, delivery, refund, invoice or account (ask the email). Each need
//! is recognised through a lexicon of phrases by language
//! (`[asks.lexicon.<trigger>]` in the configuration), matched on word forms
//! rather than on one spelling: words are compared by their Snowball stem in
//! the languages a stemmer exists for, a word written `send*` matches every
//! word it starts, `=word` only that exact form, and up to one word may come
//! between the words of a phrase ("send *it* over", "me *pueden* enviar").
//! In scripts written without spaces (Japanese, Chinese, Thai) and in Arabic
//! a phrase matches anywhere in the text. A phrase right after a negation of
//! the need ("no need to call me", "don't send") does not fire. Operators
//! extend a need with more keys in the same table (`en-acme = [...]`: the
//! language is the part before the dash), or with literal `keywords` on the
//! trigger.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::rc::Rc;
use std::sync::LazyLock;

use regex::Regex;
use rust_stemmers::{Algorithm, Stemmer};
use serde::Deserialize;

use crate::extract::grounding::is_unspaced_script;

/// One trigger as configured under `[[asks.triggers]]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct TriggerConfig {
    /// Short name, used as the ask's reason code and as its lexicon's key.
    pub name: String,
    /// Why asking now makes sense, as the bot would explain it.
    pub reason: String,
    /// Fields to ask, in order; the first one missing is asked.
    pub fields: Vec<String>,
    /// Literal phrases that fire the trigger in any language
    /// (case-insensitive, whole words).
    #[serde(default)]
    pub keywords: Vec<String>,
}

/// Phrases by trigger name, then by language key (`en`, `es`, `en-acme` …).
pub type Lexicon = BTreeMap<String, BTreeMap<String, Vec<String>>>;

/// Why triggers could not be compiled.
#[derive(Debug, thiserror::Error)]
pub enum TriggerError {
    /// A keyword did not compile.
    #[error("keywords: {0}")]
    Keywords(#[from] regex::Error),
    /// A lexicon names a trigger that is not configured.
    #[error("asks.lexicon.{0}: no trigger of that name")]
    UnknownTrigger(String),
    /// A phrase has no words.
    #[error("asks.lexicon.{trigger}.{language}: an empty phrase")]
    EmptyPhrase {
        /// The trigger.
        trigger: String,
        /// The language key.
        language: String,
    },
}

/// How the words of a language are compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Script {
    /// Spaced words, compared by stem: the stemmer's index in [`STEMMERS`].
    Stemmed(usize),
    /// Spaced words without a stemmer: a phrase word matches a word it starts.
    Prefixed,
    /// No reliable word edges: a phrase matches anywhere in the text.
    Anywhere,
}

/// The languages with a Snowball stemmer, by language code, in the order a
/// word's stems are kept in.
const STEMMERS: [(&[&str], Algorithm); 16] = [
    (&["en"], Algorithm::English),
    (&["es"], Algorithm::Spanish),
    (&["pt"], Algorithm::Portuguese),
    (&["fr"], Algorithm::French),
    (&["de"], Algorithm::German),
    (&["it"], Algorithm::Italian),
    (&["nl"], Algorithm::Dutch),
    (&["ru"], Algorithm::Russian),
    (&["tr"], Algorithm::Turkish),
    (&["sv"], Algorithm::Swedish),
    (&["da"], Algorithm::Danish),
    (&["no", "nb"], Algorithm::Norwegian),
    (&["fi"], Algorithm::Finnish),
    (&["hu"], Algorithm::Hungarian),
    (&["ro"], Algorithm::Romanian),
    (&["el"], Algorithm::Greek),
];

/// Languages written without spaces between words, or whose words carry
/// their particles (Arabic script, Hebrew).
const UNSPACED: [&str; 10] = ["ja", "zh", "th", "lo", "km", "my", "ar", "fa", "ur", "he"];

fn script_of(language: &str) -> Script {
    if let Some(stemmer) = STEMMERS
        .iter()
        .position(|(codes, _)| codes.contains(&language))
    {
        Script::Stemmed(stemmer)
    } else if UNSPACED.contains(&language) {
        Script::Anywhere
    } else {
        Script::Prefixed
    }
}

/// One word of a phrase.
#[derive(Debug, Clone, PartialEq, Eq)]
enum WordPattern {
    /// Same stem (or, without a stemmer, a word that starts with it).
    Form(String),
    /// Any word that starts with it (`send*`).
    Prefix(String),
    /// Only this spelling (`=llamo`).
    Exact(String),
}

/// A language's phrases for one trigger.
#[derive(Debug, Clone)]
struct LanguagePhrases {
    script: Script,
    phrases: Vec<Vec<WordPattern>>,
    anywhere: Vec<String>,
}

/// A compiled trigger.
#[derive(Debug, Clone)]
struct Trigger {
    config: TriggerConfig,
    keywords: Option<Regex>,
    languages: Vec<LanguagePhrases>,
}

/// Compiled triggers.
#[derive(Debug, Clone)]
pub struct Triggers {
    triggers: Vec<Trigger>,
    starts: PhraseStarts,
}

/// One phrase of the lexicon: trigger, language and phrase positions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PhraseRef {
    trigger: usize,
    language: usize,
    phrase: usize,
}

/// Every phrase of every trigger by the word it starts with, so a message
/// is compared only with the phrases one of its words can start: a word
/// looks up its lower-case spelling and its stem in each stemmed language,
/// instead of every phrase being tried at every word.
#[derive(Debug, Clone, Default)]
struct PhraseStarts {
    /// Phrases whose first word matches this exact lower-case spelling
    /// (`=word`, and a stemmed word's stem written out, which also matches
    /// as spelled).
    by_spelling: HashMap<String, Vec<PhraseRef>>,
    /// Phrases whose first word matches a word with this stem, by stemmer
    /// (indexed as [`STEMMERS`]).
    by_stem: [HashMap<String, Vec<PhraseRef>>; STEMMERS.len()],
    /// Phrases whose first word matches a word starting with this text
    /// (`send*`, languages without a stemmer).
    by_start: Vec<(String, PhraseRef)>,
}

impl PhraseStarts {
    fn new(triggers: &[Trigger]) -> PhraseStarts {
        let mut starts = PhraseStarts::default();
        for (t, trigger) in triggers.iter().enumerate() {
            for (l, language) in trigger.languages.iter().enumerate() {
                for (p, phrase) in language.phrases.iter().enumerate() {
                    let at = PhraseRef {
                        trigger: t,
                        language: l,
                        phrase: p,
                    };
                    match (phrase.first(), language.script) {
                        (Some(WordPattern::Exact(word)), _) => {
                            starts.by_spelling.entry(word.clone()).or_default().push(at);
                        }
                        (Some(WordPattern::Form(stem)), Script::Stemmed(stemmer)) => {
                            starts.by_spelling.entry(stem.clone()).or_default().push(at);
                            starts.by_stem[stemmer]
                                .entry(stem.clone())
                                .or_default()
                                .push(at);
                        }
                        (Some(WordPattern::Prefix(start) | WordPattern::Form(start)), _) => {
                            starts.by_start.push((start.clone(), at));
                        }
                        (None, _) => {}
                    }
                }
            }
        }
        starts
    }

    /// Every (phrase, first word) pair whose first word matches, each once.
    fn candidates(&self, words: &[Word], stems: &Stems) -> Vec<(PhraseRef, usize)> {
        let mut found = Vec::new();
        for (i, word) in words.iter().enumerate() {
            if let Some(refs) = self.by_spelling.get(&word.lower) {
                found.extend(refs.iter().map(|r| (*r, i)));
            }
            for (stemmer, by_stem) in self.by_stem.iter().enumerate() {
                if let Some(refs) = by_stem.get(stems.of(i, stemmer)) {
                    found.extend(refs.iter().map(|r| (*r, i)));
                }
            }
            found.extend(
                self.by_start
                    .iter()
                    .filter(|(start, _)| word.lower.starts_with(start.as_str()))
                    .map(|(_, r)| (*r, i)),
            );
        }
        found.sort_unstable_by_key(|(r, i)| (r.trigger, r.language, r.phrase, *i));
        found.dedup();
        found
    }
}

/// The stems of a message's words, computed once per message.
struct Stems {
    words: Vec<WordStems>,
}

impl Stems {
    fn new(words: &[Word]) -> Stems {
        Stems {
            words: words.iter().map(|w| word_stems(&w.lower)).collect(),
        }
    }

    /// The stem of word `i` by stemmer `stemmer` (an index of [`STEMMERS`]).
    fn of(&self, i: usize, stemmer: usize) -> &str {
        &self.words[i][stemmer]
    }
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

/// Most words allowed between two words of a phrase.
const MAX_GAP: usize = 1;

/// A negation of the need right before a phrase ("no need to", "don't",
/// "no hace falta que", "não precisa"), with at most one word between.
static NEGATED: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(concat!(
        r"(?iu)(?:^|[^\p{L}])(?:don['’]?t|do\s+not|dont|not|no\s+need\s+(?:to|for)|never|",
        r"no\s+(?:hace\s+falta|es\s+necesario|necesito|quiero)(?:\s+que)?|",
        r"n[ãa]o(?:\s+precisa(?:\s+de)?)?|pas\s+besoin\s+de|ne\s+pas|nicht|kein\w*|",
        r"non|niet|geen|tidak\s+usah|tidak\s+perlu|jangan|не\s+надо|не\s+нужно|не|nie)",
        r"\s+(?:[\p{L}'’]+\s+)?$"
    ))
    .expect("valid regex")
});

/// Email addresses and links, whose words are not the customer's words.
static ADDRESS_OR_LINK: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)[^\s@]+@[^\s@]+|https?://\S+|www\.\S+").expect("valid regex")
});

/// A word of a text: its byte range and its lower-case form.
#[derive(Debug, Clone)]
struct Word {
    range: Range<usize>,
    lower: String,
}

fn words_of(text: &str) -> Vec<Word> {
    let mut words = Vec::new();
    let mut start = None;
    for (i, c) in text.char_indices() {
        let part = c.is_alphanumeric() || (start.is_some() && is_mark(c));
        match (part, start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                words.push(word(text, s..i));
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        words.push(word(text, s..text.len()));
    }
    words
}

fn is_mark(c: char) -> bool {
    matches!(c, '\u{0300}'..='\u{036F}' | '\u{0900}'..='\u{097F}')
}

fn word(text: &str, range: Range<usize>) -> Word {
    Word {
        lower: text[range.clone()].to_lowercase(),
        range,
    }
}

fn stem(algorithm: Algorithm, word: &str) -> String {
    Stemmer::create(algorithm).stem(word).into_owned()
}

/// A word's stem in each of [`STEMMERS`], in that order.
type WordStems = Rc<[Rc<str>]>;

/// Words stemmed on this thread: chat vocabulary repeats, and every word of
/// a message is compared in each stemmed language, so a word is looked up
/// once and stemmed only the first time it is seen. Emptied when it reaches
/// [`STEM_CACHE_WORDS`] words.
const STEM_CACHE_WORDS: usize = 20_000;

thread_local! {
    static STEM_CACHE: std::cell::RefCell<HashMap<String, WordStems>> =
        std::cell::RefCell::new(HashMap::new());
}

/// The stems of `word` (lower case) in every stemmer, remembered per
/// thread. A word without letters (a number) is its own stem in every
/// language and is not remembered: order numbers and amounts would only
/// crowd out the vocabulary.
fn word_stems(word: &str) -> WordStems {
    if !word.chars().any(char::is_alphabetic) {
        let same: Rc<str> = word.into();
        return STEMMERS.iter().map(|_| Rc::clone(&same)).collect();
    }
    STEM_CACHE.with(|cache| {
        let mut cache = cache.borrow_mut();
        if let Some(stems) = cache.get(word) {
            return Rc::clone(stems);
        }
        let stems: WordStems = STEMMERS
            .iter()
            .map(|(_, algorithm)| Rc::from(stem(*algorithm, word)))
            .collect();
        if cache.len() >= STEM_CACHE_WORDS {
            cache.clear();
        }
        cache.insert(word.to_owned(), Rc::clone(&stems));
        stems
    })
}

impl Triggers {
    /// Compiles the configured triggers and their lexicon. Keywords are
    /// matched literally as whole words, except in scripts written without
    /// spaces between words, where they are matched anywhere.
    pub fn new(configs: &[TriggerConfig], lexicon: &Lexicon) -> Result<Triggers, TriggerError> {
        if let Some(unknown) = lexicon
            .keys()
            .find(|name| !configs.iter().any(|c| &c.name == *name))
        {
            return Err(TriggerError::UnknownTrigger(unknown.clone()));
        }
        let triggers = configs
            .iter()
            .map(|config| {
                let phrases = lexicon.get(&config.name).cloned().unwrap_or_default();
                Ok(Trigger {
                    keywords: keyword_regex(&config.keywords)?,
                    languages: compile_lexicon(&config.name, &phrases)?,
                    config: config.clone(),
                })
            })
            .collect::<Result<Vec<Trigger>, TriggerError>>()?;
        let starts = PhraseStarts::new(&triggers);
        Ok(Triggers { triggers, starts })
    }

    /// Every trigger the text fires, in configuration order. Words inside
    /// email addresses and links are not read ("marco@…" is not "marcar").
    pub fn fired<'a>(&'a self, text: &str) -> Vec<Fired<'a>> {
        let blanked =
            ADDRESS_OR_LINK.replace_all(text, |c: &regex::Captures<'_>| " ".repeat(c[0].len()));
        let text: &str = &blanked;
        let words = words_of(text);
        let lower = text.to_lowercase();
        let mut fired: Vec<bool> = self
            .triggers
            .iter()
            .map(|trigger| {
                trigger.keywords.as_ref().is_some_and(|k| k.is_match(text))
                    || trigger
                        .languages
                        .iter()
                        .any(|language| language.fires_anywhere(&lower))
            })
            .collect();
        if fired.iter().any(|f| !f) && !words.is_empty() {
            let stems = Stems::new(&words);
            for (at, start) in self.starts.candidates(&words, &stems) {
                if fired[at.trigger] {
                    continue;
                }
                let language = &self.triggers[at.trigger].languages[at.language];
                if matches_at(
                    &language.phrases[at.phrase],
                    &words,
                    &stems.words,
                    start,
                    language.script,
                ) && !NEGATED.is_match(&text[..words[start].range.start])
                {
                    fired[at.trigger] = true;
                }
            }
        }
        self.triggers
            .iter()
            .zip(fired)
            .filter(|(_, fired)| *fired)
            .map(|(trigger, _)| Fired {
                name: &trigger.config.name,
                reason: &trigger.config.reason,
                fields: &trigger.config.fields,
            })
            .collect()
    }
}

fn keyword_regex(keywords: &[String]) -> Result<Option<Regex>, regex::Error> {
    let keywords: Vec<&String> = keywords.iter().filter(|k| !k.trim().is_empty()).collect();
    if keywords.is_empty() {
        return Ok(None);
    }
    let (unspaced, spaced): (Vec<&String>, Vec<&String>) = keywords
        .into_iter()
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
    Regex::new(&format!("(?iu){}", branches.join("|"))).map(Some)
}

fn compile_lexicon(
    trigger: &str,
    phrases: &BTreeMap<String, Vec<String>>,
) -> Result<Vec<LanguagePhrases>, TriggerError> {
    let mut languages = Vec::new();
    for (key, list) in phrases {
        let language = key.split('-').next().unwrap_or_default().to_lowercase();
        let script = script_of(&language);
        let mut compiled = LanguagePhrases {
            script,
            phrases: Vec::new(),
            anywhere: Vec::new(),
        };
        for phrase in list {
            let empty = || TriggerError::EmptyPhrase {
                trigger: trigger.to_owned(),
                language: key.clone(),
            };
            if script == Script::Anywhere || phrase.chars().any(is_unspaced_script) {
                let text: String = phrase.trim().trim_end_matches('*').to_lowercase();
                if text.is_empty() {
                    return Err(empty());
                }
                compiled.anywhere.push(text);
                continue;
            }
            let words: Vec<WordPattern> = phrase
                .split_whitespace()
                .flat_map(|raw| pattern_words(raw, script))
                .collect();
            if words.is_empty() {
                return Err(empty());
            }
            compiled.phrases.push(words);
        }
        languages.push(compiled);
    }
    Ok(languages)
}

/// The word patterns of one whitespace-separated piece of a phrase
/// ("m'envoyer" is two words, as in a message).
fn pattern_words(raw: &str, script: Script) -> Vec<WordPattern> {
    let (kind, body) = if let Some(rest) = raw.strip_prefix('=') {
        ('=', rest)
    } else if let Some(rest) = raw.strip_suffix('*') {
        ('*', rest)
    } else {
        (' ', raw)
    };
    let words = words_of(body);
    let count = words.len();
    words
        .into_iter()
        .enumerate()
        .map(|(i, w)| match (kind, script) {
            ('=', _) => WordPattern::Exact(w.lower),
            ('*', _) if i + 1 == count => WordPattern::Prefix(w.lower),
            (_, Script::Stemmed(stemmer)) => WordPattern::Form(stem(STEMMERS[stemmer].1, &w.lower)),
            _ => WordPattern::Form(w.lower),
        })
        .collect()
}

impl LanguagePhrases {
    /// Whether a phrase of a script without word edges occurs in the text.
    fn fires_anywhere(&self, lower: &str) -> bool {
        self.anywhere
            .iter()
            .any(|phrase| lower.contains(phrase.as_str()))
    }
}

/// Whether `phrase` matches the words from `start` on, with at most
/// [`MAX_GAP`] words between two of its words.
fn matches_at(
    phrase: &[WordPattern],
    words: &[Word],
    stems: &[WordStems],
    start: usize,
    script: Script,
) -> bool {
    let stemmer = match script {
        Script::Stemmed(stemmer) => Some(stemmer),
        _ => None,
    };
    let matches = |pattern: &WordPattern, i: usize| match pattern {
        WordPattern::Exact(exact) => words[i].lower == *exact,
        WordPattern::Prefix(prefix) => words[i].lower.starts_with(prefix.as_str()),
        WordPattern::Form(form) => match stemmer {
            Some(stemmer) => {
                words[i].lower == *form
                    || stems.get(i).is_some_and(|stems| *stems[stemmer] == **form)
            }
            None => words[i].lower.starts_with(form.as_str()),
        },
    };
    let Some((first, rest)) = phrase.split_first() else {
        return false;
    };
    if !matches(first, start) {
        return false;
    }
    let mut at = start;
    for pattern in rest {
        let found = (at + 1..words.len().min(at + 2 + MAX_GAP)).find(|&i| matches(pattern, i));
        match found {
            Some(i) => at = i,
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_remembered_stem_is_the_stem() {
        for _ in 0..2 {
            for word in ["deliveries", "envíenme", "gönderebilir", "12345", "٣٤٥"] {
                let remembered = word_stems(word);
                for (i, (_, algorithm)) in STEMMERS.iter().enumerate() {
                    assert_eq!(*remembered[i], *stem(*algorithm, word), "{word}");
                }
            }
        }
        // The same word in two languages has two stems.
        let stems = word_stems("envíenme");
        let (Script::Stemmed(english), Script::Stemmed(spanish)) =
            (script_of("en"), script_of("es"))
        else {
            panic!("English and Spanish have stemmers");
        };
        assert_ne!(stems[english], stems[spanish]);
    }

    fn lexicon(entries: &[(&str, &str, &[&str])]) -> Lexicon {
        let mut lexicon = Lexicon::new();
        for (trigger, language, phrases) in entries {
            lexicon.entry((*trigger).to_owned()).or_default().insert(
                (*language).to_owned(),
                phrases.iter().map(|p| (*p).to_owned()).collect(),
            );
        }
        lexicon
    }

    fn triggers() -> Triggers {
        Triggers::new(
            &[
                TriggerConfig {
                    name: "send".into(),
                    reason: "wants something sent".into(),
                    fields: vec!["email".into()],
                    keywords: vec!["brochure".into()],
                },
                TriggerConfig {
                    name: "booking".into(),
                    reason: "wants to book".into(),
                    fields: vec!["name".into(), "phone".into()],
                    keywords: vec![],
                },
            ],
            &lexicon(&[
                ("send", "en", &["send me", "a copy"]),
                ("send", "es", &["me enviar", "envíame"]),
                ("send", "ja", &["送って"]),
                ("booking", "en", &["call me", "book*"]),
                ("booking", "es", &["=llámame", "=me =llamen"]),
                ("booking", "id", &["janji temu"]),
            ]),
        )
        .expect("valid")
    }

    fn names(text: &str) -> Vec<&'static str> {
        static T: LazyLock<Triggers> = LazyLock::new(triggers);
        T.fired(text)
            .iter()
            .map(|f| match f.name {
                "send" => "send",
                _ => "booking",
            })
            .collect()
    }

    #[test]
    fn word_forms_and_gaps_match() {
        assert_eq!(names("Can you SEND  me the price list?"), ["send"]);
        assert_eq!(names("could you be sending me the deck"), ["send"]);
        assert!(names("I sent it to my boss").is_empty());
        assert_eq!(names("¿Me pueden enviar la lista?"), ["send"]);
        assert_eq!(names("料金表を送っていただけますか"), ["send"]);
        assert_eq!(names("I'd like to book a table"), ["booking"]);
        assert_eq!(names("Saya mau buat janji temu"), ["booking"]);
        assert_eq!(names("the brochure please"), ["send"]);
    }

    #[test]
    fn exact_forms_and_whole_words() {
        assert_eq!(names("llámame mañana"), ["booking"]);
        assert!(names("Hola, me llamo José").is_empty());
        assert!(
            names("I read a facebook post").is_empty(),
            "book inside facebook"
        );
        assert!(names("hello there").is_empty());
    }

    #[test]
    fn a_negated_need_does_not_fire() {
        assert!(names("No need to call me, chat is fine").is_empty());
        assert!(names("I don't need a copy, thanks").is_empty());
        assert!(names("please don't call me").is_empty());
        assert_eq!(names("I don't know, just call me"), ["booking"]);
    }

    /// The triggers and lexicon of the shipped configuration.
    fn shipped_triggers() -> Triggers {
        let settings =
            crate::config::Settings::load_from(std::path::Path::new("config")).expect("config");
        Triggers::new(&settings.asks.triggers, &settings.asks.lexicon).expect("triggers")
    }

    /// The shipped lexicon: needs in other words and languages fire, plain
    /// questions and negated needs do not.
    #[test]
    fn the_shipped_lexicon_finds_needs_not_questions() {
        let triggers = shipped_triggers();
        let fired = |text: &str| -> Vec<String> {
            triggers
                .fired(text)
                .iter()
                .map(|f| f.name.to_owned())
                .collect()
        };
        for (text, need) in [
            ("Could you shoot me over the pricing PDF?", "send"),
            ("Quero marcar uma consulta", "booking"),
            (
                "where's my package? it was supposed to come Tuesday",
                "returning",
            ),
            ("can someone ring me tomorrow morning?", "booking"),
            ("¿Me podrían llamar mañana?", "booking"),
            ("Ma commande n'est toujours pas arrivée", "returning"),
            ("Перезвоните мне, пожалуйста", "booking"),
            ("주문한 물건이 아직 안 왔어요", "returning"),
            ("ช่วยส่งใบเสนอราคาให้หน่อยได้ไหมครับ", "send"),
        ] {
            assert_eq!(
                fired(text).first().map(String::as_str),
                Some(need),
                "{text}"
            );
        }
        for text in [
            "Hola, me llamo José Luis",
            "Mi chiamo Luca",
            "Bonjour, je m'appelle Jean",
            "No need to call me, chat is fine",
            "¿Cuánto cuesta el envío a Monterrey?",
            "How much is the sea view room per night?",
            "it just won't turn on",
            "send the confirmation to my work email, marco@bianchistudio.it",
            "What time do you close on Sundays?",
        ] {
            assert!(fired(text).is_empty(), "{text}: {:?}", fired(text));
        }
    }

    /// Every phrase tried at every word, without the index of first words:
    /// what [`Triggers::fired`] must agree with.
    fn fired_by_trying_every_phrase(triggers: &Triggers, text: &str) -> Vec<String> {
        let blanked =
            ADDRESS_OR_LINK.replace_all(text, |c: &regex::Captures<'_>| " ".repeat(c[0].len()));
        let text: &str = &blanked;
        let words = words_of(text);
        let lower = text.to_lowercase();
        triggers
            .triggers
            .iter()
            .filter(|trigger| {
                trigger.keywords.as_ref().is_some_and(|k| k.is_match(text))
                    || trigger.languages.iter().any(|language| {
                        let stems: Vec<WordStems> = words
                            .iter()
                            .map(|w| {
                                STEMMERS
                                    .iter()
                                    .map(|(_, a)| Rc::from(stem(*a, &w.lower)))
                                    .collect()
                            })
                            .collect();
                        language.fires_anywhere(&lower)
                            || language.phrases.iter().any(|phrase| {
                                (0..words.len()).any(|start| {
                                    matches_at(phrase, &words, &stems, start, language.script)
                                        && !NEGATED.is_match(&text[..words[start].range.start])
                                })
                            })
                    })
            })
            .map(|trigger| trigger.config.name.clone())
            .collect()
    }

    /// The index of first words changes which phrases are tried, never the
    /// answer: every message of the eval cases fires the same triggers as
    /// trying every phrase at every word.
    #[test]
    fn the_index_of_first_words_fires_what_trying_every_phrase_fires() {
        let triggers = shipped_triggers();
        let mut texts = Vec::new();
        for entry in std::fs::read_dir("evals/cases").expect("eval cases") {
            let path = entry.expect("entry").path();
            let body = std::fs::read_to_string(&path).expect("read a case file");
            for line in body.lines().filter(|l| !l.trim().is_empty()) {
                let case: serde_json::Value = serde_json::from_str(line).expect("a case");
                for turn in case["turns"].as_array().into_iter().flatten() {
                    if let Some(text) = turn["text"].as_str() {
                        texts.push(text.to_owned());
                    }
                }
            }
        }
        assert!(texts.len() > 1000, "{} texts", texts.len());
        let mut firing = 0;
        for text in &texts {
            let indexed: Vec<String> = triggers
                .fired(text)
                .iter()
                .map(|f| f.name.to_owned())
                .collect();
            assert_eq!(
                indexed,
                fired_by_trying_every_phrase(&triggers, text),
                "{text}"
            );
            firing += usize::from(!indexed.is_empty());
        }
        assert!(firing > 100, "only {firing} texts fire a trigger");
    }

    #[test]
    fn a_lexicon_for_an_unknown_trigger_is_refused() {
        let error = Triggers::new(&[], &lexicon(&[("nope", "en", &["x"])]));
        assert!(matches!(error, Err(TriggerError::UnknownTrigger(_))));
    }
}

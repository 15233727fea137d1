//! Operator-tunable prompt templates (minijinja, undefined variables are
//! errors). The prompt version is a hash of the templates' text and travels
//! with every result they produce. Templates are reloaded on SIGHUP and when
//! a file changes; a set that fails to parse or to render sample data is
//! logged and the last good set stays in use.
//!
//! The enrichment call uses `enrich_system.j2` + `enrich_turn.j2`; other
//! calls (conversation summaries, customer insights) load their own
//! [`TemplatePair`] with [`Prompts::load_pair`] and render any serialisable
//! context with [`PromptSet::render_context`], with the same checks,
//! versioning and reloading.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use minijinja::{Environment, UndefinedBehavior};
use serde::Serialize;
use sha2::{Digest, Sha256};

/// Templates of the enrichment call.
pub const SYSTEM_TEMPLATE: &str = "enrich_system.j2";
/// The per-message template.
pub const TURN_TEMPLATE: &str = "enrich_turn.j2";

/// A named pair of templates: the system message and the user message of one
/// kind of call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TemplatePair {
    /// File name of the system template.
    pub system: &'static str,
    /// File name of the user-message template.
    pub turn: &'static str,
}

impl TemplatePair {
    fn names(self) -> [&'static str; 2] {
        [self.system, self.turn]
    }
}

/// The enrichment call's templates.
pub const ENRICH_TEMPLATES: TemplatePair = TemplatePair {
    system: SYSTEM_TEMPLATE,
    turn: TURN_TEMPLATE,
};

/// Sample data for a template pair, rendered on every (re)load as a check.
pub type SampleContext = fn() -> serde_json::Value;

fn enrich_sample() -> serde_json::Value {
    serde_json::to_value(sample_context()).unwrap_or(serde_json::Value::Null)
}

/// A field as the prompt describes it (never with its value).
#[derive(Debug, Clone, Serialize)]
pub struct PromptField {
    /// Name.
    pub name: String,
    /// Human label.
    pub label: String,
    /// What it means.
    pub description: String,
    /// Format.
    pub format: String,
    /// Options of select/radio/checkbox fields.
    pub options: Vec<String>,
    /// Whether the workspace requires it.
    pub required: bool,
    /// A built-in field (name, email, phone …), whose meaning needs no
    /// description.
    pub builtin: bool,
}

/// The most recent ask, for the prompt.
#[derive(Debug, Clone, Serialize)]
pub struct LastAsk {
    /// Field asked for.
    pub field: String,
    /// Customer turns since.
    pub turns_ago: u32,
}

/// One turn shown to the model: the conversation's one turn type.
pub use crate::turn::Turn as PromptTurn;

/// Everything the enrichment templates receive.
#[derive(Debug, Clone, Serialize)]
pub struct EnrichContext {
    /// The tool's name.
    pub tool_name: String,
    /// Field definitions.
    pub fields: Vec<PromptField>,
    /// Names of fields already known.
    pub known_fields: Vec<String>,
    /// Missing fields in ask-priority order.
    pub missing_fields: Vec<String>,
    /// Fields the customer declined.
    pub declined: Vec<String>,
    /// Whether the ask policy allows an ask now.
    pub asks_allowed: bool,
    /// The last ask of this conversation.
    pub last_ask: Option<LastAsk>,
    /// The last turns before the new message.
    pub recent_turns: Vec<PromptTurn>,
    /// The new customer message.
    pub new_message: String,
    /// How the customer wants to be addressed (from an agent or an API,
    /// cut to [`MAX_INSTRUCTION_CHARS`]).
    pub agent_instructions: Option<String>,
    /// Values the patterns found in the new message whose owner the words
    /// around them do not settle.
    pub candidates: Vec<PromptCandidate>,
    /// Everything above that changes from message to message, as one
    /// compact JSON object: the shipped turn template sends only this, so a
    /// customer's text is a JSON string and can never pass for a bot or
    /// system line.
    pub turn_json: String,
}

/// Longest `agent_instructions` the prompt carries, in characters.
pub const MAX_INSTRUCTION_CHARS: usize = 300;

/// A value of unclear ownership, offered to the model with its quote.
#[derive(Debug, Clone, Serialize)]
pub struct PromptCandidate {
    /// Field name.
    pub field: String,
    /// The value as it would be stored.
    pub value: String,
    /// The customer's words it was read from.
    pub quote: String,
}

/// Rendered prompts with their version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// System message.
    pub system: String,
    /// User message.
    pub user: String,
    /// Hash of the templates.
    pub version: String,
}

/// Why templates could not be used.
#[derive(Debug, thiserror::Error)]
pub enum PromptError {
    /// A template file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A template does not parse or does not render.
    #[error("template error: {0:#}")]
    Template(#[from] minijinja::Error),
}

/// One loaded, checked set of templates.
#[derive(Debug)]
pub struct PromptSet {
    env: Environment<'static>,
    version: String,
    pair: TemplatePair,
}

impl PromptSet {
    /// Loads and checks the enrichment templates in `dir`.
    pub fn load(dir: &Path) -> Result<PromptSet, PromptError> {
        PromptSet::load_pair(dir, ENRICH_TEMPLATES, enrich_sample)
    }

    /// Loads the templates of `pair` from `dir` and checks them by rendering
    /// `sample()`.
    pub fn load_pair(
        dir: &Path,
        pair: TemplatePair,
        sample: SampleContext,
    ) -> Result<PromptSet, PromptError> {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        let mut hasher = Sha256::new();
        for name in pair.names() {
            let path = dir.join(name);
            let source = std::fs::read_to_string(&path)
                .map_err(|source| PromptError::Read { path, source })?;
            hasher.update(name.as_bytes());
            hasher.update([0]);
            hasher.update(source.as_bytes());
            env.add_template_owned(name, source)?;
        }
        let version = hex::encode(&hasher.finalize()[..6]);
        let set = PromptSet { env, version, pair };
        set.render_context(&sample())?;
        Ok(set)
    }

    /// The templates' version hash.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Renders both messages.
    pub fn render(&self, context: &EnrichContext) -> Result<Rendered, PromptError> {
        self.render_context(context)
    }

    /// Renders both messages of this set's pair with any serialisable context.
    pub fn render_context<C: Serialize + ?Sized>(
        &self,
        context: &C,
    ) -> Result<Rendered, PromptError> {
        let context = minijinja::Value::from(minijinja::value::Serde(context));
        let system = self.env.get_template(self.pair.system)?.render(&context)?;
        let user = self.env.get_template(self.pair.turn)?.render(&context)?;
        Ok(Rendered {
            system: system.trim().to_owned(),
            user: user.trim().to_owned(),
            version: self.version.clone(),
        })
    }
}

/// Sample data that exercises every variable, for checks.
pub fn sample_context() -> EnrichContext {
    EnrichContext {
        tool_name: super::TOOL_NAME.to_owned(),
        fields: vec![
            PromptField {
                name: "name".into(),
                label: "Name".into(),
                description: "The customer's name".into(),
                format: "text".into(),
                options: vec![],
                required: true,
                builtin: true,
            },
            PromptField {
                name: "company_size".into(),
                label: "Company size".into(),
                description: "Employees".into(),
                format: "select".into(),
                options: vec!["1-10".into(), "11-50".into()],
                required: false,
                builtin: false,
            },
        ],
        known_fields: vec!["name".into()],
        missing_fields: vec!["email".into()],
        declined: vec!["phone".into()],
        asks_allowed: true,
        last_ask: Some(LastAsk {
            field: "name".into(),
            turns_ago: 3,
        }),
        recent_turns: vec![PromptTurn {
            message_id: 1,
            sender: crate::event::Sender::Bot,
            text: "Hi! How can I help?".into(),
        }],
        new_message: "Can you send me the price list?".into(),
        agent_instructions: Some("formal".into()),
        candidates: vec![PromptCandidate {
            field: "email".into(),
            value: "ana@example.com".into(),
            quote: "ana@example.com".into(),
        }],
        turn_json: r#"{"new_message":"Can you send me the price list?"}"#.into(),
    }
}

/// The templates in use, swapped atomically on a good reload.
#[derive(Debug, Clone)]
pub struct Prompts {
    dir: PathBuf,
    pair: TemplatePair,
    sample: SampleContext,
    current: Arc<RwLock<Arc<PromptSet>>>,
}

impl Prompts {
    /// Loads the enrichment templates; fails when they are unusable at start-up.
    pub fn load(dir: &Path) -> Result<Prompts, PromptError> {
        Prompts::load_pair(dir, ENRICH_TEMPLATES, enrich_sample)
    }

    /// Loads the templates of `pair`, checked with `sample()`; fails when
    /// they are unusable at start-up.
    pub fn load_pair(
        dir: &Path,
        pair: TemplatePair,
        sample: SampleContext,
    ) -> Result<Prompts, PromptError> {
        let set = PromptSet::load_pair(dir, pair, sample)?;
        tracing::info!(version = set.version(), templates = pair.system, dir = %dir.display(), "prompts loaded");
        Ok(Prompts {
            dir: dir.to_owned(),
            pair,
            sample,
            current: Arc::new(RwLock::new(Arc::new(set))),
        })
    }

    /// The set in use.
    pub fn current(&self) -> Arc<PromptSet> {
        match self.current.read() {
            Ok(set) => Arc::clone(&set),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Reloads from disk; on error keeps the last good set and returns the error.
    pub fn reload(&self) -> Result<String, PromptError> {
        match PromptSet::load_pair(&self.dir, self.pair, self.sample) {
            Ok(set) => {
                let version = set.version().to_owned();
                if let Ok(mut current) = self.current.write() {
                    *current = Arc::new(set);
                }
                Ok(version)
            }
            Err(error) => Err(error),
        }
    }

    /// Reloads on SIGHUP and whenever a template file's modification time changes.
    pub async fn watch(self) {
        let mut last_seen = self.modified();
        #[cfg(unix)]
        let mut hangup =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        let mut tick = tokio::time::interval(Duration::from_secs(2));
        loop {
            #[cfg(unix)]
            let signalled = async {
                match hangup.as_mut() {
                    Some(signal) => signal.recv().await,
                    None => std::future::pending().await,
                }
            };
            #[cfg(not(unix))]
            let signalled = std::future::pending::<Option<()>>();
            tokio::select! {
                _ = signalled => self.reload_and_log("SIGHUP"),
                _ = tick.tick() => {
                    let now = self.modified();
                    if now != last_seen {
                        last_seen = now;
                        self.reload_and_log("file change");
                    }
                }
            }
        }
    }

    fn reload_and_log(&self, why: &str) {
        match self.reload() {
            Ok(version) => tracing::info!(version, trigger = why, "prompts reloaded"),
            Err(error) => tracing::error!(error = %error, trigger = why,
                kept = self.current().version(), "prompt reload failed; keeping the last good templates"),
        }
    }

    fn modified(&self) -> Vec<Option<SystemTime>> {
        self.pair
            .names()
            .iter()
            .map(|name| {
                std::fs::metadata(self.dir.join(name))
                    .and_then(|m| m.modified())
                    .ok()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("prompts")
    }

    #[test]
    fn shipped_templates_render_sample_data() {
        let set = PromptSet::load(&shipped()).expect("templates load");
        let rendered = set.render(&sample_context()).expect("render");
        assert!(rendered.system.contains("company_size"));
        assert!(rendered.user.contains("Can you send me the price list?"));
        assert!(
            !rendered.system.contains("formal"),
            "what changes per message stays out of the system prompt"
        );
        assert_eq!(rendered.version.len(), 12);
    }

    #[test]
    fn a_bad_template_keeps_the_last_good_set() {
        let dir = std::env::temp_dir().join(format!("enricher-prompts-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("dir");
        for name in ENRICH_TEMPLATES.names() {
            std::fs::copy(shipped().join(name), dir.join(name)).expect("copy");
        }
        let prompts = Prompts::load(&dir).expect("loads");
        let good = prompts.current().version().to_owned();
        std::fs::write(dir.join(TURN_TEMPLATE), "{{ no_such_variable }}").expect("write");
        assert!(prompts.reload().is_err(), "undefined variables are errors");
        assert_eq!(prompts.current().version(), good);
        std::fs::write(dir.join(TURN_TEMPLATE), "{{ new_message }} v2").expect("write");
        let newer = prompts.reload().expect("reloads");
        assert_ne!(newer, good);
        std::fs::remove_dir_all(&dir).ok();
    }
}

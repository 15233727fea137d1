//! Typed settings, layered so operators change behaviour without rebuilding:
//! `config/default.toml` < `config/$ENRICHER_ENV.toml` < `ENRICHER__SECTION__KEY`
//! environment variables. Connection URLs carry passwords, so they are
//! [`SecretString`]s: they never reach `Debug` output or logs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::decide::policy::AskPolicy;
use crate::decide::triggers::{Lexicon, TriggerConfig, Triggers};
use crate::fields::{FieldDef, FieldSet};

/// Everything the worker and the CLI read from configuration.
#[derive(Debug, Deserialize)]
pub struct Settings {
    /// RabbitMQ connection and topology names.
    pub amqp: AmqpSettings,
    /// Redis connection and cache lifetimes.
    pub redis: RedisSettings,
    /// Postgres connection.
    pub postgres: PostgresSettings,
    /// Consumer concurrency, batching and shutdown.
    pub worker: WorkerSettings,
    /// Log format and level.
    pub telemetry: TelemetrySettings,
    /// Tenants and their profile fields.
    pub workspaces: WorkspacesSettings,
    /// When and how often to ask for missing fields.
    pub asks: AsksSettings,
    /// The OpenAI-compatible model; no `base_url` means offline mode.
    pub llm: LlmSettings,
    /// Conversation summaries and customer insights.
    #[serde(default)]
    pub insights: InsightsSettings,
    /// How long anonymous profiles are kept.
    pub retention: RetentionSettings,
    /// The metrics and health endpoint of `enricher run`.
    #[serde(default)]
    pub http: HttpSettings,
    /// The HTTP API (`enricher serve`).
    #[serde(default)]
    pub api: ApiSettings,
}

/// The metrics and health endpoint (`GET /metrics`, `/healthz`, `/readyz`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct HttpSettings {
    /// `host:port` to listen on; empty or `off` switches the endpoint off.
    pub listen: String,
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            listen: "127.0.0.1:9464".to_owned(),
        }
    }
}

/// The HTTP API.
#[derive(Debug, Clone, Deserialize)]
pub struct ApiSettings {
    /// Address `enricher serve` listens on.
    pub listen: String,
}

impl Default for ApiSettings {
    fn default() -> Self {
        ApiSettings {
            listen: "127.0.0.1:8080".to_owned(),
        }
    }
}

/// Retention of profiles that never became identified.
#[derive(Debug, Clone, Deserialize)]
pub struct RetentionSettings {
    /// Days of inactivity after which a customer without an email is removed.
    pub anonymous_days: u32,
    /// Seconds between sweeps.
    pub sweep_interval_secs: u64,
}

/// When a conversation counts as ended and how the summary sweeper runs.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct InsightsSettings {
    /// Minutes without a new message after which a conversation that was
    /// never closed counts as ended.
    pub idle_minutes: u64,
    /// The same in seconds; overrides `idle_minutes` when set (for tests and
    /// short-lived demos).
    pub idle_secs: Option<u64>,
    /// How often the sweeper looks for ended conversations (a close also
    /// wakes it at once).
    pub sweep_interval_secs: u64,
    /// Minutes after which a claim whose worker died is taken over.
    pub reclaim_minutes: u64,
    /// Conversations summarised at once by one worker.
    pub concurrency: usize,
    /// Most recent messages of a conversation shown to the model.
    pub max_transcript_messages: usize,
    /// Longest answer of a summary or insights call.
    pub max_completion_tokens: u32,
}

impl Default for InsightsSettings {
    fn default() -> Self {
        InsightsSettings {
            idle_minutes: 30,
            idle_secs: None,
            sweep_interval_secs: 30,
            reclaim_minutes: 10,
            concurrency: 4,
            max_transcript_messages: 100,
            max_completion_tokens: 800,
        }
    }
}

impl InsightsSettings {
    /// Idle time after which an open conversation counts as ended.
    pub fn idle(&self) -> std::time::Duration {
        std::time::Duration::from_secs(
            self.idle_secs
                .unwrap_or(self.idle_minutes.saturating_mul(60)),
        )
    }
}

/// How the model returns structured output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputMode {
    /// A forced tool call (works with OpenAI, vLLM, Ollama, llama.cpp).
    Tools,
    /// `response_format: json_schema` with the strict schema.
    JsonSchema,
    /// `response_format: json_object`, the schema in the prompt.
    JsonObject,
}

/// The model endpoint and how it is called.
#[derive(Debug, Clone, Deserialize)]
pub struct LlmSettings {
    /// OpenAI-compatible base URL (`https://api.openai.com/v1`); empty = offline.
    #[serde(default)]
    pub base_url: Option<String>,
    /// Model name sent with each request.
    pub model: String,
    /// Name of the environment variable that holds the API key; empty for a
    /// server that takes no key (a local model server).
    pub api_key_env: String,
    /// Structured-output mode.
    pub mode: OutputMode,
    /// Deadline of one HTTP attempt: connecting, the response headers and
    /// the whole body. A call (all its attempts and waits) ends by
    /// `(max_retries + 1) × timeout_ms + max_retries × max_backoff_ms`.
    pub timeout_ms: u64,
    /// Largest model response body accepted, in bytes; a larger one fails
    /// the call (`too_large`).
    #[serde(default = "default_max_response_bytes")]
    pub max_response_bytes: usize,
    /// Retries of 429, 5xx and timeouts after the first attempt.
    pub max_retries: u32,
    /// First backoff between attempts (doubles, with jitter).
    pub backoff_ms: u64,
    /// Longest wait between attempts, `Retry-After` included.
    pub max_backoff_ms: u64,
    /// Calls in flight at once.
    pub max_concurrent: usize,
    /// Tokens one conversation may spend; the model is skipped beyond it.
    pub conversation_token_budget: u32,
    /// Sampling temperature.
    pub temperature: f32,
    /// Longest answer.
    pub max_completion_tokens: u32,
    /// Directory of the prompt templates.
    pub prompts_dir: PathBuf,
    /// A message still pending for the model this many seconds after it was
    /// stored, and not held by this worker's model stage, is queued again
    /// (checked as often). A call outcome lost in a database crash is redone
    /// this way without restarting the worker.
    pub resume_after_secs: u64,
    /// Model jobs the stage holds in memory at most (queued or running);
    /// the rest wait in Postgres and are read back in pages as room frees up.
    #[serde(default = "default_stage_capacity")]
    pub stage_capacity: usize,
}

fn default_stage_capacity() -> usize {
    1024
}

/// The ask policy and the moments that call for an ask.
#[derive(Debug, Clone, Deserialize)]
pub struct AsksSettings {
    /// Limits on asking.
    #[serde(flatten)]
    pub policy: AskPolicy,
    /// The needs that call for an ask.
    #[serde(default)]
    pub triggers: Vec<TriggerConfig>,
    /// Phrases for each need, by trigger and language.
    #[serde(default)]
    pub lexicon: Lexicon,
}

/// RabbitMQ connection and the names of everything the worker declares.
#[derive(Debug, Clone, Deserialize)]
pub struct AmqpSettings {
    /// `amqp://user:password@host:port/vhost`; secret because of the password.
    pub url: SecretString,
    /// Durable exchange chat backends publish to.
    pub inbound_exchange: String,
    /// Consistent-hash exchange bound from the inbound exchange: it spreads
    /// events over the shard queues by routing key (the conversation id).
    pub shard_exchange: String,
    /// Shard queues are named `<prefix>.0` … `<prefix>.<shards - 1>`.
    pub shard_queue_prefix: String,
    /// Number of shard queues. Every replica consumes all of them and each
    /// has one active consumer, so this bounds how many replicas share the
    /// work. All replicas must use the same number.
    pub shards: u16,
    /// The single work queue of versions before sharding: drained at
    /// start-up if it still exists, then deleted.
    pub work_queue: String,
    /// Exchange that receives events the worker cannot handle.
    pub dead_letter_exchange: String,
    /// Queue bound to the dead-letter exchange, where operators inspect failures.
    pub dead_letter_queue: String,
    /// Topic exchange for events the worker emits.
    pub outbound_exchange: String,
    /// Prefix of the TTL retry queues of versions before sharding, drained
    /// with the old work queue.
    pub retry_queue_prefix: String,
    /// Unacknowledged deliveries held at once, over all shards.
    pub prefetch: u16,
    /// Broker-side redelivery limit of each shard queue.
    pub delivery_limit: u32,
    /// Delays of the old TTL retry queues (`<retry_queue_prefix>.<delay>ms`),
    /// which name the queues to drain.
    pub retry_delays_ms: Vec<u64>,
    /// How often a replica compares the shards it is active on with its
    /// fair share (shards / replicas, rounded up) and hands the excess to
    /// the standbys of other replicas; 0 never does.
    #[serde(default = "default_rebalance_secs")]
    pub rebalance_secs: u64,
}

fn default_rebalance_secs() -> u64 {
    10
}

/// Redis connection and how long cached state lives.
#[derive(Debug, Deserialize)]
pub struct RedisSettings {
    /// `redis://host:port/db`; secret because it may hold a password.
    pub url: SecretString,
    /// Lifetime of a cached profile.
    pub profile_ttl_secs: u64,
    /// Lifetime of cached conversation state.
    pub conversation_ttl_secs: u64,
    /// Turns of a conversation kept hot for the model.
    pub recent_turns: usize,
}

/// Postgres connection.
#[derive(Debug, Deserialize)]
pub struct PostgresSettings {
    /// `postgres://user:password@host:port/db`; secret because of the password.
    pub url: SecretString,
    /// Size of the connection pool of the lanes.
    pub max_connections: u32,
    /// Size of the model stage's own pool (used only with a model).
    pub model_stage_connections: u32,
    /// Longest a statement may run before Postgres cancels it (0: no limit).
    #[serde(default = "default_statement_timeout_ms")]
    pub statement_timeout_ms: u64,
    /// Longest a statement may wait for a lock before Postgres cancels it
    /// (0: no limit).
    #[serde(default = "default_lock_timeout_ms")]
    pub lock_timeout_ms: u64,
}

fn default_max_response_bytes() -> usize {
    1024 * 1024
}

fn default_statement_timeout_ms() -> u64 {
    60_000
}

fn default_lock_timeout_ms() -> u64 {
    10_000
}

/// How the worker consumes.
#[derive(Debug, Clone, Deserialize)]
pub struct WorkerSettings {
    /// Concurrent lanes; a conversation always maps to the same lane.
    pub lanes: usize,
    /// Events committed in one transaction, at most.
    pub batch_max: usize,
    /// How long a lane waits for more events before committing a batch.
    pub batch_linger_ms: u64,
    /// First backoff before a batch that failed on a transient error
    /// (Postgres or Redis unavailable, serialization failure, lock timeout)
    /// is tried again; doubles each time. The batch is retried for as long
    /// as the fault lasts, holding its conversations.
    pub store_backoff_ms: u64,
    /// Longest backoff between those attempts.
    pub store_max_backoff_ms: u64,
    /// Time allowed to finish in-flight work after a stop signal.
    pub shutdown_grace_secs: u64,
    /// Largest accepted message text, in bytes.
    pub max_text_bytes: usize,
}

/// Log output.
#[derive(Debug, Deserialize)]
pub struct TelemetrySettings {
    /// `pretty` for people, `json` for log collectors.
    pub format: LogFormat,
    /// Default level filter, overridden by `RUST_LOG`.
    pub level: String,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Pretty,
    /// One JSON object per line.
    Json,
}

/// Tenants.
#[derive(Debug, Clone, Deserialize)]
pub struct WorkspacesSettings {
    /// Only accept events of the workspaces in `list`.
    pub restrict: bool,
    /// Settings of any workspace not in `list`.
    pub default: WorkspaceSettings,
    /// Workspaces with their own settings, by id.
    #[serde(default)]
    pub list: BTreeMap<String, WorkspaceSettings>,
}

/// One tenant's settings.
#[derive(Debug, Clone, Deserialize)]
pub struct WorkspaceSettings {
    /// Extract facts and ask questions; messages are stored either way.
    pub enrichment: bool,
    /// ISO 3166 region used to read phone numbers written without a country code.
    pub default_region: Option<String>,
    /// Fields the worker tries to collect.
    pub required: Vec<String>,
    /// Custom profile fields besides the built-in ones.
    #[serde(default)]
    pub fields: Vec<FieldDef>,
}

impl WorkspacesSettings {
    /// The settings that apply to `workspace_id`, or `None` when workspaces are
    /// restricted and this one is not listed.
    pub fn for_workspace(&self, workspace_id: &str) -> Option<&WorkspaceSettings> {
        match self.list.get(workspace_id) {
            Some(settings) => Some(settings),
            None if self.restrict => None,
            None => Some(&self.default),
        }
    }
}

impl WorkspaceSettings {
    /// The field set this workspace's settings describe.
    pub fn field_set(&self) -> Result<FieldSet, ConfigError> {
        FieldSet::new(self.fields.clone(), &self.required)
            .map_err(|e| ConfigError::Invalid(format!("workspace fields: {e}")))
    }
}

/// Why settings could not be loaded; always one line naming the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A file could not be read or a value has the wrong type.
    #[error("configuration: {0}")]
    Load(#[from] config::ConfigError),
    /// A value has the right type but is not acceptable.
    #[error("configuration: {0}")]
    Invalid(String),
}

impl Settings {
    /// Loads settings from `dir` (normally `config/`), the `ENRICHER_ENV`
    /// overlay and `ENRICHER__*` variables, and validates them.
    pub fn load_from(dir: &Path) -> Result<Settings, ConfigError> {
        let environment = std::env::var("ENRICHER_ENV").ok();
        let mut builder =
            config::Config::builder().add_source(config::File::from(dir.join("default.toml")));
        if let Some(environment) = environment.filter(|e| !e.is_empty()) {
            builder =
                builder.add_source(config::File::from(dir.join(format!("{environment}.toml"))));
        }
        let settings: Settings = builder
            .add_source(
                config::Environment::with_prefix("ENRICHER")
                    .prefix_separator("__")
                    .separator("__")
                    .list_separator(",")
                    .with_list_parse_key("amqp.retry_delays_ms")
                    .with_list_parse_key("workspaces.default.required")
                    .try_parsing(true),
            )
            .build()?
            .try_deserialize()?;
        settings.validate()?;
        Ok(settings)
    }

    /// Loads settings from the config directory next to the working directory,
    /// or from `ENRICHER_CONFIG_DIR`.
    pub fn load() -> Result<Settings, ConfigError> {
        Settings::load_from(&config_dir())
    }

    fn validate(&self) -> Result<(), ConfigError> {
        check_url("amqp.url", &self.amqp.url, &["amqp://", "amqps://"])?;
        check_url(
            "redis.url",
            &self.redis.url,
            &["redis://", "rediss://", "unix://"],
        )?;
        check_url(
            "postgres.url",
            &self.postgres.url,
            &["postgres://", "postgresql://"],
        )?;
        check_positive("worker.lanes", self.worker.lanes)?;
        check_positive("worker.batch_max", self.worker.batch_max)?;
        check_positive(
            "worker.store_backoff_ms",
            self.worker.store_backoff_ms as usize,
        )?;
        if self.worker.store_max_backoff_ms < self.worker.store_backoff_ms {
            return Err(invalid(
                "worker.store_max_backoff_ms",
                "must be at least worker.store_backoff_ms",
            ));
        }
        check_positive("amqp.shards", usize::from(self.amqp.shards))?;
        check_positive("worker.max_text_bytes", self.worker.max_text_bytes)?;
        check_positive("amqp.prefetch", self.amqp.prefetch as usize)?;
        check_positive("llm.resume_after_secs", self.llm.resume_after_secs as usize)?;
        check_positive("llm.stage_capacity", self.llm.stage_capacity)?;
        check_positive(
            "postgres.max_connections",
            self.postgres.max_connections as usize,
        )?;
        if self.amqp.retry_delays_ms.contains(&0) {
            return Err(invalid("amqp.retry_delays_ms", "delays must be above zero"));
        }
        Triggers::new(&self.asks.triggers, &self.asks.lexicon)
            .map_err(|e| invalid("asks.triggers", &e.to_string()))?;
        for trigger in &self.asks.triggers {
            if trigger.fields.is_empty() {
                return Err(invalid(
                    &format!("asks.triggers.{}", trigger.name),
                    "needs at least one field",
                ));
            }
        }
        let workspaces = std::iter::once(("default", &self.workspaces.default))
            .chain(self.workspaces.list.iter().map(|(id, w)| (id.as_str(), w)));
        for (id, workspace) in workspaces {
            workspace
                .field_set()
                .map_err(|e| invalid(&format!("workspaces.{id}.fields"), &e.to_string()))?;
            if let Some(region) = &workspace.default_region
                && !is_region_code(region)
            {
                return Err(invalid(
                    &format!("workspaces.{id}.default_region"),
                    "expected a two-letter ISO 3166 code such as US",
                ));
            }
        }
        Ok(())
    }
}

/// Where configuration files live: `ENRICHER_CONFIG_DIR`, else `./config`.
pub fn config_dir() -> PathBuf {
    std::env::var_os("ENRICHER_CONFIG_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("config"))
}

fn invalid(key: &str, reason: &str) -> ConfigError {
    ConfigError::Invalid(format!("{key}: {reason}"))
}

fn check_url(key: &str, url: &SecretString, schemes: &[&str]) -> Result<(), ConfigError> {
    let url = url.expose_secret();
    if schemes.iter().any(|scheme| url.starts_with(scheme)) {
        Ok(())
    } else {
        Err(invalid(
            key,
            &format!("must start with one of {}", schemes.join(", ")),
        ))
    }
}

fn check_positive(key: &str, value: usize) -> Result<(), ConfigError> {
    if value == 0 {
        Err(invalid(key, "must be at least 1"))
    } else {
        Ok(())
    }
}

fn is_region_code(region: &str) -> bool {
    region.len() == 2 && region.chars().all(|c| c.is_ascii_uppercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo_config() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config")
    }

    #[test]
    fn shipped_defaults_load_and_validate() {
        let settings = Settings::load_from(&repo_config()).expect("defaults load");
        assert_eq!(settings.amqp.inbound_exchange, "enrich.in");
        assert_eq!(settings.workspaces.default.required, vec!["name", "email"]);
    }

    #[test]
    fn debug_output_hides_passwords() {
        let settings = Settings::load_from(&repo_config()).expect("defaults load");
        let printed = format!("{settings:?}");
        assert!(!printed.contains("guest:guest"), "{printed}");
        assert!(!printed.contains("enricher:enricher"), "{printed}");
    }

    #[test]
    fn restricted_workspaces_reject_unlisted_ids() {
        let mut settings = Settings::load_from(&repo_config()).expect("defaults load");
        assert!(settings.workspaces.for_workspace("anything").is_some());
        settings.workspaces.restrict = true;
        assert!(settings.workspaces.for_workspace("anything").is_none());
    }

    #[test]
    fn bad_url_scheme_names_the_key() {
        let err = check_url("redis.url", &SecretString::from("http://x"), &["redis://"])
            .expect_err("http is not redis");
        assert!(err.to_string().contains("redis.url"), "{err}");
    }
}

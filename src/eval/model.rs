//! Live and replay proposers: the eval runner asking a real model exactly
//! what the worker's model stage would ask (same context builder, same
//! request builder), optionally recording each answer as a cassette, or
//! answering from cassettes with no endpoint at all.
//!
//! Cassettes live in `evals/cassettes/<model>/<prompt version>/<request hash>.json`.
//! A replay that finds no cassette for a request says so, and says whether
//! cassettes exist for other prompt versions (stale), instead of reusing them.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::runner::{ProposalRequest, ProposalResult, Proposer};
use crate::llm::context;
use crate::llm::model_client::{ModelClient, RequestBuilder, interpret};
use crate::llm::prompts::PromptTurn;
use crate::llm::schema::FieldEnums;
use crate::store::asks::DecisionState;

/// Turns of history shown to the model, as in the worker's default.
const RECENT_TURNS: usize = 10;

/// One recorded answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Cassette {
    /// The request sent.
    pub request: Value,
    /// `choices[0].message` of the answer.
    pub message: Value,
    /// `choices[0].finish_reason`.
    pub finish_reason: Option<String>,
    /// Prompt tokens.
    pub prompt_tokens: u32,
    /// Completion tokens.
    pub completion_tokens: u32,
    /// Latency of the recorded call.
    pub latency_ms: u64,
    /// Why the call failed (its deadline passed, the server answered an
    /// error), for a recorded failure: a replay fails the same way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Where answers come from.
pub enum Source {
    /// A configured endpoint; answers are recorded when `record` is set.
    Live {
        /// The client.
        enricher: Box<ModelClient>,
        /// Write cassettes.
        record: bool,
    },
    /// Cassettes only.
    Replay,
}

/// A proposer backed by a model, live or replayed.
pub struct ModelProposer {
    source: Source,
    builder: RequestBuilder,
    cassettes: PathBuf,
    missing: AtomicUsize,
    stale: AtomicUsize,
    recorded: AtomicUsize,
}

/// Cassette bookkeeping after a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CassetteReport {
    /// Requests with no cassette at all.
    pub missing: usize,
    /// Requests whose cassettes exist only for other prompt versions.
    pub stale: usize,
    /// Cassettes written.
    pub recorded: usize,
}

/// The stable key of a request.
pub fn request_hash(request: &Value) -> String {
    let digest = Sha256::digest(request.to_string().as_bytes());
    hex::encode(&digest[..16])
}

fn safe_segment(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

impl ModelProposer {
    /// A proposer for `source`, keeping cassettes under `cassettes`.
    pub fn new(source: Source, builder: RequestBuilder, cassettes: &Path) -> ModelProposer {
        ModelProposer {
            source,
            builder,
            cassettes: cassettes.to_owned(),
            missing: AtomicUsize::new(0),
            stale: AtomicUsize::new(0),
            recorded: AtomicUsize::new(0),
        }
    }

    /// What happened to cassettes during the run.
    pub fn report(&self) -> CassetteReport {
        CassetteReport {
            missing: self.missing.load(Ordering::Relaxed),
            stale: self.stale.load(Ordering::Relaxed),
            recorded: self.recorded.load(Ordering::Relaxed),
        }
    }

    fn model_dir(&self) -> PathBuf {
        self.cassettes.join(safe_segment(self.builder.model()))
    }

    async fn answer(&self, request: &ProposalRequest<'_>) -> ProposalResult {
        let state = DecisionState {
            known: request.ctx.known.clone(),
            asks: request.ctx.asks.clone(),
        };
        let fields = request.ctx.fields;
        let askable = context::askable_fields(
            fields,
            &state,
            request.stage,
            request.ctx.policy,
            state.asks.customer_turn,
        );
        let enums = FieldEnums::for_fields(fields, askable.clone());
        let recent: Vec<PromptTurn> = request
            .history
            .iter()
            .rev()
            .take(RECENT_TURNS)
            .rev()
            .zip(1..)
            .map(|(turn, message_id)| PromptTurn {
                message_id,
                sender: turn.sender,
                text: turn.text.clone(),
            })
            .collect();
        let prompt = context::prompt_context(
            fields,
            &state,
            askable,
            recent,
            request.ctx.text,
            None,
            &request.stage.candidates,
        );
        let (body, version) = match self.builder.request(&prompt, &enums) {
            Ok(built) => built,
            Err(error) => return ProposalResult::failed(format!("prompt error: {error}")),
        };
        let path = self
            .model_dir()
            .join(safe_segment(&version))
            .join(format!("{}.json", request_hash(&body)));
        match &self.source {
            Source::Live { enricher, record } => self.live(enricher, *record, &body, &path).await,
            Source::Replay => self.replay(&path),
        }
    }

    async fn live(
        &self,
        enricher: &ModelClient,
        record: bool,
        body: &Value,
        path: &Path,
    ) -> ProposalResult {
        let report = enricher.complete(body).await;
        let latency_ms = report.latency.as_millis() as u64;
        let completion = match report.result {
            Ok(completion) => completion,
            Err(error) => {
                if record {
                    self.record(
                        path,
                        &Cassette {
                            request: body.clone(),
                            message: Value::Null,
                            finish_reason: None,
                            prompt_tokens: 0,
                            completion_tokens: 0,
                            latency_ms,
                            error: Some(error.to_string()),
                        },
                    );
                }
                return ProposalResult::failed(format!("model call failed: {error}"));
            }
        };
        if record {
            self.record(
                path,
                &Cassette {
                    request: body.clone(),
                    message: completion.message.clone(),
                    finish_reason: completion.finish_reason.clone(),
                    prompt_tokens: completion.prompt_tokens,
                    completion_tokens: completion.completion_tokens,
                    latency_ms,
                    error: None,
                },
            );
        }
        answered(
            &completion.message,
            completion.finish_reason.as_deref(),
            (completion.prompt_tokens, completion.completion_tokens),
            None,
        )
    }

    fn record(&self, path: &Path, cassette: &Cassette) {
        match write_cassette(path, cassette) {
            Ok(()) => {
                self.recorded.fetch_add(1, Ordering::Relaxed);
            }
            Err(error) => {
                tracing::warn!(error = %error, path = %path.display(), "could not write a cassette")
            }
        }
    }

    fn replay(&self, path: &Path) -> ProposalResult {
        let cassette: Cassette = match std::fs::read_to_string(path)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
        {
            Some(cassette) => cassette,
            None => {
                let version_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
                let others = std::fs::read_dir(self.model_dir())
                    .map(|entries| {
                        entries
                            .filter_map(Result::ok)
                            .any(|e| e.path() != version_dir)
                    })
                    .unwrap_or(false);
                if others {
                    self.stale.fetch_add(1, Ordering::Relaxed);
                    return ProposalResult::failed(
                        "stale cassettes: recorded for another prompt version",
                    );
                }
                self.missing.fetch_add(1, Ordering::Relaxed);
                return ProposalResult::failed("no cassette for this request");
            }
        };
        replayed(&cassette)
    }
}

/// The answer a cassette holds: the recorded failure, or the recorded reply.
fn replayed(cassette: &Cassette) -> ProposalResult {
    if let Some(error) = &cassette.error {
        return ProposalResult::failed(format!("model call failed: {error}"));
    }
    answered(
        &cassette.message,
        cassette.finish_reason.as_deref(),
        (cassette.prompt_tokens, cassette.completion_tokens),
        Some(Duration::from_millis(cassette.latency_ms)),
    )
}

/// One model answer read as a proposal, with its (prompt, completion)
/// tokens and, for a replay, the recorded latency.
fn answered(
    message: &Value,
    finish_reason: Option<&str>,
    (prompt_tokens, completion_tokens): (u32, u32),
    latency: Option<Duration>,
) -> ProposalResult {
    ProposalResult {
        proposal: interpret(message, finish_reason).map_err(|e| e.to_string()),
        calls: 1,
        prompt_tokens: u64::from(prompt_tokens),
        completion_tokens: u64::from(completion_tokens),
        latency,
    }
}

fn write_cassette(path: &Path, cassette: &Cassette) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let text = serde_json::to_string_pretty(cassette).map_err(std::io::Error::other)?;
    std::fs::write(path, text)
}

impl Proposer for ModelProposer {
    fn name(&self) -> &str {
        match self.source {
            Source::Live { .. } => "live",
            Source::Replay => "replay",
        }
    }

    fn gated(&self) -> bool {
        true
    }

    fn propose<'a>(&'a self, request: &'a ProposalRequest<'a>) -> BoxFuture<'a, ProposalResult> {
        self.answer(request).boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_hashes_are_stable_and_distinct() {
        let a = serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
        let b = serde_json::json!({"messages": [{"content": "hi", "role": "user"}], "model": "m"});
        assert_eq!(
            request_hash(&a),
            request_hash(&b),
            "key order does not matter"
        );
        let c =
            serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "hello"}]});
        assert_ne!(request_hash(&a), request_hash(&c));
        assert_eq!(safe_segment("Qwen/Qwen2.5-7B"), "Qwen_Qwen2.5-7B");
    }

    #[test]
    fn a_recorded_failure_replays_as_the_same_failure() {
        let failed: Cassette = serde_json::from_value(serde_json::json!({
            "request": {}, "message": null, "finish_reason": null,
            "prompt_tokens": 0, "completion_tokens": 0, "latency_ms": 60000,
            "error": "no answer within the 60 s deadline"
        }))
        .expect("cassette");
        let replayed_failure = replayed(&failed);
        assert_eq!(
            replayed_failure.proposal.expect_err("a failure"),
            "model call failed: no answer within the 60 s deadline"
        );
        // Cassettes recorded before failures were kept still read.
        let answered: Cassette = serde_json::from_value(serde_json::json!({
            "request": {}, "message": {"role": "assistant", "content": "no tool call"},
            "finish_reason": "stop", "prompt_tokens": 10, "completion_tokens": 3,
            "latency_ms": 5
        }))
        .expect("cassette without an error");
        assert!(answered.error.is_none());
        assert_eq!(replayed(&answered).calls, 1);
    }
}

//! One enrichment call: render the prompts, send the request in the
//! configured structured-output mode, and turn whatever comes back into a
//! [`Proposal`] for the decision core, or into a classified failure.

use serde_json::Value;

use super::http::{CallReport, HttpClient, LlmError};
use super::prompts::{EnrichContext, PromptError, Prompts};
use super::request::CallShape;
use super::schema::{self, FieldEnums};
use crate::config::LlmSettings;
use crate::decide::Proposal;
use crate::store::llm_calls::Accounting;

/// Outcome of one enrichment call, with its accounting.
#[derive(Debug, Clone)]
pub struct ModelCall {
    /// The proposal, or why there is none.
    pub proposal: Result<Proposal, CallFailure>,
    /// What the call cost.
    pub accounting: Accounting,
}

impl ModelCall {
    /// Stable outcome code for the LLM-calls table.
    pub fn outcome(&self) -> &'static str {
        match &self.proposal {
            Ok(_) => "ok",
            Err(failure) => failure.outcome(),
        }
    }
}

/// Why a call gave no proposal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallFailure {
    /// The HTTP call failed.
    #[error(transparent)]
    Llm(#[from] LlmError),
    /// The model refused.
    #[error("refusal")]
    Refusal,
    /// The answer was cut off (`finish_reason: length`).
    #[error("truncated")]
    Truncated,
    /// The answer is not the tool call asked for.
    #[error("malformed output: {0}")]
    MalformedOutput(String),
    /// The prompts could not be rendered.
    #[error("prompt error: {0}")]
    Prompt(String),
}

impl CallFailure {
    /// Stable outcome code.
    pub fn outcome(&self) -> &'static str {
        match self {
            CallFailure::Llm(error) => error.outcome(),
            CallFailure::Refusal => "refusal",
            CallFailure::Truncated => "truncated",
            CallFailure::MalformedOutput(_) => "malformed_output",
            CallFailure::Prompt(_) => "prompt_error",
        }
    }
}

/// Builds enrichment requests: prompts, model and output mode. Needs no
/// endpoint, so recorded answers can be looked up by request offline.
#[derive(Clone)]
pub struct RequestBuilder {
    prompts: Prompts,
    shape: CallShape,
}

/// Calls the model for enrichment.
#[derive(Clone)]
pub struct ModelClient {
    client: HttpClient,
    builder: RequestBuilder,
    observer: Option<std::sync::Arc<dyn CallObserver>>,
}

/// Told about every finished call (the worker's metrics), with the call's
/// purpose (`enrich`, `summary`, `insights`), outcome code and accounting.
pub trait CallObserver: Send + Sync {
    /// One call finished.
    fn model_call(&self, purpose: &'static str, outcome: &'static str, accounting: &Accounting);
}

/// The purpose of a request, from the name of the tool it asks for (in
/// `json_object` mode the system prompt names it): the summary and insights
/// tools are `record_conversation_summary` and `record_customer_insights`.
fn purpose_of(request: &Value) -> &'static str {
    let name = request
        .pointer("/tool_choice/function/name")
        .or_else(|| request.pointer("/response_format/json_schema/name"))
        .or_else(|| request.pointer("/messages/0/content"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    if name.contains("record_customer_insights") {
        "insights"
    } else if name.contains("record_conversation_summary") {
        "summary"
    } else {
        "enrich"
    }
}

impl RequestBuilder {
    /// A builder for the configured model and mode.
    pub fn new(settings: &LlmSettings, prompts: Prompts) -> RequestBuilder {
        RequestBuilder {
            prompts,
            shape: CallShape::new(settings, settings.max_completion_tokens),
        }
    }

    /// The model name.
    pub fn model(&self) -> &str {
        &self.shape.model
    }

    /// The prompt version in use.
    pub fn prompt_version(&self) -> String {
        self.prompts.current().version().to_owned()
    }

    /// Builds the request body for `context` (also used to key recorded answers).
    pub fn request(
        &self,
        context: &EnrichContext,
        enums: &FieldEnums,
    ) -> Result<(Value, String), PromptError> {
        let rendered = self.prompts.current().render(context)?;
        let body = self.shape.request(&rendered, schema::tool(enums));
        Ok((body, rendered.version))
    }
}

impl ModelClient {
    /// Builds the enricher from settings; `None` when no endpoint is configured.
    pub fn from_settings(
        settings: &LlmSettings,
        prompts: Prompts,
    ) -> Result<Option<ModelClient>, reqwest::Error> {
        let Some(base_url) = settings
            .base_url
            .as_deref()
            .filter(|u| !u.trim().is_empty())
        else {
            return Ok(None);
        };
        Ok(Some(ModelClient {
            client: HttpClient::new(settings, base_url)?,
            builder: RequestBuilder::new(settings, prompts),
            observer: None,
        }))
    }

    /// The same client, telling `observer` about every call.
    pub fn observed_by(mut self, observer: std::sync::Arc<dyn CallObserver>) -> ModelClient {
        self.observer = Some(observer);
        self
    }

    /// The request builder.
    pub fn builder(&self) -> &RequestBuilder {
        &self.builder
    }

    /// The model name.
    pub fn model(&self) -> &str {
        self.builder.model()
    }

    /// Sends a request as is and returns the raw completion.
    pub async fn complete(&self, request: &Value) -> CallReport {
        self.client.chat(request).await
    }

    /// Sends `request`, reads the answer with `read`, and accounts for the call.
    pub async fn exchange<T>(
        &self,
        request: &Value,
        model: &str,
        prompt_version: String,
        read: impl FnOnce(&Value, Option<&str>) -> Result<T, CallFailure>,
    ) -> (Result<T, CallFailure>, Accounting) {
        let CallReport {
            result,
            attempts,
            latency,
        } = self.client.chat(request).await;
        let (output, prompt_tokens, completion_tokens) = match result {
            Ok(completion) => {
                let output = read(&completion.message, completion.finish_reason.as_deref());
                let output = match output {
                    Err(CallFailure::MalformedOutput(_))
                        if used_the_whole_answer_limit(request, completion.completion_tokens) =>
                    {
                        Err(CallFailure::Truncated)
                    }
                    other => other,
                };
                (
                    output,
                    completion.prompt_tokens,
                    completion.completion_tokens,
                )
            }
            Err(error) => (Err(CallFailure::Llm(error)), 0, 0),
        };
        let accounting = Accounting {
            model: model.to_owned(),
            prompt_version,
            prompt_tokens,
            completion_tokens,
            attempts,
            latency,
        };
        if let Some(observer) = &self.observer {
            let outcome = match &output {
                Ok(_) => "ok",
                Err(failure) => failure.outcome(),
            };
            observer.model_call(purpose_of(request), outcome, &accounting);
        }
        (output, accounting)
    }

    /// Sends `request` and interprets the answer.
    pub async fn call(&self, request: &Value, prompt_version: String) -> ModelCall {
        let (proposal, accounting) = self
            .exchange(request, self.builder.model(), prompt_version, interpret)
            .await;
        ModelCall {
            proposal,
            accounting,
        }
    }

    /// Renders, sends and interprets.
    pub async fn propose(&self, context: &EnrichContext, enums: &FieldEnums) -> ModelCall {
        match self.builder.request(context, enums) {
            Ok((request, version)) => self.call(&request, version).await,
            Err(error) => ModelCall {
                proposal: Err(CallFailure::Prompt(error.to_string())),
                accounting: Accounting::unsent(
                    self.builder.model(),
                    &self.builder.prompt_version(),
                ),
            },
        }
    }
}

/// The tool's arguments in a completion message, whichever way the server
/// delivered them (a tool call, or JSON in the content), after refusals and
/// truncated answers are turned away.
pub fn tool_arguments(message: &Value, finish_reason: Option<&str>) -> Result<Value, CallFailure> {
    if message
        .get("refusal")
        .is_some_and(|r| !r.is_null() && r.as_str() != Some(""))
    {
        return Err(CallFailure::Refusal);
    }
    if finish_reason == Some("length") {
        return Err(CallFailure::Truncated);
    }
    message
        .get("tool_calls")
        .and_then(|calls| calls.get(0))
        .and_then(|call| call.get("function"))
        .and_then(|function| function.get("arguments"))
        .cloned()
        .or_else(|| {
            message
                .get("content")
                .filter(|c| c.as_str().is_some_and(|s| !s.trim().is_empty()))
                .cloned()
        })
        .ok_or_else(|| CallFailure::MalformedOutput("no tool call and no content".into()))
}

/// Whether an answer used every token the request allowed. Some servers
/// (llama-cpp-python) report `finish_reason: tool_calls` for a tool call cut
/// off at the limit; an answer that does not parse and stopped exactly there
/// was truncated, not malformed.
fn used_the_whole_answer_limit(request: &Value, completion_tokens: u32) -> bool {
    ["max_completion_tokens", "max_tokens"]
        .iter()
        .find_map(|key| request.get(key).and_then(Value::as_u64))
        .is_some_and(|limit| limit > 0 && u64::from(completion_tokens) >= limit)
}

/// Reads the proposal out of a completion message.
pub fn interpret(message: &Value, finish_reason: Option<&str>) -> Result<Proposal, CallFailure> {
    let arguments = tool_arguments(message, finish_reason)?;
    schema::parse_output(&arguments)
        .map(Proposal::from)
        .map_err(CallFailure::MalformedOutput)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::TOOL_NAME;
    use serde_json::json;

    #[test]
    fn tool_calls_and_content_both_work() {
        let tool = json!({"tool_calls": [{"type": "function", "function": {"name": TOOL_NAME,
            "arguments": "{\"facts\":[],\"ask\":{\"field\":\"email\",\"question\":\"Email?\",\"reason\":\"send\"},\"declined\":[],\"language\":\"en\"}"}}]});
        assert_eq!(
            interpret(&tool, Some("tool_calls")).expect("ok").asks[0].field,
            "email"
        );
        let content = json!({"content": "{\"facts\":[{\"field\":\"name\",\"value\":\"Ann\",\"quote\":\"I'm Ann\"}]}"});
        assert_eq!(
            interpret(&content, Some("stop")).expect("ok").facts[0].value,
            "Ann"
        );
    }

    #[test]
    fn an_answer_stopped_at_the_token_limit_counts_as_truncated() {
        let request = json!({"model": "m", "max_tokens": 400});
        assert!(used_the_whole_answer_limit(&request, 400));
        assert!(!used_the_whole_answer_limit(&request, 399));
        assert!(used_the_whole_answer_limit(
            &json!({"max_completion_tokens": 10}),
            10
        ));
        assert!(!used_the_whole_answer_limit(&json!({"model": "m"}), 4096));
    }

    #[test]
    fn failures_are_classified() {
        assert_eq!(
            interpret(&json!({"refusal": "no"}), None),
            Err(CallFailure::Refusal)
        );
        assert_eq!(
            interpret(&json!({"content": "{\"facts\":["}), Some("length")),
            Err(CallFailure::Truncated)
        );
        assert!(matches!(
            interpret(&json!({"content": "hello"}), None),
            Err(CallFailure::MalformedOutput(_))
        ));
        assert!(matches!(
            interpret(&json!({"content": null}), None),
            Err(CallFailure::MalformedOutput(_))
        ));
    }
}

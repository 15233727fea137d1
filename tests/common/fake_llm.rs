//! A scripted OpenAI-compatible server in the test process: each test says
//! how the "model" answers, as a function of the request it receives.

#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

pub struct FakeModel {
    pub server: MockServer,
    pub calls: Arc<AtomicUsize>,
}

struct Scripted<F> {
    script: F,
    calls: Arc<AtomicUsize>,
}

impl<F> Respond for Scripted<F>
where
    F: Fn(usize, &Value) -> ResponseTemplate + Send + Sync,
{
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        let body: Value = serde_json::from_slice(&request.body).unwrap_or(Value::Null);
        (self.script)(n, &body)
    }
}

impl FakeModel {
    /// Starts a server whose answers come from `script(call_number, request)`.
    pub async fn start<F>(script: F) -> FakeModel
    where
        F: Fn(usize, &Value) -> ResponseTemplate + Send + Sync + 'static,
    {
        let server = MockServer::start().await;
        let calls = Arc::new(AtomicUsize::new(0));
        Mock::given(method("POST"))
            .and(path("/v1/chat/completions"))
            .respond_with(Scripted {
                script,
                calls: Arc::clone(&calls),
            })
            .mount(&server)
            .await;
        FakeModel { server, calls }
    }

    pub fn base_url(&self) -> String {
        format!("{}/v1", self.server.uri())
    }

    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

/// The new customer message the prompt carries: the user message is one
/// JSON object whose `new_message` holds it.
pub fn new_message(request: &Value) -> String {
    let user = request["messages"][1]["content"]
        .as_str()
        .unwrap_or_default();
    serde_json::from_str::<Value>(user)
        .ok()
        .and_then(|payload| payload["new_message"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// A completion that calls the enrichment tool with `arguments`.
pub fn tool_call(arguments: Value) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({
        "id": "chatcmpl-test", "object": "chat.completion", "created": 0, "model": "fake",
        "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": null,
            "tool_calls": [{"id": "call_1", "type": "function", "function": {
                "name": "record_enrichment", "arguments": arguments.to_string()}}]}}],
        "usage": {"prompt_tokens": 420, "completion_tokens": 35, "total_tokens": 455}
    }))
}

/// Tool arguments with facts `(field, value, quote)` and an optional ask.
pub fn proposal(facts: &[(&str, &str, &str)], ask: Option<&str>) -> Value {
    json!({
        "facts": facts.iter().map(|(f, v, q)| json!({"field": f, "value": v, "quote": q})).collect::<Vec<_>>(),
        "ask": ask.map(|field| json!({"field": field, "question": format!("Could you share your {field}?"), "reason": "test"})),
        "declined": [],
        "language": "en"
    })
}

/// Nothing to record, no ask.
pub fn nothing() -> ResponseTemplate {
    tool_call(proposal(&[], None))
}

//! A stand-in OpenAI-compatible model for `enricher bench`: answers every
//! chat completion after a fixed delay with a tool call that records nothing,
//! so the benchmark measures the worker around the model, not the model.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::routing::post;
use serde_json::{Value, json};

/// Serves on an ephemeral loopback port until the process ends; returns its address.
pub async fn start(delay: Duration) -> std::io::Result<SocketAddr> {
    let app = Router::new().route(
        "/v1/chat/completions",
        post(move |Json(_request): Json<Value>| async move {
            tokio::time::sleep(delay).await;
            Json(json!({
                "id": "bench", "object": "chat.completion", "created": 0, "model": "bench-model",
                "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {"role": "assistant", "content": null,
                    "tool_calls": [{"id": "call", "type": "function", "function": {"name": crate::llm::TOOL_NAME,
                        "arguments": "{\"facts\":[],\"ask\":null,\"declined\":[],\"language\":\"en\"}"}}]}}],
                "usage": {"prompt_tokens": 500, "completion_tokens": 20, "total_tokens": 520}
            }))
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            tracing::error!(error = %error, "bench model server stopped");
        }
    });
    Ok(address)
}

//! The OpenAI-compatible HTTP client: async-openai with a transport of ours
//! underneath that bounds every attempt by a timeout, retries 429 and 5xx
//! with exponential backoff and jitter (honouring `Retry-After`), counts the
//! attempts, and limits concurrent calls. Responses are returned as JSON
//! values so servers that omit or vary fields still parse.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use async_openai::Client;
use async_openai::config::OpenAIConfig;
use async_openai::error::OpenAIError;
use async_openai::middleware::HttpRequestFactory;
use serde_json::Value;
use tokio::sync::Semaphore;

use crate::config::LlmSettings;

tokio::task_local! {
    static ATTEMPTS: Cell<u32>;
}

/// How failed attempts are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// Bound of one attempt.
    pub timeout: Duration,
    /// First backoff; doubles each retry.
    pub backoff: Duration,
    /// Longest wait, also for `Retry-After`.
    pub max_backoff: Duration,
}

impl RetryPolicy {
    /// The wait before retry number `retry` (1-based): `Retry-After` when the
    /// server sent one, else exponential backoff with ±50 % jitter.
    pub fn delay(&self, retry: u32, retry_after: Option<Duration>) -> Duration {
        let delay = match retry_after {
            Some(wait) => wait,
            None => {
                let base = self
                    .backoff
                    .saturating_mul(2_u32.saturating_pow(retry.saturating_sub(1)));
                base.mul_f64(0.5 + jitter())
            }
        };
        delay.min(self.max_backoff)
    }
}

fn jitter() -> f64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    f64::from(nanos % 1000) / 1000.0
}

/// Reads `Retry-After` as seconds or an HTTP date.
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(seconds) = value.parse::<f64>() {
        return (seconds >= 0.0).then(|| Duration::from_secs_f64(seconds));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    (at.with_timezone(&chrono::Utc) - chrono::Utc::now())
        .to_std()
        .ok()
}

/// Errors of the transport itself (not of the API).
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// Every attempt timed out.
    #[error("timed out after {0} attempts")]
    Timeout(u32),
}

/// The tower service under async-openai.
#[derive(Clone)]
pub struct RetryingTransport {
    http: reqwest::Client,
    policy: RetryPolicy,
}

impl tower::Service<HttpRequestFactory> for RetryingTransport {
    type Response = reqwest::Response;
    type Error = OpenAIError;
    type Future = Pin<Box<dyn Future<Output = Result<reqwest::Response, OpenAIError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), OpenAIError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, factory: HttpRequestFactory) -> Self::Future {
        let http = self.http.clone();
        let policy = self.policy;
        Box::pin(async move {
            let mut attempt = 0;
            loop {
                attempt += 1;
                let _ = ATTEMPTS.try_with(|count| count.set(attempt));
                let retries_left = attempt <= policy.max_retries;
                let request = factory.build().await?;
                match tokio::time::timeout(policy.timeout, http.execute(request)).await {
                    Err(_) if retries_left => {}
                    Err(_) => {
                        return Err(OpenAIError::Boxed(Box::new(TransportError::Timeout(
                            attempt,
                        ))));
                    }
                    Ok(Err(error))
                        if retries_left && (error.is_connect() || error.is_timeout()) => {}
                    Ok(Err(error)) => return Err(OpenAIError::Reqwest(error)),
                    Ok(Ok(response)) => {
                        let status = response.status();
                        let retriable = status.as_u16() == 429 || status.is_server_error();
                        if !(retriable && retries_left) {
                            return Ok(response);
                        }
                        let wait = policy.delay(attempt, retry_after(response.headers()));
                        tracing::warn!(
                            status = status.as_u16(),
                            attempt,
                            wait_ms = wait.as_millis() as u64,
                            "llm call failed; retrying"
                        );
                        tokio::time::sleep(wait).await;
                        continue;
                    }
                }
                let wait = policy.delay(attempt, None);
                tracing::warn!(
                    attempt,
                    wait_ms = wait.as_millis() as u64,
                    "llm call timed out or could not connect; retrying"
                );
                tokio::time::sleep(wait).await;
            }
        })
    }
}

/// A chat completion's useful parts.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    /// `choices[0].message`.
    pub message: Value,
    /// `choices[0].finish_reason`, when the server sends one.
    pub finish_reason: Option<String>,
    /// Prompt tokens (0 when the server does not report usage).
    pub prompt_tokens: u32,
    /// Completion tokens.
    pub completion_tokens: u32,
}

/// Why a call produced nothing usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LlmError {
    /// Every attempt timed out.
    #[error("timeout")]
    Timeout,
    /// The server answered with an error status after the retries.
    #[error("http error {0}")]
    Http(u16),
    /// The connection failed.
    #[error("transport error: {0}")]
    Transport(String),
    /// The response is not a chat completion.
    #[error("malformed response: {0}")]
    Malformed(String),
}

impl LlmError {
    /// Stable outcome code for the LLM-calls table.
    pub fn outcome(&self) -> &'static str {
        match self {
            LlmError::Timeout => "timeout",
            LlmError::Http(429) => "rate_limited",
            LlmError::Http(_) => "http_error",
            LlmError::Transport(_) => "transport_error",
            LlmError::Malformed(_) => "malformed",
        }
    }
}

/// The client with its concurrency limit.
#[derive(Clone)]
pub struct HttpClient {
    client: Client<OpenAIConfig>,
    limiter: Arc<Semaphore>,
}

/// A finished call: what came back and what it cost.
#[derive(Debug, Clone)]
pub struct CallReport {
    /// The completion or the error.
    pub result: Result<Completion, LlmError>,
    /// HTTP attempts made.
    pub attempts: u32,
    /// Wall time including retries and waiting for a free slot.
    pub latency: Duration,
}

impl HttpClient {
    /// Builds a client for `base_url` with the API key from the configured variable.
    pub fn new(settings: &LlmSettings, base_url: &str) -> Result<HttpClient, reqwest::Error> {
        let api_key = std::env::var(&settings.api_key_env).unwrap_or_default();
        let config = OpenAIConfig::new()
            .with_api_base(base_url.trim_end_matches('/'))
            .with_api_key(api_key);
        let transport = RetryingTransport {
            http: reqwest::Client::builder().build()?,
            policy: RetryPolicy {
                max_retries: settings.max_retries,
                timeout: Duration::from_millis(settings.timeout_ms),
                backoff: Duration::from_millis(settings.backoff_ms),
                max_backoff: Duration::from_millis(settings.max_backoff_ms),
            },
        };
        Ok(HttpClient {
            client: Client::with_config(config).with_http_service(transport),
            limiter: Arc::new(Semaphore::new(settings.max_concurrent.max(1))),
        })
    }

    /// Sends a chat-completions request given as JSON.
    pub async fn chat(&self, request: &Value) -> CallReport {
        let started = Instant::now();
        let Ok(_permit) = self.limiter.acquire().await else {
            return CallReport {
                result: Err(LlmError::Transport("client closed".into())),
                attempts: 0,
                latency: started.elapsed(),
            };
        };
        let (result, attempts) = ATTEMPTS
            .scope(Cell::new(0), async {
                let result: Result<Value, OpenAIError> =
                    self.client.chat().create_byot(request).await;
                (result, ATTEMPTS.with(Cell::get))
            })
            .await;
        CallReport {
            result: result.map_err(classify).and_then(completion),
            attempts,
            latency: started.elapsed(),
        }
    }
}

fn classify(error: OpenAIError) -> LlmError {
    match error {
        OpenAIError::ApiError(api) => LlmError::Http(api.status_code.as_u16()),
        OpenAIError::Boxed(inner) if inner.downcast_ref::<TransportError>().is_some() => {
            LlmError::Timeout
        }
        OpenAIError::Reqwest(e) if e.is_timeout() => LlmError::Timeout,
        OpenAIError::Reqwest(e) => match e.status() {
            Some(status) => LlmError::Http(status.as_u16()),
            None => LlmError::Transport(e.to_string()),
        },
        OpenAIError::JSONDeserialize(e, _) => LlmError::Malformed(e.to_string()),
        other => LlmError::Transport(other.to_string()),
    }
}

fn completion(response: Value) -> Result<Completion, LlmError> {
    let choice = response
        .get("choices")
        .and_then(|c| c.get(0))
        .ok_or_else(|| LlmError::Malformed("no choices".into()))?;
    let message = choice
        .get("message")
        .cloned()
        .ok_or_else(|| LlmError::Malformed("no message".into()))?;
    let usage = response.get("usage");
    let tokens = |key: &str| {
        usage
            .and_then(|u| u.get(key))
            .and_then(Value::as_u64)
            .map(|n| u32::try_from(n).unwrap_or(u32::MAX))
            .unwrap_or(0)
    };
    Ok(Completion {
        message,
        finish_reason: choice
            .get("finish_reason")
            .and_then(Value::as_str)
            .map(str::to_owned),
        prompt_tokens: tokens("prompt_tokens"),
        completion_tokens: tokens("completion_tokens"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        let policy = RetryPolicy {
            max_retries: 3,
            timeout: Duration::from_secs(1),
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(300),
        };
        let first = policy.delay(1, None);
        assert!(
            first >= Duration::from_millis(50) && first <= Duration::from_millis(150),
            "{first:?}"
        );
        let second = policy.delay(2, None);
        assert!(
            second >= Duration::from_millis(100) && second <= Duration::from_millis(300),
            "{second:?}"
        );
        assert_eq!(policy.delay(9, None), Duration::from_millis(300));
        assert_eq!(
            policy.delay(1, Some(Duration::from_millis(200))),
            Duration::from_millis(200)
        );
        assert_eq!(
            policy.delay(1, Some(Duration::from_secs(60))),
            Duration::from_millis(300)
        );
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(reqwest::header::RETRY_AFTER, "2".parse().expect("header"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(2)));
        headers.insert(
            reqwest::header::RETRY_AFTER,
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().expect("header"),
        );
        assert_eq!(
            retry_after(&headers),
            None,
            "a date in the past means no wait"
        );
    }

    #[test]
    fn completions_parse_leniently() {
        let parsed = completion(serde_json::json!({"choices": [{"message": {"content": "hi"}}]}))
            .expect("parses");
        assert_eq!(parsed.finish_reason, None);
        assert_eq!(parsed.prompt_tokens, 0);
        assert!(completion(serde_json::json!({"error": "x"})).is_err());
    }
}

//! The OpenAI-compatible HTTP client: async-openai with a transport of ours
//! underneath that bounds every attempt (connect, headers and the whole body,
//! read into memory up to a size cap) by one deadline, retries 429 and 5xx
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
    /// Deadline of one attempt: connecting, the response headers and the
    /// whole body.
    pub timeout: Duration,
    /// First backoff; doubles each retry.
    pub backoff: Duration,
    /// Longest wait, also for `Retry-After`.
    pub max_backoff: Duration,
    /// Largest response body accepted, in bytes.
    pub max_response_bytes: usize,
}

impl RetryPolicy {
    /// The wait before retry number `retry` (1-based): `Retry-After` when the
    /// server sent one, else exponential backoff with ±50 % jitter; never
    /// more than `max_backoff`.
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

    /// The longest a whole call can take: every attempt to its deadline and
    /// every wait at its cap. The call's own deadline, so nothing a server
    /// does holds a call (and its concurrency slot) longer.
    pub fn call_deadline(&self) -> Duration {
        let attempts = self.max_retries.saturating_add(1);
        self.timeout
            .saturating_mul(attempts)
            .saturating_add(self.max_backoff.saturating_mul(self.max_retries))
    }
}

fn jitter() -> f64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    f64::from(nanos % 1000) / 1000.0
}

/// Reads `Retry-After` as delay-seconds or an HTTP date. Whatever the value
/// (`inf`, `NaN`, a number too large for a [`Duration`], a malformed date)
/// this never panics: a wait too long to represent is [`Duration::MAX`]
/// (callers cap it), anything unreadable or negative is `None`.
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(seconds) = value.parse::<f64>() {
        if seconds.is_nan() || seconds < 0.0 {
            return None;
        }
        return Some(Duration::try_from_secs_f64(seconds).unwrap_or(Duration::MAX));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    (at.with_timezone(&chrono::Utc) - chrono::Utc::now())
        .to_std()
        .ok()
}

/// Errors of the transport itself (not of the API).
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// Every attempt ran past its deadline.
    #[error("timed out after {0} attempts")]
    Timeout(u32),
    /// The response body was larger than the cap.
    #[error("response larger than {0} bytes")]
    TooLarge(usize),
    /// The server answered with an error status (its body, often empty or
    /// not JSON on a 429 or 502, is not needed).
    #[error("http status {0}")]
    Status(u16),
}

/// The tower service under async-openai.
#[derive(Clone)]
pub struct RetryingTransport {
    http: reqwest::Client,
    policy: RetryPolicy,
}

/// One attempt's answer, read to the end within the attempt's deadline.
enum Attempt {
    /// A whole response, body in memory.
    Answered(reqwest::Response),
    /// Connecting or sending failed.
    Failed(reqwest::Error),
    /// The body was larger than the cap.
    TooLarge,
}

/// Sends one request and reads its whole body, refusing bodies over
/// `max_bytes`. The response handed back carries the body in memory, so
/// nothing after the transport can wait on the network.
async fn attempt(http: &reqwest::Client, request: reqwest::Request, max_bytes: usize) -> Attempt {
    let mut response = match http.execute(request).await {
        Ok(response) => response,
        Err(error) => return Attempt::Failed(error),
    };
    if response
        .content_length()
        .is_some_and(|length| length > max_bytes as u64)
    {
        return Attempt::TooLarge;
    }
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > max_bytes {
                    return Attempt::TooLarge;
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => break,
            Err(error) => return Attempt::Failed(error),
        }
    }
    let mut buffered = http::Response::new(body);
    *buffered.status_mut() = response.status();
    *buffered.version_mut() = response.version();
    *buffered.headers_mut() = response.headers().clone();
    Attempt::Answered(reqwest::Response::from(buffered))
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
            let mut attempt_number = 0;
            loop {
                attempt_number += 1;
                let _ = ATTEMPTS.try_with(|count| count.set(attempt_number));
                let retries_left = attempt_number <= policy.max_retries;
                let request = factory.build().await?;
                let outcome = tokio::time::timeout(
                    policy.timeout,
                    attempt(&http, request, policy.max_response_bytes),
                )
                .await;
                match outcome {
                    Err(_) if retries_left => {}
                    Err(_) => {
                        return Err(OpenAIError::Boxed(Box::new(TransportError::Timeout(
                            attempt_number,
                        ))));
                    }
                    Ok(Attempt::TooLarge) => {
                        return Err(OpenAIError::Boxed(Box::new(TransportError::TooLarge(
                            policy.max_response_bytes,
                        ))));
                    }
                    Ok(Attempt::Failed(error))
                        if retries_left
                            && (error.is_connect() || error.is_timeout() || error.is_body()) => {}
                    Ok(Attempt::Failed(error)) => return Err(OpenAIError::Reqwest(error)),
                    Ok(Attempt::Answered(response)) => {
                        let status = response.status();
                        let retriable = status.as_u16() == 429 || status.is_server_error();
                        if !(retriable && retries_left) {
                            if status.is_success() {
                                return Ok(response);
                            }
                            return Err(OpenAIError::Boxed(Box::new(TransportError::Status(
                                status.as_u16(),
                            ))));
                        }
                        let wait = policy.delay(attempt_number, retry_after(response.headers()));
                        tracing::warn!(
                            status = status.as_u16(),
                            attempt = attempt_number,
                            wait_ms = wait.as_millis() as u64,
                            "llm call failed; retrying"
                        );
                        tokio::time::sleep(wait).await;
                        continue;
                    }
                }
                let wait = policy.delay(attempt_number, None);
                tracing::warn!(
                    attempt = attempt_number,
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
    /// The response body was larger than `llm.max_response_bytes`.
    #[error("response too large")]
    TooLarge,
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
            LlmError::TooLarge => "too_large",
        }
    }
}

/// The client with its concurrency limit.
#[derive(Clone)]
pub struct HttpClient {
    client: Client<OpenAIConfig>,
    limiter: Arc<Semaphore>,
    deadline: Duration,
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
        let policy = RetryPolicy {
            max_retries: settings.max_retries,
            timeout: Duration::from_millis(settings.timeout_ms),
            backoff: Duration::from_millis(settings.backoff_ms),
            max_backoff: Duration::from_millis(settings.max_backoff_ms),
            max_response_bytes: settings.max_response_bytes,
        };
        let transport = RetryingTransport {
            http: reqwest::Client::builder()
                .connect_timeout(policy.timeout)
                .build()?,
            policy,
        };
        Ok(HttpClient {
            client: Client::with_config(config).with_http_service(transport),
            limiter: Arc::new(Semaphore::new(settings.max_concurrent.max(1))),
            deadline: policy.call_deadline(),
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
                // Each attempt has its deadline in the transport; this one
                // bounds the call as a whole whatever happens above it.
                let result =
                    tokio::time::timeout(self.deadline, self.client.chat().create_byot(request))
                        .await;
                (result, ATTEMPTS.with(Cell::get))
            })
            .await;
        let result = match result {
            Ok(result) => result.map_err(classify),
            Err(_) => Err(LlmError::Timeout),
        };
        CallReport {
            result: result.and_then(completion),
            attempts,
            latency: started.elapsed(),
        }
    }
}

fn classify(error: OpenAIError) -> LlmError {
    match error {
        OpenAIError::ApiError(api) => LlmError::Http(api.status_code.as_u16()),
        OpenAIError::Boxed(inner) => match inner.downcast_ref::<TransportError>() {
            Some(TransportError::Timeout(_)) => LlmError::Timeout,
            Some(TransportError::TooLarge(_)) => LlmError::TooLarge,
            Some(TransportError::Status(status)) => LlmError::Http(*status),
            None => LlmError::Transport(inner.to_string()),
        },
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
            max_response_bytes: 1024,
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
        let future = (chrono::Utc::now() + chrono::Duration::seconds(30))
            .format("%a, %d %b %Y %H:%M:%S GMT")
            .to_string();
        headers.insert(
            reqwest::header::RETRY_AFTER,
            future.parse().expect("header"),
        );
        let wait = retry_after(&headers).expect("a future date is a wait");
        assert!(wait > Duration::from_secs(25) && wait <= Duration::from_secs(30));
    }

    #[test]
    fn retry_after_never_panics_and_is_capped() {
        let policy = RetryPolicy {
            max_retries: 2,
            timeout: Duration::from_secs(1),
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(500),
            max_response_bytes: 1024,
        };
        let mut headers = reqwest::header::HeaderMap::new();
        for value in ["inf", "Infinity", "1e300", "18446744073709551616", "+inf"] {
            headers.insert(reqwest::header::RETRY_AFTER, value.parse().expect("header"));
            let wait = retry_after(&headers);
            assert_eq!(wait, Some(Duration::MAX), "{value}");
            assert_eq!(policy.delay(1, wait), Duration::from_millis(500), "{value}");
        }
        for value in [
            "NaN",
            "-5",
            "-inf",
            "soon",
            "Wed, 99 Foo 2015 07:28:00 GMT",
            "",
        ] {
            headers.insert(reqwest::header::RETRY_AFTER, value.parse().expect("header"));
            assert_eq!(retry_after(&headers), None, "{value}");
        }
        assert_eq!(policy.call_deadline(), Duration::from_secs(4));
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

//! A model server that misbehaves, on real RabbitMQ, Redis and Postgres: one
//! that sends headers and then stalls its body, one that answers 429 with
//! `Retry-After: inf`, one whose body is larger than the cap. Their calls
//! end by their deadline and are recorded as failures in `enrich.llm_calls`,
//! other conversations keep flowing and the worker stays up. Also the ask's
//! re-check at commit time, and the Postgres session bounds.
//!
//! The server is a raw TCP listener (a mock server cannot stall a body):
//! it reads one request and answers according to a marker word in the new
//! customer message it carries.

mod common;

use std::time::{Duration, Instant};

use common::fake_llm::{FakeModel, new_message, proposal, tool_call};
use common::{TestApp, chat, unique};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const WAIT: Duration = Duration::from_secs(60);

/// Starts the misbehaving server; returns its base URL.
async fn start_faulty_model() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(answer(stream));
        }
    });
    format!("http://{address}/v1")
}

async fn read_request(stream: &mut TcpStream) -> String {
    let mut buffer = Vec::new();
    let mut chunk = [0_u8; 8192];
    while let Ok(n) = stream.read(&mut chunk).await {
        if n == 0 {
            break;
        }
        buffer.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buffer);
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if buffer.len() >= end + 4 + length {
                break;
            }
        }
    }
    String::from_utf8_lossy(&buffer).into_owned()
}

async fn answer(mut stream: TcpStream) {
    let request = read_request(&mut stream).await;
    // Only the new message decides (earlier turns are in the prompt too).
    let body: serde_json::Value = request
        .split_once("\r\n\r\n")
        .and_then(|(_, body)| serde_json::from_str(body).ok())
        .unwrap_or_default();
    let request = new_message(&body);
    if request.contains("STALL") {
        // Headers, the start of a body, then nothing for a minute.
        let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 5000\r\n\r\n{\"choices\": [";
        let _ = stream.write_all(head.as_bytes()).await;
        let _ = stream.flush().await;
        tokio::time::sleep(Duration::from_secs(60)).await;
        return;
    }
    if request.contains("LIMIT") {
        let reply = "HTTP/1.1 429 Too Many Requests\r\nretry-after: inf\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
        let _ = stream.write_all(reply.as_bytes()).await;
        return;
    }
    if request.contains("HUGE") {
        let body = format!("{{\"pad\": \"{}\"}}", "x".repeat(200_000));
        let reply = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n{body}"
        );
        let _ = stream.write_all(reply.as_bytes()).await;
        return;
    }
    let body = json!({
        "id": "chatcmpl-test", "object": "chat.completion", "created": 0, "model": "fake",
        "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": null,
            "tool_calls": [{"id": "call_1", "type": "function", "function": {
                "name": "record_enrichment",
                "arguments": proposal(&[], None).to_string()}}]}}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
    })
    .to_string();
    let reply = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(reply.as_bytes()).await;
}

async fn outcome_of(app: &TestApp, event_id: &str) -> Option<(String, i32)> {
    sqlx::query_as(
        "SELECT l.outcome, l.latency_ms FROM enrich.llm_calls l
           JOIN enrich.messages m ON m.id = l.message_id WHERE m.event_id = $1",
    )
    .bind(event_id)
    .fetch_optional(&app.pool)
    .await
    .expect("llm call")
}

async fn status_of(app: &TestApp, event_id: &str) -> Option<String> {
    sqlx::query_scalar("SELECT ai_status FROM enrich.messages WHERE event_id = $1")
        .bind(event_id)
        .fetch_optional(&app.pool)
        .await
        .expect("message")
        .flatten()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stalled_rate_limited_and_oversized_calls_end_by_their_deadline_and_others_flow() {
    let base_url = start_faulty_model().await;
    let mut app = TestApp::new().await;
    app.set("ENRICHER__LLM__BASE_URL", &base_url);
    // Each attempt ends within 3 s (connect, headers and body); one retry;
    // waits capped at 300 ms: a call ends within 2 × 3 s + 0.3 s.
    app.set("ENRICHER__LLM__TIMEOUT_MS", "3000");
    app.set("ENRICHER__LLM__MAX_RETRIES", "1");
    app.set("ENRICHER__LLM__BACKOFF_MS", "50");
    app.set("ENRICHER__LLM__MAX_BACKOFF_MS", "300");
    app.set("ENRICHER__LLM__MAX_RESPONSE_BYTES", "100000");
    let deadline_ms = 2 * 3000 + 300;
    let mut worker = app.start_worker().await;
    let ws = unique("ws");
    let started = Instant::now();
    app.publish(&[
        chat(
            &ws,
            "stall-1",
            "c-stall",
            "u-stall",
            "customer",
            "please STALL now",
        ),
        chat(
            &ws,
            "limit-1",
            "c-limit",
            "u-limit",
            "customer",
            "LIMIT me please",
        ),
        chat(
            &ws,
            "huge-1",
            "c-huge",
            "u-huge",
            "customer",
            "a HUGE answer",
        ),
    ])
    .await;
    let healthy: Vec<_> = (0..10)
        .map(|i| {
            chat(
                &ws,
                &format!("ok-{i}"),
                &format!("c-ok-{}", i % 5),
                &format!("u-ok-{}", i % 5),
                "customer",
                "I have a question about my order",
            )
        })
        .collect();
    app.publish(&healthy).await;

    // The healthy conversations are answered while the stalled call hangs.
    worker
        .while_running(app.wait_for_count(
            "SELECT count(*) FROM enrich.messages WHERE event_id LIKE 'ok-%' AND ai_status = 'done'",
            10,
            WAIT,
        ))
        .await;
    assert_eq!(
        status_of(&app, "stall-1").await.as_deref(),
        Some("pending"),
        "healthy conversations must not wait for the stalled one ({:?} in)",
        started.elapsed()
    );

    // The faulty calls end by their deadline, recorded as failures.
    worker
        .while_running(app.wait_for_count(
            "SELECT count(*) FROM enrich.messages WHERE event_id IN ('stall-1','limit-1','huge-1') AND ai_status = 'failed'",
            3,
            WAIT,
        ))
        .await;
    let (outcome, latency_ms) = outcome_of(&app, "stall-1").await.expect("stall recorded");
    assert_eq!(outcome, "timeout");
    assert!(
        (2900..=deadline_ms + 1000).contains(&latency_ms),
        "stalled call took {latency_ms} ms"
    );
    let (outcome, latency_ms) = outcome_of(&app, "limit-1").await.expect("429 recorded");
    assert_eq!(outcome, "rate_limited");
    assert!(
        latency_ms <= deadline_ms + 1000,
        "429 call took {latency_ms} ms"
    );
    let (outcome, _) = outcome_of(&app, "huge-1").await.expect("huge recorded");
    assert_eq!(outcome, "too_large");
    assert!(
        started.elapsed() < Duration::from_millis(deadline_ms as u64) + Duration::from_secs(20),
        "faulty calls took {:?}",
        started.elapsed()
    );

    // The worker is still up, and the stalled conversation goes on.
    app.publish(&[chat(
        &ws,
        "stall-2",
        "c-stall",
        "u-stall",
        "customer",
        "I have a question about my order",
    )])
    .await;
    worker
        .while_running(app.wait_for_count(
            "SELECT count(*) FROM enrich.messages WHERE event_id = 'stall-2' AND ai_status = 'done'",
            1,
            WAIT,
        ))
        .await;
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_value_an_agent_sets_during_the_model_call_cancels_the_ask() {
    let model = FakeModel::start(|_, request| {
        if new_message(request).contains("brochure") {
            tool_call(proposal(&[], Some("email"))).set_delay(Duration::from_secs(3))
        } else {
            tool_call(proposal(&[], None))
        }
    })
    .await;
    let mut app = TestApp::new().await;
    app.set("ENRICHER__LLM__BASE_URL", &model.base_url());
    app.set("ENRICHER__LLM__TIMEOUT_MS", "10000");
    let mut worker = app.start_worker().await;
    let ws = unique("ws");
    app.publish(&[chat(
        &ws,
        "m1",
        "c1",
        "u1",
        "customer",
        "Hi, could you send me the brochure",
    )])
    .await;
    worker
        .while_running(app.wait_for_count(
            "SELECT count(*) FROM enrich.messages WHERE ai_status = 'pending'",
            1,
            WAIT,
        ))
        .await;
    // While the model thinks, an agent fills the email in.
    app.publish(&[json!({"type": "profile.update", "version": 1, "id": "p1",
        "workspace_id": ws, "occurred_at": "2026-03-01T10:00:01Z", "platform": "web",
        "platform_user_id": "u1", "fields": {"email": "agent-set@example.com"},
        "source": "agent", "actor": "agent-7"})])
        .await;
    worker
        .while_running(app.wait_for_count(
            "SELECT count(*) FROM enrich.messages WHERE ai_status IN ('done','failed')",
            1,
            WAIT,
        ))
        .await;
    assert_eq!(model.calls(), 1);
    assert_eq!(app.count("SELECT count(*) FROM enrich.asks").await, 0);
    assert_eq!(
        app.count("SELECT count(*) FROM enrich.outbox WHERE routing_key = 'ask.requested'")
            .await,
        0
    );
    // The ask is cancelled by whichever check sees the agent's email first:
    // the stage's re-check under the customer's lock (the hot profile's
    // version moved: `ask:stale` on the call), or the commit-time check.
    let rejections: serde_json::Value =
        sqlx::query_scalar("SELECT rejections FROM enrich.llm_calls")
            .fetch_one(&app.pool)
            .await
            .expect("call row");
    let at_commit = worker
        .metrics
        .rejections()
        .get("known_at_commit")
        .copied()
        .unwrap_or(0);
    assert!(
        rejections == json!({"ask:stale": 1}) || (rejections == json!({}) && at_commit == 1),
        "the ask was cancelled once: call {rejections}, at commit {at_commit}"
    );
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_sessions_carry_statement_and_lock_timeouts() {
    let app = TestApp::new().await;
    let mut settings = app.settings();
    settings.postgres.statement_timeout_ms = 1500;
    settings.postgres.lock_timeout_ms = 700;
    let pool = enricher::store::connect_with_size(&settings.postgres, 1, 0, None)
        .await
        .expect("pool");
    let statement: String = sqlx::query_scalar("SHOW statement_timeout")
        .fetch_one(&pool)
        .await
        .expect("show");
    let lock: String = sqlx::query_scalar("SHOW lock_timeout")
        .fetch_one(&pool)
        .await
        .expect("show");
    assert_eq!((statement.as_str(), lock.as_str()), ("1500ms", "700ms"));
    let error = sqlx::query("SELECT pg_sleep(3)")
        .execute(&pool)
        .await
        .expect_err("cancelled by statement_timeout");
    let error = enricher::store::StoreError::from(error);
    assert!(error.is_transient(), "{error}");
    // The lane pools are opened the same way.
    let lanes = app
        .hot_path_pool(enricher::store::warm_up::HotPath::Lanes)
        .await;
    let statement: String = sqlx::query_scalar("SHOW statement_timeout")
        .fetch_one(&lanes)
        .await
        .expect("show");
    assert_eq!(statement, "1min");
    // The tools' and migrations' pool has no such limits.
    let tools = enricher::store::connect(&settings.postgres)
        .await
        .expect("pool");
    let statement: String = sqlx::query_scalar("SHOW statement_timeout")
        .fetch_one(&tools)
        .await
        .expect("show");
    assert_eq!(statement, "0");
}

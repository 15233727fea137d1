//! No personal data in logs or stored reasons: events full of marked
//! personal values (emails, names, phones, texts, a visitor IP) go through
//! every path of a real `enricher run` at `debug` level with JSON logs:
//! patterns, a model that fails, answers garbage and proposes values,
//! summaries, dead letters, a merge and a forget. None of the marked values
//! may appear anywhere in the worker's log or in a stored reason.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::fake_llm::{FakeModel, proposal, tool_call};
use common::{TestApp, chat, repo_root, unique};
use serde_json::{Value, json};
use wiremock::ResponseTemplate;

/// Every marked value, as it could appear in a log (lower-cased, since
/// emails are normalised; phone digits without formatting).
const MARKS: [&str; 4] = ["piimark", "4155550199", "415 555 0199", "203.0.113.77"];

fn leaked(text: &str) -> Vec<&'static str> {
    let lower = text.to_lowercase();
    MARKS
        .iter()
        .copied()
        .filter(|mark| lower.contains(mark))
        .collect()
}

/// The fake model misbehaves in turn, always echoing the request's
/// messages (the customer's words) in what it sends back.
fn hostile_answer(n: usize, request: &Value) -> ResponseTemplate {
    let echo = request["messages"].to_string();
    match n % 5 {
        0 => ResponseTemplate::new(500).set_body_json(json!({"error": {"message": echo}})),
        1 => ResponseTemplate::new(200)
            .insert_header("content-type", "application/json")
            .set_body_string(format!("not json at all: {echo}")),
        2 => ResponseTemplate::new(200).set_body_json(json!({
            "id": "x", "object": "chat.completion", "created": 0, "model": "fake",
            "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
                "role": "assistant", "content": null,
                "tool_calls": [{"id": "c", "type": "function", "function": {
                    "name": "record_enrichment", "arguments": format!("{{\"facts\": [{echo}")}}]}}]
        })),
        3 => tool_call(json!({"facts": "PIIMARK wrong shape", "summary": echo})),
        _ => tool_call(proposal(
            &[
                ("name", "Piimark Proposed", "PIIMARK quoted words"),
                (
                    "email",
                    "piimark.model@example.com",
                    "piimark.model@example.com",
                ),
            ],
            Some("phone"),
        )),
    }
}

fn envelope(ws: &str, id: &str, kind: &str) -> serde_json::Map<String, Value> {
    let value = json!({"type": kind, "version": 1, "id": id, "workspace_id": ws,
                       "occurred_at": "2026-03-01T10:00:00Z"});
    value.as_object().cloned().unwrap_or_default()
}

fn event(ws: &str, id: &str, kind: &str, body: Value) -> Value {
    let mut event = envelope(ws, id, kind);
    if let Value::Object(body) = body {
        event.extend(body);
    }
    Value::Object(event)
}

#[tokio::test]
async fn no_marked_personal_value_reaches_the_log_or_a_stored_reason() {
    let model = FakeModel::start(hostile_answer).await;
    let mut app = TestApp::new().await;
    for (key, value) in [
        ("ENRICHER__LLM__BASE_URL", model.base_url().as_str()),
        ("ENRICHER__LLM__MAX_RETRIES", "1"),
        ("ENRICHER__LLM__BACKOFF_MS", "10"),
        ("ENRICHER__LLM__TIMEOUT_MS", "5000"),
        ("ENRICHER__INSIGHTS__IDLE_SECS", "1"),
        ("ENRICHER__INSIGHTS__SWEEP_INTERVAL_SECS", "1"),
        ("ENRICHER__TELEMETRY__LEVEL", "debug"),
        ("ENRICHER__TELEMETRY__FORMAT", "json"),
        ("ENRICHER__HTTP__LISTEN", "off"),
    ] {
        app.set(key, value);
    }
    let log_path = std::env::temp_dir().join(format!("{}.log", unique("enricher-privacy-")));
    let log = std::fs::File::create(&log_path).expect("log file");
    let mut command = Command::new(env!("CARGO_BIN_EXE_enricher"));
    command
        .arg("run")
        .current_dir(repo_root())
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log));
    for (key, value) in &app.settings_env {
        command.env(key, value);
    }
    let mut worker = common::WorkerProcess(command.spawn().expect("enricher run starts"));
    app.wait_for_shard_consumers(|n| n == Some(1), Duration::from_secs(60))
        .await;

    let ws = unique("ws");
    let mut first = chat(
        &ws,
        "m-1",
        "c-a",
        "u-a",
        "customer",
        "Hi, I'm Piimark Alpha, email piimark.alpha@example.com, phone +1 415 555 0199. Send me a quote",
    );
    first["visitor"] = json!({"ip": "203.0.113.77", "user_agent": "PIIMARK-agent/1.0",
                              "page_url": "https://shop.example/piimark"});
    first["identity_hint"] = json!({"name": "Piimark Hint"});
    let events = vec![
        first,
        chat(
            &ws,
            "m-2",
            "c-a",
            "u-a",
            "agent",
            "Thanks Piimark Alpha, what is your phone?",
        ),
        chat(
            &ws,
            "m-3",
            "c-a",
            "u-a",
            "customer",
            "It is 415 555 0199, call me back piimark",
        ),
        chat(
            &ws,
            "m-4",
            "c-b",
            "u-b",
            "customer",
            "I am piimark.alpha@example.com again, my order",
        ),
        chat(
            &ws,
            "m-5",
            "c-b",
            "u-b",
            "customer",
            "no I won't give my phone, piimark",
        ),
        event(
            &ws,
            "p-1",
            "profile.update",
            json!({
            "platform": "web", "platform_user_id": "u-b", "source": "agent", "actor": "agent-1",
            "fields": {"name": "Piimark Agent Name", "email": "not-an-email-piimark", "phone": "+1 415 555 0199"}}),
        ),
        event(
            &ws,
            "x-1",
            "conversation.closed",
            json!({"conversation_id": "c-a"}),
        ),
    ];
    let mut events = events;
    for i in 0..8 {
        events.push(chat(
            &ws,
            &format!("n-{i}"),
            &format!("c-n{i}"),
            &format!("u-n{i}"),
            "customer",
            &format!(
                "Hello, I am Piimark Number{i}, I want to book a table, call me at +1 415 555 0199"
            ),
        ));
    }
    app.publish(&events).await;
    // Events that cannot be decoded, each carrying a marked value.
    let invalid = [
        chat(&ws, "d-1", "c-d", "u-d", "piimark@example.com", "hello"),
        {
            let mut e = chat(&ws, "d-2", "c-d", "u-d", "customer", "");
            e["text"] = json!(4155550199_i64);
            e
        },
        chat(&ws, "d-3", "c-d", "u-d", "customer", "hello"),
        chat(&ws, "d-4", "c-d", "u-d", "customer", "hello"),
        event(
            &ws,
            "d-5",
            "customer.forget",
            json!({"customer_id": "piimark-not-a-uuid"}),
        ),
        event(
            &ws,
            "d-6",
            "profile.update",
            json!({"email": "piimark-no-at-sign",
            "fields": {}, "source": "agent"}),
        ),
        {
            let mut e = chat(&ws, "d-7", "c-d", "u-d", "customer", "hello");
            e["visitor"] = json!({"ip": 203, "session_started_at": "piimark"});
            e
        },
    ];
    let mut invalid = invalid.to_vec();
    invalid[2]["type"] = json!("piimark.message");
    invalid[3]["occurred_at"] = json!("piimark yesterday");
    app.publish(&invalid).await;
    let dead = app
        .dead_letters(invalid.len(), Duration::from_secs(60))
        .await;

    // The model paths: enrichment calls and the closed conversation's summary.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let calls = app.count("SELECT count(*) FROM enrich.llm_calls").await;
        let summarised = app
            .count("SELECT count(*) FROM enrich.conversations WHERE summary_status IN ('done', 'failed')")
            .await;
        if calls >= 4 && summarised >= 1 && model.calls() >= 5 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the model paths did not run: {calls} calls, {summarised} summarised, {} requests",
            model.calls()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The shared email merges the two customers.
    app.wait_for_count(
        "SELECT count(*) FROM enrich.merges",
        1,
        Duration::from_secs(30),
    )
    .await;
    let stored: String = sqlx::query_scalar(
        "SELECT coalesce(string_agg(purpose || ' ' || outcome || ' ' || rejections::text
                                    || ' ' || coalesce(prompt_version, ''), ' | '), '')
           FROM enrich.llm_calls",
    )
    .fetch_one(&app.pool)
    .await
    .expect("llm calls");
    assert!(
        stored.contains("enrich") && stored.contains("summary"),
        "{stored}"
    );
    assert!(leaked(&stored).is_empty(), "llm_calls leak: {stored}");
    // Forget last, once everything about the customer is stored.
    app.publish(&[event(
        &ws,
        "f-1",
        "customer.forget",
        json!({"email": "piimark.alpha@example.com", "actor": "dpo"}),
    )])
    .await;
    app.wait_for_count(
        "SELECT count(*) FROM enrich.erasures",
        1,
        Duration::from_secs(30),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let stopped = Command::new("kill")
        .args(["-TERM", &worker.id().to_string()])
        .status()
        .expect("kill");
    assert!(stopped.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    while worker.try_wait().expect("wait").is_none() {
        assert!(Instant::now() < deadline, "the worker did not stop");
        std::thread::sleep(Duration::from_millis(100));
    }

    let text = std::fs::read_to_string(&log_path).expect("read log");
    let _ = std::fs::remove_file(&log_path);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.len() > 20, "too little was logged to judge:\n{text}");
    for line in &lines {
        let parsed: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        for key in ["timestamp", "level", "target"] {
            assert!(parsed.get(key).is_some(), "no {key}: {line}");
        }
        assert!(
            parsed["fields"].get("message").is_some(),
            "no message: {line}"
        );
        assert!(!line.contains('\u{1b}'), "colour codes in a file: {line}");
    }
    assert!(
        lines.iter().any(|l| l.contains("\"level\":\"DEBUG\"")),
        "the worker did not log at debug"
    );
    assert!(
        lines.iter().any(|l| l.contains("\"spans\"")),
        "span fields are missing"
    );
    for logged in [
        "invalid event dead-lettered",
        "model call failed",
        "summary call failed",
    ] {
        assert!(text.contains(logged), "nothing logged as `{logged}`");
    }
    let leaking: Vec<&&str> = lines.iter().filter(|l| !leaked(l).is_empty()).collect();
    assert!(
        leaking.is_empty(),
        "marked values in the log:\n{leaking:#?}"
    );

    for (_, reason) in &dead {
        assert!(!reason.is_empty());
        assert!(
            leaked(reason).is_empty(),
            "a dead-letter reason leaks: {reason}"
        );
    }
    let merge_reasons: String =
        sqlx::query_scalar("SELECT coalesce(string_agg(reason, ' '), '') FROM enrich.merges")
            .fetch_one(&app.pool)
            .await
            .expect("merges");
    assert!(leaked(&merge_reasons).is_empty(), "{merge_reasons}");
}

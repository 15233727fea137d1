//! Bad input at the boundary (docs/input-validation.md), on real RabbitMQ,
//! Redis and Postgres: each hostile or broken value is dead-lettered with a
//! reason that names the key and never the value, or cleaned and stored
//! where that is the documented rule; the worker keeps running and the next
//! event of the same conversation is stored.

mod common;

use std::time::Duration;

use common::{TestApp, chat, unique};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);
/// A value no reason may repeat.
const SECRET: &str = "SECRETVALUE";

struct Case {
    /// The conversation the bad event belongs to (its neighbours use it).
    conversation: String,
    bad: Value,
    /// What the dead letter's reason must say.
    reason: &'static str,
}

fn profile_update(ws: &str, id: &str, user: &str, extra: Value) -> Value {
    let mut event = json!({"type": "profile.update", "version": 1, "id": id, "workspace_id": ws,
        "occurred_at": "2026-03-01T10:00:00Z", "platform": "web", "platform_user_id": user,
        "fields": {}, "source": "agent"});
    if let (Some(event), Some(extra)) = (event.as_object_mut(), extra.as_object()) {
        event.extend(extra.clone());
    }
    event
}

fn status(ws: &str, id: &str, conversation: &str, extra: Value) -> Value {
    let mut event = json!({"type": "conversation.status", "version": 1, "id": id,
        "workspace_id": ws, "occurred_at": "2026-03-01T10:00:00Z",
        "conversation_id": conversation, "status": "intervened"});
    if let (Some(event), Some(extra)) = (event.as_object_mut(), extra.as_object()) {
        event.extend(extra.clone());
    }
    event
}

fn cases(ws: &str) -> Vec<Case> {
    let mut cases = Vec::new();
    let mut add = |n: usize, bad: Value, reason: &'static str| {
        cases.push(Case {
            conversation: format!("c-{n}"),
            bad,
            reason,
        });
    };
    let mut agent_nul = chat(ws, "bad-0", "c-0", "u-0", "agent", "hello");
    agent_nul["agent_id"] = json!(format!("{SECRET}\u{0}"));
    add(0, agent_nul, "`agent_id` contains a NUL byte");
    add(
        1,
        profile_update(
            ws,
            "bad-1",
            "u-1",
            json!({"fields": {"name": format!("{SECRET}\u{0}")}}),
        ),
        "`fields` contains a NUL byte",
    );
    let mut future = chat(ws, "bad-2", "c-2", "u-2", "customer", SECRET);
    future["occurred_at"] = json!("2999-01-01T00:00:00Z");
    add(2, future, "`occurred_at` is more than a day in the future");
    let mut ancient = chat(ws, "bad-3", "c-3", "u-3", "customer", SECRET);
    ancient["occurred_at"] = json!("1999-12-31T23:59:59Z");
    add(3, ancient, "`occurred_at` is before the year 2000");
    add(
        4,
        profile_update(
            ws,
            "bad-4",
            "u-4",
            json!({"tags_add": [format!("{SECRET}{}", "t".repeat(100))]}),
        ),
        "`tags_add` has a tag longer than 100 characters",
    );
    let many: Vec<String> = (0..101).map(|i| format!("{SECRET}{i}")).collect();
    add(
        5,
        profile_update(ws, "bad-5", "u-5", json!({"tags_add": many})),
        "more than 100 tags",
    );
    add(
        6,
        status(
            ws,
            "bad-6",
            "c-6",
            json!({"agent_id": format!("{SECRET}{}", "a".repeat(200))}),
        ),
        "`agent_id` is longer than 200 characters",
    );
    add(
        7,
        status(
            ws,
            "bad-7",
            "c-7",
            json!({"reason": format!("{SECRET}{}", "r".repeat(1000))}),
        ),
        "`reason` is longer than 1000 characters",
    );
    add(
        8,
        json!({"type": "conversation.closed", "version": 1, "id": "bad-8", "workspace_id": ws,
            "occurred_at": "2026-03-01T10:00:00Z", "conversation_id": "c-8",
            "resolution": format!("{SECRET}{}", "r".repeat(2000))}),
        "`resolution` is longer than 2000 characters",
    );
    add(
        9,
        chat(
            ws,
            "bad-9",
            &format!("c-9/{SECRET}"),
            "u-9",
            "customer",
            "hi",
        ),
        "`conversation_id` holds a character outside",
    );
    add(
        10,
        chat(
            &format!("{ws}/{SECRET}"),
            "bad-10",
            "c-10",
            "u-10",
            "customer",
            "hi",
        ),
        "`workspace_id` holds a character outside",
    );
    add(
        11,
        chat(
            ws,
            "bad-11",
            "c-11",
            &format!("u 11 {SECRET}"),
            "customer",
            "hi",
        ),
        "`platform_user_id` holds a character outside",
    );
    add(
        12,
        chat(
            ws,
            &format!("bad 12 {SECRET}"),
            "c-12",
            "u-12",
            "customer",
            "hi",
        ),
        "`id` holds a character outside",
    );
    cases
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_input_is_dead_lettered_without_its_value_and_the_conversation_goes_on() {
    let app = TestApp::new().await;
    let mut worker = app.start_worker().await;
    let ws = unique("ws");
    let cases = cases(&ws);
    let mut events = Vec::new();
    for (n, case) in cases.iter().enumerate() {
        let user = format!("u-{n}");
        // The conversation exists, then the bad event, then the next one.
        events.push(chat(
            &ws,
            &format!("before-{n}"),
            &case.conversation,
            &user,
            "customer",
            "first",
        ));
        events.push(case.bad.clone());
        events.push(chat(
            &ws,
            &format!("after-{n}"),
            &case.conversation,
            &user,
            "customer",
            "next",
        ));
    }
    app.publish(&events).await;
    let stored = worker
        .while_running(async {
            app.wait_for_count(
                "SELECT count(*) FROM enrich.messages",
                2 * cases.len() as i64,
                WAIT,
            )
            .await;
            app.dead_letters(cases.len(), WAIT).await
        })
        .await;
    let reasons: Vec<&str> = stored.iter().map(|(_, reason)| reason.as_str()).collect();
    for case in &cases {
        assert!(
            reasons.iter().any(|r| r.contains(case.reason)),
            "no dead letter says `{}`: {reasons:?}",
            case.reason
        );
    }
    for reason in &reasons {
        assert!(
            !reason.contains(SECRET),
            "a reason echoes the value: {reason}"
        );
    }
    // Every conversation's next event is stored, after its first.
    for n in 0..cases.len() {
        let after: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM enrich.messages WHERE event_id = $1 AND text = 'next'",
        )
        .bind(format!("after-{n}"))
        .fetch_one(&app.pool)
        .await
        .expect("count");
        assert_eq!(after, 1, "the event after case {n} is stored");
    }
    // Nothing of the bad events reached the profiles.
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) FROM enrich.tags WHERE tag LIKE '{SECRET}%'"
        ))
        .await,
        0
    );
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) FROM enrich.messages WHERE text LIKE '%{SECRET}%'"
        ))
        .await,
        0
    );
    assert_eq!(worker.metrics.dead_lettered.get(), cases.len() as u64);
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nul_bytes_in_text_and_bad_visitor_values_are_cleaned_and_stored() {
    let app = TestApp::new().await;
    let mut worker = app.start_worker().await;
    let ws = unique("ws");
    let mut message = chat(&ws, "m1", "c1", "u1", "customer", "hel\u{0}lo");
    message["visitor"] = json!({
        "browser": "Fire\u{0}fox",
        "user_agent": "x".repeat(3000),
        "os": "Linux",
    });
    message["identity_hint"] = json!({"name": "Ann\u{0}"});
    app.publish(&[message, chat(&ws, "m2", "c1", "u1", "customer", "next")])
        .await;
    worker
        .while_running(app.wait_for_count("SELECT count(*) FROM enrich.messages", 2, WAIT))
        .await;
    let text: String = sqlx::query_scalar("SELECT text FROM enrich.messages WHERE event_id = 'm1'")
        .fetch_one(&app.pool)
        .await
        .expect("message");
    assert_eq!(text, "hello");
    let visitor: Value = sqlx::query_scalar("SELECT visitor FROM enrich.identities")
        .fetch_one(&app.pool)
        .await
        .expect("identity");
    assert_eq!(visitor["os"], "Linux");
    assert!(
        visitor.get("browser").is_none_or(Value::is_null),
        "{visitor}"
    );
    assert!(
        visitor.get("user_agent").is_none_or(Value::is_null),
        "{visitor}"
    );
    assert_eq!(
        app.count("SELECT count(*) FROM enrich.customer_fields WHERE field = 'name'")
            .await,
        0,
        "a hint value with a NUL byte is dropped"
    );
    assert_eq!(
        app.count("SELECT count(*) FROM enrich.dead_letters").await,
        0
    );
    assert_eq!(worker.metrics.dead_lettered.get(), 0);
    worker.stop().await;
}

//! A `conversation.status` or `conversation.closed` that arrives before the
//! conversation's first message is not dead-lettered: it waits, and is
//! applied in arrival order when that message creates the conversation.

mod common;

use std::time::Duration;

use common::ordered_stream::dead_letters_waiting;
use common::{TestApp, chat, unique};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_status_and_a_close_before_the_first_message_are_applied_when_it_arrives() {
    let app = TestApp::new().await;
    let mut worker = app.start_worker().await;
    let ws = unique("ws");
    let envelope = |kind: &str, id: &str, at: &str| {
        json!({"type": kind, "version": 1, "id": id, "workspace_id": ws, "occurred_at": at,
               "conversation_id": "c-early"})
    };
    let mut escalation = envelope("conversation.status", "s-1", "2026-03-01T09:58:00Z");
    escalation["status"] = json!("requesting");
    escalation["agent_id"] = json!("agent-7");
    let mut close = envelope("conversation.closed", "x-1", "2026-03-01T09:59:00Z");
    close["resolved_by"] = json!("agent");
    app.publish(&[escalation, close]).await;
    worker
        .while_running(app.wait_for_count(
            "SELECT count(*) FROM enrich.early_conversation_events",
            2,
            Duration::from_secs(30),
        ))
        .await;
    assert_eq!(
        app.count("SELECT count(*) FROM enrich.conversations").await,
        0
    );

    app.publish(&[chat(&ws, "m-1", "c-early", "u-1", "customer", "hello")])
        .await;
    worker
        .while_running(app.wait_for_count(
            "SELECT count(*) FROM enrich.messages",
            1,
            Duration::from_secs(30),
        ))
        .await;
    assert_eq!(
        app.count("SELECT count(*) FROM enrich.early_conversation_events")
            .await,
        0,
        "held events are used up"
    );
    assert_eq!(
        app.count("SELECT count(*) FROM enrich.escalation_requests WHERE status = 'requesting'")
            .await,
        1,
        "the held escalation is recorded against the conversation's customer"
    );
    assert_eq!(
        app.count(
            "SELECT count(*) FROM enrich.conversations
              WHERE external_id = 'c-early' AND status = 'active' AND ended_at IS NULL
                AND resolved_by = 'agent'"
        )
        .await,
        1,
        "the held close was applied, and the message after it opened the conversation again"
    );
    assert_eq!(
        dead_letters_waiting(&app).await,
        0,
        "nothing is dead-lettered"
    );
    assert_eq!(worker.metrics.dead_lettered.get(), 0);
    worker.stop().await;
}

//! What dashboards and support tools read and write besides chat (SPEC §3 and
//! §5), end to end on real RabbitMQ, Redis and Postgres: notes, clearing a
//! field, tag history, the status path and its escalations, visitor data and
//! transcripts in the views, retention of identifiable profiles, and the
//! views' column lists.

mod common;

use std::time::Duration;

use chrono::{DateTime, Utc};
use common::{TestApp, chat, next_outbound, unique};
use futures::StreamExt;
use serde_json::{Value, json};
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(60);

type Text = Option<String>;
type When = Option<DateTime<Utc>>;
/// old_value, new_value, source, actor.
type HistoryRow = (Text, Text, String, Text);
/// conversation_id, workspace_id, platform, reason, escalated_at, resolved_at, handled_by.
type EscalationRow = (String, String, String, Text, DateTime<Utc>, When, Text);
/// platform, platform_user_id, ip, page_url, locale, session_started_at.
type IdentityRow = (String, String, Text, Text, Text, When);
/// conversation_id, event_id, sender, agent_id, text, occurred_at.
type TranscriptRow = (String, String, String, Text, String, DateTime<Utc>);

/// Nothing more arrives on `consumer` within a short while.
async fn no_more_events(consumer: &mut lapin::Consumer) {
    if let Ok(Some(Ok(delivery))) =
        tokio::time::timeout(Duration::from_millis(1500), consumer.next()).await
    {
        panic!(
            "unexpected event: {}",
            String::from_utf8_lossy(&delivery.data)
        );
    }
}

fn at(text: &str) -> DateTime<Utc> {
    text.parse().expect("timestamp")
}

/// A customer-level event about the web user `user`, with `keys` added.
fn about(ws: &str, kind: &str, id: &str, user: &str, keys: Value) -> Value {
    let mut event = json!({
        "type": kind, "version": 1, "id": id, "workspace_id": ws,
        "occurred_at": "2026-03-01T11:00:00Z", "platform": "web", "platform_user_id": user
    });
    if let (Some(event), Some(keys)) = (event.as_object_mut(), keys.as_object()) {
        for (key, value) in keys {
            event.insert(key.clone(), value.clone());
        }
    }
    event
}

fn status(ws: &str, id: &str, conversation: &str, status: &str, occurred_at: &str) -> Value {
    json!({
        "type": "conversation.status", "version": 1, "id": id, "workspace_id": ws,
        "occurred_at": occurred_at, "conversation_id": conversation, "status": status
    })
}

async fn customer_of(app: &TestApp, user: &str) -> Uuid {
    sqlx::query_scalar("SELECT customer_id FROM enrich.identities WHERE platform_user_id = $1")
        .bind(user)
        .fetch_one(&app.pool)
        .await
        .expect("customer of the identity")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_note_is_stored_announced_moved_by_a_merge_and_forgotten() {
    let app = TestApp::new().await;
    let (_connection, mut notes_out) = app.outbound_listener("note.added").await;
    let worker = app.start_worker().await;
    let ws = unique("ws");
    // An older customer with an email, for the merge below.
    app.publish(&[chat(
        &ws,
        "m-old",
        "c-old",
        "u-older",
        "customer",
        "hi, my email is pat@example.com",
    )])
    .await;
    app.wait_for_count(
        "SELECT count(*) FROM enrich.customer_fields WHERE field = 'email'",
        1,
        WAIT,
    )
    .await;
    app.publish(&[
        chat(&ws, "m1", "c1", "u-note", "customer", "hello"),
        about(
            &ws,
            "note.added",
            "n1",
            "u-note",
            json!({"text": "  Prefers a call after 5pm; VIP since 2019. ", "author": "agent-7",
                   "occurred_at": "2026-03-01T10:30:00Z"}),
        ),
    ])
    .await;
    app.wait_for_count("SELECT count(*) FROM enrich.notes", 1, WAIT)
        .await;
    let customer_id = customer_of(&app, "u-note").await;
    let note: (i64, Uuid, String, String, String, DateTime<Utc>) = sqlx::query_as(
        "SELECT note_id, customer_id, workspace_id, text, author, created_at FROM enrich.notes",
    )
    .fetch_one(&app.pool)
    .await
    .expect("note");
    assert_eq!(
        (
            &note.1,
            note.2.as_str(),
            note.3.as_str(),
            note.4.as_str(),
            note.5
        ),
        (
            &customer_id,
            ws.as_str(),
            "Prefers a call after 5pm; VIP since 2019.",
            "agent-7",
            at("2026-03-01T10:30:00Z")
        )
    );
    assert_eq!(
        next_outbound(&mut notes_out, WAIT).await,
        json!({"workspace_id": ws, "customer_id": customer_id, "note_id": note.0,
               "text": "Prefers a call after 5pm; VIP since 2019.", "author": "agent-7",
               "created_at": "2026-03-01T10:30:00Z"})
    );

    // Refused notes are dead-lettered with the reason; nothing is stored.
    app.publish(&[
        about(
            &ws,
            "note.added",
            "n-long",
            "u-note",
            json!({"text": "x".repeat(2001), "author": "agent-7"}),
        ),
        json!({"type": "note.added", "version": 1, "id": "n-nobody", "workspace_id": ws,
               "occurred_at": "2026-03-01T11:00:00Z", "email": "nobody@example.com",
               "text": "hello", "author": "agent-7"}),
    ])
    .await;
    let mut reasons: Vec<String> = app
        .dead_letters(2, WAIT)
        .await
        .into_iter()
        .map(|(_, reason)| reason)
        .collect();
    reasons.sort();
    assert!(reasons[0].contains("longer than 2000"), "{reasons:?}");
    assert!(
        reasons[1].contains("no customer has that email"),
        "{reasons:?}"
    );
    assert_eq!(app.count("SELECT count(*) FROM enrich.notes").await, 1);

    // A merge moves the note to the surviving (older) customer.
    app.publish(&[about(
        &ws,
        "profile.update",
        "p-merge",
        "u-note",
        json!({"source": "agent", "actor": "agent-7", "fields": {"email": "pat@example.com"}}),
    )])
    .await;
    app.wait_for_count("SELECT count(*) FROM enrich.merges", 1, WAIT)
        .await;
    let survivor = customer_of(&app, "u-older").await;
    assert_eq!(customer_of(&app, "u-note").await, survivor);
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) FROM enrich.notes WHERE customer_id = '{survivor}'"
        ))
        .await,
        1
    );

    // Forgetting the customer erases the note.
    app.publish(
        &[json!({"type": "customer.forget", "version": 1, "id": "f1",
        "workspace_id": ws, "occurred_at": "2026-03-02T10:00:00Z",
        "email": "pat@example.com", "actor": "dpo"})],
    )
    .await;
    app.wait_for_count("SELECT count(*) FROM enrich.erasures", 1, WAIT)
        .await;
    assert_eq!(app.count("SELECT count(*) FROM enrich.notes").await, 0);
    assert_eq!(
        app.count("SELECT count(*) FROM enrich.customer_notes")
            .await,
        0
    );
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn null_clears_a_field_keeps_it_in_history_and_announces_the_clear() {
    let app = TestApp::new().await;
    let (_connection, mut updates) = app.outbound_listener("profile.updated").await;
    let worker = app.start_worker().await;
    let ws = unique("ws");
    let update = |id: &str, source: &str, actor: &str, fields: Value| {
        about(
            &ws,
            "profile.update",
            id,
            "u-clear",
            json!({"source": source, "actor": actor, "fields": fields}),
        )
    };
    app.publish(&[
        chat(&ws, "m1", "c1", "u-clear", "customer", "hello"),
        update(
            "p1",
            "agent",
            "agent-1",
            json!({"phone": "+14155550100", "name": "Ann Lee"}),
        ),
    ])
    .await;
    let first = next_outbound(&mut updates, WAIT).await;
    let customer_id = customer_of(&app, "u-clear").await;
    assert_eq!(first["customer_id"], json!(customer_id));
    assert_eq!(first["changes"].as_array().map(Vec::len), Some(2));

    // A form ranks below the agent: its clear is refused and nothing changes.
    app.publish(&[update("p2", "form", "form-9", json!({"phone": null}))])
        .await;
    // An agent clears it; an unknown field's null is refused alone.
    app.publish(&[update(
        "p3",
        "agent",
        "agent-2",
        json!({"phone": null, "no_such_field": null}),
    )])
    .await;
    assert_eq!(
        next_outbound(&mut updates, WAIT).await,
        json!({"workspace_id": ws, "customer_id": customer_id,
               "changes": [{"field": "phone", "old": "+14155550100", "new": null, "source": "agent"}]})
    );
    no_more_events(&mut updates).await;

    let profile: (Option<String>, Option<String>) =
        sqlx::query_as("SELECT phone, name FROM enrich.customer_profiles WHERE customer_id = $1")
            .bind(customer_id)
            .fetch_one(&app.pool)
            .await
            .expect("profile");
    assert_eq!(profile, (None, Some("Ann Lee".to_owned())));
    let history: Vec<HistoryRow> = sqlx::query_as(
        "SELECT old_value, new_value, source, actor FROM enrich.field_history
          WHERE customer_id = $1 AND field = 'phone' ORDER BY change_id",
    )
    .bind(customer_id)
    .fetch_all(&app.pool)
    .await
    .expect("history");
    assert_eq!(
        history,
        vec![
            (
                None,
                Some("+14155550100".to_owned()),
                "agent".to_owned(),
                Some("agent-1".to_owned())
            ),
            (
                Some("+14155550100".to_owned()),
                None,
                "agent".to_owned(),
                Some("agent-2".to_owned())
            ),
        ]
    );
    // Clearing a field that has no value is a no-op, not an error.
    app.publish(&[update("p4", "agent", "agent-2", json!({"phone": null}))])
        .await;
    app.wait_for_count(
        "SELECT count(*) FROM enrich.processed_events WHERE event_id = 'p4'",
        1,
        WAIT,
    )
    .await;
    no_more_events(&mut updates).await;
    assert_eq!(
        app.count("SELECT count(*) FROM enrich.field_changes WHERE field = 'phone'")
            .await,
        2
    );
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tag_changes_have_an_actor_and_history_and_move_updated_at() {
    let app = TestApp::new().await;
    let worker = app.start_worker().await;
    let ws = unique("ws");
    app.publish(&[chat(&ws, "m1", "c1", "u-tags", "customer", "hello")])
        .await;
    app.wait_for_count("SELECT count(*) FROM enrich.customers", 1, WAIT)
        .await;
    let customer_id = customer_of(&app, "u-tags").await;
    // Make the profile look untouched for a day, then change tags only.
    sqlx::query("UPDATE enrich.customers SET updated_at = now() - interval '1 day'")
        .execute(&app.pool)
        .await
        .expect("age");
    let before: DateTime<Utc> = sqlx::query_scalar("SELECT updated_at FROM enrich.customers")
        .fetch_one(&app.pool)
        .await
        .expect("updated_at");
    app.publish(&[about(
        &ws,
        "profile.update",
        "t1",
        "u-tags",
        json!({"source": "agent", "actor": "agent-3", "fields": {}, "tags_add": ["vip", "returning"]}),
    )])
    .await;
    app.wait_for_count("SELECT count(*) FROM enrich.tag_changes", 2, WAIT)
        .await;
    let after: DateTime<Utc> = sqlx::query_scalar("SELECT updated_at FROM enrich.customers")
        .fetch_one(&app.pool)
        .await
        .expect("updated_at");
    assert!(
        after > before + chrono::Duration::hours(23),
        "{before} → {after}"
    );

    // Removing one tag and re-adding a held one: only the real change is recorded.
    app.publish(&[about(
        &ws,
        "profile.update",
        "t2",
        "u-tags",
        json!({"source": "api", "actor": "crm-sync", "fields": {},
               "tags_add": ["vip"], "tags_remove": ["returning", "never-had"]}),
    )])
    .await;
    app.wait_for_count("SELECT count(*) FROM enrich.tag_changes", 3, WAIT)
        .await;
    let history: Vec<(String, String, Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT tag, change, source, actor FROM enrich.tag_changes
          WHERE customer_id = $1 ORDER BY change, tag",
    )
    .bind(customer_id)
    .fetch_all(&app.pool)
    .await
    .expect("tag history");
    let row = |tag: &str, change: &str, source: &str, actor: &str| {
        (
            tag.to_owned(),
            change.to_owned(),
            Some(source.to_owned()),
            Some(actor.to_owned()),
        )
    };
    assert_eq!(
        history,
        vec![
            row("returning", "added", "agent", "agent-3"),
            row("vip", "added", "agent", "agent-3"),
            row("returning", "removed", "api", "crm-sync"),
        ]
    );
    let tags: (Vec<String>, Option<String>) = sqlx::query_as(
        "SELECT p.tags, t.actor FROM enrich.customer_profiles p
           JOIN enrich.tags t ON t.customer_id = p.customer_id
          WHERE p.customer_id = $1",
    )
    .bind(customer_id)
    .fetch_one(&app.pool)
    .await
    .expect("tags");
    assert_eq!(tags, (vec!["vip".to_owned()], Some("agent-3".to_owned())));
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_status_path_moves_unresolved_queries_and_fills_escalations() {
    let app = TestApp::new().await;
    let worker = app.start_worker().await;
    let ws = unique("ws");
    let unresolved = "SELECT unresolved_queries::bigint FROM enrich.customer_profiles";
    app.publish(&[
        chat(&ws, "m1", "c-esc", "u-esc", "customer", "I want a human"),
        json!({"type": "conversation.status", "version": 1, "id": "s1", "workspace_id": ws,
               "occurred_at": "2026-03-01T10:01:00Z", "conversation_id": "c-esc",
               "status": "requesting", "reason": "asked for an agent"}),
        // The same request again while it is open is the same escalation.
        status(&ws, "s1b", "c-esc", "requesting", "2026-03-01T10:01:30Z"),
    ])
    .await;
    app.wait_for_count(
        "SELECT count(*) FROM enrich.processed_events WHERE event_id = 's1b'",
        1,
        WAIT,
    )
    .await;
    assert_eq!(app.count(unresolved).await, 1);
    let open: EscalationRow =
        sqlx::query_as(
            "SELECT conversation_id, workspace_id, platform, reason, escalated_at, resolved_at, handled_by
               FROM enrich.escalations",
        )
        .fetch_one(&app.pool)
        .await
        .expect("one open escalation");
    assert_eq!(
        open,
        (
            "c-esc".to_owned(),
            ws.clone(),
            "web".to_owned(),
            Some("asked for an agent".to_owned()),
            at("2026-03-01T10:01:00Z"),
            None,
            None
        )
    );

    // An agent takes it: resolved, handled by that agent.
    let mut intervened = status(&ws, "s2", "c-esc", "intervened", "2026-03-01T10:03:00Z");
    intervened["agent_id"] = json!("agent-9");
    app.publish(&[intervened]).await;
    app.wait_for_count(unresolved, 0, WAIT).await;
    let handled: (Option<DateTime<Utc>>, Option<String>) =
        sqlx::query_as("SELECT resolved_at, handled_by FROM enrich.escalations")
            .fetch_one(&app.pool)
            .await
            .expect("escalation");
    assert_eq!(
        handled,
        (Some(at("2026-03-01T10:03:00Z")), Some("agent-9".to_owned()))
    );

    // Closing keeps the resolution as it was.
    app.publish(&[status(&ws, "s3", "c-esc", "closed", "2026-03-01T10:09:00Z")])
        .await;
    app.wait_for_count(
        "SELECT count(*) FROM enrich.conversation_overview WHERE status = 'closed'",
        1,
        WAIT,
    )
    .await;
    let after_close: (Option<DateTime<Utc>>, Option<String>, i64) = sqlx::query_as(
        "SELECT e.resolved_at, e.handled_by, o.escalations::bigint
           FROM enrich.escalations e JOIN enrich.conversation_overview o USING (conversation_id)",
    )
    .fetch_one(&app.pool)
    .await
    .expect("closed");
    assert_eq!(
        after_close,
        (
            Some(at("2026-03-01T10:03:00Z")),
            Some("agent-9".to_owned()),
            1
        )
    );

    // A second request, resolved by the conversation closing: no handler.
    app.publish(&[
        chat(&ws, "m2", "c-esc", "u-esc", "customer", "still there?"),
        status(&ws, "s4", "c-esc", "requesting", "2026-03-01T11:00:00Z"),
    ])
    .await;
    app.wait_for_count(unresolved, 1, WAIT).await;
    app.publish(&[
        json!({"type": "conversation.closed", "version": 1, "id": "close-2",
        "workspace_id": ws, "occurred_at": "2026-03-01T11:30:00Z", "conversation_id": "c-esc",
        "resolved_by": "bot"}),
    ])
    .await;
    app.wait_for_count(unresolved, 0, WAIT).await;
    let all: Vec<(DateTime<Utc>, When, Text)> = sqlx::query_as(
        "SELECT escalated_at, resolved_at, handled_by FROM enrich.escalations ORDER BY escalated_at",
    )
    .fetch_all(&app.pool)
    .await
    .expect("escalations");
    assert_eq!(
        all,
        vec![
            (
                at("2026-03-01T10:01:00Z"),
                Some(at("2026-03-01T10:03:00Z")),
                Some("agent-9".to_owned())
            ),
            (
                at("2026-03-01T11:00:00Z"),
                Some(at("2026-03-01T11:30:00Z")),
                None
            ),
        ]
    );
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn views_show_visitor_data_transcripts_and_the_customers_own_last_message() {
    let app = TestApp::new().await;
    let worker = app.start_worker().await;
    let ws = unique("ws");
    let mut first = chat(
        &ws,
        "v1",
        "c-v",
        "u-v",
        "customer",
        "Hi, my email is vis@example.com",
    );
    first["occurred_at"] = json!("2026-03-01T10:00:00Z");
    first["visitor"] = json!({"ip": "203.0.113.5", "user_agent": "UA/1.0", "browser": "Firefox",
        "os": "Linux", "device": "desktop", "country": "DE", "locale": "de-DE",
        "page_url": "https://shop.example/pricing", "referrer": "https://search.example/",
        "session_started_at": "2026-03-01T09:55:00Z"});
    let mut reply = chat(&ws, "v2", "c-v", "u-v", "agent", "Thanks, noted.");
    reply["occurred_at"] = json!("2026-03-01T10:05:00Z");
    reply["agent_id"] = json!("agent-4");
    app.publish(&[first, reply]).await;
    app.wait_for_count("SELECT count(*) FROM enrich.messages", 2, WAIT)
        .await;
    app.wait_for_count(
        "SELECT count(*) FROM enrich.customer_fields WHERE field = 'email'",
        1,
        WAIT,
    )
    .await;

    type ProfileRow = (
        DateTime<Utc>,
        Option<DateTime<Utc>>,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<DateTime<Utc>>,
        Option<bool>,
    );
    let profile: ProfileRow = sqlx::query_as(
        "SELECT last_seen_at, last_customer_message_at, browser, os, device, visitor_country,
                first_visit_at, identified
           FROM enrich.customer_profiles",
    )
    .fetch_one(&app.pool)
    .await
    .expect("profile");
    assert_eq!(
        profile,
        (
            at("2026-03-01T10:05:00Z"),
            Some(at("2026-03-01T10:00:00Z")),
            Some("Firefox".to_owned()),
            Some("Linux".to_owned()),
            Some("desktop".to_owned()),
            Some("DE".to_owned()),
            Some(at("2026-03-01T09:55:00Z")),
            Some(true)
        )
    );

    let identity: IdentityRow = sqlx::query_as(
        "SELECT platform, platform_user_id, ip, page_url, locale, session_started_at
               FROM enrich.identities",
    )
    .fetch_one(&app.pool)
    .await
    .expect("identity");
    assert_eq!(
        identity,
        (
            "web".to_owned(),
            "u-v".to_owned(),
            Some("203.0.113.5".to_owned()),
            Some("https://shop.example/pricing".to_owned()),
            Some("de-DE".to_owned()),
            Some(at("2026-03-01T09:55:00Z"))
        )
    );

    let transcript: Vec<TranscriptRow> = sqlx::query_as(
        "SELECT conversation_id, event_id, sender, agent_id, text, occurred_at
               FROM enrich.conversation_messages WHERE workspace_id = $1 ORDER BY message_id",
    )
    .bind(&ws)
    .fetch_all(&app.pool)
    .await
    .expect("transcript");
    assert_eq!(
        transcript,
        vec![
            (
                "c-v".to_owned(),
                "v1".to_owned(),
                "customer".to_owned(),
                None,
                "Hi, my email is vis@example.com".to_owned(),
                at("2026-03-01T10:00:00Z")
            ),
            (
                "c-v".to_owned(),
                "v2".to_owned(),
                "agent".to_owned(),
                Some("agent-4".to_owned()),
                "Thanks, noted.".to_owned(),
                at("2026-03-01T10:05:00Z")
            ),
        ]
    );

    // The email's history row names the chat backend's event id of its message.
    let source_event: Option<String> = sqlx::query_scalar(
        "SELECT message_event_id FROM enrich.field_history WHERE field = 'email'",
    )
    .fetch_one(&app.pool)
    .await
    .expect("history");
    assert_eq!(source_event.as_deref(), Some("v1"));
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retention_keeps_every_identifiable_profile_and_expires_the_anonymous() {
    let app = TestApp::new().await;
    let worker = app.start_worker().await;
    let ws = unique("ws");
    let users = [
        "u-anon",
        "u-named-in-chat",
        "u-phone",
        "u-tagged",
        "u-noted",
        "u-agent",
    ];
    let mut events: Vec<Value> = users
        .iter()
        .map(|user| {
            chat(
                &ws,
                &format!("m-{user}"),
                &format!("c-{user}"),
                user,
                "customer",
                "hello",
            )
        })
        .collect();
    events.extend([
        chat(
            &ws,
            "named",
            "c-u-named-in-chat",
            "u-named-in-chat",
            "customer",
            "my name is Kim",
        ),
        // A WhatsApp-style profile: a phone and nothing else (metadata source).
        about(
            &ws,
            "profile.update",
            "p-phone",
            "u-phone",
            json!({"source": "system", "actor": "gateway", "fields": {"phone": "+14155550123"}}),
        ),
        about(
            &ws,
            "profile.update",
            "p-tag",
            "u-tagged",
            json!({"source": "system", "actor": "flow", "fields": {}, "tags_add": ["lead"]}),
        ),
        about(
            &ws,
            "note.added",
            "n-note",
            "u-noted",
            json!({"text": "called about billing", "author": "agent-1"}),
        ),
        about(
            &ws,
            "profile.update",
            "p-agent",
            "u-agent",
            json!({"source": "agent", "actor": "agent-1", "fields": {"language": "de"}}),
        ),
    ]);
    app.publish(&events).await;
    app.wait_for_count("SELECT count(*) FROM enrich.processed_events", 11, WAIT)
        .await;
    worker.stop().await;
    assert_eq!(
        app.count("SELECT count(*) FROM enrich.customer_profiles WHERE name = 'Kim'")
            .await,
        1
    );
    sqlx::query(
        "UPDATE enrich.customers SET last_seen_at = now() - interval '40 days',
                updated_at = now() - interval '40 days'",
    )
    .execute(&app.pool)
    .await
    .expect("age every profile");
    let removed = enricher::store::retention::remove_inactive_anonymous(&app.pool, 30, 1000)
        .await
        .expect("sweep");
    assert_eq!(removed, 2);
    let left: Vec<String> =
        sqlx::query_scalar("SELECT platform_user_id FROM enrich.identities ORDER BY 1")
            .fetch_all(&app.pool)
            .await
            .expect("identities");
    assert_eq!(left, vec!["u-agent", "u-noted", "u-phone", "u-tagged"]);
    // identified keeps its meaning: has an email.
    assert_eq!(
        app.count("SELECT count(*) FROM enrich.customer_profiles WHERE identified")
            .await,
        0
    );
}

async fn columns(app: &TestApp, view: &str) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT column_name::text FROM information_schema.columns
          WHERE table_schema = 'enrich' AND table_name = $1 ORDER BY ordinal_position",
    )
    .bind(view)
    .fetch_all(&app.pool)
    .await
    .expect("columns")
}

/// `wanted` appears in `columns` in this order (other columns may sit between).
fn in_order(columns: &[String], wanted: &[&str]) -> bool {
    let mut rest = columns.iter();
    wanted
        .iter()
        .all(|want| rest.by_ref().any(|column| column == want))
}

#[tokio::test]
async fn the_views_keep_the_contracts_columns_in_order() {
    let app = TestApp::new().await;
    // SPEC §3 (each list is the view's first columns), §5 (new views) and
    // the customer list's view (docs/dashboards-search.md).
    let contract: [(&str, &[&str]); 10] = [
        (
            "customer_profiles",
            &[
                "customer_id",
                "workspace_id",
                "display_name",
                "name",
                "email",
                "phone",
                "language",
                "country",
                "location",
                "profile_picture_url",
                "platforms",
                "source",
                "first_message_tag",
                "created_at",
                "first_seen_at",
                "last_seen_at",
                "conversation_count",
                "message_count",
                "unresolved_queries",
                "last_message",
                "avg_sentiment",
                "attributes",
                "tags",
                "agent_instructions",
                "insights",
                "updated_at",
            ],
        ),
        (
            "conversation_overview",
            &[
                "conversation_id",
                "workspace_id",
                "customer_id",
                "platform",
                "status",
                "started_at",
                "last_message_at",
                "ended_at",
                "message_count",
                "summary",
                "sentiment",
                "sentiment_score",
                "topics",
                "resolution",
                "escalations",
            ],
        ),
        (
            "field_history",
            &[
                "customer_id",
                "field",
                "old_value",
                "new_value",
                "source",
                "actor",
                "message_id",
                "model",
                "prompt_version",
                "changed_at",
            ],
        ),
        (
            "ask_log",
            &[
                "conversation_id",
                "customer_id",
                "field",
                "question",
                "reason",
                "asked_at",
                "outcome",
            ],
        ),
        (
            "llm_usage",
            &[
                "day",
                "workspace_id",
                "purpose",
                "model",
                "calls",
                "prompt_tokens",
                "completion_tokens",
                "p50_ms",
                "p95_ms",
                "failures",
            ],
        ),
        (
            "identities",
            &[
                "customer_id",
                "workspace_id",
                "platform",
                "platform_user_id",
                "first_seen_at",
                "last_seen_at",
                "ip",
                "user_agent",
                "browser",
                "os",
                "device",
                "country",
                "locale",
                "page_url",
                "referrer",
                "session_started_at",
            ],
        ),
        (
            "conversation_messages",
            &[
                "conversation_id",
                "workspace_id",
                "customer_id",
                "event_id",
                "sender",
                "agent_id",
                "text",
                "occurred_at",
            ],
        ),
        (
            "escalations",
            &[
                "conversation_id",
                "workspace_id",
                "customer_id",
                "platform",
                "reason",
                "escalated_at",
                "resolved_at",
                "handled_by",
            ],
        ),
        (
            "notes",
            &[
                "note_id",
                "customer_id",
                "workspace_id",
                "text",
                "author",
                "created_at",
            ],
        ),
        (
            "customer_search",
            &[
                "customer_id",
                "workspace_id",
                "display_name",
                "name",
                "email",
                "phone",
                "platforms",
                "source",
                "created_at",
                "first_seen_at",
                "last_seen_at",
                "last_customer_message_at",
                "last_active_at",
                "conversation_count",
                "message_count",
                "unresolved_queries",
                "last_message",
                "updated_at",
                "identified",
            ],
        ),
    ];
    for (view, expected) in contract {
        let actual = columns(&app, view).await;
        assert!(
            actual.len() >= expected.len() && actual[..expected.len()] == *expected,
            "enrich.{view} starts with {actual:?}, the contract says {expected:?}"
        );
    }
    // SPEC §5: columns added at the end, after everything the views had before.
    let additions: [(&str, &str, &[&str]); 3] = [
        (
            "customer_profiles",
            "identified",
            &[
                "last_customer_message_at",
                "browser",
                "os",
                "device",
                "visitor_country",
                "first_visit_at",
            ],
        ),
        ("conversation_overview", "customer_turns", &["resolved_at"]),
        ("field_history", "change_id", &["message_event_id"]),
    ];
    for (view, last_before, added) in additions {
        let actual = columns(&app, view).await;
        let mut wanted = vec![last_before];
        wanted.extend_from_slice(added);
        assert!(
            in_order(&actual, &wanted),
            "enrich.{view} has {actual:?}; {added:?} must follow {last_before}"
        );
    }
}

/// The query plan of `sql` (run with `$1` = `ws-search`), as text.
async fn plan(app: &TestApp, sql: &str) -> String {
    let mut conn = app.pool.acquire().await.expect("connection");
    sqlx::query("SET enable_seqscan = off")
        .execute(&mut *conn)
        .await
        .expect("set");
    let lines: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("EXPLAIN {sql}")))
        .bind("ws-search")
        .fetch_all(&mut *conn)
        .await
        .expect(sql);
    sqlx::query("RESET enable_seqscan")
        .execute(&mut *conn)
        .await
        .expect("reset");
    lines.join("\n")
}

#[tokio::test]
async fn the_documented_searches_start_from_an_index() {
    let app = TestApp::new().await;
    // 3,000 customers in two workspaces, as docs/dashboards-search.md seeds them (smaller).
    sqlx::raw_sql(
        "INSERT INTO enrich.workspaces (id) VALUES ('ws-search'), ('ws-other');
         CREATE TEMP TABLE seed AS
         SELECT g, CASE WHEN g <= 2500 THEN 'ws-search' ELSE 'ws-other' END AS ws,
                gen_random_uuid() AS id, now() - g * interval '1 minute' AS seen
           FROM generate_series(1, 3000) g;
         INSERT INTO enrich.customers (id, workspace_id, first_seen_at, last_seen_at)
         SELECT id, ws, seen, seen FROM seed;
         INSERT INTO enrich.customer_identities (workspace_id, platform, platform_user_id, customer_id)
         SELECT ws, 'whatsapp', 'user-' || g, id FROM seed;
         INSERT INTO enrich.customer_fields (customer_id, field, value, source, source_rank)
         SELECT id, 'name',
                CASE WHEN g = 42 THEN 'Marguerite Oyelaran-Whitfield'
                     ELSE (ARRAY['Anna','Mike','Lena','Omar','Yuki'])[1 + g % 5] || ' ' ||
                          (ARRAY['Tanaka','Schmidt','Garcia','Okafor','Nguyen'])[1 + (g / 5) % 5] END,
                'customer', 2
           FROM seed;
         INSERT INTO enrich.customer_fields (customer_id, field, value, source, source_rank)
         SELECT id, 'email', 'user' || g || '@example.com', 'customer', 2 FROM seed;
         INSERT INTO enrich.customer_fields (customer_id, field, value, source, source_rank)
         SELECT id, 'phone', '+4915' || lpad(g::text, 9, '0'), 'customer', 2 FROM seed;
         INSERT INTO enrich.tags (customer_id, tag) SELECT id, 'tag-' || g FROM seed;
         ANALYZE;",
    )
    .execute(&app.pool)
    .await
    .expect("seed");
    let by_key = "using customers_pkey on customers c";
    let searches = [
        (
            "SELECT customer_id, display_name, email, phone, tags, last_customer_message_at
               FROM enrich.customer_profiles
              WHERE workspace_id = $1 AND email = lower('User42@Example.com')",
            "customer_fields_email",
        ),
        (
            "SELECT customer_id, display_name, email, phone FROM enrich.customer_search
              WHERE workspace_id = $1 AND phone = '+4915000000042'",
            "customer_fields_phone",
        ),
        (
            "SELECT customer_id, display_name, email, phone, platforms, last_active_at
               FROM enrich.customer_search
              WHERE workspace_id = $1 AND name ILIKE '%' || 'oyelaran' || '%'
              ORDER BY last_active_at DESC, customer_id DESC LIMIT 50",
            "customer_fields_name_trgm",
        ),
        (
            "SELECT customer_id, display_name FROM enrich.customer_search
              WHERE workspace_id = $1
                AND customer_id IN (SELECT customer_id FROM enrich.identities
                                     WHERE workspace_id = $1 AND platform_user_id = 'user-42')",
            "customer_identities_user",
        ),
        (
            "SELECT customer_id, display_name, email, phone, platforms, last_active_at
               FROM enrich.customer_search
              WHERE workspace_id = $1
                AND customer_id IN (
                      SELECT customer_id FROM enrich.customer_fields WHERE field = 'name' AND value ILIKE '%user-42%'
                      UNION SELECT customer_id FROM enrich.customer_fields WHERE field = 'email' AND value = 'user-42'
                      UNION SELECT customer_id FROM enrich.identities WHERE workspace_id = $1 AND platform_user_id = 'user-42')
              ORDER BY last_active_at DESC, customer_id DESC LIMIT 50",
            "customer_identities_user",
        ),
        (
            "SELECT customer_id, display_name FROM enrich.customer_search
              WHERE workspace_id = $1
                AND customer_id IN (SELECT customer_id FROM enrich.tags WHERE tag = 'tag-42')",
            "tags_tag",
        ),
        // The full profile joined the same way.
        (
            "SELECT p.customer_id, p.display_name, p.tags, p.browser FROM enrich.customer_profiles p
              WHERE p.workspace_id = $1
                AND p.customer_id IN (SELECT customer_id FROM enrich.identities
                                       WHERE workspace_id = $1 AND platform_user_id = 'user-42')",
            "customer_identities_user",
        ),
    ];
    for (sql, index) in searches {
        let plan = plan(&app, sql).await;
        assert!(plan.contains(index), "{sql}\ndoes not use {index}:\n{plan}");
        let lines: Vec<&str> = plan.lines().collect();
        let customers_by_key = lines.windows(2).any(|pair| {
            pair[0].contains(by_key) && pair[1].trim_start().starts_with("Index Cond: (id =")
        });
        assert!(
            customers_by_key && !plan.contains("Seq Scan"),
            "{sql}\nreads customers other than by key:\n{plan}"
        );
    }
}

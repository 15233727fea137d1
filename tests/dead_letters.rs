//! Dead letters kept in Postgres and erasure that is complete, on real
//! RabbitMQ, Redis and Postgres: the worker moves what reaches the
//! dead-letter queue into `enrich.dead_letters`; `enricher dead-letters
//! list|replay|purge` work on it; and a `customer.forget` racing the
//! customer's own late events (retries, redeliveries) leaves no personal
//! data in the `enrich` schema, the outbox or the dead letters.

mod common;

use std::process::Output;
use std::time::Duration;

use common::{TestApp, chat, unique};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(60);

async fn enricher(app: &TestApp, args: &[&str]) -> Output {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_enricher"));
    command.args(args).current_dir(env!("CARGO_MANIFEST_DIR"));
    for (key, value) in &app.settings_env {
        command.env(key, value);
    }
    command.output().await.expect("enricher runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dead_letters_are_listed_replayed_and_purged() {
    let app = TestApp::new().await;
    let mut worker = app.start_worker().await;
    let ws = unique("ws");
    // An update of a customer enricher does not know, and garbage.
    app.publish(&[
        json!({"type": "profile.update", "version": 1, "id": "close-1",
        "workspace_id": ws, "occurred_at": "2026-03-01T10:05:00Z",
        "customer_id": "0b6c2a4e-8d1f-4c3a-9e7b-5f2d1a0c9e88",
        "fields": {"location": "refund sent"}, "source": "agent"}),
    ])
    .await;
    app.publish_raw(b"not json at all").await;
    worker
        .while_running(app.wait_for_count("SELECT count(*) FROM enrich.dead_letters", 2, WAIT))
        .await;

    let listed = enricher(&app, &["dead-letters", "list"]).await;
    assert!(listed.status.success(), "{listed:?}");
    let listed = String::from_utf8_lossy(&listed.stdout).into_owned();
    let lines: Vec<&str> = listed.lines().collect();
    assert_eq!(lines.len(), 2, "{listed}");
    let close_line = lines
        .iter()
        .find(|line| line.contains("close-1"))
        .expect("the close is listed");
    assert!(close_line.contains("profile.update"), "{close_line}");
    assert!(close_line.contains(&ws), "{close_line}");
    assert!(!listed.contains("refund sent"), "bodies only with --body");
    let id_of = |line: &str| line.split('\t').next().expect("id").to_owned();
    let (close_id, garbage_id) = (
        id_of(close_line),
        id_of(
            lines
                .iter()
                .find(|l| !l.contains("close-1"))
                .expect("garbage"),
        ),
    );

    // Replay needs an id or --all.
    let refused = enricher(&app, &["dead-letters", "replay"]).await;
    assert!(!refused.status.success());

    // Replaying republishes the event and removes its row; the customer is
    // still unknown, so the worker dead-letters it again, as a new row.
    let replayed = enricher(&app, &["dead-letters", "replay", &close_id]).await;
    assert!(replayed.status.success(), "{replayed:?}");
    assert!(String::from_utf8_lossy(&replayed.stdout).contains("replayed 1"));
    let close_id_number: i64 = close_id.trim().parse().expect("numeric id");
    let garbage_id_number: i64 = garbage_id.trim().parse().expect("numeric id");
    let newest_before = close_id_number.max(garbage_id_number);
    worker
        .while_running(app.wait_for_count(
            &format!("SELECT count(*) FROM enrich.dead_letters WHERE id > {newest_before}"),
            1,
            WAIT,
        ))
        .await;
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) FROM enrich.dead_letters WHERE id = {close_id_number}"
        ))
        .await,
        0,
        "the replayed row is gone"
    );
    assert_eq!(
        app.count("SELECT count(*) FROM enrich.dead_letters").await,
        2,
        "the replayed event came back, the garbage stays"
    );

    let purged = enricher(&app, &["dead-letters", "purge", &garbage_id]).await;
    assert!(purged.status.success(), "{purged:?}");
    assert_eq!(
        app.count("SELECT count(*) FROM enrich.dead_letters").await,
        1,
        "the purged row is gone"
    );
    worker.stop().await;
}

/// Every row of every table of the `enrich` schema as text (dead-letter
/// bodies decoded), for searching personal data.
async fn dump_enrich_schema(app: &TestApp) -> String {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables
          WHERE table_schema = 'enrich' AND table_type = 'BASE TABLE'",
    )
    .fetch_all(&app.pool)
    .await
    .expect("tables");
    let mut dump = String::new();
    for table in tables {
        let text: String = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT coalesce(string_agg(t::text, ' '), '') FROM enrich.{table} t"
        )))
        .fetch_one(&app.pool)
        .await
        .expect("dump");
        dump.push_str(&text);
    }
    let bodies: String = sqlx::query_scalar(
        "SELECT coalesce(string_agg(convert_from(body, 'UTF8'), ' '), '') FROM enrich.dead_letters",
    )
    .fetch_one(&app.pool)
    .await
    .expect("bodies");
    dump.push_str(&bodies);
    dump
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_forget_racing_the_customers_late_events_leaves_no_personal_data() {
    let app = TestApp::new().await;
    let mut worker = app.start_worker().await;
    let ws = unique("ws");
    let mut first = chat(
        &ws,
        "m1",
        "conv-f",
        "u-forget",
        "customer",
        "my secret text",
    );
    first["visitor"] = json!({"ip": "203.0.113.9"});
    // A message of theirs the worker refuses: it waits in the dead letters.
    let mut refused = chat(
        &ws,
        "m-bad",
        "conv-f",
        "u-forget",
        "customer",
        "my secret text",
    );
    refused["first_message_tag"] = json!(format!("Secret Person {}", "x".repeat(100)));
    let update = json!({"type": "profile.update", "version": 1, "id": "p1", "workspace_id": ws,
        "occurred_at": "2026-03-01T10:00:00Z", "platform": "web", "platform_user_id": "u-forget",
        "fields": {"name": "Secret Person", "email": "secret@example.com"}, "source": "form"});
    app.publish(&[first.clone(), refused.clone(), update]).await;
    worker
        .while_running(async {
            app.wait_for_count("SELECT count(*) FROM enrich.customer_fields", 2, WAIT)
                .await;
            app.wait_for_count("SELECT count(*) FROM enrich.dead_letters", 1, WAIT)
                .await;
        })
        .await;
    let customer_id: uuid::Uuid = sqlx::query_scalar("SELECT id FROM enrich.customers")
        .fetch_one(&app.pool)
        .await
        .expect("customer");
    // An outbound event about them not published yet (its relay is behind).
    sqlx::query("INSERT INTO enrich.outbox (routing_key, body) VALUES ('profile.updated', $1)")
        .bind(json!({"workspace_id": ws, "customer_id": customer_id,
            "changes": [{"field": "name", "old": null, "new": "Secret Person", "source": "form"}]}))
        .execute(&app.pool)
        .await
        .expect("outbox row");

    app.publish(
        &[json!({"type": "customer.forget", "version": 1, "id": "f1",
        "workspace_id": ws, "occurred_at": "2026-03-02T10:00:00Z",
        "email": "secret@example.com", "actor": "dpo"})],
    )
    .await;
    worker
        .while_running(app.wait_for_count("SELECT count(*) FROM enrich.erasures", 1, WAIT))
        .await;

    // Late copies of their own events, all sent before the erasure: a
    // redelivered message, a retried update, a retried status change for
    // their conversation and a refused message retried into the dead letters.
    let metrics = std::sync::Arc::clone(&worker.metrics);
    let dead_before = metrics.dead_lettered.get();
    let stored_before = metrics.events_stored.get();
    let mut late_refused = refused;
    late_refused["id"] = json!("m-bad-2");
    // Sent before the erasure but never stored (held by a failed attempt,
    // say): its id is new, so only its time tells it is a late copy.
    let mut never_stored = first.clone();
    never_stored["id"] = json!("m1-never-stored");
    app.publish(&[
        first,
        never_stored,
        json!({"type": "profile.update", "version": 1, "id": "p2", "workspace_id": ws,
            "occurred_at": "2026-03-01T11:00:00Z", "email": "secret@example.com",
            "fields": {"name": "Secret Person"}, "source": "form"}),
        json!({"type": "conversation.status", "version": 1, "id": "s1", "workspace_id": ws,
            "occurred_at": "2026-03-01T10:30:00Z", "conversation_id": "conv-f",
            "status": "requesting", "reason": "Secret Person wants a human"}),
        late_refused,
    ])
    .await;
    worker
        .while_running(async {
            let deadline = std::time::Instant::now() + WAIT;
            // Four handled by the lanes and dropped there (the two
            // messages, the update, the status for the erased
            // conversation), one dead-lettered (refused at the boundary).
            while metrics.events_stored.get() < stored_before + 4
                || metrics.dead_lettered.get() < dead_before + 1
            {
                assert!(
                    std::time::Instant::now() < deadline,
                    "late events not handled"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await;
    // Give the dead-letter sink time to take what was just dead-lettered.
    tokio::time::sleep(Duration::from_secs(2)).await;

    assert_eq!(app.count("SELECT count(*) FROM enrich.customers").await, 0);
    assert_eq!(app.count("SELECT count(*) FROM enrich.outbox").await, 0);
    assert_eq!(
        app.count("SELECT count(*) FROM enrich.dead_letters").await,
        0
    );
    let dump = dump_enrich_schema(&app).await;
    for secret in [
        "my secret text",
        "Secret Person",
        "secret@example.com",
        "u-forget",
        "203.0.113.9",
    ] {
        assert!(
            !dump.contains(secret),
            "the enrich schema still holds {secret}"
        );
    }

    // A message they send after the erasure starts a fresh profile.
    let mut later = chat(&ws, "m2", "conv-g", "u-forget", "customer", "hello again");
    later["occurred_at"] = json!("2026-03-03T10:00:00Z");
    app.publish(&[later]).await;
    worker
        .while_running(app.wait_for_count("SELECT count(*) FROM enrich.customers", 1, WAIT))
        .await;
    worker.stop().await;
}

//! Every chat message updates its customer's and its conversation's row
//! (last message, counters), once per run of messages a lane records. Postgres rewrites such a row in place ("HOT",
//! no new index entries) only when no indexed column changes: an index on a
//! column every message moves (say the customer's last activity) makes each
//! message add an entry to every index of the table. This checks, on a real
//! worker and the real schema, that most of those updates stay in place.

mod common;

use std::time::Duration;

use common::{TestApp, chat, unique};

const MESSAGES: usize = 300;

/// `(updates, of which in place)` of an `enrich` table, as the statistics
/// collector reports them once the worker's sessions have flushed theirs:
/// read until two reads a second apart agree on a count above zero.
async fn updates(app: &TestApp, table: &str) -> (i64, i64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut last = (-1, -1);
    loop {
        let read: (i64, i64) = sqlx::query_as(
            "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables
              WHERE schemaname = 'enrich' AND relname = $1",
        )
        .bind(table)
        .fetch_one(&app.pool)
        .await
        .expect("table statistics");
        if (read.0 > 0 && read == last) || tokio::time::Instant::now() >= deadline {
            return read;
        }
        last = read;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_updates_its_customer_and_conversation_in_place() {
    common::show_worker_log();
    let app = TestApp::new().await;
    let ws = unique("ws");
    let worker = app.start_worker().await;
    // One message every 10 s: every one moves the last activity.
    let events: Vec<_> = (0..MESSAGES)
        .map(|i| {
            let mut event = chat(
                &ws,
                &format!("m{i}"),
                "c1",
                "u1",
                "customer",
                &format!("message {i}"),
            );
            event["occurred_at"] = format!("2026-03-01T10:{:02}:{:02}Z", i / 6, i % 6 * 10).into();
            event
        })
        .collect();
    app.publish(&events).await;
    app.wait_for_count(
        "SELECT count(*) FROM enrich.messages",
        MESSAGES as i64,
        Duration::from_secs(120),
    )
    .await;
    worker.stop().await;

    // A lane records a run of messages with one update per customer and
    // conversation, so there are at most as many updates as messages.
    for table in ["customers", "conversations"] {
        let (updated, hot) = updates(&app, table).await;
        assert!(
            (1..=MESSAGES as i64).contains(&updated),
            "{table}: {updated} updates reported for {MESSAGES} messages"
        );
        assert!(
            hot * 2 >= updated,
            "{table}: only {hot} of {updated} updates were in place"
        );
    }
}

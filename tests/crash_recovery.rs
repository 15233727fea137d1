//! `kill -9` of a worker process in the middle of a stream, then a restart:
//! every event ends up stored exactly once.

mod common;

use std::time::Duration;

use common::{TestApp, chat, unique};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_worker_loses_nothing_and_duplicates_nothing() {
    let app = TestApp::new().await;
    app.declare_topology().await;
    let ws = unique("ws");
    let total = 5000;
    let events: Vec<_> = (0..total)
        .map(|i| {
            chat(
                &ws,
                &format!("e-{i}"),
                &format!("c-{}", i % 100),
                &format!("u-{}", i % 100),
                "customer",
                &format!("{i}"),
            )
        })
        .collect();
    app.publish(&events).await;

    let mut worker = app.spawn_worker_process();
    // Kill it once it is part-way through the stream.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let stored = app.count("SELECT count(*) FROM enrich.messages").await;
        if stored >= 500 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "worker stored only {stored} events"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    worker.kill().expect("kill -9");
    worker.wait().expect("reaped");
    let at_kill = app.count("SELECT count(*) FROM enrich.messages").await;
    assert!(
        at_kill < total,
        "the kill must land mid-stream (stored {at_kill})"
    );

    let mut restarted = app.spawn_worker_process();
    app.wait_for_count(
        "SELECT count(*) FROM enrich.messages",
        total,
        Duration::from_secs(180),
    )
    .await;
    assert_eq!(
        app.count("SELECT count(DISTINCT event_id) FROM enrich.messages")
            .await,
        total
    );
    assert_eq!(
        app.count("SELECT sum(customer_message_count)::bigint FROM enrich.customers")
            .await,
        total
    );
    // Order within each conversation survived the crash.
    let out_of_order = app
        .count(
            "SELECT count(*) FROM (SELECT text::int AS n, lag(text::int) OVER (PARTITION BY conversation_id ORDER BY id) AS prev
                                   FROM enrich.messages) s WHERE prev IS NOT NULL AND prev > n",
        )
        .await;
    assert_eq!(out_of_order, 0);

    // SIGTERM: a graceful stop exits 0.
    let pid = restarted.id().to_string();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill -TERM");
    assert!(status.success());
    let exit = restarted.wait().expect("worker exits");
    assert!(exit.success(), "graceful stop exits 0, got {exit:?}");
}

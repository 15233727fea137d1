//! The broker restarts in the middle of a stream: the worker reconnects by
//! itself and nothing is lost. This restarts the shared local RabbitMQ, so it
//! lives in its own test binary (cargo runs test binaries one at a time).

mod common;

use std::time::Duration;

use common::{TestApp, chat, unique};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_worker_recovers_from_a_broker_restart_without_losing_events() {
    let script = std::env::var("ENRICHER_SERVICES_SCRIPT")
        .expect("ENRICHER_SERVICES_SCRIPT is set by `scripts/services env`");
    let app = TestApp::new().await;
    let worker = app.start_worker().await;
    let ws = unique("ws");
    let batch = |from: usize, to: usize| -> Vec<serde_json::Value> {
        (from..to)
            .map(|i| {
                chat(
                    &ws,
                    &format!("e-{i}"),
                    &format!("c-{}", i % 50),
                    &format!("u-{}", i % 50),
                    "customer",
                    &format!("{i}"),
                )
            })
            .collect()
    };
    app.publish(&batch(0, 3000)).await;
    // Restart while the worker is part-way through the first half.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while app.count("SELECT count(*) FROM enrich.messages").await < 100 {
        assert!(
            std::time::Instant::now() < deadline,
            "worker did not start storing"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let stored_before = app.count("SELECT count(*) FROM enrich.messages").await;
    let restarted = std::process::Command::new(&script)
        .args(["restart", "rabbitmq"])
        .status()
        .expect("restart rabbitmq");
    assert!(restarted.success(), "broker restart failed");

    // Publish the second half once the broker is back; the worker was not touched.
    app.publish(&batch(3000, 4000)).await;
    app.wait_for_count(
        "SELECT count(*) FROM enrich.messages",
        4000,
        Duration::from_secs(120),
    )
    .await;
    assert!(
        stored_before < 3000,
        "the restart must land mid-stream (stored {stored_before})"
    );
    assert_eq!(
        app.count("SELECT count(DISTINCT event_id) FROM enrich.messages")
            .await,
        4000
    );
    worker.stop().await;
}

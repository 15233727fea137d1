//! The example producers in other languages (`examples/producer.py` with
//! pika, `examples/producer.js` with amqplib) publish contract events to the
//! real broker, and a worker turns them into what the dashboard views show.
//! `scripts/test` installs their client libraries and exports
//! `ENRICHER_TEST_PYTHON` (a Python with pika) and `NODE_PATH` (where
//! amqplib is); run elsewhere, these tests fail naming what is missing.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{TestApp, repo_root, unique};

/// Runs a producer with the test's broker settings; panics with its stderr
/// when it fails.
fn run_producer(app: &TestApp, program: &str, script: &str, ws: &str, conversation: &str) {
    let settings = app.settings();
    let url = std::env::var("ENRICHER__AMQP__URL")
        .expect("ENRICHER__AMQP__URL: eval \"$(scripts/services env)\" first");
    let output = Command::new(program)
        .arg(repo_root().join("examples").join(script))
        .args([ws, conversation])
        .env("ENRICHER__AMQP__URL", url)
        .env(
            "ENRICHER__AMQP__INBOUND_EXCHANGE",
            &settings.amqp.inbound_exchange,
        )
        .output()
        .unwrap_or_else(|e| panic!("{program} {script} cannot run: {e}"));
    assert!(
        output.status.success(),
        "{script} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Waits until the views show the producer's conversation and customer.
async fn views_show(app: &TestApp, ws: &str, conversation: &str, email: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let row: Option<(i32, String, Option<String>)> = sqlx::query_as(
            "SELECT o.message_count, o.status, p.email
               FROM enrich.conversation_overview o
               JOIN enrich.customer_profiles p ON p.customer_id = o.customer_id
              WHERE o.workspace_id = $1 AND o.conversation_id = $2",
        )
        .bind(ws)
        .bind(conversation)
        .fetch_optional(&app.pool)
        .await
        .expect("views");
        if let Some((messages, status, found)) = &row
            && *messages == 3
            && status == "closed"
            && found.as_deref() == Some(email)
        {
            return;
        }
        assert!(Instant::now() < deadline, "the views show {row:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn python() -> String {
    let python = std::env::var("ENRICHER_TEST_PYTHON").unwrap_or_else(|_| {
        panic!(
            "ENRICHER_TEST_PYTHON is not set: it names a Python with pika, which scripts/test \
             installs into .services/producers-venv; run the tests through scripts/test"
        )
    });
    let has_pika = Command::new(&python)
        .args(["-c", "import pika"])
        .status()
        .is_ok_and(|status| status.success());
    assert!(
        has_pika,
        "{python} cannot import pika: run scripts/test, which installs it"
    );
    python
}

fn node() -> &'static str {
    let has_amqplib = Command::new("node")
        .args(["-e", "require('amqplib')"])
        .status()
        .is_ok_and(|status| status.success());
    assert!(
        has_amqplib,
        "node cannot load amqplib (NODE_PATH={:?}): scripts/test installs it into \
         .services/node and exports NODE_PATH; run the tests through it",
        std::env::var("NODE_PATH").ok()
    );
    "node"
}

#[tokio::test]
async fn the_python_producer_feeds_the_views() {
    let python = python();
    let app = TestApp::new().await;
    let worker = app.start_worker().await;
    let ws = unique("py");
    run_producer(&app, &python, "producer.py", &ws, "py-conversation");
    views_show(&app, &ws, "py-conversation", "priya.python@example.com").await;
    worker.stop().await;
}

#[tokio::test]
async fn the_node_producer_feeds_the_views() {
    let node = node();
    let app = TestApp::new().await;
    let worker = app.start_worker().await;
    let ws = unique("js");
    run_producer(&app, node, "producer.js", &ws, "js-conversation");
    views_show(&app, &ws, "js-conversation", "jonas.node@example.com").await;
    worker.stop().await;
}

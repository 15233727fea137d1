//! Operating enricher: the metrics and health endpoint, readiness that
//! answers quickly when Postgres hangs, the Grafana dashboard's metrics,
//! start-up checks of the real binary, and `enricher status`.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{TestApp, chat, repo_root, unique};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

async fn get(address: SocketAddr, path: &str) -> (u16, String) {
    let response = reqwest::Client::new()
        .get(format!("http://{address}{path}"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let status = response.status().as_u16();
    (status, response.text().await.expect("body"))
}

/// The value of one series line (`name{labels} value`) in an exposition.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|line| line.starts_with(series) && line[series.len()..].starts_with(' '))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
}

#[tokio::test]
async fn metrics_health_and_readiness_are_served() {
    let app = TestApp::new().await;
    let mut worker = app.start_worker().await;
    let address = worker.http.expect("the endpoint is on in tests");
    let ws = unique("ws");
    let mut events: Vec<Value> = (0..5)
        .map(|i| {
            chat(
                &ws,
                &format!("e-{i}"),
                "c-1",
                "u-1",
                "customer",
                "hello there",
            )
        })
        .collect();
    // A duplicate and an event that cannot be decoded.
    events.push(chat(&ws, "e-0", "c-1", "u-1", "customer", "hello there"));
    app.publish(&events).await;
    app.publish_raw(br#"{"type": "chat.message"}"#).await;
    worker
        .while_running(app.wait_for_count(
            "SELECT count(*) FROM enrich.messages",
            5,
            Duration::from_secs(30),
        ))
        .await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let text = loop {
        let (status, text) = get(address, "/metrics").await;
        assert_eq!(status, 200);
        if sample(&text, "enricher_events_stored_total") == Some(6.0)
            && sample(
                &text,
                "enricher_events_dead_lettered_total{reason=\"invalid_event\"}",
            ) == Some(1.0)
        {
            break text;
        }
        assert!(Instant::now() < deadline, "counts never arrived:\n{text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(sample(&text, "enricher_events_consumed_total"), Some(7.0));
    assert_eq!(
        sample(&text, "enricher_events_deduplicated_total"),
        Some(1.0)
    );
    assert!(
        sample(&text, "enricher_batch_size_count").is_some_and(|n| n >= 1.0),
        "{text}"
    );
    assert!(
        sample(&text, "enricher_event_commit_latency_seconds_count") == Some(6.0),
        "{text}"
    );
    assert!(
        text.contains("# TYPE enricher_events_stored_total counter"),
        "{text}"
    );
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        assert!(!line.contains(&ws), "a label carries an id: {line}");
    }
    assert_eq!(get(address, "/healthz").await.0, 200);
    let (status, body) = get(address, "/readyz").await;
    assert_eq!(
        (status, body.lines().next()),
        (200, Some("ready")),
        "{body}"
    );
    worker.stop().await;
}

/// Every metric the Grafana dashboard queries is exported by a running worker.
#[tokio::test]
async fn the_dashboard_queries_only_exported_metrics() {
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(repo_root().join("docs/grafana-dashboard.json"))
            .expect("docs/grafana-dashboard.json"),
    )
    .expect("the dashboard is JSON");
    let mut names = BTreeSet::new();
    collect_metric_names(&dashboard, &mut names);
    assert!(
        names.len() >= 10,
        "the dashboard names few metrics: {names:?}"
    );
    let app = TestApp::new().await;
    let worker = app.start_worker().await;
    let (_, text) = get(worker.http.expect("endpoint"), "/metrics").await;
    let exported: BTreeSet<&str> = text
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|line| line.split(' ').next())
        .collect();
    let missing: Vec<&String> = names
        .iter()
        .filter(|name| {
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .unwrap_or(name);
            !exported.contains(name.as_str()) && !exported.contains(base)
        })
        .collect();
    assert!(missing.is_empty(), "not exported: {missing:?}\n{text}");
    worker.stop().await;
}

fn collect_metric_names(value: &Value, names: &mut BTreeSet<String>) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(expr)) = map.get("expr") {
                let mut rest = expr.as_str();
                while let Some(at) = rest.find("enricher_") {
                    let tail = &rest[at..];
                    let end = tail
                        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                        .unwrap_or(tail.len());
                    names.insert(tail[..end].to_owned());
                    rest = &tail[end..];
                }
            }
            map.values().for_each(|v| collect_metric_names(v, names));
        }
        Value::Array(items) => items.iter().for_each(|v| collect_metric_names(v, names)),
        _ => {}
    }
}

/// A TCP proxy to Postgres that can be switched into a black hole: every
/// connection, old and new, stays open but nothing passes any more (as when
/// a network path drops packets).
struct BlackHoleProxy {
    address: SocketAddr,
    holding: Arc<AtomicBool>,
}

impl BlackHoleProxy {
    async fn start(upstream: SocketAddr) -> BlackHoleProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let address = listener.local_addr().expect("address");
        let holding = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&holding);
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((client, _)) = listener.accept().await {
                if flag.load(Ordering::SeqCst) {
                    held.push(client);
                    continue;
                }
                let flag = Arc::clone(&flag);
                tokio::spawn(forward(client, upstream, flag));
            }
        });
        BlackHoleProxy { address, holding }
    }

    fn black_hole(&self) {
        self.holding.store(true, Ordering::SeqCst);
    }
}

async fn forward(mut client: TcpStream, upstream: SocketAddr, holding: Arc<AtomicBool>) {
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        return;
    };
    let mut buffer_in = vec![0u8; 64 * 1024];
    let mut buffer_out = vec![0u8; 64 * 1024];
    use tokio::io::AsyncReadExt;
    loop {
        if holding.load(Ordering::SeqCst) {
            // Keep both sockets open and silent for good.
            std::future::pending::<()>().await;
        }
        tokio::select! {
            read = client.read(&mut buffer_in) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) if !holding.load(Ordering::SeqCst) => {
                    if server.write_all(&buffer_in[..n]).await.is_err() { return; }
                }
                Ok(_) => {}
            },
            read = server.read(&mut buffer_out) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) if !holding.load(Ordering::SeqCst) => {
                    if client.write_all(&buffer_out[..n]).await.is_err() { return; }
                }
                Ok(_) => {}
            },
            () = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
    }
}

#[tokio::test]
async fn readiness_answers_not_ready_within_a_second_when_postgres_hangs() {
    let mut app = TestApp::new().await;
    let url = app.database_url.clone();
    let host_port = url
        .split('@')
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .expect("host:port in the database url")
        .to_owned();
    let upstream: SocketAddr = host_port.parse().expect("socket address");
    let proxy = BlackHoleProxy::start(upstream).await;
    app.set(
        "ENRICHER__POSTGRES__URL",
        &url.replace(&host_port, &proxy.address.to_string()),
    );
    let worker = app.start_worker().await;
    let address = worker.http.expect("endpoint");
    // Ready once it consumes its shard queues (after the check for an old
    // single work queue to drain).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = get(address, "/readyz").await;
        if status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "never ready: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    proxy.black_hole();
    for _ in 0..3 {
        let started = Instant::now();
        let (status, body) = get(address, "/readyz").await;
        let took = started.elapsed();
        assert_eq!(status, 503, "{body}");
        assert!(body.starts_with("not ready"), "{body}");
        assert!(body.contains("postgres: no answer within"), "{body}");
        assert!(body.contains("redis: ok"), "{body}");
        assert!(took < Duration::from_secs(1), "took {took:?}");
    }
    assert_eq!(get(address, "/healthz").await.0, 200);
    // The worker cannot finish its shutdown against a hung Postgres in time;
    // dropping the test's runtime ends it.
    drop(worker);
}

/// Runs `enricher run` with the test's settings plus `extra`, expecting it
/// to refuse to start; returns its stderr.
fn refused_start(app: &TestApp, extra: &[(&str, &str)]) -> String {
    let mut command = Command::new(env!("CARGO_BIN_EXE_enricher"));
    command
        .arg("run")
        .current_dir(repo_root())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (key, value) in &app.settings_env {
        command.env(key, value);
    }
    for (key, value) in extra {
        command.env(key, value);
    }
    let child = command.spawn().expect("enricher run starts");
    let output = child.wait_with_output().expect("enricher run ends");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!output.status.success(), "it started: {stderr}");
    stderr
}

#[tokio::test]
async fn start_up_refuses_with_one_line_naming_what_and_where() {
    let app = TestApp::new().await;
    let model = [
        ("ENRICHER__LLM__BASE_URL", "http://127.0.0.1:9/v1"),
        ("ENRICHER__HTTP__LISTEN", "off"),
    ];
    let mut missing_key = model.to_vec();
    missing_key.push((
        "ENRICHER__LLM__API_KEY_ENV",
        "ENRICHER_TEST_KEY_THAT_IS_NOT_SET",
    ));
    let stderr = refused_start(&app, &missing_key);
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.contains("ENRICHER_TEST_KEY_THAT_IS_NOT_SET") && last.contains("unset or empty"),
        "{stderr}"
    );

    let mut empty_key = missing_key.clone();
    empty_key.push(("ENRICHER_TEST_KEY_THAT_IS_NOT_SET", ""));
    let stderr = refused_start(&app, &empty_key);
    assert!(stderr.contains("unset or empty"), "{stderr}");

    let stderr = refused_start(
        &app,
        &[
            (
                "ENRICHER__LLM__PROMPTS_DIR",
                "/nonexistent/enricher-prompts",
            ),
            ("ENRICHER__HTTP__LISTEN", "off"),
        ],
    );
    let last = stderr.lines().last().unwrap_or_default();
    assert!(last.contains("/nonexistent/enricher-prompts"), "{stderr}");

    let stderr = refused_start(
        &app,
        &[
            (
                "ENRICHER__POSTGRES__URL",
                "postgres://enricher:hunter2secret@127.0.0.1:9/enricher",
            ),
            ("ENRICHER__HTTP__LISTEN", "off"),
        ],
    );
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.contains("postgres at 127.0.0.1:9/enricher"),
        "{stderr}"
    );
    assert!(!stderr.contains("hunter2secret"), "{stderr}");

    let stderr = refused_start(
        &app,
        &[
            ("ENRICHER__REDIS__URL", "redis://127.0.0.1:9/0"),
            ("ENRICHER__HTTP__LISTEN", "off"),
        ],
    );
    assert!(
        stderr
            .lines()
            .last()
            .unwrap_or_default()
            .contains("redis at 127.0.0.1:9/0"),
        "{stderr}"
    );

    // A taken port is a start-up failure too.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("address").to_string();
    let stderr = refused_start(&app, &[("ENRICHER__HTTP__LISTEN", &port)]);
    assert!(
        stderr.contains(&format!("cannot listen on {port}")),
        "{stderr}"
    );
}

#[tokio::test]
async fn status_reports_queues_backlogs_and_dead_letter_reasons() {
    let app = TestApp::new().await;
    app.declare_topology().await;
    let ws = unique("ws");
    app.publish(&[chat(&ws, "e-1", "c-1", "u-1", "customer", "hi")])
        .await;
    app.publish_raw(br#"{"type": "chat.message", "sender": "nobody"}"#)
        .await;
    let worker = app.start_worker().await;
    app.wait_for_count(
        "SELECT count(*) FROM enrich.messages",
        1,
        Duration::from_secs(30),
    )
    .await;
    let settings = app.settings();
    // The dead-letter sink moves the refused event into Postgres; status
    // reads its reason there.
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        let status = enricher::cli::status::gather(&settings)
            .await
            .expect("status");
        if !status.dead_letter_reasons.is_empty() {
            break status;
        }
        assert!(Instant::now() < deadline, "no dead letter: {status:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let shards: Vec<_> = status.queues.iter().filter(|q| q.role == "shard").collect();
    assert!(!shards.is_empty(), "{status:?}");
    assert!(shards.iter().all(|q| q.consumers == Some(1)), "{status:?}");
    assert!(status.queues.iter().any(|q| q.role == "dead"), "{status:?}");
    assert_eq!(status.dead_letter_reasons.len(), 1, "{status:?}");
    assert!(
        status.dead_letter_reasons[0].contains("invalid"),
        "{status:?}"
    );
    assert!(status.prompt_version_configured.is_some());
    let again = enricher::cli::status::gather(&settings)
        .await
        .expect("status");
    assert_eq!(again.dead_letter_reasons, status.dead_letter_reasons);
    let screen = enricher::cli::status::render(&again);
    assert!(screen.contains("dead"), "{screen}");
    assert!(screen.contains("outbox backlog"), "{screen}");
    let as_json = serde_json::to_value(&again).expect("json");
    assert_eq!(as_json["queues"][0]["role"], json!("shard"));
    worker.stop().await;
}

/// `enricher bench --broker-only` times publish→delivery through a copy of
/// the worker's topology under names of its own, and leaves none of it on
/// the broker.
#[tokio::test]
async fn the_broker_only_bench_times_deliveries_and_leaves_nothing_behind() {
    let app = TestApp::new().await;
    let output = Command::new(env!("CARGO_BIN_EXE_enricher"))
        .args(["bench", "--broker-only", "--events", "300"])
        .args(["--conversations", "30", "--rate", "1000"])
        .current_dir(repo_root())
        .envs(app.settings_env.iter().map(|(k, v)| (k, v)))
        .output()
        .expect("enricher bench runs");
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{report}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let shards = app.settings().amqp.shards;
    assert!(
        report.contains(&format!(
            "300 events, 30 conversations, {shards} shard queues, rate 1000/s"
        )),
        "{report}"
    );
    let latency = report
        .lines()
        .find(|line| line.contains("publish→delivery"))
        .unwrap_or_else(|| panic!("no latency line: {report}"));
    let p50: f64 = latency
        .split_whitespace()
        .skip_while(|word| *word != "p50")
        .nth(1)
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("no p50 in {latency}"));
    assert!(p50 > 0.0 && p50 < 10_000.0, "{latency}");
    let ours = |line: &String| line.starts_with("bench") && line.contains(&app.ns);
    let queues = common::rabbitmqctl(&["list_queues", "--no-table-headers", "name"]);
    assert_eq!(queues.iter().filter(|q| ours(q)).count(), 0, "{queues:?}");
    let exchanges = common::rabbitmqctl(&["list_exchanges", "--no-table-headers", "name"]);
    assert_eq!(
        exchanges.iter().filter(|e| ours(e)).count(),
        0,
        "{exchanges:?}"
    );
}

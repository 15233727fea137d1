//! A slow model with 50,000 messages waiting for it: the worker (a real
//! `enricher run` process) holds at most `llm.stage_capacity` model jobs in
//! memory and reads the rest back from Postgres in pages, so its resident
//! memory stays under 150 MiB; once the model is fast again the backlog
//! drains, every conversation's messages reaching the model in order.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::fake_llm::{FakeModel, new_message, nothing};
use common::{TestApp, chat, unique};

const CONVERSATIONS: usize = 1_000;
const PER_CONVERSATION: usize = 50;
/// Jobs the stage may hold in memory in this test.
const STAGE_CAPACITY: usize = 200;
/// The bound on the worker's resident memory.
const RSS_LIMIT_KIB: u64 = 150 * 1024;
/// Model calls that must complete after the model speeds up.
const CALLS_AFTER_SPEED_UP: usize = 3_000;

/// The resident memory of process `pid`, in KiB.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
}

/// The conversation and message number a prompt's new message names.
fn parse(text: &str) -> Option<(usize, usize)> {
    let (conversation, n) = text.split_once(" says ")?;
    Some((
        conversation.strip_prefix('c')?.parse().ok()?,
        n.parse().ok()?,
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_model_with_50000_pending_messages_keeps_memory_bounded_and_order() {
    let slow = Arc::new(AtomicBool::new(true));
    let seen: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(Vec::new()));
    let model = {
        let slow = Arc::clone(&slow);
        let seen = Arc::clone(&seen);
        FakeModel::start(move |_, request| {
            seen.lock().expect("calls").push(new_message(request));
            if slow.load(Ordering::SeqCst) {
                nothing().set_delay(Duration::from_secs(2))
            } else {
                nothing()
            }
        })
        .await
    };
    let mut app = TestApp::new().await;
    app.set("ENRICHER__LLM__BASE_URL", &model.base_url());
    app.set("ENRICHER__LLM__TIMEOUT_MS", "30000");
    app.set("ENRICHER__LLM__MAX_CONCURRENT", "16");
    app.set("ENRICHER__LLM__STAGE_CAPACITY", &STAGE_CAPACITY.to_string());
    app.declare_topology().await;

    // Every message waits in the shard queues before the worker starts.
    let ws = unique("ws");
    let events: Vec<serde_json::Value> = (0..PER_CONVERSATION)
        .flat_map(|k| {
            let ws = ws.clone();
            (0..CONVERSATIONS).map(move |c| {
                chat(
                    &ws,
                    &format!("e-{c}-{k}"),
                    &format!("conv-{c}"),
                    &format!("u-{c}"),
                    "customer",
                    &format!("c{c} says {k}"),
                )
            })
        })
        .collect();
    let total = events.len() as i64;
    let published = Instant::now();
    app.publish(&events).await;
    drop(events);
    eprintln!(
        "model_backlog: published {total} events in {:.1} s",
        published.elapsed().as_secs_f64()
    );

    let mut worker = app.spawn_worker_process();
    let pid = worker.id();
    let mut peak_kib = 0;
    let mut most_pending = 0;
    let started = Instant::now();
    let mut last_sample = Instant::now() - Duration::from_secs(1);
    loop {
        if let Some(rss) = rss_kib(pid) {
            peak_kib = peak_kib.max(rss);
        }
        assert!(
            worker.try_wait().expect("worker status").is_none(),
            "the worker exited"
        );
        if last_sample.elapsed() >= Duration::from_secs(1) {
            last_sample = Instant::now();
            let pending = app
                .count("SELECT count(*) FROM enrich.messages WHERE ai_status = 'pending'")
                .await;
            most_pending = most_pending.max(pending);
            let stored = app.count("SELECT count(*) FROM enrich.messages").await;
            if stored == total {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "only {stored} of {total} messages stored in 2 minutes"
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let calls_while_slow = model.calls();
    eprintln!(
        "model_backlog: {total} stored in {:.1} s with a slow model ({calls_while_slow} calls), \
         at most {most_pending} pending, peak RSS {:.1} MiB",
        started.elapsed().as_secs_f64(),
        peak_kib as f64 / 1024.0
    );
    assert!(
        most_pending > (STAGE_CAPACITY * 10) as i64,
        "the backlog must far exceed what the stage holds (at most {most_pending} pending)"
    );

    // The model speeds up: the backlog drains from Postgres.
    slow.store(false, Ordering::SeqCst);
    let speed_up = Instant::now();
    while model.calls() < calls_while_slow + CALLS_AFTER_SPEED_UP {
        if let Some(rss) = rss_kib(pid) {
            peak_kib = peak_kib.max(rss);
        }
        assert!(
            worker.try_wait().expect("worker status").is_none(),
            "the worker exited"
        );
        assert!(
            speed_up.elapsed() < Duration::from_secs(90),
            "only {} calls in 90 s after the model sped up",
            model.calls() - calls_while_slow
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let finished = app
        .count("SELECT count(*) FROM enrich.messages WHERE ai_status IN ('done', 'skipped')")
        .await;
    eprintln!(
        "model_backlog: {CALLS_AFTER_SPEED_UP} calls in {:.1} s after the speed-up, {finished} \
         messages finished, peak RSS {:.1} MiB",
        speed_up.elapsed().as_secs_f64(),
        peak_kib as f64 / 1024.0
    );
    assert!(
        peak_kib < RSS_LIMIT_KIB,
        "the worker's RSS reached {:.1} MiB",
        peak_kib as f64 / 1024.0
    );
    assert!(finished >= CALLS_AFTER_SPEED_UP as i64);

    // Every conversation's messages reached the model in order, each once.
    let seen = seen.lock().expect("calls").clone();
    let mut last: HashMap<usize, usize> = HashMap::new();
    for text in &seen {
        let (conversation, n) =
            parse(text).unwrap_or_else(|| panic!("unexpected prompt message {text:?}"));
        if let Some(previous) = last.insert(conversation, n) {
            assert!(
                n > previous,
                "conversation {conversation}: message {n} reached the model after {previous}"
            );
        }
    }
    assert!(
        last.len() > CONVERSATIONS / 2,
        "the sample spans most conversations ({} of {CONVERSATIONS})",
        last.len()
    );
    worker.kill().expect("stop the worker");
    worker.wait().expect("reaped");
}

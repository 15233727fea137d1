//! `enricher bench`: publishes synthetic chat events through the real broker
//! into a worker process and measures what operators care about: sustained
//! events/s, publish→commit latency and the worker's peak memory. In the same
//! run it measures a floor, the same SQL writes issued directly with sqlx (no
//! broker, no Redis), so the report says how much the pipeline costs on top
//! of the database itself.
//!
//! Commit times come from Postgres (`track_commit_timestamp`, which
//! `scripts/services` enables), publish times from the event's
//! `occurred_at`, both read off this machine's clock.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tokio::task::JoinSet;

use crate::cli::send::EventSender;
use crate::config::Settings;
use crate::event::{ChatMessage, Envelope, Platform, Sender};
use crate::state::Cache;
use crate::store::{self, chat};

/// How often the bench asks Postgres whether the worker is done. Results come
/// from commit timestamps, not from this poll; polling rarely keeps the
/// bench's own counting queries from competing with the worker for the CPU.
const POLL_INTERVAL: Duration = Duration::from_millis(500);

/// Options of `enricher bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Events to publish.
    #[arg(long, default_value_t = 20_000)]
    pub events: usize,
    /// Conversations the events are spread over.
    #[arg(long, default_value_t = 500)]
    pub conversations: usize,
    /// Target publish rate in events/s; 0 publishes as fast as the broker confirms.
    #[arg(long, default_value_t = 0)]
    pub rate: u32,
    /// Measure an already running worker with this pid instead of starting one.
    #[arg(long)]
    pub worker_pid: Option<u32>,
    /// Worker processes to start; they share the shard queues as replicas
    /// do. With more than one, the clock starts only after the replicas had
    /// one rebalancing period (`amqp.rebalance_secs`) to share the shards.
    #[arg(long, default_value_t = 1)]
    pub replicas: u32,
    /// Skip the direct-SQL floor.
    #[arg(long)]
    pub no_floor: bool,
    /// Benchmark the model path: every event is a customer message the model
    /// sees, answered by a built-in fake model after this many milliseconds.
    #[arg(long)]
    pub model_delay_ms: Option<u64>,
    /// Keep the bench's rows for inspection instead of deleting them (the
    /// workspace name is printed).
    #[arg(long)]
    pub keep: bool,
    /// Start publishing at once, without the checkpoint and the wait for a
    /// quiet disk (see `settle`).
    #[arg(long)]
    pub no_settle: bool,
    /// Benchmark the API's customer search instead (see `bench_search`): load
    /// `--customers` customers into a fresh database and time the documented
    /// queries through `GET /v1/customers`.
    #[arg(long)]
    pub search: bool,
    /// Benchmark the broker alone instead (see `bench_broker`): publish at
    /// `--rate` through a private copy of the worker's topology and time
    /// publish→delivery to consumers that only ack.
    #[arg(long, conflicts_with_all = ["search", "worker_pid", "model_delay_ms", "keep"])]
    pub broker_only: bool,
    /// Customers to load for `--search`.
    #[arg(long, default_value_t = 100_000)]
    pub customers: u32,
    /// Requests per documented query for `--search`.
    #[arg(long, default_value_t = 100)]
    pub requests: u32,
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
}

/// How long after the first publish an event still counts as the start of
/// a run in the report.
const START_OF_RUN: Duration = Duration::from_millis(1500);

/// The publish→commit latencies (ms) of events published within
/// [`START_OF_RUN`] of `first_publish`, and of the events after them.
pub fn split_at_start(
    timings: &[(DateTime<Utc>, DateTime<Utc>)],
    first_publish: DateTime<Utc>,
) -> (Vec<f64>, Vec<f64>) {
    let cut = chrono::Duration::from_std(START_OF_RUN).unwrap_or_default();
    let mut at_start = Vec::new();
    let mut after = Vec::new();
    for (published, committed) in timings {
        let latency = millis(*committed - *published);
        if *published - first_publish < cut {
            at_start.push(latency);
        } else {
            after.push(latency);
        }
    }
    (at_start, after)
}

/// Percentiles of `samples` (sorted in place), nearest-rank.
pub fn percentiles(samples: &mut [f64]) -> Option<Percentiles> {
    if samples.is_empty() {
        return None;
    }
    samples.sort_by(f64::total_cmp);
    let at = |q: f64| {
        let rank = ((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len());
        samples[rank - 1]
    };
    Some(Percentiles {
        p50: at(0.50),
        p95: at(0.95),
        p99: at(0.99),
    })
}

fn synthetic_event(
    workspace: &str,
    run: &str,
    index: usize,
    conversations: usize,
    at: DateTime<Utc>,
) -> serde_json::Value {
    let conversation = index % conversations;
    serde_json::json!({
        "type": "chat.message", "version": 1, "id": format!("{run}-{index}"), "workspace_id": workspace,
        "occurred_at": at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        "conversation_id": format!("{run}-c{conversation}"), "platform": "web",
        "platform_user_id": format!("{run}-u{conversation}"),
        "sender": if index.is_multiple_of(2) { "customer" } else { "bot" },
        "text": format!("benchmark message {index} about order status and delivery times"),
    })
}

/// Publishes `args.events` synthetic events at `args.rate` (as fast as the
/// broker takes them at 0), every one a customer message when
/// `all_customer`; returns how long publishing took. Confirms still
/// outstanding are the caller's to await.
pub async fn publish_paced(
    sender: &mut EventSender,
    workspace: &str,
    run_id: &str,
    args: &BenchArgs,
    all_customer: bool,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let pacing = (args.rate > 0).then(|| Duration::from_secs_f64(1.0 / f64::from(args.rate)));
    for index in 0..args.events {
        if let Some(interval) = pacing {
            let due = started + interval * index as u32;
            tokio::time::sleep_until(due.into()).await;
        }
        let mut event = synthetic_event(workspace, run_id, index, args.conversations, Utc::now());
        if all_customer {
            event["sender"] = serde_json::json!("customer");
        }
        sender.send(&serde_json::to_vec(&event)?).await?;
    }
    Ok(started.elapsed())
}

/// The publish rate as the report prints it.
pub fn rate_label(rate: u32) -> String {
    if rate == 0 {
        "unlimited".to_owned()
    } else {
        format!("{rate}/s")
    }
}

/// The report's line on how long publishing `events` took.
pub fn print_published(events: usize, published_in: Duration) {
    println!(
        "  published in          {:.2} s ({:.0} events/s)",
        published_in.as_secs_f64(),
        events as f64 / published_in.as_secs_f64().max(1e-9)
    );
}

/// Runs the benchmark and prints the report.
pub async fn run(settings: &Settings, args: BenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.events > 0 && args.conversations > 0,
        "--events and --conversations must be above zero"
    );
    let pool = store::connect(&settings.postgres).await?;
    store::migrate(&pool).await?;
    let commit_timestamps: bool =
        sqlx::query_scalar("SELECT current_setting('track_commit_timestamp') = 'on'")
            .fetch_one(&pool)
            .await?;
    let run_id = format!("bench{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let workspace = format!("{run_id}-ws");

    let model_url = match args.model_delay_ms {
        Some(delay) => {
            let address = super::fake_model::start(Duration::from_millis(delay)).await?;
            Some(format!("http://{address}/v1"))
        }
        None => None,
    };
    anyhow::ensure!(
        model_url.is_none() || args.worker_pid.is_none(),
        "--model-delay-ms starts its own worker pointed at the fake model; drop --worker-pid"
    );
    anyhow::ensure!(
        args.replicas >= 1 && (args.replicas == 1 || args.worker_pid.is_none()),
        "--replicas starts that many workers (at least 1); drop --worker-pid"
    );
    let mut spawned = Vec::new();
    if args.worker_pid.is_none() {
        for _ in 0..args.replicas {
            spawned.push(spawn_worker(model_url.as_deref())?);
        }
    }
    let worker_pids: Vec<u32> = match args.worker_pid {
        Some(pid) => vec![pid],
        None => spawned.iter().map(Child::id).collect(),
    };
    // Let the workers connect and declare their topology before the clock
    // starts, and replicas share the shards out.
    let mut sender = EventSender::connect(&settings.amqp).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let warm_up = format!("{run_id}-warmup");
    if args.replicas > 1 {
        warm_up_shards(settings, &pool, &warm_up, &run_id).await?;
        let rebalance = Duration::from_secs(settings.amqp.rebalance_secs);
        eprintln!(
            "waiting {} s for {} replicas to share the shards...",
            rebalance.as_secs() + 2,
            args.replicas
        );
        tokio::time::sleep(rebalance + Duration::from_secs(2)).await;
    }
    let settled = if args.no_settle {
        None
    } else {
        Some(super::settle::settle(&pool).await)
    };

    eprintln!(
        "publishing {} events over {} conversations...",
        args.events, args.conversations
    );
    let published_in =
        publish_paced(&mut sender, &workspace, &run_id, &args, model_url.is_some()).await?;
    sender.finish().await?;

    let deadline = Instant::now() + Duration::from_secs(600);
    wait_until_stored(&pool, &workspace, args.events, deadline).await?;
    if model_url.is_some() {
        wait_for_model_stage(&pool, &workspace, deadline).await?;
    }
    let peak_rss_kib: Vec<Option<u64>> = worker_pids.iter().map(|pid| peak_rss_kib(*pid)).collect();
    for child in &mut spawned {
        stop_worker(child);
    }

    let commit_expr = if commit_timestamps {
        "pg_xact_commit_timestamp(xmin)"
    } else {
        "stored_at"
    };
    let timings: Vec<(DateTime<Utc>, DateTime<Utc>)> = sqlx::query_as(sqlx::AssertSqlSafe(
        format!("SELECT occurred_at, {commit_expr} FROM enrich.messages WHERE workspace_id = $1"),
    ))
    .bind(&workspace)
    .fetch_all(&pool)
    .await?;
    let first_publish = timings.iter().map(|t| t.0).min();
    let last_commit = timings.iter().map(|t| t.1).max();
    let span = match (first_publish, last_commit) {
        (Some(first), Some(last)) => (last - first).to_std().unwrap_or_default(),
        _ => Duration::ZERO,
    };
    let (mut at_start, mut after_start) = first_publish
        .map(|first| split_at_start(&timings, first))
        .unwrap_or_default();
    let mut latencies: Vec<f64> = at_start.iter().chain(&after_start).copied().collect();
    let latency = percentiles(&mut latencies);
    let start_latency = percentiles(&mut at_start);
    let later_latency = percentiles(&mut after_start);
    let throughput = args.events as f64 / span.as_secs_f64().max(1e-9);

    println!(
        "enricher bench: {} events, {} conversations, {} worker{}, rate {}",
        args.events,
        args.conversations,
        worker_pids.len(),
        if worker_pids.len() == 1 { "" } else { "s" },
        rate_label(args.rate)
    );
    print_published(args.events, published_in);
    match &settled {
        Some(settled) => println!("  settled before        {settled}"),
        None => println!("  settled before        no (--no-settle)"),
    }
    println!("  first publish → last commit {:.2} s", span.as_secs_f64());
    println!("  throughput            {throughput:.0} events/s");
    if let Some(p) = latency {
        println!(
            "  publish→commit        p50 {:.1} ms  p95 {:.1} ms  p99 {:.1} ms{}",
            p.p50,
            p.p95,
            p.p99,
            if commit_timestamps {
                ""
            } else {
                "  (insert time; enable track_commit_timestamp for commit time)"
            }
        );
        // The start carries the first message of every conversation (the
        // expensive ones) and meets a fresh worker, so it is shown apart.
        for (label, part, count) in [
            ("first 1.5 s", start_latency, at_start.len()),
            ("after it", later_latency, after_start.len()),
        ] {
            if let Some(p) = part {
                println!(
                    "    {label:<19} p50 {:.1} ms  p95 {:.1} ms  p99 {:.1} ms ({count} events)",
                    p.p50, p.p95, p.p99
                );
            }
        }
    }
    let peaks: Vec<String> = peak_rss_kib
        .iter()
        .map(|kib| match kib {
            Some(kib) => format!("{:.1} MiB", *kib as f64 / 1024.0),
            None => "unknown".to_owned(),
        })
        .collect();
    println!("  worker peak RSS       {}", peaks.join(", "));

    if model_url.is_some() {
        report_model_path(&pool, &workspace, args.events, commit_timestamps).await?;
    } else if !args.no_floor {
        let floor =
            direct_sql_floor(&pool, settings, &run_id, args.events, args.conversations).await?;
        println!(
            "  direct-SQL floor      {floor:.0} events/s (same writes, {} lanes, batches of {}, no broker or Redis)",
            settings.worker.lanes, settings.worker.batch_max
        );
        println!(
            "  worker / floor        {:.2}",
            throughput / floor.max(1e-9)
        );
    }
    let cache = Cache::connect(&settings.redis).await?;
    if args.keep {
        println!("  rows kept in workspace {workspace}");
    } else {
        cleanup(&pool, &cache, &workspace).await?;
    }
    cleanup(&pool, &cache, &format!("{run_id}-floor")).await?;
    cleanup(&pool, &cache, &warm_up).await?;
    Ok(())
}

/// A replica learns which shards it is active on from their deliveries, so
/// replicas started together share the shards out only once events flow.
/// One bot message in each of sixteen conversations per shard (their own
/// workspace, left out of the figures) reaches every shard; the caller then
/// waits for the replicas' next rebalance, so the measured stream meets the
/// replicas in their steady state instead of a handover half-way through.
async fn warm_up_shards(
    settings: &Settings,
    pool: &PgPool,
    workspace: &str,
    run_id: &str,
) -> anyhow::Result<()> {
    let conversations = usize::from(settings.amqp.shards) * 16;
    eprintln!("warming up: one event in each of {conversations} conversations...");
    let mut sender = EventSender::connect(&settings.amqp).await?;
    let run = format!("{run_id}w");
    for index in 0..conversations {
        let mut event = synthetic_event(workspace, &run, index, conversations, Utc::now());
        event["sender"] = serde_json::json!("bot");
        sender.send(&serde_json::to_vec(&event)?).await?;
    }
    sender.finish().await?;
    wait_until_stored(
        pool,
        workspace,
        conversations,
        Instant::now() + Duration::from_secs(60),
    )
    .await
}

/// Waits until `expected` events of `workspace` are stored, or fails at
/// `deadline`. It polls the conversations' counters, which move in the same
/// transaction as the messages: summing a few hundred of them costs the
/// database far less than counting tens of thousands of messages (about
/// 10 ms a poll at 20,000), which would compete with the worker being
/// measured.
async fn wait_until_stored(
    pool: &PgPool,
    workspace: &str,
    expected: usize,
    deadline: Instant,
) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        let stored: i64 = sqlx::query_scalar(
            "SELECT coalesce(sum(message_count), 0)::bigint FROM enrich.conversations WHERE workspace_id = $1",
        )
        .bind(workspace)
        .fetch_one(pool)
        .await?;
        if stored as usize >= expected {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the workers stored only {stored} of {expected} events in {} s",
            started.elapsed().as_secs()
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// The same writes the worker makes for each event, issued straight from
/// `lanes` tasks in transactions of `batch_max` events, each transaction's
/// messages recorded in runs as a lane records them.
async fn direct_sql_floor(
    pool: &PgPool,
    settings: &Settings,
    run_id: &str,
    events: usize,
    conversations: usize,
) -> anyhow::Result<f64> {
    let workspace = format!("{run_id}-floor");
    let lanes = settings.worker.lanes;
    let batch = settings.worker.batch_max;
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for lane in 0..lanes {
        let pool = pool.clone();
        let workspace = workspace.clone();
        let run_id = run_id.to_owned();
        tasks.spawn(async move {
            let mine: Vec<usize> = (0..events)
                .filter(|i| (i % conversations) % lanes == lane)
                .collect();
            let defaults = chat::WorkspaceDefaults {
                enrichment: true,
                default_region: Some("US"),
            };
            for chunk in mine.chunks(batch) {
                let mut events = Vec::with_capacity(chunk.len());
                for &index in chunk {
                    let value = synthetic_event(
                        &workspace,
                        &format!("{run_id}f"),
                        index,
                        conversations,
                        Utc::now(),
                    );
                    let envelope: Envelope = serde_json::from_value(value.clone())?;
                    let message = ChatMessage {
                        conversation_id: value["conversation_id"]
                            .as_str()
                            .unwrap_or_default()
                            .to_owned(),
                        platform: Platform::Web,
                        platform_user_id: value["platform_user_id"]
                            .as_str()
                            .unwrap_or_default()
                            .to_owned(),
                        sender: if index.is_multiple_of(2) {
                            Sender::Customer
                        } else {
                            Sender::Bot
                        },
                        text: value["text"].as_str().unwrap_or_default().to_owned(),
                        agent_id: None,
                        visitor: None,
                        identity_hint: None,
                        source: None,
                        first_message_tag: None,
                    };
                    events.push((envelope, message));
                }
                let run: Vec<chat::RunMessage<'_>> = events
                    .iter()
                    .map(|(envelope, message)| chat::RunMessage {
                        envelope,
                        message,
                        workspace: defaults,
                    })
                    .collect();
                // The lanes record a batch's messages in runs, as here.
                let mut tx = pool.begin().await?;
                let mut next = 0;
                while next < run.len() {
                    next += chat::record_messages(&mut tx, &run[next..], chat::ModelHandoff::None)
                        .await?
                        .len();
                }
                tx.commit().await?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined??;
    }
    Ok(events as f64 / started.elapsed().as_secs_f64().max(1e-9))
}

/// Removes a bench workspace: its rows, and the hot profiles and turns the
/// worker cached for it (which would otherwise stay in Redis until they
/// expire).
async fn cleanup(pool: &PgPool, cache: &Cache, workspace: &str) -> anyhow::Result<()> {
    cache.remove_workspace(workspace).await?;
    sqlx::query("DELETE FROM enrich.customers WHERE workspace_id = $1")
        .bind(workspace)
        .execute(pool)
        .await?;
    sqlx::query("DELETE FROM enrich.processed_events WHERE workspace_id = $1")
        .bind(workspace)
        .execute(pool)
        .await?;
    sqlx::query("DELETE FROM enrich.workspaces WHERE id = $1")
        .bind(workspace)
        .execute(pool)
        .await?;
    Ok(())
}

/// Starts a worker; it serves its metrics endpoint on a port of the
/// system's choosing, so replicas, and a worker still stopping from the
/// previous run, do not compete for the configured one.
fn spawn_worker(model_url: Option<&str>) -> anyhow::Result<Child> {
    let exe = std::env::current_exe()?;
    let mut command = Command::new(exe);
    command
        .arg("run")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    command.env("ENRICHER__HTTP__LISTEN", "127.0.0.1:0");
    if let Some(url) = model_url {
        // The built-in fake model takes no key.
        command
            .env("ENRICHER__LLM__BASE_URL", url)
            .env("ENRICHER__LLM__MODEL", "bench-model")
            .env("ENRICHER__LLM__API_KEY_ENV", "");
    }
    Ok(command.spawn()?)
}

async fn wait_for_model_stage(
    pool: &PgPool,
    workspace: &str,
    deadline: Instant,
) -> anyhow::Result<()> {
    loop {
        let open: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM enrich.messages WHERE workspace_id = $1 AND ai_status = 'pending'",
        )
        .bind(workspace)
        .fetch_one(pool)
        .await?;
        if open == 0 {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{open} messages still wait for the model"
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// A model-path message: published, model-stage commit, model latency (µs),
/// outcome, received by the worker, waited in the model stage (µs).
type ModelPathRow = (
    DateTime<Utc>,
    DateTime<Utc>,
    Option<i64>,
    String,
    Option<DateTime<Utc>>,
    Option<i64>,
);

fn micros_as_millis(micros: Option<i64>) -> f64 {
    micros.unwrap_or(0) as f64 / 1000.0
}

fn millis(span: chrono::TimeDelta) -> f64 {
    span.num_microseconds().unwrap_or(0) as f64 / 1000.0
}

/// The model path's timing: publish → commit of the model stage's
/// transaction minus the model's latency, and the worker's own time (from
/// its receipt of the event, minus the model's latency and the wait behind
/// the conversation's earlier calls).
async fn report_model_path(
    pool: &PgPool,
    workspace: &str,
    events: usize,
    commit_timestamps: bool,
) -> anyhow::Result<()> {
    let commit = if commit_timestamps {
        "pg_xact_commit_timestamp(l.xmin)"
    } else {
        "l.created_at"
    };
    let rows: Vec<ModelPathRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT m.occurred_at, {commit}, l.latency_us, l.outcome, l.event_received_at, l.stage_queue_us
           FROM enrich.llm_calls l JOIN enrich.messages m ON m.id = l.message_id
          WHERE m.workspace_id = $1"
    )))
        .bind(workspace)
        .fetch_all(pool)
        .await?;
    let failures = rows.iter().filter(|r| r.3 != "ok").count();
    let first = rows.iter().map(|r| r.0).min();
    let last = rows.iter().map(|r| r.1).max();
    let span = match (first, last) {
        (Some(first), Some(last)) => (last - first).to_std().unwrap_or_default(),
        _ => Duration::ZERO,
    };
    let mut overhead: Vec<f64> = rows
        .iter()
        .map(|(published, committed, model_us, ..)| {
            millis(*committed - *published) - micros_as_millis(*model_us)
        })
        .collect();
    // From the worker's receipt of the event: the broker's share and the
    // wait behind the conversation's earlier model calls are left out.
    let mut own: Vec<f64> = rows
        .iter()
        .filter_map(|(_, committed, model_us, _, received, queued_us)| {
            let since_receipt = millis(*committed - (*received)?);
            let queued = (*queued_us)? as f64 / 1000.0;
            Some(since_receipt - micros_as_millis(*model_us) - queued)
        })
        .collect();
    println!(
        "  model path            {} of {events} events called the model, {failures} failed",
        rows.len()
    );
    println!(
        "  model-path throughput {:.0} events/s (publish → model-stage commit)",
        rows.len() as f64 / span.as_secs_f64().max(1e-9)
    );
    if let Some(p) = percentiles(&mut overhead) {
        println!(
            "  publish → commit      p50 {:.1} ms  p95 {:.1} ms  p99 {:.1} ms (minus model latency)",
            p.p50, p.p95, p.p99
        );
    }
    if let Some(p) = percentiles(&mut own) {
        println!(
            "  worker's own time     p50 {:.1} ms  p95 {:.1} ms  p99 {:.1} ms (receipt → model-stage commit, minus the model and the wait behind the conversation's earlier calls; {} events)",
            p.p50,
            p.p95,
            p.p99,
            own.len()
        );
    }
    Ok(())
}

fn stop_worker(child: &mut Child) {
    let pid = child.id().to_string();
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    let _ = child.wait();
}

/// Peak resident set size (VmHWM) of a process, in KiB.
fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
}

/// First names of the search benchmark's customers.
const FIRST_NAMES: [&str; 40] = [
    "Ann", "Joanna", "Hannah", "Mark", "Luis", "Mei", "Ravi", "Olga", "Tom", "Sara", "Kenji",
    "Fatima", "Pedro", "Lena", "Omar", "Grace", "Ivan", "Chloe", "Noah", "Aisha", "Liam", "Yuki",
    "Carlos", "Emma", "Arjun", "Sofia", "David", "Nora", "Ali", "Julia", "Ben", "Priya", "Jonas",
    "Maya", "Felix", "Zara", "Hugo", "Elif", "Sam", "Rosa",
];
/// Last names of the search benchmark's customers.
const LAST_NAMES: [&str; 40] = [
    "Lee", "Smith", "Garcia", "Tanaka", "Kumar", "Novak", "Okafor", "Silva", "Muller", "Rossi",
    "Kim", "Nguyen", "Cohen", "Haddad", "Jensen", "Lopez", "Petrov", "Martin", "Brown", "Wang",
    "Singh", "Dubois", "Costa", "Yilmaz", "Sato", "Ahmed", "Fischer", "Moreau", "Clark", "Ito",
    "Hansen", "Park", "Reyes", "Walker", "Khan", "Bianchi", "Schmidt", "Ward", "Chen", "Lund",
];

/// Loads `count` customers into `workspace` for the search benchmark, with
/// SQL alone (one statement per table): customer `g` is named from the name
/// lists, has email `user{g}@example.com`, phone `+1650` and 2,000,000 + `g`, a web, WhatsApp or LINE identity `u{g}`, and every tenth the tag
/// `vip`; activity spreads over the last 100 days.
pub async fn load_search_customers(
    pool: &PgPool,
    workspace: &str,
    count: u32,
) -> anyhow::Result<()> {
    let count = i32::try_from(count)?;
    let first: Vec<&str> = FIRST_NAMES.to_vec();
    let last: Vec<&str> = LAST_NAMES.to_vec();
    sqlx::query("INSERT INTO enrich.workspaces (id, default_region) VALUES ($1, 'US') ON CONFLICT DO NOTHING")
        .bind(workspace)
        .execute(pool)
        .await?;
    sqlx::query(
        "INSERT INTO enrich.customers (id, workspace_id, created_at, first_seen_at, last_seen_at,
                                       conversation_count, customer_message_count, platforms, last_message)
         SELECT md5($1 || g)::uuid, $1, now() - interval '200 days',
                now() - (g * interval '86 seconds') - interval '1 day',
                now() - (g * interval '86 seconds'), 1, 3,
                ARRAY[(ARRAY['web','whatsapp','line'])[g % 3 + 1]], 'message ' || g
           FROM generate_series(1, $2) g",
    )
    .bind(workspace)
    .bind(count)
    .execute(pool)
    .await?;
    sqlx::query(
        "INSERT INTO enrich.customer_fields (customer_id, field, value, source, source_rank, actor)
         SELECT md5($1 || g)::uuid, f.field,
                CASE f.field
                  WHEN 'name' THEN ($3::text[])[g % 40 + 1] || ' ' || ($4::text[])[(g / 40) % 40 + 1]
                  WHEN 'email' THEN 'user' || g || '@example.com'
                  ELSE '+1650' || (2000000 + g) END,
                'api', 3, 'bench'
           FROM generate_series(1, $2) g, (VALUES ('name'), ('email'), ('phone')) f(field)",
    )
    .bind(workspace)
    .bind(count)
    .bind(&first)
    .bind(&last)
    .execute(pool)
    .await?;
    sqlx::query(
        "INSERT INTO enrich.customer_identities (workspace_id, platform, platform_user_id, customer_id,
                                                 first_seen_at, last_seen_at)
         SELECT $1, (ARRAY['web','whatsapp','line'])[g % 3 + 1], 'u' || g, md5($1 || g)::uuid,
                now() - interval '100 days', now()
           FROM generate_series(1, $2) g",
    )
    .bind(workspace)
    .bind(count)
    .execute(pool)
    .await?;
    sqlx::query(
        "INSERT INTO enrich.tags (customer_id, tag, source)
         SELECT md5($1 || g)::uuid, 'vip', 'api' FROM generate_series(10, $2, 10) g",
    )
    .bind(workspace)
    .bind(count)
    .execute(pool)
    .await?;
    sqlx::query("ANALYZE").execute(pool).await?;
    Ok(())
}

/// Creates the database `name` next to the configured one.
pub async fn create_database(pool: &PgPool, name: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
        "database names here are plain identifiers"
    );
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(pool)
        .await?;
    Ok(())
}

/// Drops the database `name` (the benchmark's own).
pub async fn drop_database(pool: &PgPool, name: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
        "database names here are plain identifiers"
    );
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(pool)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_start_of_a_run_is_told_apart_by_publish_time() {
        let first = Utc::now();
        let at = |published_ms: i64, latency_ms: i64| {
            let published = first + chrono::Duration::milliseconds(published_ms);
            (
                published,
                published + chrono::Duration::milliseconds(latency_ms),
            )
        };
        let timings = [at(0, 300), at(1499, 200), at(1500, 20), at(9000, 30)];
        let (at_start, after) = split_at_start(&timings, first);
        assert_eq!(at_start, vec![300.0, 200.0]);
        assert_eq!(after, vec![20.0, 30.0]);
    }

    #[test]
    fn nearest_rank_percentiles() {
        let mut samples: Vec<f64> = (1..=100).map(f64::from).collect();
        let p = percentiles(&mut samples).expect("samples");
        assert_eq!((p.p50, p.p95, p.p99), (50.0, 95.0, 100.0 - 1.0));
        assert!(percentiles(&mut []).is_none());
    }

    #[test]
    fn reads_this_process_peak_rss() {
        assert!(peak_rss_kib(std::process::id()).is_some_and(|kib| kib > 0));
    }
}

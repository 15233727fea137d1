//! `enricher bench --search`: the API's customer search on a realistic
//! table. Loads `--customers` customers (100,000 by default) into a fresh
//! database, starts the API in-process on a loopback port, and times each
//! documented query of `GET /v1/customers` through HTTP (token check, SQL and
//! JSON included), printing p50 and p95 per query. The database is dropped
//! afterwards unless `--keep`.

use std::time::{Duration, Instant};

use anyhow::Context;
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::oneshot;

use super::bench::{BenchArgs, create_database, drop_database, load_search_customers, percentiles};
use crate::api::Server;
use crate::api::auth;
use crate::config::{PostgresSettings, Settings};
use crate::store::{self, tokens};

/// The documented queries: a label and the query string.
fn queries(customers: u32) -> Vec<(&'static str, String)> {
    let middle = customers / 2;
    vec![
        ("list, newest activity first", String::new()),
        ("part of a name (q=ann)", "q=ann".to_owned()),
        ("full name (q=Grace Lee)", "q=Grace%20Lee".to_owned()),
        ("exact email", format!("q=USER{middle}%40example.com")),
        (
            "phone, national format",
            format!(
                "q=(650)%20{}-{:04}",
                (2_000_000 + middle) / 10_000,
                (2_000_000 + middle) % 10_000
            ),
        ),
        ("platform user id", format!("q=u{middle}")),
        ("platform filter", "platform=line".to_owned()),
        ("tag filter", "tag=vip".to_owned()),
        (
            "name part + platform",
            "q=smith&platform=whatsapp".to_owned(),
        ),
    ]
}

/// Runs the search benchmark.
pub async fn run(settings: &Settings, args: &BenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.customers > 0 && args.requests > 0,
        "--customers and --requests must be above zero"
    );
    let admin = store::connect(&settings.postgres)
        .await
        .context("connecting to postgres")?;
    let database = format!(
        "enricher_bench_search_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    create_database(&admin, &database).await?;
    let result = measure(settings, args, &database).await;
    if args.keep {
        eprintln!("kept database {database}");
    } else if let Err(error) = drop_database(&admin, &database).await {
        eprintln!("could not drop {database}: {error:#}");
    }
    admin.close().await;
    result
}

async fn measure(settings: &Settings, args: &BenchArgs, database: &str) -> anyhow::Result<()> {
    let url = settings.postgres.url.expose_secret();
    let base = url
        .rsplit_once('/')
        .map(|(base, _)| base)
        .context("postgres url without a database")?;
    let postgres = PostgresSettings {
        url: SecretString::from(format!("{base}/{database}")),
        max_connections: settings.postgres.max_connections,
        model_stage_connections: settings.postgres.model_stage_connections,
        statement_timeout_ms: settings.postgres.statement_timeout_ms,
        lock_timeout_ms: settings.postgres.lock_timeout_ms,
    };
    store::migrate_before_pools(&postgres).await?;
    let pool = store::connect(&postgres).await?;
    let workspace = "bench-search";
    eprintln!("loading {} customers...", args.customers);
    let started = Instant::now();
    load_search_customers(&pool, workspace, args.customers).await?;
    eprintln!("loaded in {:.1} s", started.elapsed().as_secs_f64());
    let token = auth::generate_token();
    {
        let mut conn = pool.acquire().await?;
        tokens::insert(
            &mut conn,
            workspace,
            "bench",
            &auth::stored_scopes(&[]),
            &auth::token_hash(&token),
        )
        .await?;
    }
    let server = Server::build_on(settings, &postgres)
        .await
        .context("starting the API")?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let (stop, stopped) = oneshot::channel::<()>();
    let serving = tokio::spawn(server.run(listener, async move {
        let _ = stopped.await;
    }));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    println!(
        "customer search through GET /v1/customers, {} customers, {} requests per query, limit 50",
        args.customers, args.requests
    );
    println!(
        "{:<32} {:>8} {:>8} {:>8} {:>6}",
        "query", "p50 ms", "p95 ms", "max ms", "rows"
    );
    let mut all = Vec::new();
    for (label, query) in queries(args.customers) {
        let url = format!("http://{address}/v1/customers?{query}");
        // Warm the connection and the plan.
        for _ in 0..3 {
            client
                .get(&url)
                .bearer_auth(&token)
                .send()
                .await?
                .error_for_status()?;
        }
        let mut samples = Vec::with_capacity(args.requests as usize);
        let mut rows = 0;
        for _ in 0..args.requests {
            let sent = Instant::now();
            let body: serde_json::Value = client
                .get(&url)
                .bearer_auth(&token)
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            samples.push(sent.elapsed().as_secs_f64() * 1000.0);
            rows = body["customers"].as_array().map(Vec::len).unwrap_or(0);
        }
        anyhow::ensure!(rows > 0, "query `{label}` found nothing");
        all.extend_from_slice(&samples);
        let max = samples.iter().copied().fold(0.0, f64::max);
        if let Some(p) = percentiles(&mut samples) {
            println!(
                "{label:<32} {:>8.2} {:>8.2} {max:>8.2} {rows:>6}",
                p.p50, p.p95
            );
        }
    }
    if let Some(p) = percentiles(&mut all) {
        println!("{:<32} {:>8.2} {:>8.2}", "all queries", p.p50, p.p95);
    }
    let _ = stop.send(());
    serving.await??;
    pool.close().await;
    Ok(())
}

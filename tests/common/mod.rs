//! Test harness: every test gets its own Postgres database and its own
//! RabbitMQ exchange and queue names on the local services that
//! `scripts/services` runs, so tests run in parallel without seeing each
//! other. Workers run in-process ([`TestApp::start_worker`]) or as a real
//! child process ([`TestApp::spawn_worker_process`]) when a test needs to
//! kill it.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use enricher::cli::send::EventSender;
use enricher::config::Settings;
use enricher::startup::Application;
use enricher::worker::metrics::Metrics;
use lapin::options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use sqlx::{Connection, PgPool};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub mod api_server;
pub mod fake_llm;
pub mod ordered_stream;

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn required_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the tests through scripts/test, or eval \"$(scripts/services env)\" first")
    })
}

/// A unique, short namespace for one test.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

pub struct TestApp {
    pub ns: String,
    pub settings_env: Vec<(String, String)>,
    pub pool: PgPool,
    pub database_url: String,
}

/// A worker child process, killed on drop.
pub struct WorkerProcess(pub Child);

impl std::ops::Deref for WorkerProcess {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for WorkerProcess {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

pub struct RunningWorker {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), enricher::startup::StartupError>>,
    pub metrics: std::sync::Arc<Metrics>,
    /// Where its metrics and health endpoint listens.
    pub http: Option<std::net::SocketAddr>,
}

impl RunningWorker {
    /// Runs `check` and fails at once if the worker stops by itself before
    /// the check is done (a worker that gave up must not look like a slow one).
    pub async fn while_running<T>(&mut self, check: impl std::future::Future<Output = T>) -> T {
        tokio::select! {
            value = check => value,
            ended = &mut self.task => panic!("the worker stopped by itself: {ended:?}"),
        }
    }

    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let result = tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("worker stops within 30 s")
            .expect("worker task joins");
        result.expect("worker exits cleanly");
    }
}

impl Drop for TestApp {
    /// Removes what the test created on the shared local services (its
    /// database, queues and exchanges), so repeated runs on one machine do
    /// not pile them up. Best effort: the services may already be gone.
    fn drop(&mut self) {
        let settings = self.settings();
        let admin_url = required_env("ENRICHER__POSTGRES__URL");
        let database = format!("enricher_{}", self.ns);
        // The test's runtime may be shutting down; clean up on a runtime of our own.
        let cleanup = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async move {
                if let Ok(mut admin) = sqlx::PgConnection::connect(&admin_url).await {
                    let drop = format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)");
                    let _ = sqlx::query(sqlx::AssertSqlSafe(drop))
                        .execute(&mut admin)
                        .await;
                    let _ = admin.close().await;
                }
                delete_topology(&settings.amqp).await;
            });
        });
        let _ = cleanup.join();
    }
}

async fn delete_topology(amqp: &enricher::config::AmqpSettings) {
    use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
    let Ok(connection) = lapin::Connection::connect(
        amqp.url.expose_secret(),
        lapin::ConnectionProperties::default(),
    )
    .await
    else {
        return;
    };
    if let Ok(channel) = connection.create_channel().await {
        let retry_queues = amqp
            .retry_delays_ms
            .iter()
            .map(|delay| enricher::queue::topology::retry_queue(amqp, *delay));
        let queues = [amqp.work_queue.clone(), amqp.dead_letter_queue.clone()];
        let shard_queues = enricher::queue::topology::shard_queues(amqp);
        for queue in queues.into_iter().chain(retry_queues).chain(shard_queues) {
            let _ = channel
                .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                .await;
        }
        for exchange in [
            &amqp.shard_exchange,
            &amqp.inbound_exchange,
            &amqp.dead_letter_exchange,
            &amqp.outbound_exchange,
        ] {
            let _ = channel
                .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
                .await;
        }
    }
    let _ = connection.close(200, "test done".into()).await;
}

impl TestApp {
    /// A fresh database and topology names; workers are started separately.
    pub async fn new() -> TestApp {
        let ns = unique("t");
        let admin_url = required_env("ENRICHER__POSTGRES__URL");
        let mut admin = sqlx::PgConnection::connect(&admin_url)
            .await
            .expect("connect to postgres");
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "CREATE DATABASE enricher_{ns}"
        )))
        .execute(&mut admin)
        .await
        .expect("create test database");
        admin.close().await.ok();
        let database_url = match admin_url.rfind('/') {
            Some(slash) => format!("{}/enricher_{ns}", &admin_url[..slash]),
            None => panic!("postgres url without a database: {admin_url}"),
        };
        let pool = PgPool::connect(&database_url)
            .await
            .expect("connect to test database");
        enricher::store::migrate(&pool)
            .await
            .expect("migrations apply");
        let settings_env = vec![
            ("ENRICHER_ENV".to_owned(), "test".to_owned()),
            ("ENRICHER__POSTGRES__URL".to_owned(), database_url.clone()),
            (
                "ENRICHER__POSTGRES__MAX_CONNECTIONS".to_owned(),
                "6".to_owned(),
            ),
            (
                "ENRICHER__AMQP__INBOUND_EXCHANGE".to_owned(),
                format!("{ns}.in"),
            ),
            (
                "ENRICHER__AMQP__SHARD_EXCHANGE".to_owned(),
                format!("{ns}.shards"),
            ),
            (
                "ENRICHER__AMQP__SHARD_QUEUE_PREFIX".to_owned(),
                format!("{ns}.shard"),
            ),
            (
                "ENRICHER__AMQP__WORK_QUEUE".to_owned(),
                format!("{ns}.work"),
            ),
            (
                "ENRICHER__AMQP__DEAD_LETTER_EXCHANGE".to_owned(),
                format!("{ns}.dead"),
            ),
            (
                "ENRICHER__AMQP__DEAD_LETTER_QUEUE".to_owned(),
                format!("{ns}.dead"),
            ),
            (
                "ENRICHER__AMQP__OUTBOUND_EXCHANGE".to_owned(),
                format!("{ns}.out"),
            ),
            (
                "ENRICHER__AMQP__RETRY_QUEUE_PREFIX".to_owned(),
                format!("{ns}.retry"),
            ),
        ];
        TestApp {
            ns,
            settings_env,
            pool,
            database_url,
        }
    }

    /// Adds or replaces a setting, as an `ENRICHER__…` variable would.
    pub fn set(&mut self, key: &str, value: &str) {
        self.settings_env.retain(|(k, _)| k != key);
        self.settings_env.push((key.to_owned(), value.to_owned()));
    }

    /// Settings as the worker would load them with this test's overrides.
    pub fn settings(&self) -> Settings {
        let mut settings = Settings::load_from(&repo_root().join("config")).expect("settings load");
        settings.llm.prompts_dir = repo_root().join("prompts");
        // In-process workers share the process: any free port, and the fake
        // model servers take no key.
        settings.http.listen = "127.0.0.1:0".to_owned();
        settings.llm.api_key_env = String::new();
        for (key, value) in &self.settings_env {
            match key.as_str() {
                "ENRICHER__POSTGRES__URL" => {
                    settings.postgres.url = SecretString::from(value.clone())
                }
                "ENRICHER__POSTGRES__MAX_CONNECTIONS" => {
                    settings.postgres.max_connections = value.parse().expect("number")
                }
                "ENRICHER__AMQP__INBOUND_EXCHANGE" => {
                    settings.amqp.inbound_exchange = value.clone()
                }
                "ENRICHER__AMQP__SHARD_EXCHANGE" => settings.amqp.shard_exchange = value.clone(),
                "ENRICHER__AMQP__SHARD_QUEUE_PREFIX" => {
                    settings.amqp.shard_queue_prefix = value.clone()
                }
                "ENRICHER__AMQP__SHARDS" => settings.amqp.shards = value.parse().expect("number"),
                "ENRICHER__AMQP__WORK_QUEUE" => settings.amqp.work_queue = value.clone(),
                "ENRICHER__AMQP__DEAD_LETTER_EXCHANGE" => {
                    settings.amqp.dead_letter_exchange = value.clone()
                }
                "ENRICHER__AMQP__DEAD_LETTER_QUEUE" => {
                    settings.amqp.dead_letter_queue = value.clone()
                }
                "ENRICHER__AMQP__OUTBOUND_EXCHANGE" => {
                    settings.amqp.outbound_exchange = value.clone()
                }
                "ENRICHER__AMQP__RETRY_QUEUE_PREFIX" => {
                    settings.amqp.retry_queue_prefix = value.clone()
                }
                "ENRICHER__WORKSPACES__RESTRICT" => settings.workspaces.restrict = value == "true",
                "ENRICHER__LLM__BASE_URL" => settings.llm.base_url = Some(value.clone()),
                "ENRICHER__LLM__TIMEOUT_MS" => {
                    settings.llm.timeout_ms = value.parse().expect("number")
                }
                "ENRICHER__LLM__MAX_RETRIES" => {
                    settings.llm.max_retries = value.parse().expect("number")
                }
                "ENRICHER__LLM__BACKOFF_MS" => {
                    settings.llm.backoff_ms = value.parse().expect("number")
                }
                "ENRICHER__LLM__MAX_BACKOFF_MS" => {
                    settings.llm.max_backoff_ms = value.parse().expect("number")
                }
                "ENRICHER__LLM__MAX_RESPONSE_BYTES" => {
                    settings.llm.max_response_bytes = value.parse().expect("number")
                }
                "ENRICHER__LLM__MODEL" => settings.llm.model = value.clone(),
                "ENRICHER__LLM__RESUME_AFTER_SECS" => {
                    settings.llm.resume_after_secs = value.parse().expect("number")
                }
                "ENRICHER__LLM__MODE" => {
                    settings.llm.mode =
                        serde_json::from_value(serde_json::Value::String(value.clone()))
                            .expect("mode")
                }
                "ENRICHER__INSIGHTS__IDLE_SECS" => {
                    settings.insights.idle_secs = Some(value.parse().expect("number"))
                }
                "ENRICHER__INSIGHTS__SWEEP_INTERVAL_SECS" => {
                    settings.insights.sweep_interval_secs = value.parse().expect("number")
                }
                "ENRICHER__POSTGRES__MODEL_STAGE_CONNECTIONS" => {
                    settings.postgres.model_stage_connections = value.parse().expect("number")
                }
                "ENRICHER__HTTP__LISTEN" => settings.http.listen = value.clone(),
                "ENRICHER__LLM__API_KEY_ENV" => settings.llm.api_key_env = value.clone(),
                "ENRICHER__LLM__PROMPTS_DIR" => settings.llm.prompts_dir = value.into(),
                "ENRICHER__TELEMETRY__LEVEL" => settings.telemetry.level = value.clone(),
                "ENRICHER__TELEMETRY__FORMAT" => {
                    settings.telemetry.format =
                        serde_json::from_value(serde_json::Value::String(value.clone()))
                            .expect("format")
                }
                "ENRICHER__AMQP__REBALANCE_SECS" => {
                    settings.amqp.rebalance_secs = value.parse().expect("number")
                }
                "ENRICHER__LLM__STAGE_CAPACITY" => {
                    settings.llm.stage_capacity = value.parse().expect("number")
                }
                "ENRICHER__LLM__MAX_CONCURRENT" => {
                    settings.llm.max_concurrent = value.parse().expect("number")
                }
                "ENRICHER__WORKER__LANES" => settings.worker.lanes = value.parse().expect("number"),
                "ENRICHER__WORKER__BATCH_LINGER_MS" => {
                    settings.worker.batch_linger_ms = value.parse().expect("number")
                }
                "ENRICHER_ENV" => {}
                other => panic!("the in-process harness does not map {other}; add it"),
            }
        }
        settings
    }

    /// Declares the topology without starting a worker (so events can queue up).
    pub async fn declare_topology(&self) {
        let settings = self.settings();
        let connection = enricher::queue::connect(&settings.amqp, "test-topology")
            .await
            .expect("amqp");
        let channel = connection.create_channel().await.expect("channel");
        enricher::queue::topology::declare(&channel, &settings.amqp)
            .await
            .expect("topology");
        connection.close(200, "done".into()).await.ok();
    }

    pub async fn start_worker(&self) -> RunningWorker {
        let worker = Application::build(self.settings())
            .await
            .expect("enricher builds");
        let metrics = worker.metrics();
        let http = worker.http_address();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(worker.run_until_stopped(async move {
            let _ = stopped.await;
        }));
        RunningWorker {
            stop: Some(stop),
            task,
            metrics,
            http,
        }
    }

    /// Starts `enricher run` as a child process with this test's settings;
    /// the process is killed when the handle is dropped (a failing test
    /// must not leave a worker behind).
    pub fn spawn_worker_process(&self) -> WorkerProcess {
        self.spawn_worker_process_with(&[])
    }

    /// [`Self::spawn_worker_process`] with more environment variables
    /// (`FAILPOINTS` for the fault suite).
    pub fn spawn_worker_process_with(&self, env: &[(&str, &str)]) -> WorkerProcess {
        let mut command = Command::new(env!("CARGO_BIN_EXE_enricher"));
        command
            .arg("run")
            .current_dir(repo_root())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        for (key, value) in &self.settings_env {
            command.env(key, value);
        }
        command.envs(env.iter().copied());
        WorkerProcess(command.spawn().expect("enricher run starts"))
    }

    pub async fn sender(&self) -> EventSender {
        EventSender::connect(&self.settings().amqp)
            .await
            .expect("sender connects")
    }

    /// Publishes JSON events and waits for the broker's confirms.
    pub async fn publish(&self, events: &[Value]) {
        let mut sender = self.sender().await;
        for event in events {
            sender
                .send(&serde_json::to_vec(event).expect("json"))
                .await
                .expect("publish");
        }
        sender.finish().await.expect("confirms");
    }

    /// Publishes raw bytes as one event.
    pub async fn publish_raw(&self, body: &[u8]) {
        let mut sender = self.sender().await;
        sender.send(body).await.expect("publish");
        sender.finish().await.expect("confirms");
    }

    /// A one-connection pool on the test database, opened as the worker
    /// opens the pool of `path`.
    pub async fn hot_path_pool(&self, path: enricher::store::warm_up::HotPath) -> PgPool {
        enricher::store::connect_with_size(&self.settings().postgres, 1, 1, Some(path))
            .await
            .expect("hot path pool")
    }

    pub async fn count(&self, sql: &str) -> i64 {
        sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql.to_owned()))
            .fetch_one(&self.pool)
            .await
            .expect(sql)
    }

    /// Polls `sql` (returning a bigint) until it equals `expected`.
    pub async fn wait_for_count(&self, sql: &str, expected: i64, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let now = self.count(sql).await;
            if now == expected {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out: `{sql}` is {now}, expected {expected}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Takes the `n` oldest dead letters the worker moved into
    /// `enrich.dead_letters`, waiting for them: (body, reason). Taken rows
    /// are removed, so a later call sees only newer ones.
    pub async fn dead_letters(&self, n: usize, timeout: Duration) -> Vec<(Vec<u8>, String)> {
        let deadline = Instant::now() + timeout;
        loop {
            let stored = self.count("SELECT count(*) FROM enrich.dead_letters").await;
            if stored >= n as i64 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "only {stored} of {n} dead letters arrived"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut rows: Vec<(i64, Vec<u8>, String)> = sqlx::query_as(
            "DELETE FROM enrich.dead_letters
              WHERE id IN (SELECT id FROM enrich.dead_letters ORDER BY id LIMIT $1)
             RETURNING id, body, reason",
        )
        .bind(n as i64)
        .fetch_all(&self.pool)
        .await
        .expect("take dead letters");
        rows.sort_by_key(|(id, _, _)| *id);
        rows.into_iter()
            .map(|(_, body, reason)| (body, reason))
            .collect()
    }

    /// Binds a fresh queue to the outbound exchange and returns a consumer of it.
    pub async fn outbound_listener(
        &self,
        routing_key: &str,
    ) -> (lapin::Connection, lapin::Consumer) {
        let settings = self.settings();
        let connection = enricher::queue::connect(&settings.amqp, "test-out")
            .await
            .expect("amqp");
        let channel = connection.create_channel().await.expect("channel");
        enricher::queue::topology::declare(&channel, &settings.amqp)
            .await
            .expect("topology");
        let queue = unique("out");
        channel
            .queue_declare(
                queue.as_str().into(),
                QueueDeclareOptions {
                    exclusive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("declare listener");
        channel
            .queue_bind(
                queue.as_str().into(),
                settings.amqp.outbound_exchange.as_str().into(),
                routing_key.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("bind listener");
        let consumer = channel
            .basic_consume(
                queue.as_str().into(),
                "".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("consume listener");
        (connection, consumer)
    }

    /// How many active consumers every shard queue of this test has (the
    /// fewest of any shard; the broker reports only the single active
    /// consumer of a shard, not the standbys); `None` while a shard queue
    /// does not exist.
    pub async fn shard_consumers(&self) -> Option<u32> {
        let settings = self.settings();
        let connection = enricher::queue::connect(&settings.amqp, "test-inspect")
            .await
            .expect("amqp");
        let mut fewest: Option<u32> = None;
        for queue in enricher::queue::topology::shard_queues(&settings.amqp) {
            let channel = connection.create_channel().await.expect("channel");
            let declared = channel
                .queue_declare(
                    queue.as_str().into(),
                    QueueDeclareOptions {
                        passive: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await;
            let Ok(declared) = declared else {
                connection.close(200, "done".into()).await.ok();
                return None;
            };
            let consumers = declared.consumer_count();
            fewest = Some(fewest.map_or(consumers, |f| f.min(consumers)));
            channel.close(200, "done".into()).await.ok();
        }
        connection.close(200, "done".into()).await.ok();
        fewest
    }

    /// How many consumers, active and standby, every shard queue of this
    /// test has (the fewest of any shard), as `rabbitmqctl` lists them.
    pub fn registered_shard_consumers(&self) -> u32 {
        let shard_queues = enricher::queue::topology::shard_queues(&self.settings().amqp);
        let listed = rabbitmqctl(&["list_queues", "--no-table-headers", "name", "consumers"]);
        shard_queues
            .iter()
            .map(|shard| {
                listed
                    .iter()
                    .filter_map(|line| line.split_once('\t'))
                    .find(|(queue, _)| queue == shard)
                    .and_then(|(_, consumers)| consumers.trim().parse().ok())
                    .unwrap_or(0)
            })
            .min()
            .unwrap_or(0)
    }

    /// Waits until every shard queue has `wanted` consumers, active and
    /// standby.
    pub async fn wait_for_registered_shard_consumers(&self, wanted: u32, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let now = self.registered_shard_consumers();
            if now == wanted {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {wanted} consumers on every shard queue (now {now})"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until the shard queues' consumer count satisfies `wanted`.
    pub async fn wait_for_shard_consumers(
        &self,
        wanted: impl Fn(Option<u32>) -> bool,
        timeout: Duration,
    ) {
        let deadline = Instant::now() + timeout;
        loop {
            let now = self.shard_consumers().await;
            if wanted(now) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting on the shard queues' consumers (now {now:?})"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A channel on a fresh connection, for changing the broker's state
    /// behind the worker's back.
    pub async fn broker_channel(&self) -> (lapin::Connection, lapin::Channel) {
        let settings = self.settings();
        let connection = enricher::queue::connect(&settings.amqp, "test-fault")
            .await
            .expect("amqp");
        let channel = connection.create_channel().await.expect("channel");
        (connection, channel)
    }

    /// Has the broker close every connection that consumes this test's
    /// shard queues (as an operator's `rabbitmqctl close_connection` would);
    /// returns how many it closed.
    pub fn close_consumer_connections(&self) -> usize {
        let shard_queues = enricher::queue::topology::shard_queues(&self.settings().amqp);
        let channels: Vec<String> = rabbitmqctl(&[
            "list_consumers",
            "--no-table-headers",
            "queue_name",
            "channel_pid",
        ])
        .iter()
        .filter_map(|line| line.split_once('\t'))
        .filter(|(queue, _)| shard_queues.iter().any(|shard| shard == queue))
        .map(|(_, channel)| channel.to_owned())
        .collect();
        let mut connections: Vec<String> =
            rabbitmqctl(&["list_channels", "--no-table-headers", "pid", "connection"])
                .iter()
                .filter_map(|line| line.split_once('\t'))
                .filter(|(channel, _)| channels.iter().any(|c| c == channel))
                .map(|(_, connection)| connection.to_owned())
                .collect();
        connections.sort();
        connections.dedup();
        for connection in &connections {
            rabbitmqctl(&["close_connection", connection, "fault injected by a test"]);
        }
        connections.len()
    }

    /// A connection to the shared local Redis, for looking at the cache directly.
    pub async fn redis(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.redis_url())
            .expect("client")
            .get_multiplexed_async_connection()
            .await
            .expect("redis")
    }

    /// Waits until the worker has written a customer's hot profile to Redis
    /// and returns its hash.
    pub async fn wait_for_hot_profile(
        &self,
        workspace_id: &str,
        customer_id: uuid::Uuid,
        timeout: Duration,
    ) -> std::collections::HashMap<String, String> {
        let key = enricher::state::keys::profile(workspace_id, customer_id);
        let mut redis = self.redis().await;
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let hash: std::collections::HashMap<String, String> =
                redis::AsyncCommands::hgetall(&mut redis, &key)
                    .await
                    .expect("hgetall");
            if !hash.is_empty() {
                return hash;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{key} was not written within {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn redis_url(&self) -> String {
        Settings::load_from(&repo_root().join("config"))
            .expect("settings")
            .redis
            .url
            .expose_secret()
            .to_owned()
    }
}

/// Runs `rabbitmqctl` quietly against the local broker and returns its
/// output lines.
pub fn rabbitmqctl(args: &[&str]) -> Vec<String> {
    let script = std::env::var("ENRICHER_SERVICES_SCRIPT")
        .expect("ENRICHER_SERVICES_SCRIPT is set by `scripts/services env`");
    let output = Command::new(script)
        .arg("rabbitmqctl")
        .arg("-q")
        .args(args)
        .output()
        .expect("rabbitmqctl runs");
    assert!(
        output.status.success(),
        "rabbitmqctl {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The JSON body of the next event an [`TestApp::outbound_listener`]
/// receives, waiting at most `wait`.
pub async fn next_outbound(consumer: &mut lapin::Consumer, wait: Duration) -> Value {
    let delivery = tokio::time::timeout(wait, futures::StreamExt::next(consumer))
        .await
        .expect("event published in time")
        .expect("stream open")
        .expect("delivery");
    serde_json::from_slice(&delivery.data).expect("json body")
}

/// A `chat.message` event.
pub fn chat(
    workspace: &str,
    id: &str,
    conversation: &str,
    user: &str,
    sender: &str,
    text: &str,
) -> Value {
    json!({
        "type": "chat.message", "version": 1, "id": id, "workspace_id": workspace,
        "occurred_at": "2026-03-01T10:00:00Z", "conversation_id": conversation,
        "platform": "web", "platform_user_id": user, "sender": sender, "text": text
    })
}

/// Shows the log of workers running in this process when RUST_LOG is set.
pub fn show_worker_log() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}

/// Customer messages `e-{i}` for every `i` in `ids`, spread over
/// `conversations` conversations (one customer each).
pub fn chat_batch(ws: &str, ids: std::ops::Range<usize>, conversations: usize) -> Vec<Value> {
    ids.map(|i| {
        chat(
            ws,
            &format!("e-{i}"),
            &format!("c-{}", i % conversations),
            &format!("u-{}", i % conversations),
            "customer",
            &format!("{i}"),
        )
    })
    .collect()
}

/// Publishes 4,000 events over 50 conversations to a running worker and
/// restarts one of the shared local services (`rabbitmq`, `postgres`) once
/// the worker is part-way through the first 3,000: every event must still be
/// stored exactly once, with the worker left untouched.
pub async fn restart_mid_stream_loses_nothing(service: &str) {
    let script = std::env::var("ENRICHER_SERVICES_SCRIPT")
        .expect("ENRICHER_SERVICES_SCRIPT is set by `scripts/services env`");
    show_worker_log();
    let app = TestApp::new().await;
    let mut worker = app.start_worker().await;
    let ws = unique("ws");
    let batch = |from: usize, to: usize| chat_batch(&ws, from..to, 50);
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
        .args(["restart", service])
        .status()
        .unwrap_or_else(|error| panic!("restart {service}: {error}"));
    assert!(restarted.success(), "{service} restart failed");

    // Publish the second half once the service is back; the worker was not touched.
    app.publish(&batch(3000, 4000)).await;
    worker
        .while_running(app.wait_for_count(
            "SELECT count(*) FROM enrich.messages",
            4000,
            Duration::from_secs(120),
        ))
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

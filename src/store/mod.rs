//! Postgres, the source of truth, and every SQL statement enricher runs
//! (the benchmark's own aside): one module per kind of record. The lanes'
//! functions run inside a transaction the caller owns, so one batch of
//! events commits or rolls back as a whole and the broker ack can follow the
//! commit; the model stage's, the sweepers' and the tools' say when they
//! commit on their own.

pub mod asks;
pub mod chat;
pub mod console_sessions;
pub mod conversations;
pub mod customer_card;
pub mod customers;
pub mod dead_letters;
pub mod erasure;
pub mod escalations;
pub mod fields;
pub mod insights;
pub mod llm_calls;
pub mod merges;
pub mod model_queue;
pub mod notes;
pub mod openings;
pub mod outbox;
pub mod profiles;
pub mod retention;
pub mod search;
pub mod status;
pub mod summaries;
pub mod tokens;
pub mod warm_up;
pub mod workspaces;

use std::time::Duration;

use secrecy::ExposeSecret;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool};

use crate::config::PostgresSettings;

/// Migrations compiled into the binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// What went wrong talking to Postgres, classified by what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Worth another try: connection loss, deadlock, serialization failure, overload.
    #[error("transient store error: {0}")]
    Transient(#[source] sqlx::Error),
    /// Retrying will not help: a constraint or a bug.
    #[error("store error: {0}")]
    Permanent(#[source] sqlx::Error),
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        if is_transient(&error) {
            StoreError::Transient(error)
        } else {
            StoreError::Permanent(error)
        }
    }
}

impl StoreError {
    /// Whether the same work may succeed if tried again.
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Transient(_))
    }
}

impl crate::retry::Transient for StoreError {
    fn is_transient(&self) -> bool {
        StoreError::is_transient(self)
    }
}

fn is_transient(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Tls(_) => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            // 40001 serialization failure, 40P01 deadlock, 08* connection, 53* resources,
            // 57P0* shutdown / cannot connect now, 55P03 lock timeout,
            // 57014 statement timeout (the session settings of `connect_with_size`).
            code == "40001"
                || code == "40P01"
                || code == "55P03"
                || code == "57014"
                || code.starts_with("08")
                || code.starts_with("53")
                || code.starts_with("57P0")
        }),
        _ => false,
    }
}

/// Opens a connection pool for the command-line tools and migrations:
/// without the worker's session timeouts, so a long export or a migration
/// that builds an index on a large table is not cut short.
pub async fn connect(settings: &PostgresSettings) -> Result<PgPool, sqlx::Error> {
    let options: PgConnectOptions = settings.url.expose_secret().parse()?;
    PgPoolOptions::new()
        .max_connections(settings.max_connections.max(1))
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options)
        .await
}

/// Opens a connection pool of at most `size` connections that keeps `warm`
/// of them open from the start. A new connection costs a password exchange
/// (several milliseconds of CPU on both sides), which the worker pays at
/// start-up rather than in the latency of the first events. With a
/// `hot_path`, every new connection starts with that path's run-time
/// parameters and runs its statements once before it is handed out (see
/// [`warm_up`]). Every session runs with `statement_timeout` and
/// `lock_timeout` ([`session_timeouts`]), so no statement holds a worker's
/// connection for good.
///
/// Idle connections are not pinged before use: that ping is a round trip on
/// every acquire, in the latency of every event. A connection that died
/// while idle (a database restart) fails its first statement with an I/O
/// error instead, which callers treat as transient and retry on a fresh
/// connection; the pool still tests each connection when it is released.
pub async fn connect_with_size(
    settings: &PostgresSettings,
    size: u32,
    warm: u32,
    hot_path: Option<warm_up::HotPath>,
) -> Result<PgPool, sqlx::Error> {
    let mut options: PgConnectOptions = settings.url.expose_secret().parse()?;
    options = options.options(session_timeouts(settings));
    if let Some(path) = hot_path
        && !path.session_parameters().is_empty()
    {
        options = options.options(path.session_parameters().iter().copied());
    }
    let size = size.max(1);
    let mut pool = PgPoolOptions::new()
        .max_connections(size)
        .min_connections(warm.min(size))
        .acquire_timeout(Duration::from_secs(10))
        .test_before_acquire(false);
    if let Some(path) = hot_path {
        pool = pool.after_connect(move |conn, _| {
            Box::pin(async move {
                warm_up::warm(conn, path).await;
                Ok(())
            })
        });
    }
    pool.connect_with(options).await
}

/// Asks Postgres to write every dirty page to disk now (a `CHECKPOINT`;
/// it needs superuser or `pg_checkpoint`).
pub async fn checkpoint(pool: &PgPool) -> Result<(), sqlx::Error> {
    sqlx::query("CHECKPOINT").execute(pool).await?;
    Ok(())
}

/// The run-time parameters that bound every statement of a pooled session:
/// `statement_timeout` and `lock_timeout`, in milliseconds (0 means none).
pub fn session_timeouts(settings: &PostgresSettings) -> [(&'static str, String); 2] {
    [
        (
            "statement_timeout",
            settings.statement_timeout_ms.to_string(),
        ),
        ("lock_timeout", settings.lock_timeout_ms.to_string()),
    ]
}

/// Applies pending migrations.
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    MIGRATOR.run(pool).await
}

/// Applies pending migrations on a connection of its own, for callers whose
/// pools must only open once the schema is current.
pub async fn migrate_before_pools(
    settings: &PostgresSettings,
) -> Result<(), sqlx::migrate::MigrateError> {
    let options: PgConnectOptions = settings.url.expose_secret().parse()?;
    let mut conn = PgConnection::connect_with(&options).await?;
    MIGRATOR.run(&mut conn).await?;
    conn.close().await?;
    Ok(())
}

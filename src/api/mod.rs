//! `enricher serve`: the HTTP JSON API dashboards and support tools build on.
//! Reads come from the store; writes are turned into the inbound event they
//! stand for (`profile.update`, `note.added`, `customer.forget`) and run
//! through the same event handlers as the broker's deliveries, in a
//! transaction, with the effects applied after the commit, so an API write
//! changes the same rows and publishes the same outbound events as the event.
//! One file per resource; every route takes a workspace's bearer token.

pub mod auth;
pub mod conversations;
pub mod customers;
pub mod export;
pub mod import;
pub mod instructions;
pub mod notes;
pub mod openapi;
pub mod pagination;
pub mod problem;
pub mod tags;
pub mod writes;

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post, put};
use sqlx::PgPool;
use tokio::net::TcpListener;

use crate::config::{PostgresSettings, Settings};
use crate::queue::outbox_relay;
use crate::queue::publisher::Publisher;
use crate::state::Cache;
use crate::store;
use crate::store::chat::ModelHandoff;
use crate::worker::effects::AfterCommit;
use crate::worker::metrics::Metrics;
use crate::workspaces::Workspaces;

/// The name the API's broker connection shows in the broker's management.
pub const CONNECTION_NAME: &str = "enricher-api";

/// Largest import body, in bytes.
pub const MAX_IMPORT_BYTES: usize = 256 * 1024 * 1024;

/// Why the API could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Settings are unusable.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// Postgres is unreachable or refused.
    #[error("postgres: {0}")]
    Postgres(#[from] sqlx::Error),
    /// Migrations failed.
    #[error("migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// Syncing workspaces failed.
    #[error(transparent)]
    Store(#[from] store::StoreError),
    /// Redis is unreachable.
    #[error(transparent)]
    Cache(#[from] crate::state::CacheError),
    /// RabbitMQ is unreachable.
    #[error("rabbitmq: {0}")]
    Amqp(#[from] lapin::Error),
    /// The broker's shard queues do not match `amqp.shards` (see
    /// [`crate::queue::shard_count`]).
    #[error("rabbitmq: {0}")]
    ShardCount(#[from] crate::queue::shard_count::ShardCountError),
    /// The listening socket failed.
    #[error("listen: {0}")]
    Io(#[from] std::io::Error),
}

/// What every handler reaches.
#[derive(Clone)]
pub struct Api {
    /// Postgres.
    pub pool: PgPool,
    /// Workspace settings and fields.
    pub workspaces: Arc<Workspaces>,
    /// Applies a write's effects after its commit.
    pub after_commit: AfterCommit,
}

/// The API with its connections open.
pub struct Server {
    api: Api,
    amqp: lapin::Connection,
}

impl Server {
    /// Connects to Postgres, Redis and RabbitMQ, applies migrations and syncs
    /// workspaces.
    pub async fn build(settings: &Settings) -> Result<Server, ServeError> {
        Server::build_on(settings, &settings.postgres).await
    }

    /// [`Server::build`] on another database than the configured one.
    pub async fn build_on(
        settings: &Settings,
        postgres: &PostgresSettings,
    ) -> Result<Server, ServeError> {
        // The API never hands messages to the model stage.
        let workspaces = Arc::new(Workspaces::new(
            settings.workspaces.clone(),
            &settings.asks,
            ModelHandoff::None,
        )?);
        store::migrate_before_pools(postgres).await?;
        let pool = store::connect(postgres).await?;
        store::workspaces::sync(&pool, &settings.workspaces).await?;
        let cache = Cache::connect(&settings.redis).await?;
        let amqp = crate::queue::connect(&settings.amqp, CONNECTION_NAME).await?;
        crate::queue::shard_count::match_shard_count(&amqp, &settings.amqp).await?;
        let channel = amqp.create_channel().await?;
        crate::queue::topology::declare(&channel, &settings.amqp).await?;
        let publisher = Publisher::open(&amqp, &settings.amqp).await?;
        Ok(Server {
            api: Api {
                after_commit: AfterCommit {
                    cache,
                    publisher,
                    pool: pool.clone(),
                    metrics: Arc::new(Metrics::default()),
                },
                pool,
                workspaces,
            },
            amqp,
        })
    }

    /// Serves on `listener` until `stop` resolves, then finishes the
    /// requests in flight and closes the connections.
    pub async fn run(
        self,
        listener: TcpListener,
        stop: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        self.run_app(listener, stop, router).await
    }

    /// [`Server::run`] serving the routes `app` builds (the API's and any
    /// mounted beside them, such as the console's).
    pub async fn run_app(
        self,
        listener: TcpListener,
        stop: impl Future<Output = ()> + Send + 'static,
        app: impl FnOnce(Api) -> Router,
    ) -> Result<(), ServeError> {
        let pool = self.api.pool.clone();
        let publisher = self.api.after_commit.publisher.clone();
        // Outbound events whose publish failed (the broker was away) wait
        // in the outbox; this process sends them itself once it can, so the
        // API does not depend on a worker running to deliver its events.
        let relay = tokio::spawn(outbox_relay::relay(publisher, pool.clone()));
        let app = app(self.api);
        if let Ok(address) = listener.local_addr() {
            tracing::info!(%address, "API listening");
        }
        axum::serve(listener, app)
            .with_graceful_shutdown(stop)
            .await?;
        relay.abort();
        pool.close().await;
        let _ = self.amqp.close(200, "stopping".into()).await;
        Ok(())
    }
}

/// Every route of the API.
pub fn router(api: Api) -> Router {
    Router::new()
        .route("/openapi.json", get(openapi::document))
        .route("/v1/customers", get(customers::list))
        .route(
            "/v1/customers/{id}",
            get(customers::show).delete(customers::forget),
        )
        .route(
            "/v1/customers/{id}/conversations",
            get(customers::conversations),
        )
        .route("/v1/customers/{id}/history", get(customers::history))
        .route(
            "/v1/customers/{id}/fields",
            axum::routing::patch(customers::update_fields),
        )
        .route("/v1/customers/{id}/notes", post(notes::add))
        .route("/v1/customers/{id}/tags", put(tags::replace))
        .route(
            "/v1/customers/{id}/instructions",
            put(instructions::replace),
        )
        .route("/v1/customers/{id}/export", get(export::one))
        .route(
            "/v1/conversations/{id}/messages",
            get(conversations::messages),
        )
        .route("/v1/export", get(export::all))
        .route(
            "/v1/import",
            post(import::import).layer(DefaultBodyLimit::max(MAX_IMPORT_BYTES)),
        )
        .fallback(problem::not_found)
        .layer(axum::middleware::map_response(
            problem::framework_errors_as_problems,
        ))
        .with_state(api)
}

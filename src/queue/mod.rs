//! RabbitMQ: the topology the worker declares (shard queues behind a
//! consistent-hash exchange), the connection with automatic recovery, the
//! subscription that outlives what that recovery cannot mend, the drain of
//! the single work queue of earlier versions, the check that the broker's
//! shard queues match `amqp.shards`, publishing with publisher confirms
//! (outbound events and dead letters), and the sink that moves dead letters
//! into Postgres.

pub mod acks;
pub mod dead_letter_sink;
pub mod inspect;
pub mod legacy;
pub mod outbox_relay;
pub mod publisher;
pub mod shard_count;
pub mod subscription;
pub mod topology;

use lapin::{Connection, ConnectionProperties};
use secrecy::ExposeSecret;

use crate::config::AmqpSettings;

/// Header that carries why an event was dead-lettered.
pub const ERROR_HEADER: &str = "x-enrich-error";

/// Opens a connection that reconnects and replays its topology by itself when
/// the broker restarts.
pub async fn connect(settings: &AmqpSettings, name: &str) -> Result<Connection, lapin::Error> {
    let properties = ConnectionProperties::default()
        .with_connection_name(name.into())
        .enable_auto_recover()
        .configure_backoff(|backoff| {
            backoff
                .with_min_delay(std::time::Duration::from_millis(200))
                .with_max_delay(std::time::Duration::from_secs(5))
                .with_max_times(120)
        });
    Connection::connect(settings.url.expose_secret(), properties).await
}

//! Declares every exchange and queue the worker uses. Declarations are
//! idempotent, so every worker does this at start-up.
//!
//! ```text
//! enrich.in (topic) ──#──> enrich.shards (x-consistent-hash, by routing key = conversation id)
//!                               ├──> enrich.shard.0 (quorum, single active consumer, delivery limit)
//!                               ├──> …                                  ──dead letter──> enrich.dead
//!                               └──> enrich.shard.<shards-1>                             (fanout + queue)
//! enrich.out (topic): events the worker emits, routing key = event type
//! ```
//!
//! Every replica consumes every shard queue; the broker lets one consumer of
//! each queue receive at a time, so a conversation (one routing key, hence
//! one shard) is handled by one replica at a time, in queue order. The
//! single work queue of earlier versions (`enrich.work`) and its TTL retry
//! queues are no longer declared: [`super::legacy`] drains and deletes them.

use lapin::options::{
    ExchangeBindOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Channel, ExchangeKind};

use crate::config::AmqpSettings;

/// The exchange type of the RabbitMQ plugin `rabbitmq_consistent_hash_exchange`.
pub const CONSISTENT_HASH: &str = "x-consistent-hash";

/// The binding key of every shard queue: a consistent-hash exchange reads
/// it as the queue's weight on the hash ring, and all shards weigh the same.
pub const SHARD_WEIGHT: &str = "1";

/// Name of the TTL queue that delayed a retry by `delay_ms` in versions
/// before sharding.
pub fn retry_queue(settings: &AmqpSettings, delay_ms: u64) -> String {
    format!("{}.{delay_ms}ms", settings.retry_queue_prefix)
}

/// Name of shard queue `index`.
pub fn shard_queue(settings: &AmqpSettings, index: u16) -> String {
    format!("{}.{index}", settings.shard_queue_prefix)
}

/// Names of every shard queue, in order.
pub fn shard_queues(settings: &AmqpSettings) -> Vec<String> {
    (0..settings.shards)
        .map(|index| shard_queue(settings, index))
        .collect()
}

fn durable_exchange() -> ExchangeDeclareOptions {
    ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    }
}

fn durable_queue() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    }
}

fn text(value: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(value))
}

/// Declares the whole topology.
pub async fn declare(channel: &Channel, settings: &AmqpSettings) -> Result<(), lapin::Error> {
    let no_args = FieldTable::default();
    channel
        .exchange_declare(
            settings.inbound_exchange.as_str().into(),
            ExchangeKind::Topic,
            durable_exchange(),
            no_args.clone(),
        )
        .await?;
    channel
        .exchange_declare(
            settings.dead_letter_exchange.as_str().into(),
            ExchangeKind::Fanout,
            durable_exchange(),
            no_args.clone(),
        )
        .await?;
    channel
        .exchange_declare(
            settings.outbound_exchange.as_str().into(),
            ExchangeKind::Topic,
            durable_exchange(),
            no_args.clone(),
        )
        .await?;
    channel
        .queue_declare(
            settings.dead_letter_queue.as_str().into(),
            durable_queue(),
            quorum_args(),
        )
        .await?;
    channel
        .queue_bind(
            settings.dead_letter_queue.as_str().into(),
            settings.dead_letter_exchange.as_str().into(),
            "".into(),
            QueueBindOptions::default(),
            no_args.clone(),
        )
        .await?;
    declare_shards(channel, settings).await
}

/// Deletes every queue and exchange [`declare`] declares, whatever they
/// hold. Only for a topology of its own, such as the broker-only bench's
/// copy under names of the run: a worker's would lose its events.
pub async fn delete(channel: &Channel, settings: &AmqpSettings) -> Result<(), lapin::Error> {
    let mut queues = shard_queues(settings);
    queues.push(settings.dead_letter_queue.clone());
    for queue in queues {
        channel
            .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
            .await?;
    }
    for exchange in [
        &settings.inbound_exchange,
        &settings.shard_exchange,
        &settings.dead_letter_exchange,
        &settings.outbound_exchange,
    ] {
        channel
            .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
            .await?;
    }
    Ok(())
}

/// The consistent-hash exchange, the shard queues bound to it with equal
/// weights, and the binding that feeds it from the inbound exchange. The
/// shard queues exist before events reach the exchange, so none is dropped.
async fn declare_shards(channel: &Channel, settings: &AmqpSettings) -> Result<(), lapin::Error> {
    let no_args = FieldTable::default();
    if let Err(error) = channel
        .exchange_declare(
            settings.shard_exchange.as_str().into(),
            ExchangeKind::Custom(CONSISTENT_HASH.to_owned()),
            durable_exchange(),
            no_args.clone(),
        )
        .await
    {
        tracing::error!(
            error = %error,
            "could not declare the consistent-hash exchange; enable the broker plugin with \
             `rabbitmq-plugins enable rabbitmq_consistent_hash_exchange` (see docs/scaling.md)"
        );
        return Err(error);
    }
    for queue in shard_queues(settings) {
        channel
            .queue_declare(queue.as_str().into(), durable_queue(), shard_args(settings))
            .await?;
        channel
            .queue_bind(
                queue.as_str().into(),
                settings.shard_exchange.as_str().into(),
                SHARD_WEIGHT.into(),
                QueueBindOptions::default(),
                no_args.clone(),
            )
            .await?;
    }
    channel
        .exchange_bind(
            settings.shard_exchange.as_str().into(),
            settings.inbound_exchange.as_str().into(),
            "#".into(),
            ExchangeBindOptions::default(),
            no_args,
        )
        .await
}

fn shard_args(settings: &AmqpSettings) -> FieldTable {
    let mut args = quorum_args();
    args.insert(
        ShortString::from("x-single-active-consumer"),
        AMQPValue::Boolean(true),
    );
    args.insert(
        ShortString::from("x-dead-letter-exchange"),
        text(&settings.dead_letter_exchange),
    );
    args.insert(
        ShortString::from("x-delivery-limit"),
        AMQPValue::LongLongInt(i64::from(settings.delivery_limit)),
    );
    args
}

fn quorum_args() -> FieldTable {
    let mut args = FieldTable::default();
    args.insert(ShortString::from("x-queue-type"), text("quorum"));
    args
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;

    fn amqp() -> AmqpSettings {
        let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config");
        Settings::load_from(&dir).expect("defaults load").amqp
    }

    #[test]
    fn every_shard_has_its_own_queue_in_order() {
        let mut settings = amqp();
        settings.shard_queue_prefix = "enrich.shard".to_owned();
        settings.shards = 3;
        assert_eq!(
            shard_queues(&settings),
            vec!["enrich.shard.0", "enrich.shard.1", "enrich.shard.2"]
        );
    }

    #[test]
    fn shard_queues_have_one_active_consumer_and_dead_letter() {
        let args = shard_args(&amqp());
        let inner = args.inner();
        assert_eq!(
            inner.get("x-single-active-consumer"),
            Some(&AMQPValue::Boolean(true))
        );
        assert_eq!(inner.get("x-queue-type"), Some(&text("quorum")));
        assert!(inner.contains_key("x-dead-letter-exchange"));
        assert!(inner.contains_key("x-delivery-limit"));
    }
}

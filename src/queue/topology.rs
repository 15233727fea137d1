//! Declares every exchange and queue the worker uses. Declarations are
//! idempotent, so every worker does this at start-up.
//!
//! ```text
//! enrich.in (topic) ──#──> enrich.work (quorum, delivery limit) ──dead letter──> enrich.dead
//!                               ^                                                  (fanout + queue)
//!   enrich.retry.<ms> (TTL) ────┘  failed events wait here, then return to the work queue
//! enrich.out (topic): events the worker emits, routing key = event type
//! ```

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Channel, ExchangeKind};

use crate::config::AmqpSettings;

/// Name of the TTL queue that delays a retry by `delay_ms`.
pub fn retry_queue(settings: &AmqpSettings, delay_ms: u64) -> String {
    format!("{}.{delay_ms}ms", settings.retry_queue_prefix)
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

    let mut work_args = quorum_args();
    work_args.insert(
        ShortString::from("x-dead-letter-exchange"),
        text(&settings.dead_letter_exchange),
    );
    work_args.insert(
        ShortString::from("x-delivery-limit"),
        AMQPValue::LongLongInt(i64::from(settings.delivery_limit)),
    );
    channel
        .queue_declare(
            settings.work_queue.as_str().into(),
            durable_queue(),
            work_args,
        )
        .await?;
    channel
        .queue_bind(
            settings.work_queue.as_str().into(),
            settings.inbound_exchange.as_str().into(),
            "#".into(),
            QueueBindOptions::default(),
            no_args,
        )
        .await?;

    for delay in &settings.retry_delays_ms {
        let mut args = FieldTable::default();
        args.insert(
            ShortString::from("x-message-ttl"),
            AMQPValue::LongLongInt(*delay as i64),
        );
        args.insert(ShortString::from("x-dead-letter-exchange"), text(""));
        args.insert(
            ShortString::from("x-dead-letter-routing-key"),
            text(&settings.work_queue),
        );
        channel
            .queue_declare(
                retry_queue(settings, *delay).as_str().into(),
                durable_queue(),
                args,
            )
            .await?;
    }
    Ok(())
}

fn quorum_args() -> FieldTable {
    let mut args = FieldTable::default();
    args.insert(ShortString::from("x-queue-type"), text("quorum"));
    args
}

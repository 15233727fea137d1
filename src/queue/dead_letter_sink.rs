//! Moves what reaches the dead-letter queue into Postgres
//! (`enrich.dead_letters`), with the reason, so operators can list, replay
//! and purge dead letters (`enricher dead-letters`) and so `customer.forget`
//! can erase a customer's. A dead letter about a customer erased after the
//! event occurred (a late copy of their own event) is dropped instead.
//! A row is acked only once stored: while Postgres is down, dead letters
//! wait in the queue.

use std::time::Duration;

use futures::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::{AMQPValue, FieldTable};
use sqlx::PgPool;
use uuid::Uuid;

use super::{ERROR_HEADER, connect};
use crate::config::AmqpSettings;
use crate::store::dead_letters::{self, Subjects};
use crate::store::erasure::{self, Subject};

/// Dead letters held unacked at once.
const PREFETCH: u16 = 32;
const MIN_DELAY: Duration = Duration::from_millis(200);
const MAX_DELAY: Duration = Duration::from_secs(5);

/// Consumes the dead-letter queue for as long as the task runs, reconnecting
/// with backoff when the broker link breaks.
pub async fn run(settings: AmqpSettings, pool: PgPool) {
    let mut delay = MIN_DELAY;
    loop {
        match consume(&settings, &pool).await {
            Ok(()) => tracing::warn!("dead-letter queue consumer ended; subscribing again"),
            Err(error) => {
                tracing::warn!(error = %error, "dead-letter queue unavailable; retrying")
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(MAX_DELAY);
    }
}

async fn consume(settings: &AmqpSettings, pool: &PgPool) -> Result<(), lapin::Error> {
    let connection = connect(settings, "enricher-dead-letters").await?;
    let channel = connection.create_channel().await?;
    channel
        .basic_qos(PREFETCH, BasicQosOptions::default())
        .await?;
    let mut consumer = channel
        .basic_consume(
            settings.dead_letter_queue.as_str().into(),
            "enricher-dead-letters".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    while let Some(delivery) = consumer.next().await {
        let delivery = delivery?;
        keep(pool, &delivery).await;
        delivery.ack(BasicAckOptions::default()).await?;
    }
    Ok(())
}

/// Stores one dead letter (or drops it when its customer was erased since),
/// retrying while Postgres fails.
async fn keep(pool: &PgPool, delivery: &Delivery) {
    let reason = reason(delivery).replace('\0', "");
    let subjects = Subjects::read(&delivery.data);
    let mut delay = MIN_DELAY;
    loop {
        match store(pool, delivery, &reason, &subjects).await {
            Ok(()) => return,
            Err(error) => {
                tracing::warn!(error = %error, "could not store a dead letter; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(MAX_DELAY);
            }
        }
    }
}

async fn store(
    pool: &PgPool,
    delivery: &Delivery,
    reason: &str,
    subjects: &Subjects,
) -> Result<(), crate::store::StoreError> {
    if let (Some(workspace_id), Some(occurred_at)) = (&subjects.workspace_id, subjects.occurred_at)
    {
        let customer = subjects
            .customer_id
            .as_deref()
            .and_then(|id| Uuid::parse_str(id).ok());
        let mut named = Vec::new();
        named.extend(customer.map(Subject::Customer));
        if let (Some(platform), Some(platform_user_id)) =
            (&subjects.platform, &subjects.platform_user_id)
        {
            named.push(Subject::Identity {
                platform,
                platform_user_id,
            });
        }
        named.extend(subjects.email.as_deref().map(Subject::Email));
        named.extend(
            subjects
                .conversation_id
                .as_deref()
                .map(Subject::Conversation),
        );
        if erasure::erased_after(pool, workspace_id, &named, occurred_at).await? {
            tracing::info!("dead letter about a customer erased since dropped");
            return Ok(());
        }
    }
    dead_letters::insert(
        pool,
        &delivery.routing_key.as_str().replace('\0', ""),
        &delivery.data,
        reason,
        subjects,
    )
    .await?;
    Ok(())
}

/// The worker's reason (`x-enrich-error`), else the broker's (`x-death`:
/// a delivery limit reached, a rejection).
fn reason(delivery: &Delivery) -> String {
    let headers = delivery.properties.headers().as_ref();
    let header = |name: &str| headers.and_then(|h| h.inner().get(name).cloned());
    if let Some(AMQPValue::LongString(reason)) = header(ERROR_HEADER) {
        return reason.to_string();
    }
    let broker_reason = match header("x-death") {
        Some(AMQPValue::FieldArray(deaths)) => {
            deaths.as_slice().first().and_then(|death| match death {
                AMQPValue::FieldTable(table) => match table.inner().get("reason") {
                    Some(AMQPValue::LongString(reason)) => Some(reason.to_string()),
                    _ => None,
                },
                _ => None,
            })
        }
        _ => None,
    };
    match broker_reason {
        Some(reason) => format!("dead-lettered by the broker: {reason}"),
        None => "dead-lettered without a reason".to_owned(),
    }
}

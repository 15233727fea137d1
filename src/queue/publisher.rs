//! Publishing with publisher confirms: a publish counts only once the broker
//! has taken responsibility for the message. Used for outbound events, dead
//! letters (with the reason in `x-enrich-error`) and delayed retries.

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, LongString, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Connection};

use super::{ATTEMPT_HEADER, ERROR_HEADER, topology};
use crate::config::AmqpSettings;

/// Why a publish did not go through.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The connection or channel failed.
    #[error("amqp: {0}")]
    Amqp(#[from] lapin::Error),
    /// The broker refused the message.
    #[error("broker refused the message")]
    Refused,
}

/// A confirming publisher on its own channel.
#[derive(Clone)]
pub struct Publisher {
    channel: Channel,
    outbound_exchange: String,
    dead_letter_exchange: String,
}

const PERSISTENT: u8 = 2;

impl Publisher {
    /// Opens a channel in confirm mode.
    pub async fn open(
        connection: &Connection,
        settings: &AmqpSettings,
    ) -> Result<Publisher, lapin::Error> {
        let channel = connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Ok(Publisher {
            channel,
            outbound_exchange: settings.outbound_exchange.clone(),
            dead_letter_exchange: settings.dead_letter_exchange.clone(),
        })
    }

    /// Publishes and waits for the broker's confirm, waiting out a broker
    /// restart once if the connection is recovering.
    pub async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
    ) -> Result<(), PublishError> {
        match self
            .publish_once(exchange, routing_key, body, properties.clone())
            .await
        {
            Err(PublishError::Amqp(error)) => {
                self.channel.wait_for_recovery(error).await?;
                self.publish_once(exchange, routing_key, body, properties)
                    .await
            }
            other => other,
        }
    }

    async fn publish_once(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
    ) -> Result<(), PublishError> {
        let confirmation = self
            .channel
            .basic_publish(
                exchange.into(),
                routing_key.into(),
                BasicPublishOptions::default(),
                body,
                properties,
            )
            .await?
            .await?;
        match confirmation {
            Confirmation::Ack(_) | Confirmation::NotRequested => Ok(()),
            Confirmation::Nack(_) => Err(PublishError::Refused),
        }
    }

    /// Publishes an outbound event on the outbound exchange.
    pub async fn publish_outbound(
        &self,
        routing_key: &str,
        body: &[u8],
        message_id: &str,
    ) -> Result<(), PublishError> {
        let properties = json_properties().with_message_id(message_id.into());
        self.publish(&self.outbound_exchange, routing_key, body, properties)
            .await
    }

    /// Sends an event to the dead-letter exchange with the reason attached.
    pub async fn dead_letter(
        &self,
        body: &[u8],
        original: &BasicProperties,
        routing_key: &str,
        reason: &str,
    ) -> Result<(), PublishError> {
        let mut headers = original.headers().clone().unwrap_or_default();
        headers.insert(
            ShortString::from(ERROR_HEADER),
            AMQPValue::LongString(LongString::from(reason)),
        );
        let properties = original
            .clone()
            .with_headers(headers)
            .with_delivery_mode(PERSISTENT);
        self.publish(&self.dead_letter_exchange, routing_key, body, properties)
            .await
    }

    /// Parks an event in the TTL queue for its next attempt; the queue returns
    /// it to the work queue when the delay has passed.
    pub async fn retry_later(
        &self,
        settings: &AmqpSettings,
        body: &[u8],
        original: &BasicProperties,
        attempt: u32,
        delay_ms: u64,
    ) -> Result<(), PublishError> {
        let mut headers = original.headers().clone().unwrap_or_default();
        headers.insert(
            ShortString::from(ATTEMPT_HEADER),
            AMQPValue::LongUInt(attempt),
        );
        let properties = original
            .clone()
            .with_headers(headers)
            .with_delivery_mode(PERSISTENT);
        let queue = topology::retry_queue(settings, delay_ms);
        self.publish("", &queue, body, properties).await
    }
}

/// Properties of a persistent JSON message.
pub fn json_properties() -> BasicProperties {
    BasicProperties::default()
        .with_content_type("application/json".into())
        .with_delivery_mode(PERSISTENT)
}

/// Retries an event has already had, from its headers.
pub fn attempts_so_far(properties: &BasicProperties) -> u32 {
    properties
        .headers()
        .as_ref()
        .and_then(|headers| headers.inner().get(ATTEMPT_HEADER).cloned())
        .and_then(|value| match value {
            AMQPValue::LongUInt(n) => Some(n),
            AMQPValue::LongInt(n) => u32::try_from(n).ok(),
            AMQPValue::LongLongInt(n) => u32::try_from(n).ok(),
            AMQPValue::ShortUInt(n) => Some(u32::from(n)),
            _ => None,
        })
        .unwrap_or(0)
}

//! Publishing with publisher confirms: a publish counts only once the broker
//! has taken responsibility for the message. Used for outbound events and
//! dead letters (with the reason in `x-enrich-error`).
//!
//! Every clone shares one channel slot: when the worker replaces a broker
//! connection that could not recover ([`super::subscription`]), it reopens
//! the publisher on the new connection and every clone publishes there.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, LongString, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Connection};

use super::ERROR_HEADER;
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
    /// No confirm came within [`CONFIRM_TIMEOUT`].
    #[error("no confirm from the broker within {} s", CONFIRM_TIMEOUT.as_secs())]
    TimedOut,
    /// Not tried: an earlier message of the same batch could not be
    /// published, so the broker is taken to be unavailable.
    #[error("not sent: an earlier message of the batch could not be published")]
    NotSent,
}

/// How long a publish waits for lapin to recover the connection before it
/// tries once more on whatever channel the publisher holds by then.
const RECOVERY_WAIT: Duration = Duration::from_secs(30);

/// How long a publish waits for the broker's confirm. A publish sent on a
/// connection that died without lapin noticing is never confirmed.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(30);

/// One outbound event to publish: its routing key (the event type), JSON
/// body and message id (its outbox row's id, so consumers can drop a repeat).
#[derive(Debug, Clone, Copy)]
pub struct OutboundMessage<'a> {
    /// The event type.
    pub routing_key: &'a str,
    /// The JSON body.
    pub body: &'a [u8],
    /// The message id.
    pub message_id: &'a str,
}

/// A confirming publisher on its own channel.
#[derive(Clone)]
pub struct Publisher {
    channel: Arc<RwLock<Channel>>,
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
        Ok(Publisher {
            channel: Arc::new(RwLock::new(confirm_channel(connection).await?)),
            outbound_exchange: settings.outbound_exchange.clone(),
            dead_letter_exchange: settings.dead_letter_exchange.clone(),
        })
    }

    /// Moves every clone of this publisher to a new channel on `connection`.
    pub async fn reopen(&self, connection: &Connection) -> Result<(), lapin::Error> {
        let channel = confirm_channel(connection).await?;
        *self
            .channel
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = channel;
        Ok(())
    }

    /// Whether the publisher's channel is open on a live connection.
    pub fn connected(&self) -> bool {
        self.channel().status().connected()
    }

    fn channel(&self) -> Channel {
        self.channel
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
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
                let channel = self.channel();
                match tokio::time::timeout(RECOVERY_WAIT, channel.wait_for_recovery(error)).await {
                    Ok(recovered) => recovered?,
                    Err(_) => tracing::warn!(
                        wait_secs = RECOVERY_WAIT.as_secs(),
                        "broker connection still down; publishing once more"
                    ),
                }
                self.publish_once(exchange, routing_key, body, properties)
                    .await
            }
            // The link may have been replaced meanwhile: once more, on the
            // publisher's channel as it is now.
            Err(PublishError::TimedOut) => {
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
        let channel = self.channel();
        let confirmed = async {
            channel
                .basic_publish(
                    exchange.into(),
                    routing_key.into(),
                    BasicPublishOptions::default(),
                    body,
                    properties,
                )
                .await?
                .await
        };
        let confirmation = tokio::time::timeout(CONFIRM_TIMEOUT, confirmed)
            .await
            .map_err(|_| PublishError::TimedOut)??;
        match confirmation {
            Confirmation::Ack(_) | Confirmation::NotRequested => Ok(()),
            Confirmation::Nack(_) => Err(PublishError::Refused),
        }
    }

    /// Publishes outbound events together: every message is sent before any
    /// confirm is awaited, so a batch of them costs one round trip to the
    /// broker instead of one each. Returns one outcome per event, in order.
    /// A message that could not be sent this way (the channel failed) is
    /// published on its own with [`Publisher::publish_outbound`], which
    /// waits out a broker restart.
    pub async fn publish_outbound_all(
        &self,
        events: &[OutboundMessage<'_>],
    ) -> Vec<Result<(), PublishError>> {
        let channel = self.channel();
        let mut confirms = Vec::with_capacity(events.len());
        for event in events {
            let properties = json_properties().with_message_id(event.message_id.into());
            let sent = channel
                .basic_publish(
                    self.outbound_exchange.as_str().into(),
                    event.routing_key.into(),
                    BasicPublishOptions::default(),
                    event.body,
                    properties,
                )
                .await;
            let failed = sent.is_err();
            confirms.push(sent);
            if failed {
                break;
            }
        }
        let confirmed = tokio::time::timeout(
            CONFIRM_TIMEOUT,
            futures::future::join_all(confirms.into_iter().map(|sent| async move {
                match sent?.await? {
                    Confirmation::Ack(_) | Confirmation::NotRequested => Ok(()),
                    Confirmation::Nack(_) => Err(PublishError::Refused),
                }
            })),
        )
        .await
        .unwrap_or_else(|_| Vec::new());
        let mut outcomes = Vec::with_capacity(events.len());
        let mut unavailable = false;
        for (index, event) in events.iter().enumerate() {
            let outcome = match confirmed.get(index) {
                Some(Ok(())) => Ok(()),
                Some(Err(PublishError::Refused)) => Err(PublishError::Refused),
                _ if unavailable => Err(PublishError::NotSent),
                // Not sent, not confirmed in time, or sent on a channel that
                // failed: once more on its own, through the recovery path.
                _ => {
                    let alone = self
                        .publish_outbound(event.routing_key, event.body, event.message_id)
                        .await;
                    unavailable = alone.is_err();
                    alone
                }
            };
            outcomes.push(outcome);
        }
        outcomes
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
}

async fn confirm_channel(connection: &Connection) -> Result<Channel, lapin::Error> {
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    Ok(channel)
}

/// Properties of a persistent JSON message.
pub fn json_properties() -> BasicProperties {
    BasicProperties::default()
        .with_content_type("application/json".into())
        .with_delivery_mode(PERSISTENT)
}

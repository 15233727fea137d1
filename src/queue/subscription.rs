//! The worker's link to the broker, kept consuming through broker trouble.
//!
//! lapin's automatic recovery reconnects after a broker restart and replays
//! channels, topology and consumers, but the replay can fail (a queue that is
//! not available yet right after the broker boots leaves the connection
//! errored for good), a connection lost at the wrong moment can stay
//! "reconnecting" with no reconnect under way, and a consumer the broker
//! cancels (its queue deleted) simply ends. A worker that stopped consuming
//! would sit idle while events pile up, so [`Subscription::next_delivery`]
//! watches for all three: it keeps polling while lapin recovers, and when the
//! consumer ends, the connection is beyond recovery or recovery takes longer
//! than [`RECOVERY_PATIENCE`], it opens a new connection, declares the
//! topology, moves the [`Publisher`] there and subscribes again, backing off
//! between attempts, until it succeeds or the caller stops asking.

use std::time::{Duration, Instant};

use futures::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicCancelOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, Consumer};
use tokio::time::{Interval, MissedTickBehavior};

use super::{connect, publisher::Publisher, topology};
use crate::config::AmqpSettings;

/// How often the link is checked for a connection lapin gave up on.
const HEALTH_CHECK_EVERY: Duration = Duration::from_secs(2);
/// How long lapin may spend recovering a connection before the link is
/// replaced. A broker that is back answers a reconnect within seconds; one
/// that is still down makes the replacement wait for it just the same.
pub const RECOVERY_PATIENCE: Duration = Duration::from_secs(30);
/// Backoff between attempts to replace a broken link.
const RESUBSCRIBE_MIN_DELAY: Duration = Duration::from_millis(200);
const RESUBSCRIBE_MAX_DELAY: Duration = Duration::from_secs(5);
/// How long cancelling the consumer or closing a connection may take before
/// the worker goes on without it.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// A connection with the topology declared, a confirming publisher and,
/// once [`Subscription::start`] ran, a consumer on the work queue.
pub struct Subscription {
    settings: AmqpSettings,
    name: String,
    connection: Connection,
    channel: Channel,
    publisher: Publisher,
    consumer: Option<Consumer>,
    health_check: Interval,
    /// When the link was first seen recovering, while it still is.
    recovering_since: Option<Instant>,
}

impl Subscription {
    /// Connects, declares the topology and opens the publisher; consuming
    /// starts with [`Subscription::start`].
    pub async fn open(settings: &AmqpSettings, name: &str) -> Result<Subscription, lapin::Error> {
        let (connection, channel) = open_link(settings, name).await?;
        let publisher = Publisher::open(&connection, settings).await?;
        let mut health_check = tokio::time::interval(HEALTH_CHECK_EVERY);
        health_check.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Ok(Subscription {
            settings: settings.clone(),
            name: name.to_owned(),
            connection,
            channel,
            publisher,
            consumer: None,
            health_check,
            recovering_since: None,
        })
    }

    /// The publisher on this link; its clones follow the link when it is
    /// replaced.
    pub fn publisher(&self) -> &Publisher {
        &self.publisher
    }

    /// Starts consuming the work queue.
    pub async fn start(&mut self) -> Result<(), lapin::Error> {
        self.consumer = Some(consume(&self.channel, &self.settings).await?);
        Ok(())
    }

    /// The next delivery from the work queue. Never gives up: a broken link
    /// is replaced, as often as it takes. Cancel-safe, so callers can race it
    /// against a shutdown signal.
    pub async fn next_delivery(&mut self) -> Delivery {
        loop {
            let Some(consumer) = self.consumer.as_mut() else {
                self.resubscribe().await;
                continue;
            };
            tokio::select! {
                next = consumer.next() => match next {
                    Some(Ok(delivery)) => return delivery,
                    Some(Err(error)) => {
                        // lapin recovers the channel and its consumer by
                        // itself; the health check catches it if it cannot.
                        tracing::warn!(error = %error, "broker connection lost; waiting for recovery");
                    }
                    None => {
                        tracing::warn!("the broker ended the subscription; subscribing again");
                        self.resubscribe().await;
                    }
                },
                _ = self.health_check.tick() => {
                    if let Some(reason) = self.broken_link() {
                        tracing::warn!(reason, "replacing the broker connection");
                        self.resubscribe().await;
                    }
                }
            }
        }
    }

    /// Why the link needs replacing, if it does.
    fn broken_link(&mut self) -> Option<&'static str> {
        match link_state(&self.connection, &self.channel) {
            LinkState::Up => {
                self.recovering_since = None;
                None
            }
            LinkState::Recovering => {
                let since = *self.recovering_since.get_or_insert_with(Instant::now);
                (since.elapsed() >= RECOVERY_PATIENCE).then_some("recovery is taking too long")
            }
            LinkState::Broken => Some("lapin could not recover the connection"),
        }
    }

    /// Replaces the connection, topology, publisher channel and consumer,
    /// retrying with backoff until all of them are back.
    async fn resubscribe(&mut self) {
        let mut delay = RESUBSCRIBE_MIN_DELAY;
        let mut attempt: u32 = 1;
        loop {
            match self.replace_link().await {
                Ok(()) => {
                    tracing::info!(attempt, "subscribed to the work queue again");
                    return;
                }
                Err(error) => {
                    tracing::warn!(error = %error, attempt, retry_in = ?delay, "could not subscribe again");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(RESUBSCRIBE_MAX_DELAY);
                    attempt = attempt.saturating_add(1);
                }
            }
        }
    }

    async fn replace_link(&mut self) -> Result<(), lapin::Error> {
        let (connection, channel) = open_link(&self.settings, &self.name).await?;
        let consumer = consume(&channel, &self.settings).await?;
        self.publisher.reopen(&connection).await?;
        let replaced = std::mem::replace(&mut self.connection, connection);
        self.channel = channel;
        self.consumer = Some(consumer);
        self.recovering_since = None;
        // Deliveries still held from the old connection cannot be acked
        // any more; the broker redelivers them and dedupe absorbs the repeat.
        close_quietly(&replaced, "replaced").await;
        Ok(())
    }

    /// Stops consuming (in-flight deliveries can still be acked).
    pub async fn cancel(&self) {
        let Some(consumer) = &self.consumer else {
            return;
        };
        let cancel = self
            .channel
            .basic_cancel(consumer.tag(), BasicCancelOptions::default());
        match tokio::time::timeout(CLOSE_TIMEOUT, cancel).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::debug!(error = %error, "consumer cancel failed"),
            Err(_) => tracing::debug!("consumer cancel timed out"),
        }
    }

    /// Closes the connection.
    pub async fn close(&self) {
        close_quietly(&self.connection, "shutdown").await;
    }
}

/// A connection whose consuming channel has the topology declared and the
/// prefetch limit set.
async fn open_link(
    settings: &AmqpSettings,
    name: &str,
) -> Result<(Connection, Channel), lapin::Error> {
    let connection = connect(settings, name).await?;
    let channel = connection.create_channel().await?;
    topology::declare(&channel, settings).await?;
    channel
        .basic_qos(settings.prefetch, BasicQosOptions::default())
        .await?;
    Ok((connection, channel))
}

async fn consume(channel: &Channel, settings: &AmqpSettings) -> Result<Consumer, lapin::Error> {
    let tag = format!("enricher-{}-{}", std::process::id(), uuid::Uuid::new_v4());
    channel
        .basic_consume(
            settings.work_queue.as_str().into(),
            tag.as_str().into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
}

enum LinkState {
    /// The connection and the consuming channel are open.
    Up,
    /// lapin is (or says it is) reconnecting.
    Recovering,
    /// lapin gave up: the connection or the consuming channel is closed or
    /// errored.
    Broken,
}

fn link_state(connection: &Connection, channel: &Channel) -> LinkState {
    let link = connection.status();
    let channel = channel.status();
    if link.errored() || link.closed() {
        LinkState::Broken
    } else if !link.connected() {
        LinkState::Recovering
    } else if channel.connected() {
        LinkState::Up
    } else if channel.reconnecting() || channel.initializing() || channel.closing() {
        LinkState::Recovering
    } else {
        LinkState::Broken
    }
}

async fn close_quietly(connection: &Connection, reason: &str) {
    let status = connection.status();
    if status.closed() || status.errored() {
        return;
    }
    match tokio::time::timeout(CLOSE_TIMEOUT, connection.close(200, reason.into())).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::debug!(error = %error, "connection close failed"),
        Err(_) => tracing::debug!("connection close timed out"),
    }
}

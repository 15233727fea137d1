//! `enricher send`: publishes events, one JSON document per line, to the
//! inbound exchange with publisher confirms. Lines go out byte for byte (even
//! malformed ones, which makes it a tool for testing the dead-letter path);
//! the routing key is the conversation or customer the line names.

use std::io::BufRead;

use indicatif::{ProgressBar, ProgressStyle};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{Channel, Confirmation};

use crate::config::AmqpSettings;
use crate::queue::{self, publisher::json_properties, topology};

/// Confirms awaited together; bounds memory while keeping the broker busy.
const CONFIRM_WINDOW: usize = 2000;

/// Why sending stopped.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// Reading the input failed.
    #[error("reading input: {0}")]
    Io(#[from] std::io::Error),
    /// The broker failed.
    #[error("rabbitmq: {0}")]
    Amqp(#[from] lapin::Error),
    /// The broker's shard queues do not match `amqp.shards` (see
    /// [`crate::queue::shard_count`]).
    #[error("rabbitmq: {0}")]
    ShardCount(#[from] crate::queue::shard_count::ShardCountError),
    /// The broker refused some events.
    #[error("the broker refused {0} events")]
    Refused(usize),
}

/// The routing key docs/contract.md §2 asks for: `conversation_id`, or `customer:<id>`.
pub fn routing_key(line: &[u8]) -> String {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(line) else {
        return "unparsed".to_owned();
    };
    if let Some(conversation) = value.get("conversation_id").and_then(|v| v.as_str()) {
        return conversation.to_owned();
    }
    for key in ["customer_id", "email", "platform_user_id"] {
        if let Some(reference) = value.get(key).and_then(|v| v.as_str()) {
            return format!("customer:{reference}");
        }
    }
    "unrouted".to_owned()
}

/// A publisher of raw event lines on a confirming channel.
pub struct EventSender {
    channel: Channel,
    exchange: String,
    in_flight: Vec<lapin::PublisherConfirm>,
    refused: usize,
}

impl EventSender {
    /// Connects, declares the topology (so events published before any
    /// worker starts wait in the work queue instead of being dropped by an
    /// exchange with nothing bound) and opens a confirming channel.
    pub async fn connect(settings: &AmqpSettings) -> Result<EventSender, SendError> {
        let connection = queue::connect(settings, "enricher-send").await?;
        queue::shard_count::match_shard_count(&connection, settings).await?;
        let channel = connection.create_channel().await?;
        topology::declare(&channel, settings).await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Ok(EventSender {
            channel,
            exchange: settings.inbound_exchange.clone(),
            in_flight: Vec::new(),
            refused: 0,
        })
    }

    /// Publishes one event; confirms are collected in windows.
    pub async fn send(&mut self, line: &[u8]) -> Result<(), SendError> {
        let key = routing_key(line);
        let confirm = self
            .channel
            .basic_publish(
                self.exchange.as_str().into(),
                key.as_str().into(),
                BasicPublishOptions::default(),
                line,
                json_properties(),
            )
            .await?;
        self.in_flight.push(confirm);
        if self.in_flight.len() >= CONFIRM_WINDOW {
            self.await_confirms().await?;
        }
        Ok(())
    }

    /// Waits for every outstanding confirm.
    pub async fn await_confirms(&mut self) -> Result<(), SendError> {
        for confirm in self.in_flight.drain(..) {
            if let Confirmation::Nack(_) = confirm.await? {
                self.refused += 1;
            }
        }
        Ok(())
    }

    /// Waits for every confirm and reports refusals.
    pub async fn finish(mut self) -> Result<(), SendError> {
        self.await_confirms().await?;
        match self.refused {
            0 => Ok(()),
            n => Err(SendError::Refused(n)),
        }
    }
}

/// Publishes every non-empty line of `input`; returns how many were sent.
pub async fn send_lines(
    settings: &AmqpSettings,
    input: Box<dyn BufRead>,
    total_bytes: Option<u64>,
) -> Result<u64, SendError> {
    let mut sender = EventSender::connect(settings).await?;
    let progress = progress_bar(total_bytes);
    let mut sent = 0;
    for line in input.split(b'\n') {
        let line = line?;
        progress.inc(line.len() as u64 + 1);
        let trimmed = line.strip_suffix(b"\r").unwrap_or(&line);
        if trimmed.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        sender.send(trimmed).await?;
        sent += 1;
    }
    sender.finish().await?;
    progress.finish_and_clear();
    Ok(sent)
}

fn progress_bar(total_bytes: Option<u64>) -> ProgressBar {
    match total_bytes {
        Some(total) if total > 1_000_000 => {
            let bar = ProgressBar::new(total);
            if let Ok(style) = ProgressStyle::with_template(
                "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            ) {
                bar.set_style(style);
            }
            bar
        }
        _ => ProgressBar::hidden(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routing_keys_follow_the_contract() {
        assert_eq!(routing_key(br#"{"conversation_id":"c9"}"#), "c9");
        assert_eq!(routing_key(br#"{"customer_id":"abc"}"#), "customer:abc");
        assert_eq!(routing_key(b"{oops"), "unparsed");
    }
}

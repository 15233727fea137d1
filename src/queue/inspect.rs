//! Looks at a queue without changing it: a passive declare on a channel of
//! its own, since the broker closes the channel of a passive declare that
//! finds nothing. The drain of the old work queue and the shard-count check
//! both need to know whether a queue exists, holds events or is consumed.

use lapin::Connection;
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;

/// What a declare tells about a queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueState {
    /// Messages ready for delivery (not those delivered and unacked).
    pub messages: u32,
    /// Consumers, standbys of a single-active-consumer queue included.
    pub consumers: u32,
}

/// Messages ready in `queue` and its consumers, or `None` when it does not
/// exist. Each look uses a channel of its own: the broker closes the
/// channel of a passive declare that finds nothing.
pub async fn queue_state(
    connection: &Connection,
    queue: &str,
) -> Result<Option<QueueState>, lapin::Error> {
    let channel = connection.create_channel().await?;
    let declared = channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await;
    match declared {
        Ok(found) => {
            let _ = channel.close(200, "looked".into()).await;
            Ok(Some(QueueState {
                messages: found.message_count(),
                consumers: found.consumer_count(),
            }))
        }
        // Not found closes the channel, not the connection.
        Err(_) if connection.status().connected() => Ok(None),
        Err(error) => Err(error),
    }
}

//! The worker: routes each delivery to the lane of its conversation (order
//! within a conversation, concurrency across them; across replicas the
//! broker's shard queues keep each conversation with one replica at a
//! time, see [`crate::queue::topology`]), where the event
//! handlers store it in batches; applies the effects after each commit; and
//! runs the model stage for messages the decision core left for the model.
//! What cannot be decoded is dead-lettered here. [`crate::startup`] builds
//! and starts it.

pub mod decision;
pub mod effects;
pub mod error;
pub mod field_writes;
pub mod handlers;
pub mod hot_profile;
pub mod lane;
pub mod metrics;
pub mod model_backlog;
pub mod model_job;
pub mod model_stage;
pub mod retention;
pub mod workspace_rows;

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use lapin::message::Delivery;
use tokio::sync::mpsc;

use crate::event::{Event, Limits};
use crate::queue::acks;
use crate::queue::legacy::{DrainTarget, InFlightGuard};
use crate::queue::publisher::Publisher;
use crate::workspaces::Workspaces;
use lane::Job;
use metrics::{DeadLetterKind, Metrics};

/// Decodes deliveries and hands each to the lane of its conversation.
pub struct Dispatcher {
    /// Known workspaces.
    pub workspaces: Arc<Workspaces>,
    /// Dead letters go out through it.
    pub publisher: Publisher,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Size limits of an event.
    pub limits: Limits,
    /// One sender per lane.
    pub lanes: Vec<mpsc::Sender<Job>>,
}

impl Dispatcher {
    /// Hands a delivery to its lane (or dead-letters it).
    pub async fn dispatch(&self, delivery: Delivery) {
        self.dispatch_tracked(delivery, None).await;
    }

    /// Like [`Dispatcher::dispatch`], with a guard dropped once the delivery
    /// is settled.
    pub async fn dispatch_tracked(&self, delivery: Delivery, in_flight: Option<InFlightGuard>) {
        let received_at = chrono::Utc::now();
        self.metrics.consumed();
        let event = match Event::decode(&delivery.data, self.limits) {
            Ok(event) => event,
            Err(invalid) => {
                return self
                    .reject(delivery, &invalid.0, DeadLetterKind::InvalidEvent)
                    .await;
            }
        };
        if self.workspaces.get(&event.envelope.workspace_id).is_none() {
            let reason = format!("unknown workspace `{}`", event.envelope.workspace_id);
            return self
                .reject(delivery, &reason, DeadLetterKind::UnknownWorkspace)
                .await;
        }
        let lane = lane_of(&event.ordering_key(), self.lanes.len());
        if self.lanes[lane]
            .send(Job {
                event,
                delivery,
                received_at,
                in_flight,
            })
            .await
            .is_err()
        {
            tracing::error!(lane, "lane stopped; the event will be redelivered");
        }
    }

    async fn reject(&self, delivery: Delivery, reason: &str, kind: DeadLetterKind) {
        tracing::warn!(reason, "invalid event dead-lettered");
        self.metrics.dead_letter(kind);
        match self
            .publisher
            .dead_letter(
                &delivery.data,
                &delivery.properties,
                delivery.routing_key.as_str(),
                reason,
            )
            .await
        {
            Ok(()) => acks::ack(&delivery).await,
            Err(error) => {
                // Leaving it unacked returns it to the queue on reconnect; the
                // broker's delivery limit dead-letters it if this persists.
                tracing::error!(error = %error, "could not dead-letter an invalid event");
            }
        }
    }
}

impl DrainTarget for Dispatcher {
    async fn take(&self, delivery: Delivery, in_flight: InFlightGuard) {
        self.dispatch_tracked(delivery, Some(in_flight)).await;
    }
}

/// The lane of an ordering key: stable for the life of the process.
pub fn lane_of(ordering_key: &str, lanes: usize) -> usize {
    let mut hasher = DefaultHasher::new();
    ordering_key.hash(&mut hasher);
    (hasher.finish() % lanes as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_conversation_always_maps_to_the_same_lane() {
        let first = lane_of("w/conversation:c-17", 8);
        for _ in 0..100 {
            assert_eq!(lane_of("w/conversation:c-17", 8), first);
        }
        let used: std::collections::HashSet<usize> = (0..200)
            .map(|i| lane_of(&format!("w/conversation:c-{i}"), 8))
            .collect();
        assert_eq!(used.len(), 8, "keys spread over every lane");
    }
}

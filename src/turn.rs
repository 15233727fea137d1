//! One turn of a conversation: what the turns cache holds, what the stores
//! read back and what the prompt shows the model. One type for all three, so
//! a turn is never converted on its way from Postgres or Redis to the model.

use serde::{Deserialize, Serialize};

use crate::event::Sender;

/// One stored message of a conversation, as the model sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Turn {
    /// The stored message's id, so readers can take the turns before a message.
    pub message_id: i64,
    /// Who spoke (`customer`, `bot`, `agent` or `system`).
    pub sender: Sender,
    /// What was said.
    pub text: String,
}

/// The last `limit` turns of `turns` (oldest first) said before `message_id`.
pub fn last_before(turns: &[Turn], message_id: i64, limit: usize) -> Vec<Turn> {
    let before: Vec<&Turn> = turns.iter().filter(|t| t.message_id < message_id).collect();
    let skip = before.len().saturating_sub(limit);
    before.into_iter().skip(skip).cloned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn turn(message_id: i64) -> Turn {
        Turn {
            message_id,
            sender: Sender::Customer,
            text: format!("m{message_id}"),
        }
    }

    #[test]
    fn last_before_keeps_the_latest_turns_before_the_message_in_order() {
        let turns: Vec<Turn> = (1..=6).map(turn).collect();
        let ids: Vec<i64> = last_before(&turns, 5, 2)
            .iter()
            .map(|t| t.message_id)
            .collect();
        assert_eq!(ids, vec![3, 4]);
        assert!(last_before(&turns, 1, 3).is_empty());
        assert_eq!(last_before(&turns, 100, 10).len(), 6);
    }

    #[test]
    fn a_turn_serializes_with_its_sender_in_lowercase() {
        let json = serde_json::to_value(turn(7)).expect("json");
        assert_eq!(
            json,
            serde_json::json!({"message_id": 7, "sender": "customer", "text": "m7"})
        );
    }
}

//! The hot profile's values and how they are laid out in Redis hashes (the
//! layout is the read contract in `docs/redis.md`): a customer's profile
//! and a conversation's ask state, each stamped with the customer's state
//! version so the worker can tell a current copy from a stale one.

use std::collections::{BTreeMap, BTreeSet};

use uuid::Uuid;

use crate::decide::policy::Source;
use crate::decide::{AskState, Known, PastAsk};
use crate::store::asks::DecisionState;

/// Hash field prefix of a known value: `field:{name}`.
pub const FIELD_PREFIX: &str = "field:";
/// Hash field prefix of a known value's source: `source:{name}`.
pub const SOURCE_PREFIX: &str = "source:";

/// What the hot profile holds about a customer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HotProfile {
    /// The customer.
    pub customer_id: Uuid,
    /// `customers.state_version` this copy was read at.
    pub version: i64,
    /// Known field values and their sources.
    pub known: BTreeMap<String, Known>,
    /// The workspace's required fields not known yet.
    pub missing_required: Vec<String>,
    /// Fields the customer declined to give.
    pub declined: BTreeSet<String>,
    /// Asks made of the customer per field, in every conversation.
    pub ask_counts: BTreeMap<String, u32>,
    /// Tags on the customer.
    pub tags: Vec<String>,
    /// How the customer wants to be addressed.
    pub agent_instructions: Option<String>,
}

/// What the hot profile holds about a conversation besides its turns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HotConversation {
    /// The conversation's customer.
    pub customer_id: Uuid,
    /// The customer's state version the asks were read at.
    pub version: i64,
    /// Asks made in this conversation, oldest first.
    pub asks: Vec<PastAsk>,
}

/// The decision core's view of a profile and a conversation at a customer turn.
pub fn decision_state(
    profile: &HotProfile,
    conversation: &HotConversation,
    customer_turn: u32,
) -> DecisionState {
    DecisionState {
        known: profile.known.clone(),
        asks: AskState {
            customer_turn,
            asks: conversation.asks.clone(),
            field_attempts: profile.ask_counts.clone(),
            declined: profile.declined.clone(),
        },
    }
}

fn json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

impl HotProfile {
    /// The hash fields and values of the profile.
    pub fn to_hash(&self) -> Vec<(String, String)> {
        let mut hash = vec![
            ("customer_id".to_owned(), self.customer_id.to_string()),
            ("version".to_owned(), self.version.to_string()),
            ("missing_required".to_owned(), json(&self.missing_required)),
            ("declined".to_owned(), json(&self.declined)),
            ("ask_counts".to_owned(), json(&self.ask_counts)),
            ("tags".to_owned(), json(&self.tags)),
        ];
        if let Some(instructions) = &self.agent_instructions {
            hash.push(("agent_instructions".to_owned(), instructions.clone()));
        }
        for (field, known) in &self.known {
            hash.push((format!("{FIELD_PREFIX}{field}"), known.value.clone()));
            hash.push((
                format!("{SOURCE_PREFIX}{field}"),
                known.source.as_str().to_owned(),
            ));
        }
        hash
    }

    /// Reads a profile back from its hash; `None` when the hash is empty or
    /// was not written whole (a reader must then rebuild it).
    pub fn from_hash(hash: &[(String, String)]) -> Option<HotProfile> {
        let get = |name: &str| {
            hash.iter()
                .find(|(field, _)| field == name)
                .map(|(_, value)| value.as_str())
        };
        let mut profile = HotProfile {
            customer_id: get("customer_id")?.parse().ok()?,
            version: get("version")?.parse().ok()?,
            missing_required: serde_json::from_str(get("missing_required")?).ok()?,
            declined: serde_json::from_str(get("declined")?).ok()?,
            ask_counts: serde_json::from_str(get("ask_counts")?).ok()?,
            tags: serde_json::from_str(get("tags")?).ok()?,
            agent_instructions: get("agent_instructions").map(str::to_owned),
            known: BTreeMap::new(),
        };
        for (name, value) in hash {
            let Some(field) = name.strip_prefix(FIELD_PREFIX) else {
                continue;
            };
            let source = get(&format!("{SOURCE_PREFIX}{field}"))
                .and_then(|s| serde_json::from_value::<Source>(s.into()).ok())?;
            profile.known.insert(
                field.to_owned(),
                Known {
                    value: value.clone(),
                    source,
                },
            );
        }
        Some(profile)
    }
}

impl HotConversation {
    /// The hash fields and values of the conversation's ask state, with the
    /// key of its customer's profile.
    pub fn to_hash(&self, profile_key: &str) -> Vec<(String, String)> {
        vec![
            ("customer_id".to_owned(), self.customer_id.to_string()),
            ("version".to_owned(), self.version.to_string()),
            ("asks".to_owned(), json(&self.asks)),
            ("profile_key".to_owned(), profile_key.to_owned()),
        ]
    }

    /// Reads the ask state back from the conversation's hash; `None` when it
    /// is missing or incomplete.
    pub fn from_hash(hash: &[(String, String)]) -> Option<HotConversation> {
        let get = |name: &str| {
            hash.iter()
                .find(|(field, _)| field == name)
                .map(|(_, value)| value.as_str())
        };
        Some(HotConversation {
            customer_id: get("customer_id")?.parse().ok()?,
            version: get("version")?.parse().ok()?,
            asks: serde_json::from_str(get("asks")?).ok()?,
        })
    }
}

/// The number of messages of a conversation its cached turns list has seen,
/// from the conversation's hash.
pub fn messages_seen(hash: &[(String, String)]) -> Option<i64> {
    hash.iter()
        .find(|(field, _)| field == "messages")
        .and_then(|(_, value)| value.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile() -> HotProfile {
        HotProfile {
            customer_id: Uuid::from_u128(7),
            version: 12,
            known: BTreeMap::from([(
                "name".to_owned(),
                Known {
                    value: "Ana".to_owned(),
                    source: Source::Customer,
                },
            )]),
            missing_required: vec!["email".to_owned()],
            declined: BTreeSet::from(["phone".to_owned()]),
            ask_counts: BTreeMap::from([("email".to_owned(), 2)]),
            tags: vec!["vip".to_owned()],
            agent_instructions: Some("use formal address".to_owned()),
        }
    }

    #[test]
    fn a_profile_survives_its_hash() {
        let hash = profile().to_hash();
        assert!(hash.contains(&("field:name".to_owned(), "Ana".to_owned())));
        assert!(hash.contains(&("source:name".to_owned(), "customer".to_owned())));
        assert!(hash.contains(&("missing_required".to_owned(), "[\"email\"]".to_owned())));
        assert_eq!(HotProfile::from_hash(&hash), Some(profile()));
    }

    #[test]
    fn a_partial_hash_is_no_profile() {
        let hash: Vec<(String, String)> = profile()
            .to_hash()
            .into_iter()
            .filter(|(field, _)| field != "version")
            .collect();
        assert_eq!(HotProfile::from_hash(&hash), None);
        assert_eq!(HotProfile::from_hash(&[]), None);
        let no_source: Vec<(String, String)> = profile()
            .to_hash()
            .into_iter()
            .filter(|(field, _)| field != "source:name")
            .collect();
        assert_eq!(HotProfile::from_hash(&no_source), None);
    }

    #[test]
    fn a_conversation_survives_its_hash() {
        let conversation = HotConversation {
            customer_id: Uuid::from_u128(7),
            version: 3,
            asks: vec![PastAsk {
                field: "email".to_owned(),
                customer_turn: 2,
                pending: true,
            }],
        };
        let mut hash = conversation.to_hash("k");
        assert_eq!(HotConversation::from_hash(&hash), Some(conversation));
        assert_eq!(messages_seen(&hash), None);
        hash.push(("messages".to_owned(), "4".to_owned()));
        assert_eq!(messages_seen(&hash), Some(4));
    }
}

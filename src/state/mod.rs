//! Redis: the hot copy of what the decision core reads on every customer
//! message (the profile and the last turns of the conversation). Redis is a
//! cache: Postgres is the truth, every key has a TTL and a miss is rebuilt from
//! Postgres, so losing Redis loses nothing.
//!
//! Key layout (`{ws}` workspace id, `{customer}` customer UUID, `{conv}` the
//! backend's conversation id):
//!
//! | key                                  | type | holds                                           |
//! |--------------------------------------|------|-------------------------------------------------|
//! | `enrich:{ws}:profile:{customer}`     | hash | field → value of every known field, plus `_complete` |
//! | `enrich:{ws}:turns:{conv}`           | list | the last `recent_turns` + 1 turns as JSON `{message_id, sender, text}` |
//!
//! Writes follow the Postgres commit. Profiles are invalidated rather than
//! patched. A conversation's first message starts its turns list, which is
//! then complete; later turns are appended only to lists that already exist
//! (`RPUSHX`), so a cache entry is always a complete copy or absent. A
//! redelivered event invalidates both keys, which covers a crash between
//! commit and cache write.

use redis::AsyncCommands;
use redis::aio::ConnectionManager;
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use uuid::Uuid;

use crate::config::RedisSettings;
use crate::event::Sender;

const COMPLETE_MARKER: &str = "_complete";

/// One turn of a conversation as the model sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Turn {
    /// The stored message's id, so readers can take the turns before a message.
    pub message_id: i64,
    /// Who spoke.
    pub sender: Sender,
    /// What was said.
    pub text: String,
}

/// A change to apply to the cache after a commit.
#[derive(Debug, Clone, PartialEq)]
pub enum CacheUpdate {
    /// A message was stored.
    AppendTurn {
        /// Tenant.
        workspace_id: String,
        /// Backend conversation id.
        conversation: String,
        /// The turn.
        turn: Turn,
        /// The turn opened the conversation, so it is the whole list.
        opens_conversation: bool,
    },
    /// The customer's fields changed.
    InvalidateProfile {
        /// Tenant.
        workspace_id: String,
        /// The customer.
        customer_id: Uuid,
    },
    /// The customer was erased: drop every key of theirs.
    ForgetCustomer {
        /// Tenant.
        workspace_id: String,
        /// The erased customer.
        customer_id: Uuid,
        /// Backend ids of their conversations.
        conversations: Vec<String>,
    },
    /// The conversation's cached turns may be stale.
    InvalidateConversation {
        /// Tenant.
        workspace_id: String,
        /// Backend conversation id.
        conversation: String,
    },
}

/// Failures of the cache.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// Redis refused or is unreachable.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// Rebuilding from Postgres failed.
    #[error("rebuilding cache from postgres: {0}")]
    Store(#[from] sqlx::Error),
}

/// The Redis cache of profiles and conversations.
#[derive(Clone)]
pub struct Cache {
    connection: ConnectionManager,
    profile_ttl_secs: u64,
    conversation_ttl_secs: u64,
    recent_turns: usize,
}

/// Cached turns as stored; an entry that does not parse is left out.
fn parse_turns(cached: &[String]) -> Vec<Turn> {
    cached
        .iter()
        .filter_map(|json| serde_json::from_str(json).ok())
        .collect()
}

/// Key of a customer's cached profile.
pub fn profile_key(workspace_id: &str, customer_id: Uuid) -> String {
    format!("enrich:{workspace_id}:profile:{customer_id}")
}

/// Key of a conversation's cached turns.
pub fn turns_key(workspace_id: &str, conversation: &str) -> String {
    format!("enrich:{workspace_id}:turns:{conversation}")
}

impl Cache {
    /// Connects; the connection manager reconnects by itself when Redis restarts.
    pub async fn connect(settings: &RedisSettings) -> Result<Cache, CacheError> {
        let client = redis::Client::open(settings.url.expose_secret())?;
        let connection = ConnectionManager::new(client).await?;
        Ok(Cache {
            connection,
            profile_ttl_secs: settings.profile_ttl_secs,
            conversation_ttl_secs: settings.conversation_ttl_secs,
            recent_turns: settings.recent_turns,
        })
    }

    /// Answers whether Redis takes a command (for readiness).
    pub async fn ping(&self) -> Result<(), CacheError> {
        let mut connection = self.connection.clone();
        redis::cmd("PING")
            .query_async::<String>(&mut connection)
            .await?;
        Ok(())
    }

    /// Applies the updates of one committed batch in a single round trip.
    pub async fn apply(&self, updates: &[CacheUpdate]) -> Result<(), CacheError> {
        if updates.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        // The new message plus the turns before it that the model sees.
        let keep = self.recent_turns as isize + 1;
        for update in updates {
            match update {
                CacheUpdate::AppendTurn {
                    workspace_id,
                    conversation,
                    turn,
                    opens_conversation,
                } => {
                    let key = turns_key(workspace_id, conversation);
                    let json = serde_json::to_string(turn).unwrap_or_default();
                    if *opens_conversation {
                        pipe.del(&key)
                            .ignore()
                            .rpush(&key, json)
                            .ignore()
                            .expire(&key, self.conversation_ttl_secs as i64)
                            .ignore();
                    } else {
                        pipe.rpush_exists(&key, json)
                            .ignore()
                            .ltrim(&key, -keep, -1)
                            .ignore();
                    }
                }
                CacheUpdate::InvalidateProfile {
                    workspace_id,
                    customer_id,
                } => {
                    pipe.del(profile_key(workspace_id, *customer_id)).ignore();
                }
                CacheUpdate::InvalidateConversation {
                    workspace_id,
                    conversation,
                } => {
                    pipe.del(turns_key(workspace_id, conversation)).ignore();
                }
                CacheUpdate::ForgetCustomer {
                    workspace_id,
                    customer_id,
                    conversations,
                } => {
                    pipe.del(profile_key(workspace_id, *customer_id)).ignore();
                    for conversation in conversations {
                        pipe.del(turns_key(workspace_id, conversation)).ignore();
                    }
                }
            }
        }
        let mut connection = self.connection.clone();
        let () = pipe.query_async(&mut connection).await?;
        Ok(())
    }

    /// Known field values of a customer, from Redis or rebuilt from Postgres.
    pub async fn profile(
        &self,
        pool: &PgPool,
        workspace_id: &str,
        customer_id: Uuid,
    ) -> Result<Vec<(String, String)>, CacheError> {
        let key = profile_key(workspace_id, customer_id);
        let mut connection = self.connection.clone();
        let cached: Vec<(String, String)> = connection.hgetall(&key).await?;
        if cached.iter().any(|(field, _)| field == COMPLETE_MARKER) {
            return Ok(cached
                .into_iter()
                .filter(|(field, _)| field != COMPLETE_MARKER)
                .collect());
        }
        let values: Vec<(String, String)> = sqlx::query_as(
            "SELECT field, value FROM enrich.customer_fields WHERE customer_id = $1 ORDER BY field",
        )
        .bind(customer_id)
        .fetch_all(pool)
        .await?;
        let mut pipe = redis::pipe();
        pipe.atomic()
            .del(&key)
            .ignore()
            .hset(&key, COMPLETE_MARKER, "1")
            .ignore();
        for (field, value) in &values {
            pipe.hset(&key, field, value).ignore();
        }
        pipe.expire(&key, self.profile_ttl_secs as i64).ignore();
        pipe.query_async::<()>(&mut connection).await?;
        Ok(values)
    }

    /// The last turns of a conversation, from Redis or rebuilt from Postgres.
    pub async fn recent_turns(
        &self,
        pool: &PgPool,
        workspace_id: &str,
        conversation: &str,
    ) -> Result<Vec<Turn>, CacheError> {
        let key = turns_key(workspace_id, conversation);
        let mut connection = self.connection.clone();
        // Read and refresh the TTL in one round trip (EXPIRE on a missing
        // key does nothing).
        let (cached,): (Vec<String>,) = redis::pipe()
            .lrange(&key, 0, -1)
            .expire(&key, self.conversation_ttl_secs as i64)
            .ignore()
            .query_async(&mut connection)
            .await?;
        if !cached.is_empty() {
            return Ok(parse_turns(&cached));
        }
        let rows: Vec<(i64, String, String)> = sqlx::query_as(
            "SELECT id, sender, text FROM (
                 SELECT m.id, m.sender, m.text FROM enrich.messages m
                   JOIN enrich.conversations c ON c.id = m.conversation_id
                  WHERE c.workspace_id = $1 AND c.external_id = $2
                  ORDER BY m.id DESC LIMIT $3) recent
             ORDER BY id",
        )
        .bind(workspace_id)
        .bind(conversation)
        .bind(self.recent_turns as i64 + 1)
        .fetch_all(pool)
        .await?;
        let turns: Vec<Turn> = rows
            .into_iter()
            .filter_map(|(message_id, sender, text)| {
                let sender = serde_json::from_value(serde_json::Value::String(sender)).ok()?;
                Some(Turn {
                    message_id,
                    sender,
                    text,
                })
            })
            .collect();
        if !turns.is_empty() {
            let mut pipe = redis::pipe();
            pipe.atomic().del(&key).ignore();
            for turn in &turns {
                pipe.rpush(&key, serde_json::to_string(turn).unwrap_or_default())
                    .ignore();
            }
            pipe.expire(&key, self.conversation_ttl_secs as i64)
                .ignore();
            pipe.query_async::<()>(&mut connection).await?;
        }
        Ok(turns)
    }

    /// Up to `limit` turns of a conversation before `message_id`, oldest
    /// first, from the cache; `None` when the cache cannot be sure it holds
    /// them all (a trimmed list that starts after the turns needed).
    pub async fn turns_before(
        &self,
        pool: &PgPool,
        workspace_id: &str,
        conversation: &str,
        message_id: i64,
        limit: usize,
    ) -> Result<Option<Vec<Turn>>, CacheError> {
        let cached = self.recent_turns(pool, workspace_id, conversation).await?;
        Ok(self.turns_before_in(&cached, message_id, limit))
    }

    /// The last `limit` turns before `message_id` in a conversation's cached
    /// list, or `None` when the list was trimmed below what is needed.
    pub fn turns_before_in(
        &self,
        cached: &[Turn],
        message_id: i64,
        limit: usize,
    ) -> Option<Vec<Turn>> {
        let trimmed = cached.len() > self.recent_turns;
        let before: Vec<&Turn> = cached
            .iter()
            .filter(|t| t.message_id < message_id)
            .collect();
        if before.len() < limit && trimmed {
            return None;
        }
        let skip = before.len().saturating_sub(limit);
        Some(before.into_iter().skip(skip).cloned().collect())
    }
}

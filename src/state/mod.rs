//! Redis: the hot profile. Per customer, the known fields (values and
//! sources), the workspace's required fields still missing, declines, ask
//! counts, tags and agent instructions; per conversation, its asks and its
//! last turns. The worker reads it for every customer message, in one round
//! trip per batch ([`Cache::prefetch`]), and chat backends read it with
//! plain Redis commands (the layout is the contract in `docs/redis.md`, key
//! names in [`keys`], hash fields in [`hot`]).
//!
//! Redis is a cache: Postgres is the truth and every write goes there first;
//! the cache follows the commit. Every key has a TTL, and a miss is rebuilt
//! from Postgres, so losing Redis loses nothing. The profile and the ask
//! state carry the customer's state version (`customers.state_version`,
//! bumped by triggers on every change); the worker uses a copy only when its
//! version is the one the message's own transaction read, so a stale copy is
//! never acted on. The turns list is kept whole the same way: the
//! conversation's hash counts the messages the list has seen, and an append
//! that does not follow that count drops the list instead.

pub mod hot;
pub mod keys;

use redis::AsyncCommands;
use redis::aio::ConnectionManager;
use secrecy::ExposeSecret;
use sqlx::PgPool;
use uuid::Uuid;

use crate::config::RedisSettings;
use crate::store::chat as chat_store;
use crate::turn::Turn;
pub use hot::{HotConversation, HotProfile};

/// Reads, for each (conversation hash, turns list) pair of keys, the hash,
/// the list (or only its length, unless ARGV[1] is `1`) and the profile
/// hash the conversation names, in one round trip.
const PREFETCH: &str = r#"
local out = {}
for i = 1, #KEYS, 2 do
  local conversation = redis.call('HGETALL', KEYS[i])
  local turns
  if ARGV[1] == '1' then
    turns = redis.call('LRANGE', KEYS[i + 1], 0, -1)
  else
    turns = {tostring(redis.call('LLEN', KEYS[i + 1]))}
  end
  local profile = {}
  for j = 1, #conversation, 2 do
    if conversation[j] == 'profile_key' then
      profile = redis.call('HGETALL', conversation[j + 1])
    end
  end
  out[#out + 1] = conversation
  out[#out + 1] = turns
  out[#out + 1] = profile
end
return out
"#;

/// Appends a turn when the list has seen every message before it (and
/// still holds as many as it should), else drops the list (it would have a
/// gap). KEYS: conversation hash, turns
/// list; ARGV: turn JSON, the conversation's message count with this one,
/// turns to keep, TTL.
const APPEND_TURN: &str = r#"
local n = tonumber(ARGV[2])
if n == 1 then
  redis.call('DEL', KEYS[2])
else
  local seen = tonumber(redis.call('HGET', KEYS[1], 'messages') or '-1')
  local whole = math.min(seen, tonumber(ARGV[3]))
  if seen ~= n - 1 or redis.call('LLEN', KEYS[2]) ~= whole then
    redis.call('DEL', KEYS[2])
    redis.call('HDEL', KEYS[1], 'messages')
    return 0
  end
end
redis.call('RPUSH', KEYS[2], ARGV[1])
redis.call('LTRIM', KEYS[2], -tonumber(ARGV[3]), -1)
redis.call('HSET', KEYS[1], 'messages', n)
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('EXPIRE', KEYS[2], ARGV[4])
return 1
"#;

/// Replaces a conversation's turns list. KEYS: conversation hash, turns
/// list; ARGV: message count, TTL, then the turns as JSON, oldest first.
const PUT_TURNS: &str = r#"
redis.call('DEL', KEYS[2])
for i = 3, #ARGV do
  redis.call('RPUSH', KEYS[2], ARGV[i])
end
redis.call('HSET', KEYS[1], 'messages', ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[2])
return 1
"#;

/// Replaces a hash unless it holds a newer version. KEYS: the hash; ARGV:
/// version, TTL, then field and value pairs.
const PUT_VERSIONED: &str = r#"
local current = redis.call('HGET', KEYS[1], 'version')
if current and tonumber(current) > tonumber(ARGV[1]) then
  return 0
end
redis.call('DEL', KEYS[1])
for i = 3, #ARGV, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
end
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 1
"#;

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
        /// The conversation's message count with this message (1 opens it).
        message_count: i64,
    },
    /// The conversation's last turns, read from Postgres, replace the list.
    PutTurns {
        /// Tenant.
        workspace_id: String,
        /// Backend conversation id.
        conversation: String,
        /// The last turns, oldest first, the new message included.
        turns: Vec<Turn>,
        /// The conversation's message count they reach.
        message_count: i64,
    },
    /// A customer's profile as a committed transaction left it.
    PutProfile {
        /// Tenant.
        workspace_id: String,
        /// The profile.
        profile: HotProfile,
    },
    /// A conversation's ask state as a committed transaction left it.
    PutConversation {
        /// Tenant.
        workspace_id: String,
        /// Backend conversation id.
        conversation: String,
        /// The ask state.
        state: HotConversation,
    },
    /// The customer's profile was read and is current: keep it longer.
    TouchProfile {
        /// Tenant.
        workspace_id: String,
        /// The customer.
        customer_id: Uuid,
    },
    /// The customer's profile changed in a way not written here.
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
    /// The conversation's cached state and turns may be stale.
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
    Store(#[from] crate::store::StoreError),
}

/// What the cache holds about one conversation and its customer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CachedConversation {
    /// The conversation's ask state, when cached whole.
    pub state: Option<HotConversation>,
    /// How many of the conversation's messages the turns list has seen.
    pub messages_seen: Option<i64>,
    /// The last turns, oldest first (empty when only the list's length was read).
    pub turns: Vec<Turn>,
    /// The profile of the customer the conversation names, when cached whole.
    pub profile: Option<HotProfile>,
}

impl CachedConversation {
    /// Follows a message stored after what this copy holds, as the cache
    /// will once the commit's updates are applied: the turn is appended
    /// (keeping the last `keep`) when the copy had every message before it,
    /// and the copy stops claiming to be whole otherwise.
    pub fn push_turn(&mut self, turn: &Turn, message_count: i64, keep: usize) {
        if message_count == 1 {
            self.turns.clear();
        } else if self.messages_seen != Some(message_count - 1) {
            self.turns.clear();
            self.messages_seen = None;
            return;
        }
        self.turns.push(turn.clone());
        let skip = self.turns.len().saturating_sub(keep);
        self.turns.drain(..skip);
        self.messages_seen = Some(message_count);
    }
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

/// A flat `HGETALL` reply as field and value pairs.
fn pairs(flat: Vec<String>) -> Vec<(String, String)> {
    let mut pairs = Vec::with_capacity(flat.len() / 2);
    let mut items = flat.into_iter();
    while let (Some(field), Some(value)) = (items.next(), items.next()) {
        pairs.push((field, value));
    }
    pairs
}

/// An `EVAL` of `script` over `keys`; its arguments follow. (The script's
/// text is sent each time: Redis compiles it once, and unlike `EVALSHA` it
/// cannot fail after Redis restarted and forgot its scripts.)
fn eval(script: &str, keys: &[&str]) -> redis::Cmd {
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(script).arg(keys.len()).arg(keys);
    cmd
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

    /// Deletes every key of a workspace, found with `SCAN` a page at a time
    /// and removed with `UNLINK`, for tools that make throwaway workspaces
    /// (`enricher bench`); returns how many keys it removed.
    pub async fn remove_workspace(&self, workspace_id: &str) -> Result<u64, CacheError> {
        let pattern = keys::workspace_pattern(workspace_id);
        let mut connection = self.connection.clone();
        let mut cursor: u64 = 0;
        let mut removed = 0;
        loop {
            let (next, found): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut connection)
                .await?;
            if !found.is_empty() {
                let unlinked: u64 = redis::cmd("UNLINK")
                    .arg(&found)
                    .query_async(&mut connection)
                    .await?;
                removed += unlinked;
            }
            if next == 0 {
                return Ok(removed);
            }
            cursor = next;
        }
    }

    /// How many turns before a message the model sees.
    pub fn recent_turns_kept(&self) -> usize {
        self.recent_turns
    }

    /// What the cache holds about each (workspace, conversation), in order,
    /// in one round trip; the turns themselves only `with_turns` (the model
    /// needs them, the offline decision does not).
    pub async fn prefetch(
        &self,
        conversations: &[(&str, &str)],
        with_turns: bool,
    ) -> Result<Vec<CachedConversation>, CacheError> {
        if conversations.is_empty() {
            return Ok(Vec::new());
        }
        let mut names = Vec::with_capacity(conversations.len() * 2);
        for (workspace_id, conversation) in conversations {
            names.push(keys::conversation(workspace_id, conversation));
            names.push(keys::turns(workspace_id, conversation));
        }
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let mut connection = self.connection.clone();
        let replies: Vec<Vec<String>> = eval(PREFETCH, &names)
            .arg(if with_turns { "1" } else { "0" })
            .query_async(&mut connection)
            .await?;
        let mut replies = replies.into_iter();
        let mut cached = Vec::with_capacity(conversations.len());
        while let (Some(conversation), Some(turns), Some(profile)) =
            (replies.next(), replies.next(), replies.next())
        {
            let conversation = pairs(conversation);
            let (turns, length) = if with_turns {
                let turns = parse_turns(&turns);
                let length = turns.len() as i64;
                (turns, length)
            } else {
                let length = turns.first().and_then(|n| n.parse().ok()).unwrap_or(-1);
                (Vec::new(), length)
            };
            // A list that lost entries (evicted, deleted) is not whole.
            let keep = self.recent_turns as i64 + 1;
            let messages_seen =
                hot::messages_seen(&conversation).filter(|seen| length == (*seen).min(keep));
            cached.push(CachedConversation {
                state: HotConversation::from_hash(&conversation),
                messages_seen,
                turns,
                profile: HotProfile::from_hash(&pairs(profile)),
            });
        }
        Ok(cached)
    }

    /// A customer's cached profile, when cached whole.
    pub async fn profile(
        &self,
        workspace_id: &str,
        customer_id: Uuid,
    ) -> Result<Option<HotProfile>, CacheError> {
        let mut connection = self.connection.clone();
        let hash: Vec<(String, String)> = connection
            .hgetall(keys::profile(workspace_id, customer_id))
            .await?;
        Ok(HotProfile::from_hash(&hash))
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
        let keep = self.recent_turns + 1;
        let conversation_ttl = self.conversation_ttl_secs;
        for update in updates {
            match update {
                CacheUpdate::AppendTurn {
                    workspace_id,
                    conversation,
                    turn,
                    message_count,
                } => {
                    let hash = keys::conversation(workspace_id, conversation);
                    let list = keys::turns(workspace_id, conversation);
                    let mut cmd = eval(APPEND_TURN, &[&hash, &list]);
                    cmd.arg(serde_json::to_string(turn).unwrap_or_default())
                        .arg(message_count)
                        .arg(keep)
                        .arg(conversation_ttl);
                    pipe.add_command(cmd).ignore();
                }
                CacheUpdate::PutTurns {
                    workspace_id,
                    conversation,
                    turns,
                    message_count,
                } => {
                    let hash = keys::conversation(workspace_id, conversation);
                    let list = keys::turns(workspace_id, conversation);
                    let mut cmd = eval(PUT_TURNS, &[&hash, &list]);
                    cmd.arg(message_count).arg(conversation_ttl);
                    let skip = turns.len().saturating_sub(keep);
                    for turn in turns.iter().skip(skip) {
                        cmd.arg(serde_json::to_string(turn).unwrap_or_default());
                    }
                    pipe.add_command(cmd).ignore();
                }
                CacheUpdate::PutProfile {
                    workspace_id,
                    profile,
                } => {
                    let key = keys::profile(workspace_id, profile.customer_id);
                    let mut cmd = eval(PUT_VERSIONED, &[&key]);
                    cmd.arg(profile.version).arg(self.profile_ttl_secs);
                    for (field, value) in profile.to_hash() {
                        cmd.arg(field).arg(value);
                    }
                    pipe.add_command(cmd).ignore();
                }
                CacheUpdate::PutConversation {
                    workspace_id,
                    conversation,
                    state,
                } => {
                    let key = keys::conversation(workspace_id, conversation);
                    let profile_key = keys::profile(workspace_id, state.customer_id);
                    pipe.hset_multiple(&key, &state.to_hash(&profile_key))
                        .ignore()
                        .expire(&key, conversation_ttl as i64)
                        .ignore();
                }
                CacheUpdate::TouchProfile {
                    workspace_id,
                    customer_id,
                } => {
                    pipe.expire(
                        keys::profile(workspace_id, *customer_id),
                        self.profile_ttl_secs as i64,
                    )
                    .ignore();
                }
                CacheUpdate::InvalidateProfile {
                    workspace_id,
                    customer_id,
                } => {
                    pipe.del(keys::profile(workspace_id, *customer_id)).ignore();
                }
                CacheUpdate::InvalidateConversation {
                    workspace_id,
                    conversation,
                } => {
                    pipe.del(keys::conversation(workspace_id, conversation))
                        .ignore()
                        .del(keys::turns(workspace_id, conversation))
                        .ignore();
                }
                CacheUpdate::ForgetCustomer {
                    workspace_id,
                    customer_id,
                    conversations,
                } => {
                    pipe.del(keys::profile(workspace_id, *customer_id)).ignore();
                    for conversation in conversations {
                        pipe.del(keys::conversation(workspace_id, conversation))
                            .ignore()
                            .del(keys::turns(workspace_id, conversation))
                            .ignore();
                    }
                }
            }
        }
        let mut connection = self.connection.clone();
        let () = pipe.query_async(&mut connection).await?;
        Ok(())
    }

    /// The last turns of a conversation, from Redis or rebuilt from Postgres.
    pub async fn recent_turns(
        &self,
        pool: &PgPool,
        workspace_id: &str,
        conversation: &str,
    ) -> Result<Vec<Turn>, CacheError> {
        let mut connection = self.connection.clone();
        let cached: Vec<String> = connection
            .lrange(keys::turns(workspace_id, conversation), 0, -1)
            .await?;
        if !cached.is_empty() {
            return Ok(parse_turns(&cached));
        }
        let Some((turns, message_count)) =
            chat_store::recent_turns(pool, workspace_id, conversation, self.recent_turns + 1)
                .await?
        else {
            return Ok(Vec::new());
        };
        if !turns.is_empty() {
            self.apply(&[CacheUpdate::PutTurns {
                workspace_id: workspace_id.to_owned(),
                conversation: conversation.to_owned(),
                turns: turns.clone(),
                message_count,
            }])
            .await?;
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
        let before = crate::turn::last_before(cached, message_id, usize::MAX);
        if before.len() < limit && trimmed {
            return None;
        }
        Some(crate::turn::last_before(cached, message_id, limit))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Sender;

    fn turn(message_id: i64) -> Turn {
        Turn {
            message_id,
            sender: Sender::Customer,
            text: String::new(),
        }
    }

    fn ids(cached: &CachedConversation) -> Vec<i64> {
        cached.turns.iter().map(|t| t.message_id).collect()
    }

    #[test]
    fn a_whole_copy_follows_the_conversation_and_keeps_the_last_turns() {
        let mut cached = CachedConversation::default();
        for n in 1..=5 {
            cached.push_turn(&turn(n * 10), n, 3);
        }
        assert_eq!(ids(&cached), vec![30, 40, 50]);
        assert_eq!(cached.messages_seen, Some(5));
    }

    #[test]
    fn a_copy_that_missed_a_message_is_no_longer_whole() {
        let mut cached = CachedConversation::default();
        cached.push_turn(&turn(1), 1, 3);
        // Message 2 was stored elsewhere; this copy never saw it.
        cached.push_turn(&turn(3), 3, 3);
        assert_eq!(cached.messages_seen, None);
        assert!(cached.turns.is_empty());
        cached.push_turn(&turn(4), 4, 3);
        assert_eq!(cached.messages_seen, None, "it stays unknown until rebuilt");
        // A conversation's first message starts a whole list.
        let mut fresh = CachedConversation::default();
        fresh.push_turn(&turn(9), 1, 3);
        assert_eq!((ids(&fresh), fresh.messages_seen), (vec![9], Some(1)));
    }
}

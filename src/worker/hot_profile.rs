//! The hot profile as one lane's batch sees it. Before the batch's
//! transaction, one Redis round trip reads the profile, ask state and turns
//! of every conversation with a customer message in the batch
//! ([`BatchView::prefetch`]); the handlers then take a customer message's
//! decision state from that copy when its version is the one the message's
//! own transaction read, and rebuild it from Postgres, inside the
//! transaction, when the copy is missing or stale. What the batch changes is
//! read back once for the whole batch before the commit (or by a later
//! message of the batch that needs it first) and written to Redis after the
//! commit (see [`crate::state`]).

use std::collections::HashMap;

use sqlx::PgConnection;
use uuid::Uuid;

use super::effects::Effects;
use crate::fields::FieldSet;
use crate::state::{Cache, CacheUpdate, CachedConversation, HotConversation, HotProfile};
use crate::store::StoreError;
use crate::store::asks::{self, HotStateRead};
use crate::store::chat::{self as chat_store, StoredMessage};
use crate::turn::{self, Turn};
use crate::workspaces::Workspaces;

/// Where a message's decision state came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateOrigin {
    /// A current copy in Redis (or one this batch wrote).
    Cache,
    /// Nothing to read: a new customer, whose state is empty.
    Fresh,
    /// Postgres, because the copy was missing or stale.
    Postgres,
}

/// A customer's profile and a conversation's ask state at one version.
#[derive(Debug, Clone, PartialEq)]
pub struct HotState {
    /// The customer's profile.
    pub profile: HotProfile,
    /// The conversation's ask state.
    pub conversation: HotConversation,
    /// Where it came from.
    pub origin: StateOrigin,
}

/// What one batch knows of the hot profile.
#[derive(Clone)]
pub struct BatchView {
    cache: Cache,
    conversations: HashMap<(String, String), CachedConversation>,
    profiles: HashMap<(String, Uuid), HotProfile>,
    /// States the batch changed and has not read back yet.
    stale: Vec<StalePair>,
}

/// A customer's state in a conversation, changed by the batch.
#[derive(Debug, Clone, PartialEq, Eq)]
struct StalePair {
    workspace_id: String,
    conversation: String,
    customer_id: Uuid,
    conversation_id: i64,
}

impl BatchView {
    /// How many turns the cache keeps per conversation.
    pub fn recent_turns_kept(&self) -> usize {
        self.cache.recent_turns_kept()
    }

    /// A view with nothing read yet, for writes that store no chat message
    /// (the API's edits, notes and imports): every state they need is read
    /// from Postgres.
    pub fn empty(cache: &Cache) -> BatchView {
        BatchView {
            cache: cache.clone(),
            conversations: HashMap::new(),
            profiles: HashMap::new(),
            stale: Vec::new(),
        }
    }

    /// Reads what Redis holds about `conversations` (workspace, conversation)
    /// in one round trip, their turns only `with_turns`; a Redis failure
    /// leaves the view empty, so every state is read from Postgres.
    pub async fn prefetch(
        cache: &Cache,
        conversations: &[(&str, &str)],
        with_turns: bool,
    ) -> BatchView {
        let mut view = BatchView::empty(cache);
        match cache.prefetch(conversations, with_turns).await {
            Ok(cached) => {
                for ((workspace_id, conversation), mut entry) in conversations.iter().zip(cached) {
                    if let Some(profile) = entry.profile.take() {
                        view.profiles
                            .insert(((*workspace_id).to_owned(), profile.customer_id), profile);
                    }
                    view.conversations.insert(
                        ((*workspace_id).to_owned(), (*conversation).to_owned()),
                        entry,
                    );
                }
            }
            Err(error) => {
                tracing::warn!(error = %error, "hot profile unavailable; reading state from postgres");
            }
        }
        view
    }

    /// Keeps a conversation's turns current as the batch stores a message.
    pub fn saw_message(
        &mut self,
        workspace_id: &str,
        conversation: &str,
        turn: &Turn,
        message_count: i64,
    ) {
        let keep = self.cache.recent_turns_kept() + 1;
        self.conversations
            .entry((workspace_id.to_owned(), conversation.to_owned()))
            .or_default()
            .push_turn(turn, message_count, keep);
    }

    /// Forgets what the view knows of a customer and a conversation (a merge
    /// moved them; the next message rebuilds them from Postgres).
    pub fn forget(&mut self, workspace_id: &str, conversation: &str, customers: &[Uuid]) {
        if let Some(entry) = self
            .conversations
            .get_mut(&(workspace_id.to_owned(), conversation.to_owned()))
        {
            entry.state = None;
        }
        for customer_id in customers {
            self.profiles
                .remove(&(workspace_id.to_owned(), *customer_id));
        }
    }

    /// Notes that the batch changed a customer's state in a conversation: it
    /// is read back once for the whole batch, just before the commit
    /// ([`BatchView::read_back_changed`]), unless a later message of the
    /// batch reads it first.
    pub fn changed(
        &mut self,
        workspace_id: &str,
        conversation: &str,
        customer_id: Uuid,
        conversation_id: i64,
    ) {
        self.forget(workspace_id, conversation, &[customer_id]);
        let pair = StalePair {
            workspace_id: workspace_id.to_owned(),
            conversation: conversation.to_owned(),
            customer_id,
            conversation_id,
        };
        if !self.stale.contains(&pair) {
            self.stale.push(pair);
        }
    }

    /// Reads back, in one round trip inside the batch's transaction, the
    /// states the batch changed and no later message read, and leaves them
    /// for Redis after the commit.
    pub async fn read_back_changed(
        &mut self,
        conn: &mut PgConnection,
        workspaces: &Workspaces,
        effects: &mut Effects,
    ) -> Result<(), StoreError> {
        if self.stale.is_empty() {
            return Ok(());
        }
        let stale = std::mem::take(&mut self.stale);
        let pairs: Vec<(Uuid, i64)> = stale
            .iter()
            .map(|pair| (pair.customer_id, pair.conversation_id))
            .collect();
        for (customer_id, conversation_id, read) in asks::load_hot_states(conn, &pairs).await? {
            let Some(pair) = stale
                .iter()
                .find(|p| p.customer_id == customer_id && p.conversation_id == conversation_id)
            else {
                continue;
            };
            let Some(workspace) = workspaces.get(&pair.workspace_id) else {
                continue;
            };
            let state = from_read(read, customer_id, workspace.fields, StateOrigin::Postgres);
            self.keep(&pair.workspace_id, &pair.conversation, &state, effects);
        }
        Ok(())
    }

    /// Keeps a state this batch read or wrote for its later messages, and
    /// writes it to Redis after the commit unless Redis already holds it.
    pub fn keep(
        &mut self,
        workspace_id: &str,
        conversation: &str,
        state: &HotState,
        effects: &mut Effects,
    ) {
        if state.origin == StateOrigin::Cache {
            effects.cache.push(CacheUpdate::TouchProfile {
                workspace_id: workspace_id.to_owned(),
                customer_id: state.profile.customer_id,
            });
        } else {
            effects.cache.push(CacheUpdate::PutProfile {
                workspace_id: workspace_id.to_owned(),
                profile: state.profile.clone(),
            });
            effects.cache.push(CacheUpdate::PutConversation {
                workspace_id: workspace_id.to_owned(),
                conversation: conversation.to_owned(),
                state: state.conversation.clone(),
            });
        }
        self.stale
            .retain(|p| !(p.workspace_id == workspace_id && p.conversation == conversation));
        self.conversations
            .entry((workspace_id.to_owned(), conversation.to_owned()))
            .or_default()
            .state = Some(state.conversation.clone());
        self.profiles.insert(
            (workspace_id.to_owned(), state.profile.customer_id),
            state.profile.clone(),
        );
    }

    fn current_profile(
        &self,
        workspace_id: &str,
        customer_id: Uuid,
        version: i64,
    ) -> Option<&HotProfile> {
        self.profiles
            .get(&(workspace_id.to_owned(), customer_id))
            .filter(|p| p.version == version)
    }

    fn current_conversation(
        &self,
        workspace_id: &str,
        conversation: &str,
        customer_id: Uuid,
        version: i64,
    ) -> Option<&HotConversation> {
        self.conversations
            .get(&(workspace_id.to_owned(), conversation.to_owned()))
            .and_then(|entry| entry.state.as_ref())
            .filter(|c| c.customer_id == customer_id && c.version == version)
    }

    /// The last `limit` turns before a stored message, when the view holds
    /// every message of the conversation up to it.
    fn turns_before(
        &self,
        workspace_id: &str,
        conversation: &str,
        stored: &StoredMessage,
        limit: usize,
    ) -> Option<Vec<Turn>> {
        let entry = self
            .conversations
            .get(&(workspace_id.to_owned(), conversation.to_owned()))?;
        (entry.messages_seen == Some(stored.message_count))
            .then(|| turn::last_before(&entry.turns, stored.message_id, limit))
    }
}

/// Builds the hot profile and ask state out of what Postgres returned.
pub fn from_read(
    read: HotStateRead,
    customer_id: Uuid,
    fields: &FieldSet,
    origin: StateOrigin,
) -> HotState {
    let missing_required = fields
        .required_missing(&|field| read.known.contains_key(field))
        .into_iter()
        .map(|def| def.name.clone())
        .collect();
    HotState {
        profile: HotProfile {
            customer_id,
            version: read.version,
            known: read.known,
            missing_required,
            declined: read.declined,
            ask_counts: read.ask_counts,
            tags: read.tags,
            agent_instructions: read.agent_instructions,
        },
        conversation: HotConversation {
            customer_id,
            version: read.version,
            asks: read.asks,
        },
        origin,
    }
}

/// Reads the customer's hot state in a conversation from Postgres, in the
/// caller's transaction; `None` when the customer is gone.
pub async fn read_from_postgres(
    conn: &mut PgConnection,
    fields: &FieldSet,
    customer_id: Uuid,
    conversation_id: i64,
) -> Result<Option<HotState>, StoreError> {
    Ok(asks::load_hot_state(conn, customer_id, conversation_id)
        .await?
        .map(|read| from_read(read, customer_id, fields, StateOrigin::Postgres)))
}

/// The decision state of a freshly stored customer message: from the view
/// when its copy is at the version the message's transaction read
/// (`stored.state_version`), empty for a new customer, else from Postgres.
/// `customer_id` differs from the stored message's, or `trusted` is
/// false, when the transaction changed the customer since it recorded the
/// message (an identity hint): the version read then is old.
#[allow(clippy::too_many_arguments)]
pub async fn state_for(
    conn: &mut PgConnection,
    view: &BatchView,
    fields: &FieldSet,
    workspace_id: &str,
    conversation: &str,
    stored: &StoredMessage,
    customer_id: Uuid,
    trusted: bool,
) -> Result<Option<HotState>, StoreError> {
    let version = stored.state_version;
    if trusted && customer_id == stored.customer_id {
        if stored.new_customer {
            let empty = HotStateRead {
                version,
                ..HotStateRead::default()
            };
            return Ok(Some(from_read(
                empty,
                customer_id,
                fields,
                StateOrigin::Fresh,
            )));
        }
        let conversation_state = if stored.new_conversation {
            Some(HotConversation {
                customer_id,
                version,
                asks: Vec::new(),
            })
        } else {
            view.current_conversation(workspace_id, conversation, customer_id, version)
                .cloned()
        };
        if let Some(conversation_state) = conversation_state {
            let mut profile = view
                .current_profile(workspace_id, customer_id, version)
                .cloned();
            if profile.is_none() && stored.new_conversation {
                // A returning customer's first message here: their profile
                // was not part of the batch's read.
                profile = match view.cache.profile(workspace_id, customer_id).await {
                    Ok(cached) => cached.filter(|p| p.version == version),
                    Err(error) => {
                        tracing::warn!(error = %error, "hot profile unavailable; reading it from postgres");
                        None
                    }
                };
            }
            if let Some(profile) = profile {
                return Ok(Some(HotState {
                    profile,
                    conversation: conversation_state,
                    origin: StateOrigin::Cache,
                }));
            }
        }
    }
    read_from_postgres(conn, fields, customer_id, stored.conversation_id).await
}

/// The last `limit` turns before a stored message: from the view when it
/// holds the conversation whole up to the message, else from Postgres (and
/// the conversation's list is rebuilt after the commit).
#[allow(clippy::too_many_arguments)]
pub async fn turns_for(
    conn: &mut PgConnection,
    view: &mut BatchView,
    workspace_id: &str,
    conversation: &str,
    stored: &StoredMessage,
    this_turn: &Turn,
    limit: usize,
    effects: &mut Effects,
) -> Result<Vec<Turn>, StoreError> {
    if stored.new_conversation {
        return Ok(Vec::new());
    }
    if let Some(turns) = view.turns_before(workspace_id, conversation, stored, limit) {
        return Ok(turns);
    }
    let keep = view.cache.recent_turns_kept();
    let before =
        chat_store::turns_before(&mut *conn, stored.conversation_id, stored.message_id, keep)
            .await?;
    let mut list = before.clone();
    list.push(this_turn.clone());
    let entry = view
        .conversations
        .entry((workspace_id.to_owned(), conversation.to_owned()))
        .or_default();
    entry.turns = list.clone();
    entry.messages_seen = Some(stored.message_count);
    effects.cache.push(CacheUpdate::PutTurns {
        workspace_id: workspace_id.to_owned(),
        conversation: conversation.to_owned(),
        turns: list,
        message_count: stored.message_count,
    });
    let skip = before.len().saturating_sub(limit);
    Ok(before.into_iter().skip(skip).collect())
}

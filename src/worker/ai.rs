//! The model stage. A customer message that needs the model is stored by its
//! lane, marked `ai_status = 'pending'`, and handed to this stage just before
//! the lane commits (with the inputs the lane's transaction read and a signal
//! of the commit's outcome); this stage calls the model, one message at a
//! time per conversation (asks depend on the previous turn) and many
//! conversations at once, and once the message is committed writes the
//! decision in its own transaction with the call's accounting. A crash or restart loses nothing:
//! pending messages are picked up again at start-up, and while the worker
//! runs, those left pending for `llm.resume_after_secs` that the stage does
//! not hold (an unflushed outcome lost in a database crash). A failed call degrades:
//! the message stays stored, the failure is recorded, the conversation flows on.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::{PgConnection, PgPool};
use tokio::sync::mpsc;
use uuid::Uuid;

use super::enrich::{self, CommitSignal, MessageRef, ModelStamp};
use super::handle::{Effects, HandleError, Workspaces};
use super::lane::publish_pending;
use super::metrics::Metrics;
use crate::config::LlmSettings;
use crate::decide::{self, Decision, Gate, Rejected};
use crate::llm::context;
use crate::llm::model_client::{ModelCall, ModelClient};
use crate::llm::prompts::{EnrichContext, PromptTurn};
use crate::llm::schema::FieldEnums;
use crate::queue::publisher::Publisher;
use crate::state::{Cache, CacheUpdate};
use crate::store::StoreError;
use crate::store::asks;
use crate::store::llm_calls::{self, CallRow, WorkerTiming};

/// Everything the model stage needs.
pub struct ModelStage {
    pool: PgPool,
    cache: Cache,
    publisher: Publisher,
    workspaces: Arc<Workspaces>,
    enricher: ModelClient,
    settings: LlmSettings,
    recent_turns: usize,
    metrics: Arc<Metrics>,
    conversations: Mutex<HashMap<String, ConversationQueue>>,
    /// Messages submitted and not yet finished, which a resume leaves alone.
    held: Mutex<HashSet<i64>>,
}

/// One conversation's jobs, in order, and what the stage knows of them.
struct ConversationQueue {
    jobs: mpsc::UnboundedSender<MessageRef>,
    /// Jobs submitted and not yet finished.
    unfinished: usize,
    /// When the last of its jobs finished.
    last_finished: Option<Instant>,
}

const IDLE: Duration = Duration::from_secs(30);

/// How old inputs read in a message's transaction may be when the stage
/// gets the message and still be used; older ones are read again. Far
/// shorter than [`IDLE`], so a conversation whose queue retired after its
/// last job finished cannot have finished that job after the read.
const LANE_INPUTS_TRUSTED_FOR: Duration = Duration::from_secs(5);

/// Opens a transaction whose commit waits for its WAL flush, whatever the
/// connection's default (the stage's connections do not wait).
pub const DURABLE_TRANSACTION: &str = "BEGIN; SET LOCAL synchronous_commit = on";

/// A message left for the model: workspace, event id, conversation, its id,
/// customer, message id, customer turn, text.
type PendingRow = (String, String, String, i64, Uuid, i64, Option<i32>, String);

impl ModelStage {
    /// Builds the stage.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        pool: PgPool,
        cache: Cache,
        publisher: Publisher,
        workspaces: Arc<Workspaces>,
        enricher: ModelClient,
        settings: LlmSettings,
        recent_turns: usize,
        metrics: Arc<Metrics>,
    ) -> Arc<ModelStage> {
        Arc::new(ModelStage {
            pool,
            cache,
            publisher,
            workspaces,
            enricher,
            settings,
            recent_turns,
            metrics,
            conversations: Mutex::new(HashMap::new()),
            held: Mutex::new(HashSet::new()),
        })
    }

    /// Queues a message behind earlier ones of its conversation.
    ///
    /// The inputs the message's transaction read ([`MessageRef::lane_inputs`])
    /// are kept only when no earlier job of the conversation is unfinished
    /// and none finished after they were read: an earlier call's facts,
    /// declines, asks and tokens land after its own model call, so inputs
    /// read while it was under way may miss them. Otherwise the stage reads
    /// the inputs again once the earlier jobs are done. (A conversation's
    /// messages reach the stage from its one lane, in order.)
    pub fn submit(self: &Arc<Self>, mut job: MessageRef) {
        job.queued_at = Some(Instant::now());
        let key = format!("{}/{}", job.workspace_id, job.conversation);
        let Ok(mut conversations) = self.conversations.lock() else {
            // Not held: the resume loop will queue it again.
            return;
        };
        if let Ok(mut held) = self.held.lock() {
            held.insert(job.message_id);
        }
        let queue = conversations.get_mut(&key);
        if let Some(lane_inputs) = &job.lane_inputs {
            let superseded = queue.as_ref().is_some_and(|queue| {
                queue.unfinished > 0
                    || queue
                        .last_finished
                        .is_some_and(|finished| finished >= lane_inputs.read_at)
            });
            if superseded || lane_inputs.read_at.elapsed() > LANE_INPUTS_TRUSTED_FOR {
                job.lane_inputs = None;
            }
        }
        let job = match queue {
            Some(queue) => match queue.jobs.send(job) {
                Ok(()) => {
                    queue.unfinished += 1;
                    return;
                }
                Err(returned) => returned.0,
            },
            None => job,
        };
        let (sender, receiver) = mpsc::unbounded_channel();
        let _ = sender.send(job);
        conversations.insert(
            key.clone(),
            ConversationQueue {
                jobs: sender,
                unfinished: 1,
                last_finished: None,
            },
        );
        tokio::spawn(Arc::clone(self).drain(key, receiver));
    }

    async fn drain(self: Arc<Self>, key: String, mut jobs: mpsc::UnboundedReceiver<MessageRef>) {
        loop {
            match tokio::time::timeout(IDLE, jobs.recv()).await {
                Ok(Some(job)) => self.process(&key, job).await,
                Ok(None) => return,
                Err(_) => {
                    // Idle: retire, unless a job slipped in while we were checking.
                    let Ok(mut conversations) = self.conversations.lock() else {
                        return;
                    };
                    match jobs.try_recv() {
                        Ok(job) => {
                            drop(conversations);
                            self.process(&key, job).await;
                        }
                        Err(_) => {
                            conversations.remove(&key);
                            return;
                        }
                    }
                }
            }
        }
    }

    /// Queues the messages left pending that were stored at least
    /// `older_than` ago and that this stage does not hold: at start-up (with
    /// zero) the work an earlier run left, and while running the outcomes a
    /// database crash lost (see [`ModelStage::keep_resuming`]).
    pub async fn resume_pending(
        self: &Arc<Self>,
        older_than: Duration,
    ) -> Result<usize, StoreError> {
        let mut rows: Vec<PendingRow> = sqlx::query_as(
            "SELECT m.workspace_id, m.event_id, c.external_id, m.conversation_id, m.customer_id, m.id,
                    m.customer_turn, m.text
               FROM enrich.messages m JOIN enrich.conversations c ON c.id = m.conversation_id
              WHERE (m.ai_status = 'pending'
                     OR (m.ai_status = 'running' AND m.ai_claimed_at < now() - interval '5 minutes'))
                AND m.stored_at <= now() - make_interval(secs => $1)
              ORDER BY m.id LIMIT 10000",
        )
        .bind(older_than.as_secs_f64())
        .fetch_all(&self.pool)
        .await?;
        if let Ok(held) = self.held.lock() {
            rows.retain(|row| !held.contains(&row.5));
        }
        let count = rows.len();
        for (
            workspace_id,
            event_id,
            conversation,
            conversation_id,
            customer_id,
            message_id,
            turn,
            text,
        ) in rows
        {
            sqlx::query("UPDATE enrich.messages SET ai_status = 'pending' WHERE id = $1")
                .bind(message_id)
                .execute(&self.pool)
                .await?;
            let region = self
                .workspaces
                .get(&workspace_id)
                .and_then(|w| w.settings.default_region.clone());
            self.submit(MessageRef {
                workspace_id,
                event_id,
                conversation,
                conversation_id,
                customer_id,
                message_id,
                customer_turn: turn.unwrap_or(0).max(0) as u32,
                text,
                region,
                received_at: None,
                queued_at: None,
                opened_conversation: false,
                prior_turns: None,
                lane_inputs: None,
                committed: CommitSignal::default(),
            });
        }
        Ok(count)
    }

    /// Every `every`, queues again the messages pending for at least that
    /// long that this stage does not hold; runs until aborted.
    pub async fn keep_resuming(self: Arc<Self>, every: Duration) {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick is immediate; start-up has just resumed everything.
        ticks.tick().await;
        loop {
            ticks.tick().await;
            match self.resume_pending(every).await {
                Ok(0) => {}
                Ok(count) => tracing::warn!(
                    count,
                    "queued messages that were still waiting for the model again"
                ),
                Err(error) => {
                    tracing::warn!(error = %error, "could not look for messages waiting for the model")
                }
            }
        }
    }

    async fn process(&self, key: &str, job: MessageRef) {
        let message_id = job.message_id;
        self.process_held(job).await;
        if let Ok(mut conversations) = self.conversations.lock()
            && let Some(queue) = conversations.get_mut(key)
        {
            queue.unfinished = queue.unfinished.saturating_sub(1);
            queue.last_finished = Some(Instant::now());
        }
        if let Ok(mut held) = self.held.lock() {
            held.remove(&message_id);
        }
    }

    #[tracing::instrument(skip_all, fields(event_id = %job.event_id, conversation = %job.conversation))]
    async fn process_held(&self, mut job: MessageRef) {
        let queued = job.queued_at.map(|at| at.elapsed()).unwrap_or_default();
        let timing = job.received_at.map(|received_at| WorkerTiming {
            received_at,
            queued,
        });
        // Kept across attempts: the outcome of the message's transaction.
        let mut committed = std::mem::take(&mut job.committed);
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            match self.try_process(&mut job, &mut committed, timing).await {
                Ok(()) => return,
                Err(HandleError::Store(error)) if error.is_transient() && attempt < 5 => {
                    tracing::warn!(error = %error, attempt, "model stage store error; retrying");
                    tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
                }
                Err(error) => {
                    tracing::error!(error = %error, "model stage failed; the message stays stored without AI enrichment");
                    let _ = sqlx::query(
                        "UPDATE enrich.messages SET ai_status = 'failed' WHERE id = $1",
                    )
                    .bind(job.message_id)
                    .execute(&self.pool)
                    .await;
                    return;
                }
            }
        }
    }

    async fn try_process(
        &self,
        job: &mut MessageRef,
        committed: &mut CommitSignal,
        timing: Option<WorkerTiming>,
    ) -> Result<(), HandleError> {
        let inputs = match job.lane_inputs.take() {
            Some(lane) => lane.inputs,
            None => {
                // The inputs can be read once the message is committed.
                if !committed.wait().await {
                    self.drop_rolled_back();
                    return Ok(());
                }
                // A plain read, not a claim: the write below only lands while the
                // message is still pending, so a second worker racing on the same
                // message (after a restart) rolls back instead of writing twice.
                let inputs = asks::load_model_inputs(
                    &self.pool,
                    job.message_id,
                    job.conversation_id,
                    job.customer_turn,
                )
                .await?;
                match inputs {
                    Some(inputs) if inputs.ai_status.as_deref() == Some("pending") => inputs,
                    _ => return Ok(()),
                }
            }
        };
        // A merge since the message was stored moves it to the surviving customer.
        job.customer_id = inputs.customer_id;
        let turns = self.turns_before(job).await?;
        let job = &*job;
        let Some(workspace) = self.workspaces.get(&job.workspace_id) else {
            return self.finish_without_call(job, committed, "skipped").await;
        };
        let state = inputs.state;
        let spent = inputs.spent_tokens;
        let instructions = inputs.agent_instructions;
        let ctx = enrich::context(&workspace, job, &state, &turns);
        let stage = decide::pattern_stage(&ctx);
        let budget_left = spent < i64::from(self.settings.conversation_token_budget);
        if let Gate::Skip(reason) = decide::gate(&ctx, &stage, true, budget_left) {
            tracing::debug!(reason, "model skipped");
            if reason == "budget_spent" {
                self.metrics.rejection("budget_spent");
            }
            return self.finish_without_call(job, committed, "skipped").await;
        }
        let askable = context::askable_fields(
            workspace.fields,
            &state,
            &stage,
            ctx.policy,
            job.customer_turn,
        );
        let enums = FieldEnums::for_fields(workspace.fields, askable.clone());
        let prompt = context::prompt_context(
            workspace.fields,
            &state,
            askable,
            turns.clone(),
            &job.text,
            instructions,
            &stage.candidates,
        );
        let Some(call) = self.call_once_committed(committed, &prompt, &enums).await else {
            self.drop_rolled_back();
            return Ok(());
        };
        let proposal = call.proposal.clone().unwrap_or_default();
        let mut decided = decide::decide(&ctx, &stage, &proposal);
        self.drop_stale_ask(job, &mut decided).await?;
        self.write(job, &decided, &call, timing).await
    }

    /// Calls the model while the message's transaction commits: the call's
    /// outcome once both are done, `None` (the call abandoned) when the
    /// transaction rolled back.
    async fn call_once_committed(
        &self,
        committed: &mut CommitSignal,
        prompt: &EnrichContext,
        enums: &FieldEnums,
    ) -> Option<ModelCall> {
        let call = self.enricher.propose(prompt, enums);
        tokio::pin!(call);
        tokio::select! {
            call = &mut call => committed.wait().await.then_some(call),
            is_committed = committed.wait() => match is_committed {
                true => Some(call.await),
                false => None,
            },
        }
    }

    /// Forgets a message whose transaction rolled back: it was never
    /// stored, and the broker delivers its event again.
    fn drop_rolled_back(&self) {
        self.metrics.model_jobs_rolled_back.inc();
        tracing::debug!("message's transaction rolled back; its model job is dropped");
    }

    /// The turns the model sees before the job's message.
    async fn turns_before(&self, job: &mut MessageRef) -> Result<Vec<PromptTurn>, StoreError> {
        if job.opened_conversation {
            // Nothing was said before the message that opened the conversation.
            return Ok(Vec::new());
        }
        if let Some(turns) = job.prior_turns.take() {
            // Read with the message: the turns before it never change.
            return Ok(turns);
        }
        // A resumed message: the last turns come from the Redis cache when
        // it holds them all.
        let cached = self
            .cache
            .turns_before(
                &self.pool,
                &job.workspace_id,
                &job.conversation,
                job.message_id,
                self.recent_turns,
            )
            .await;
        let cached = match cached {
            Ok(turns) => turns,
            Err(error) => {
                tracing::warn!(error = %error, "turn cache unavailable; reading turns from postgres");
                None
            }
        };
        let turns = match cached {
            Some(turns) => turns
                .into_iter()
                .map(|t| PromptTurn {
                    sender: t.sender.as_str().to_owned(),
                    text: t.text,
                })
                .collect(),
            None => {
                let rows: Vec<(String, String)> = sqlx::query_as(
                    "SELECT sender, text FROM (SELECT id, sender, text FROM enrich.messages
                                                WHERE conversation_id = $1 AND id < $2 ORDER BY id DESC LIMIT $3) t
                      ORDER BY id",
                )
                .bind(job.conversation_id)
                .bind(job.message_id)
                .bind(self.recent_turns as i64)
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter()
                    .map(|(sender, text)| PromptTurn { sender, text })
                    .collect()
            }
        };
        Ok(turns)
    }

    /// An ask is only useful as a reply to the customer's latest message.
    async fn drop_stale_ask(
        &self,
        job: &MessageRef,
        decided: &mut Decision,
    ) -> Result<(), StoreError> {
        if decided.ask.is_none() {
            return Ok(());
        }
        let latest: i32 =
            sqlx::query_scalar("SELECT customer_turns FROM enrich.conversations WHERE id = $1")
                .bind(job.conversation_id)
                .fetch_one(&self.pool)
                .await?;
        if latest.max(0) as u32 > job.customer_turn
            && let Some(ask) = decided.ask.take()
        {
            decided.rejections.push(Rejected {
                field: ask.field,
                reason: "stale",
                kind: "ask",
            });
        }
        Ok(())
    }

    async fn write(
        &self,
        job: &MessageRef,
        decided: &Decision,
        call: &ModelCall,
        timing: Option<WorkerTiming>,
    ) -> Result<(), HandleError> {
        let mut effects = Effects::default();
        let finished = if decided.writes_nothing() {
            // Only the call's row and the message's status: one statement
            // that commits on its own, with no transaction around it, and
            // without waiting for its flush (see `HotPath::ModelStage`).
            let mut conn = self.pool.acquire().await.map_err(StoreError::from)?;
            self.record_outcome(&mut conn, job, decided, call, timing, &mut effects)
                .await?
        } else {
            // Facts, declines, asks and merges are announced once committed,
            // so this commit waits until it is durable.
            let mut tx = self
                .pool
                .begin_with(DURABLE_TRANSACTION)
                .await
                .map_err(StoreError::from)?;
            let finished = self
                .record_outcome(&mut tx, job, decided, call, timing, &mut effects)
                .await?;
            if finished {
                tx.commit().await.map_err(StoreError::from)?;
            }
            finished
        };
        if !finished {
            // Another worker finished this message first; nothing was written.
            return Ok(());
        }
        if let Err(failure) = &call.proposal {
            self.metrics.rejection(failure.outcome());
            tracing::warn!(
                outcome = failure.outcome(),
                attempts = call.accounting.attempts,
                "model call failed; AI skipped for this message"
            );
        }
        for reason in &effects.rejections {
            self.metrics.rejection(reason);
        }
        self.after_commit(effects).await;
        Ok(())
    }

    /// Writes the decision, the call's row and the message's final status;
    /// false when the message was no longer pending (the caller must not
    /// commit then).
    async fn record_outcome(
        &self,
        conn: &mut PgConnection,
        job: &MessageRef,
        decided: &Decision,
        call: &ModelCall,
        timing: Option<WorkerTiming>,
        effects: &mut Effects,
    ) -> Result<bool, HandleError> {
        let mut changes = Vec::new();
        let stamp = ModelStamp {
            model: &call.accounting.model,
            prompt_version: &call.accounting.prompt_version,
        };
        let customer_id =
            enrich::apply(conn, job, decided, Some(stamp), &mut changes, effects).await?;
        super::handle::announce_changes(conn, &job.workspace_id, customer_id, changes, effects)
            .await?;
        let row = CallRow {
            workspace_id: &job.workspace_id,
            conversation_id: job.conversation_id,
            customer_id,
            message_id: Some(job.message_id),
            purpose: "enrich",
            outcome: call.outcome(),
            rejections: rejection_counts(&decided.rejections),
            timing,
        };
        let message_status = if call.proposal.is_ok() {
            "done"
        } else {
            "failed"
        };
        Ok(
            llm_calls::record_for_pending_message(conn, &row, &call.accounting, message_status)
                .await?,
        )
    }

    /// Sets the message's final status once it is committed.
    async fn finish_without_call(
        &self,
        job: &MessageRef,
        committed: &mut CommitSignal,
        status: &str,
    ) -> Result<(), HandleError> {
        if !committed.wait().await {
            self.drop_rolled_back();
            return Ok(());
        }
        sqlx::query("UPDATE enrich.messages SET ai_status = $2 WHERE id = $1")
            .bind(job.message_id)
            .bind(status)
            .execute(&self.pool)
            .await
            .map_err(StoreError::from)?;
        Ok(())
    }

    async fn after_commit(&self, effects: Effects) {
        let updates: Vec<CacheUpdate> = effects.cache;
        if let Err(error) = self.cache.apply(&updates).await {
            tracing::error!(error = %error, "cache update failed after the model stage");
        }
        publish_pending(&self.publisher, &self.pool, effects.outbox).await;
    }
}

fn rejection_counts(rejections: &[Rejected]) -> BTreeMap<String, u32> {
    let mut counts = BTreeMap::new();
    for rejected in rejections {
        *counts
            .entry(format!("{}:{}", rejected.kind, rejected.reason))
            .or_insert(0) += 1;
    }
    counts
}

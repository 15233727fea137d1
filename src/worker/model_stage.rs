//! The model stage. A customer message that needs the model is stored by its
//! lane, marked pending in the model queue ([`model_queue`]), and handed to this stage just before
//! the lane commits (with the inputs the lane's transaction read and a signal
//! of the commit's outcome); this stage calls the model, one message at a
//! time per conversation (asks depend on the previous turn) and many
//! conversations at once, and once the message is committed writes the
//! decision in its own transaction with the call's accounting.
//!
//! Memory stays bounded whatever the backlog: the stage holds at most
//! `llm.stage_capacity` jobs ([`Backlog`]); what does not fit stays in
//! Postgres, where it is stored pending anyway, and a pager reads it back in
//! pages of message ids as room frees up, keeping each conversation in
//! order. A conversation has a task only while it has a job in memory.
//!
//! A crash or restart loses nothing: pending messages are read back at
//! start-up, and while the worker runs, those left pending for
//! `llm.resume_after_secs` that the stage does not hold (an unflushed outcome
//! lost in a database crash). A failed call degrades: the message stays
//! stored, the failure is recorded, the conversation flows on. A job that
//! panics is recorded as failed the same way, and its conversation goes on.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures::FutureExt;
use sqlx::{PgConnection, PgPool};
use tokio::sync::Notify;
use uuid::Uuid;

use super::decision::{self, ModelStamp};
use super::effects::{AfterCommit, Effects};
use super::error::HandleError;
use super::field_writes::announce_changes;
use super::hot_profile;
use super::metrics::Metrics;
use super::model_backlog::{Admitted, Backlog};
use super::model_job::{CommitSignal, ModelJob};
use crate::config::LlmSettings;
use crate::decide::{self, Decision, Gate, Rejected};
use crate::llm::context;
use crate::llm::model_client::{ModelCall, ModelClient};
use crate::llm::prompts::EnrichContext;
use crate::llm::schema::FieldEnums;
use crate::retry::{Backoff, retry};
use crate::state::{Cache, CacheUpdate};
use crate::store::StoreError;
use crate::store::asks;
use crate::store::chat as chat_store;
use crate::store::conversations;
use crate::store::llm_calls::{self, CallRow, WorkerTiming};
use crate::store::model_queue::{self, AiStatus, PendingMessage};
use crate::turn::Turn;
use crate::workspaces::Workspaces;

/// Everything the model stage needs.
pub struct ModelStage {
    pool: PgPool,
    cache: Cache,
    after_commit: AfterCommit,
    workspaces: Arc<Workspaces>,
    model: ModelClient,
    settings: LlmSettings,
    recent_turns: usize,
    metrics: Arc<Metrics>,
    backlog: Mutex<Backlog<ModelJob>>,
    /// Wakes the pager: a job was spilled.
    spilled: Notify,
    /// Wakes the pager: a job finished, so there is room.
    room: Notify,
}

/// How old inputs read in a message's transaction may be when the stage
/// gets the message and still be used; older ones are read again.
const LANE_INPUTS_TRUSTED_FOR: Duration = super::model_backlog::FINISHED_REMEMBERED_FOR;

/// Opens a transaction whose commit waits for its WAL flush, whatever the
/// connection's default (the stage's connections do not wait).
pub const DURABLE_TRANSACTION: &str = "BEGIN; SET LOCAL synchronous_commit = on";

/// How many pending messages one read of the model queue returns at most.
const PAGE: usize = 500;

/// How long the pager waits before reading again for spilled work it did
/// not find (its transaction had not committed yet).
const SPILL_RECHECK: Duration = Duration::from_millis(500);

/// How a message's processing is retried on a transient store error. The
/// model call is made once per attempt that reaches it, and an attempt that
/// fails after the call leaves nothing written, so the waits are short and
/// the attempts few.
const STORE_BACKOFF: Backoff = Backoff {
    first: Duration::from_millis(200),
    factor: 2.0,
    cap: Duration::from_secs(2),
    attempts: 5,
    jitter: 0.2,
};

/// The key of a conversation in the backlog.
fn conversation_key(workspace_id: &str, conversation: &str) -> String {
    format!("{}:{workspace_id}/{conversation}", workspace_id.len())
}

impl ModelStage {
    /// Builds the stage; it spills every job until [`ModelStage::run_pager`]
    /// has read back what an earlier run left pending.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        pool: PgPool,
        cache: Cache,
        after_commit: AfterCommit,
        workspaces: Arc<Workspaces>,
        model: ModelClient,
        settings: LlmSettings,
        recent_turns: usize,
        metrics: Arc<Metrics>,
    ) -> Arc<ModelStage> {
        let capacity = settings.stage_capacity;
        Arc::new(ModelStage {
            pool,
            cache,
            after_commit,
            workspaces,
            model,
            settings,
            recent_turns,
            metrics,
            backlog: Mutex::new(Backlog::new(capacity)),
            spilled: Notify::new(),
            room: Notify::new(),
        })
    }

    fn backlog(&self) -> MutexGuard<'_, Backlog<ModelJob>> {
        // The backlog's bookkeeping cannot be left half-done by a panic (no
        // call inside the lock panics), so a poisoned lock is still sound.
        self.backlog
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Jobs in memory.
    pub fn held(&self) -> usize {
        self.backlog().held()
    }

    /// Queues a message behind earlier ones of its conversation, or leaves
    /// it to the pager (see [`Backlog::submit`]).
    ///
    /// The inputs the message's transaction read ([`ModelJob::lane_inputs`])
    /// are kept only when no earlier job of the conversation is unfinished
    /// and none finished after they were read: an earlier call's facts,
    /// declines, asks and tokens land after its own model call, so inputs
    /// read while it was under way may miss them. Otherwise the stage reads
    /// the inputs again once the earlier jobs are done. (A conversation's
    /// messages reach the stage from its one lane, in order.)
    pub fn submit(self: &Arc<Self>, mut job: ModelJob) {
        let now = Instant::now();
        job.queued_at = Some(now);
        let key = conversation_key(&job.workspace_id, &job.conversation);
        let message_id = job.message_id;
        let admitted = {
            let mut backlog = self.backlog();
            if let Some(lane_inputs) = &job.lane_inputs
                && (backlog.superseded(&key, lane_inputs.read_at)
                    || lane_inputs.read_at.elapsed() > LANE_INPUTS_TRUSTED_FOR)
            {
                job.lane_inputs = None;
            }
            backlog.submit(&key, message_id, job, now)
        };
        match admitted {
            Admitted::Start => {
                tokio::spawn(Arc::clone(self).run_conversation(key));
            }
            Admitted::Spilled => {
                self.metrics.model_jobs_spilled.inc();
                self.spilled.notify_one();
            }
            Admitted::Queued | Admitted::AlreadyHeld | Admitted::Full => {}
        }
    }

    /// Runs a conversation's jobs one at a time until it has none in memory.
    async fn run_conversation(self: Arc<Self>, key: String) {
        loop {
            let Some((message_id, job)) = self.backlog().next(&key) else {
                return;
            };
            self.process_guarded(job).await;
            self.backlog().finished(&key, message_id, Instant::now());
            self.room.notify_one();
        }
    }

    /// Processes a job; a job that panics is recorded as failed (the
    /// message stays stored without AI enrichment) and the conversation
    /// goes on.
    async fn process_guarded(&self, job: ModelJob) {
        let message_id = job.message_id;
        if panicked(self.process_held(job)).await {
            self.metrics.model_jobs_panicked.inc();
            tracing::error!(
                message_id,
                "model job panicked; the message stays stored without AI enrichment"
            );
            if let Err(error) = model_queue::finish(&self.pool, message_id, AiStatus::Failed).await
            {
                tracing::warn!(error = %error, message_id, "could not record the panicked model job");
            }
        }
    }

    /// Reads pending work back from Postgres as room frees up: at start-up
    /// everything an earlier run left, then whatever was spilled, and every
    /// `every` the messages pending that long that the stage does not hold
    /// (an outcome a database crash lost). Runs until aborted.
    pub async fn run_pager(self: Arc<Self>, every: Duration) {
        let mut last_lost_check = Instant::now();
        loop {
            let has_spilled = self.backlog().has_spilled();
            let older_than = if has_spilled {
                Some(Duration::ZERO)
            } else if last_lost_check.elapsed() >= every {
                last_lost_check = Instant::now();
                Some(every)
            } else {
                None
            };
            let Some(older_than) = older_than else {
                let until_check = every.saturating_sub(last_lost_check.elapsed());
                let _ = tokio::time::timeout(until_check, self.spilled.notified()).await;
                continue;
            };
            match self.read_back(older_than).await {
                Ok((started, handed)) => {
                    if older_than.is_zero() {
                        self.backlog().pass_done(started);
                    } else if handed > 0 {
                        tracing::warn!(
                            count = handed,
                            "queued messages that were still waiting for the model again"
                        );
                    }
                    if self.backlog().has_spilled() {
                        // What is left was not committed yet when it was read.
                        tokio::time::sleep(SPILL_RECHECK).await;
                    }
                }
                Err(error) => {
                    tracing::warn!(error = %error, "could not read the messages waiting for the model");
                    tokio::time::sleep(SPILL_RECHECK * 4).await;
                }
            }
        }
    }

    /// One read of every pending message stored at least `older_than` ago,
    /// in message-id order, handing each the stage does not hold to the
    /// backlog as room allows. Returns when it started and how many it
    /// handed over.
    async fn read_back(
        self: &Arc<Self>,
        older_than: Duration,
    ) -> Result<(Instant, usize), StoreError> {
        let started = Instant::now();
        let mut after = 0;
        let mut handed = 0;
        loop {
            let room = self.wait_for_room().await;
            let limit = room.min(PAGE);
            let page = model_queue::pending_page(
                &self.pool,
                older_than,
                after,
                u32::try_from(limit).unwrap_or(u32::MAX),
            )
            .await?;
            let last_page = page.len() < limit;
            let mut full = false;
            for message in page {
                let message_id = message.message_id;
                let key = conversation_key(&message.workspace_id, &message.conversation);
                let job = self.resumed_job(message);
                let admitted = self.backlog().offer_paged(&key, message_id, job);
                match admitted {
                    Admitted::Full => {
                        full = true;
                        break;
                    }
                    Admitted::Start => {
                        handed += 1;
                        tokio::spawn(Arc::clone(self).run_conversation(key));
                    }
                    Admitted::Queued => handed += 1,
                    Admitted::AlreadyHeld | Admitted::Spilled => {}
                }
                after = message_id;
            }
            if last_page && !full {
                return Ok((started, handed));
            }
        }
    }

    /// Waits until a page's worth of jobs fits (or a quarter of the
    /// capacity, when that is less); returns the room.
    async fn wait_for_room(&self) -> usize {
        let wanted = PAGE.min(self.settings.stage_capacity / 4).max(1);
        loop {
            let notified = self.room.notified();
            let room = self.backlog().room();
            if room >= wanted {
                return room;
            }
            // A missed wake-up costs at most this.
            let _ = tokio::time::timeout(Duration::from_secs(1), notified).await;
        }
    }

    /// The job for a message found pending in the model queue: its inputs
    /// and turns are read again when it is processed.
    fn resumed_job(&self, message: PendingMessage) -> ModelJob {
        let region = self
            .workspaces
            .get(&message.workspace_id)
            .and_then(|w| w.settings.default_region.clone());
        ModelJob {
            workspace_id: message.workspace_id,
            event_id: message.event_id,
            conversation: message.conversation,
            conversation_id: message.conversation_id,
            customer_id: message.customer_id,
            message_id: message.message_id,
            customer_turn: message.customer_turn.unwrap_or(0).max(0) as u32,
            text: message.text,
            region,
            received_at: None,
            queued_at: Some(Instant::now()),
            opened_conversation: false,
            prior_turns: None,
            lane_inputs: None,
            committed: CommitSignal::default(),
        }
    }

    #[tracing::instrument(skip_all, fields(event_id = %job.event_id, conversation = %job.conversation))]
    async fn process_held(&self, mut job: ModelJob) {
        // The fault suite makes a job panic here (`tests/panics.rs`).
        fail::fail_point!("model-job");
        let queued = job.queued_at.map(|at| at.elapsed()).unwrap_or_default();
        let timing = job.received_at.map(|received_at| WorkerTiming {
            received_at,
            queued,
        });
        let message_id = job.message_id;
        // Kept across attempts: the job as the last attempt left it, and the
        // outcome of the message's transaction.
        let committed = std::mem::take(&mut job.committed);
        let attempt_state = tokio::sync::Mutex::new((job, committed));
        let attempt_state = &attempt_state;
        let processed = retry(
            &STORE_BACKOFF,
            || async move {
                let mut state = attempt_state.lock().await;
                let (job, committed) = &mut *state;
                self.try_process(job, committed, timing).await
            },
            |error, attempt| {
                tracing::warn!(error = %error, attempt, "model stage store error; retrying");
            },
        )
        .await;
        if let Err(error) = processed {
            tracing::error!(error = %error, "model stage failed; the message stays stored without AI enrichment");
            let _ = model_queue::finish(&self.pool, message_id, AiStatus::Failed).await;
        }
    }

    async fn try_process(
        &self,
        job: &mut ModelJob,
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
                    Some(inputs) if inputs.ai_status == Some(AiStatus::Pending) => inputs,
                    _ => return Ok(()),
                }
            }
        };
        // A merge since the message was stored moves it to the surviving customer.
        job.customer_id = inputs.customer_id;
        let turns = self.turns_before(job).await?;
        let job = &*job;
        let Some(workspace) = self.workspaces.get(&job.workspace_id) else {
            return self
                .finish_without_call(job, committed, AiStatus::Skipped)
                .await;
        };
        let state = inputs.state;
        let read_version = inputs.state_version;
        let spent = inputs.spent_tokens;
        let instructions = inputs.agent_instructions;
        let ctx = decision::context(&workspace, job, &state, &turns);
        let stage = decide::pattern_stage(&ctx);
        let budget_left = spent < i64::from(self.settings.conversation_token_budget);
        if let Gate::Skip(reason) = decide::gate(&ctx, &stage, true, budget_left) {
            tracing::debug!(reason, "model skipped");
            if reason == "budget_spent" {
                self.metrics.rejection("budget_spent");
            }
            return self
                .finish_without_call(job, committed, AiStatus::Skipped)
                .await;
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
        self.write(job, &decided, &call, timing, read_version).await
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
        let call = self.model.propose(prompt, enums);
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
    async fn turns_before(&self, job: &mut ModelJob) -> Result<Vec<Turn>, StoreError> {
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
        match cached {
            Some(turns) => Ok(turns),
            None => {
                chat_store::turns_before(
                    &self.pool,
                    job.conversation_id,
                    job.message_id,
                    self.recent_turns,
                )
                .await
            }
        }
    }

    /// An ask is only useful as a reply to the customer's latest message.
    async fn drop_stale_ask(
        &self,
        job: &ModelJob,
        decided: &mut Decision,
    ) -> Result<(), StoreError> {
        if decided.ask.is_none() {
            return Ok(());
        }
        let latest = conversations::customer_turns(&self.pool, job.conversation_id).await?;
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
        job: &ModelJob,
        decided: &Decision,
        call: &ModelCall,
        timing: Option<WorkerTiming>,
        read_version: i64,
    ) -> Result<(), HandleError> {
        let mut effects = Effects::default();
        let finished = if decided.writes_nothing() {
            // Only the call's row and the message's status: one statement
            // that commits on its own, with no transaction around it, and
            // without waiting for its flush (see `HotPath::ModelStage`).
            let mut conn = self.pool.acquire().await.map_err(StoreError::from)?;
            self.record_outcome(
                &mut conn,
                job,
                decided,
                call,
                timing,
                read_version,
                &mut effects,
            )
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
                .record_outcome(
                    &mut tx,
                    job,
                    decided,
                    call,
                    timing,
                    read_version,
                    &mut effects,
                )
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
        self.after_commit.apply([effects]).await;
        Ok(())
    }

    /// Writes the decision, the call's row and the message's final status;
    /// false when the message was no longer pending (the caller must not
    /// commit then). A decision that wrote something leaves the customer's
    /// hot profile as this transaction read it back, for after the commit.
    #[allow(clippy::too_many_arguments)]
    async fn record_outcome(
        &self,
        conn: &mut PgConnection,
        job: &ModelJob,
        decided: &Decision,
        call: &ModelCall,
        timing: Option<WorkerTiming>,
        read_version: i64,
        effects: &mut Effects,
    ) -> Result<bool, HandleError> {
        let rechecked;
        let decided = match self
            .recheck_ask(conn, job, decided, call, read_version)
            .await?
        {
            Some(again) => {
                rechecked = again;
                &rechecked
            }
            None => decided,
        };
        let mut changes = Vec::new();
        let stamp = ModelStamp {
            model: &call.accounting.model,
            prompt_version: &call.accounting.prompt_version,
        };
        let customer_id =
            decision::apply(conn, job, decided, Some(stamp), &mut changes, effects).await?;
        announce_changes(conn, &job.workspace_id, customer_id, changes, effects).await?;
        if !decided.writes_nothing() {
            self.keep_hot_profile(conn, job, customer_id, effects)
                .await?;
        }
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
            AiStatus::Done
        } else {
            AiStatus::Failed
        };
        Ok(
            llm_calls::record_for_pending_message(conn, &row, &call.accounting, message_status)
                .await?,
        )
    }

    /// Checks an ask again inside the writing transaction, with the
    /// customer's row locked until the commit so no other writer changes
    /// the decision state meanwhile: when the state moved since the inputs
    /// were read (another conversation of the customer asked, say), the
    /// decision is taken again on the state as it is now and the ask is kept
    /// only if that decision makes it too. `None` when nothing changed.
    async fn recheck_ask(
        &self,
        conn: &mut PgConnection,
        job: &ModelJob,
        decided: &Decision,
        call: &ModelCall,
        read_version: i64,
    ) -> Result<Option<Decision>, HandleError> {
        let Some(asked) = &decided.ask else {
            return Ok(None);
        };
        let version = asks::lock_state_version(conn, job.customer_id).await?;
        if version == Some(read_version) {
            return Ok(None);
        }
        let mut kept = decided.clone();
        let still_asked = match self.workspaces.get(&job.workspace_id) {
            Some(workspace) if version.is_some() => {
                let truth = asks::load_state(
                    conn,
                    job.customer_id,
                    job.conversation_id,
                    job.customer_turn,
                )
                .await?;
                let ctx = decision::context(&workspace, job, &truth, &[]);
                let stage = decide::pattern_stage(&ctx);
                let proposal = call.proposal.clone().unwrap_or_default();
                decide::decide(&ctx, &stage, &proposal)
                    .ask
                    .is_some_and(|again| again.field == asked.field)
            }
            _ => false,
        };
        if !still_asked && let Some(ask) = kept.ask.take() {
            kept.rejections.push(Rejected {
                field: ask.field,
                reason: "stale",
                kind: "ask",
            });
        }
        Ok(Some(kept))
    }

    /// Reads the customer's hot profile back after this transaction's
    /// writes and leaves it for Redis after the commit (a merge already
    /// invalidated it instead).
    async fn keep_hot_profile(
        &self,
        conn: &mut PgConnection,
        job: &ModelJob,
        customer_id: Uuid,
        effects: &mut Effects,
    ) -> Result<(), HandleError> {
        let Some(workspace) = self.workspaces.get(&job.workspace_id) else {
            return Ok(());
        };
        if customer_id != job.customer_id {
            return Ok(());
        }
        let state = hot_profile::read_from_postgres(
            conn,
            workspace.fields,
            customer_id,
            job.conversation_id,
        )
        .await?;
        match state {
            Some(state) => {
                effects.cache.push(CacheUpdate::PutProfile {
                    workspace_id: job.workspace_id.clone(),
                    profile: state.profile,
                });
                effects.cache.push(CacheUpdate::PutConversation {
                    workspace_id: job.workspace_id.clone(),
                    conversation: job.conversation.clone(),
                    state: state.conversation,
                });
            }
            None => effects.cache.push(CacheUpdate::InvalidateProfile {
                workspace_id: job.workspace_id.clone(),
                customer_id,
            }),
        }
        Ok(())
    }

    /// Sets the message's final status once it is committed.
    async fn finish_without_call(
        &self,
        job: &ModelJob,
        committed: &mut CommitSignal,
        status: AiStatus,
    ) -> Result<(), HandleError> {
        if !committed.wait().await {
            self.drop_rolled_back();
            return Ok(());
        }
        model_queue::finish(&self.pool, job.message_id, status).await?;
        Ok(())
    }
}

/// Runs `job` to its end; true when it panicked (the panic is caught).
async fn panicked(job: impl std::future::Future<Output = ()>) -> bool {
    std::panic::AssertUnwindSafe(job)
        .catch_unwind()
        .await
        .is_err()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_job_that_panics_is_caught_and_reported() {
        assert!(panicked(async { panic!("injected by the test") }).await);
        assert!(!panicked(async {}).await);
    }

    #[test]
    fn conversation_keys_of_different_workspaces_never_collide() {
        assert_ne!(conversation_key("a/b", "c"), conversation_key("a", "b/c"));
    }
}

//! What the model stage holds in memory, and the rule that keeps it bounded
//! without reordering a conversation. At most `capacity` jobs are held
//! (queued or running). A job that does not fit is *spilled*: dropped from
//! memory, since its message is stored pending in Postgres anyway, and its
//! conversation remembered with the highest message id dropped. Every later
//! job of a spilled conversation is spilled too, so the stage's pager, which
//! reads the pending messages back in message-id order (one conversation's
//! messages have increasing ids), hands them over in order; the conversation
//! takes jobs from its lane again once the pager has handed over the
//! highest id it dropped. Until the first complete read of the pending
//! messages after start-up (`catching_up`), every job is spilled, so work an
//! earlier run left is never overtaken by newer messages.
//!
//! Pure bookkeeping, no I/O: [`super::model_stage`] runs the jobs and the
//! pager.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

/// A spill older than this, at the start of a complete read of the pending
/// messages that did not find it, is forgotten: its message was rolled
/// back, erased, or finished elsewhere (a transaction stays open far less).
pub const SPILL_FORGOTTEN_AFTER: Duration = Duration::from_secs(60);

/// How long a finished job's time is kept for [`Backlog::superseded`].
pub const FINISHED_REMEMBERED_FOR: Duration = Duration::from_secs(5);

/// How the backlog took a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admitted {
    /// Held, and its conversation had nothing in memory: the caller starts
    /// the conversation's runner.
    Start,
    /// Held behind earlier jobs of its conversation; its runner takes it.
    Queued,
    /// Not held: the pager reads it back from Postgres.
    Spilled,
    /// Already held (a page found a message the stage holds).
    AlreadyHeld,
    /// No room for a paged message; the pager reads it again later.
    Full,
}

/// One conversation with work in memory.
struct Conversation<J> {
    /// Queued jobs by message id, oldest first.
    jobs: VecDeque<(i64, J)>,
}

/// A conversation whose newest jobs wait in Postgres.
#[derive(Debug, Clone, Copy)]
struct Spill {
    highest_dropped: i64,
    last_dropped: Instant,
}

/// The jobs in memory, by conversation.
pub struct Backlog<J> {
    capacity: usize,
    held: HashSet<i64>,
    conversations: HashMap<String, Conversation<J>>,
    spilled: HashMap<String, Spill>,
    catching_up: bool,
    finished: HashMap<String, Instant>,
    finished_pruned: Instant,
}

impl<J> Backlog<J> {
    /// An empty backlog that spills everything until [`Backlog::pass_done`].
    pub fn new(capacity: usize) -> Backlog<J> {
        Backlog {
            capacity: capacity.max(1),
            held: HashSet::new(),
            conversations: HashMap::new(),
            spilled: HashMap::new(),
            catching_up: true,
            finished: HashMap::new(),
            finished_pruned: Instant::now(),
        }
    }

    /// Jobs held (queued or running).
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// How many more jobs fit.
    pub fn room(&self) -> usize {
        self.capacity.saturating_sub(self.held.len())
    }

    /// Whether some work waits in Postgres only (start-up, or spills).
    pub fn has_spilled(&self) -> bool {
        self.catching_up || !self.spilled.is_empty()
    }

    /// Conversations with spilled work.
    pub fn spilled_conversations(&self) -> usize {
        self.spilled.len()
    }

    /// A job from the lane that stored its message.
    pub fn submit(&mut self, key: &str, message_id: i64, job: J, now: Instant) -> Admitted {
        if self.catching_up || self.spilled.contains_key(key) || self.room() == 0 {
            let spill = self.spilled.entry(key.to_owned()).or_insert(Spill {
                highest_dropped: message_id,
                last_dropped: now,
            });
            spill.highest_dropped = spill.highest_dropped.max(message_id);
            spill.last_dropped = now;
            return Admitted::Spilled;
        }
        self.hold(key, message_id, job)
    }

    /// A job for a message read back from Postgres (in message-id order).
    pub fn offer_paged(&mut self, key: &str, message_id: i64, job: J) -> Admitted {
        if self.held.contains(&message_id) {
            return Admitted::AlreadyHeld;
        }
        if self.room() == 0 {
            return Admitted::Full;
        }
        if let Some(spill) = self.spilled.get(key)
            && spill.highest_dropped <= message_id
        {
            self.spilled.remove(key);
        }
        self.hold(key, message_id, job)
    }

    fn hold(&mut self, key: &str, message_id: i64, job: J) -> Admitted {
        self.held.insert(message_id);
        match self.conversations.get_mut(key) {
            Some(conversation) => {
                let at = conversation
                    .jobs
                    .partition_point(|(id, _)| *id < message_id);
                conversation.jobs.insert(at, (message_id, job));
                Admitted::Queued
            }
            None => {
                self.conversations.insert(
                    key.to_owned(),
                    Conversation {
                        jobs: VecDeque::from([(message_id, job)]),
                    },
                );
                Admitted::Start
            }
        }
    }

    /// The conversation's next job for its runner, or `None` (and the
    /// conversation is no longer in memory) when it has none: the runner
    /// ends, and the next job held starts a new one.
    pub fn next(&mut self, key: &str) -> Option<(i64, J)> {
        let conversation = self.conversations.get_mut(key)?;
        match conversation.jobs.pop_front() {
            Some(job) => Some(job),
            None => {
                self.conversations.remove(key);
                None
            }
        }
    }

    /// A job is done (whatever its outcome): its place is free.
    pub fn finished(&mut self, key: &str, message_id: i64, now: Instant) {
        self.held.remove(&message_id);
        if now.duration_since(self.finished_pruned) >= FINISHED_REMEMBERED_FOR {
            self.finished
                .retain(|_, at| now.duration_since(*at) < FINISHED_REMEMBERED_FOR);
            self.finished_pruned = now;
        }
        self.finished.insert(key.to_owned(), now);
    }

    /// Whether inputs read at `read_at` may miss an earlier job's writes:
    /// an earlier job of the conversation is unfinished or finished since.
    pub fn superseded(&self, key: &str, read_at: Instant) -> bool {
        self.conversations.contains_key(key)
            || self.spilled.contains_key(key)
            || self.finished.get(key).is_some_and(|at| *at >= read_at)
    }

    /// A read of every pending message, begun at `started`, reached the
    /// end: work left by an earlier run is all handed over, and spills too
    /// old to be still in flight are forgotten.
    pub fn pass_done(&mut self, started: Instant) {
        self.catching_up = false;
        self.spilled.retain(|_, spill| {
            started
                .checked_duration_since(spill.last_dropped)
                .is_none_or(|age| age < SPILL_FORGOTTEN_AFTER)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn running(capacity: usize) -> Backlog<&'static str> {
        let mut backlog = Backlog::new(capacity);
        backlog.pass_done(Instant::now());
        backlog
    }

    /// Runs every conversation's jobs to the end, one conversation after
    /// the other, and returns what ran, by conversation.
    fn drain(backlog: &mut Backlog<&'static str>, keys: &[&str]) -> Vec<(String, Vec<i64>)> {
        keys.iter()
            .map(|key| {
                let mut ran = Vec::new();
                while let Some((id, _)) = backlog.next(key) {
                    ran.push(id);
                    backlog.finished(key, id, Instant::now());
                }
                (key.to_string(), ran)
            })
            .collect()
    }

    #[test]
    fn everything_spills_until_the_first_read_of_the_pending_work_is_done() {
        let mut backlog = Backlog::new(10);
        let now = Instant::now();
        assert_eq!(backlog.submit("c1", 5, "new", now), Admitted::Spilled);
        assert!(backlog.has_spilled());
        assert_eq!(backlog.offer_paged("c1", 3, "left"), Admitted::Start);
        backlog.pass_done(now);
        assert!(backlog.has_spilled(), "the spilled job is still to be read");
        assert_eq!(backlog.offer_paged("c1", 5, "new"), Admitted::Queued);
        assert!(!backlog.has_spilled());
        assert_eq!(backlog.submit("c1", 6, "next", now), Admitted::Queued);
        assert_eq!(drain(&mut backlog, &["c1"])[0].1, vec![3, 5, 6]);
    }

    #[test]
    fn at_capacity_jobs_spill_and_the_conversation_waits_for_the_pager() {
        let mut backlog = running(2);
        let now = Instant::now();
        assert_eq!(backlog.submit("a", 1, "", now), Admitted::Start);
        assert_eq!(backlog.submit("a", 2, "", now), Admitted::Queued);
        assert_eq!(backlog.submit("b", 3, "", now), Admitted::Spilled);
        assert_eq!(backlog.room(), 0);
        // Room again, but b's next job must not overtake the spilled one.
        let (id, _) = backlog.next("a").expect("a's first job");
        backlog.finished("a", id, now);
        assert_eq!(backlog.submit("b", 4, "", now), Admitted::Spilled);
        assert_eq!(backlog.offer_paged("b", 3, ""), Admitted::Start);
        assert_eq!(backlog.offer_paged("b", 4, ""), Admitted::Full);
        let (id, _) = backlog.next("a").expect("a's second job");
        backlog.finished("a", id, now);
        assert_eq!(backlog.offer_paged("b", 4, ""), Admitted::Queued);
        let (id, _) = backlog.next("b").expect("b's first job");
        assert_eq!(id, 3);
        backlog.finished("b", id, now);
        // Every spilled job is back: b takes jobs from its lane again.
        assert_eq!(backlog.submit("b", 5, "", now), Admitted::Queued);
        assert_eq!(
            drain(&mut backlog, &["a", "b"]),
            vec![("a".to_owned(), vec![]), ("b".to_owned(), vec![4, 5])]
        );
        assert_eq!(backlog.held(), 0);
    }

    #[test]
    fn a_paged_message_already_held_is_not_held_twice() {
        let mut backlog = running(4);
        assert_eq!(backlog.submit("a", 7, "", Instant::now()), Admitted::Start);
        assert_eq!(backlog.offer_paged("a", 7, ""), Admitted::AlreadyHeld);
        assert_eq!(backlog.held(), 1);
    }

    #[test]
    fn a_lost_outcome_found_late_runs_before_newer_queued_jobs() {
        let mut backlog = running(4);
        let now = Instant::now();
        assert_eq!(backlog.submit("a", 9, "", now), Admitted::Start);
        assert_eq!(backlog.offer_paged("a", 4, ""), Admitted::Queued);
        assert_eq!(drain(&mut backlog, &["a"])[0].1, vec![4, 9]);
    }

    #[test]
    fn the_runner_ends_when_its_conversation_is_empty() {
        let mut backlog = running(4);
        let now = Instant::now();
        assert_eq!(backlog.submit("a", 1, "", now), Admitted::Start);
        let (id, _) = backlog.next("a").expect("job");
        backlog.finished("a", id, now);
        assert!(backlog.next("a").is_none());
        // Nothing of "a" is kept: the next job starts a new runner.
        assert_eq!(backlog.submit("a", 2, "", now), Admitted::Start);
    }

    #[test]
    fn inputs_read_before_an_earlier_job_finished_are_superseded() {
        let mut backlog = running(4);
        let read_at = Instant::now();
        assert!(!backlog.superseded("a", read_at));
        assert_eq!(backlog.submit("a", 1, "", read_at), Admitted::Start);
        assert!(backlog.superseded("a", read_at), "unfinished job");
        let (id, _) = backlog.next("a").expect("job");
        backlog.finished("a", id, read_at + Duration::from_millis(1));
        assert!(backlog.next("a").is_none());
        assert!(backlog.superseded("a", read_at), "finished after the read");
        assert!(!backlog.superseded("a", read_at + Duration::from_secs(1)));
    }

    #[test]
    fn old_spills_are_forgotten_by_a_complete_read_that_did_not_find_them() {
        let mut backlog = running(1);
        let long_ago = Instant::now();
        assert_eq!(backlog.submit("a", 1, "", long_ago), Admitted::Start);
        assert_eq!(backlog.submit("b", 2, "", long_ago), Admitted::Spilled);
        backlog.pass_done(long_ago + Duration::from_secs(1));
        assert_eq!(backlog.spilled_conversations(), 1, "may still be in flight");
        backlog.pass_done(long_ago + SPILL_FORGOTTEN_AFTER + Duration::from_secs(1));
        assert_eq!(backlog.spilled_conversations(), 0);
    }
}

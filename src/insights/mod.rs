//! Conversation summaries and customer insights (docs/contract.md §1.4).
//!
//! Why a module of its own: this work happens once per *conversation*, after
//! it ends, not once per message, so it fits neither the lanes (which must
//! never wait on a model) nor the per-message model stage. A sweeper in every
//! worker ([`sweeper`]) claims ended conversations in Postgres, so each gets
//! exactly one summary call however many workers run and across restarts;
//! [`summary`] writes summary, sentiment, topics and resolution with the
//! call's accounting and announces `conversation.summarized`; [`profile`]
//! then folds that one summary into the customer's insights (never the whole
//! history), keeps only items that cite the customer's conversations, and
//! announces `customer.insights_updated`. With no model configured nothing
//! here writes AI text: conversations are only marked processed.

pub mod call;
pub mod profile;
pub mod summary;
pub mod sweeper;

use std::future::Future;
use std::time::Duration;

use crate::retry::Backoff;
use crate::store::StoreError;

pub use sweeper::Insights;

/// How the summary stage retries a read or write that failed on a transient
/// store error: a model call is already spent or about to be, so it waits
/// longer than a lane would before giving the conversation up.
const STORE_BACKOFF: Backoff = Backoff {
    first: Duration::from_millis(200),
    factor: 2.0,
    cap: Duration::from_secs(2),
    attempts: 4,
    jitter: 0.2,
};

/// Runs `op` again on transient store errors, under [`STORE_BACKOFF`].
pub(crate) async fn retry<T, F, Fut>(op: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StoreError>>,
{
    crate::retry::retry(&STORE_BACKOFF, op, |error, attempt| {
        tracing::warn!(error = %error, attempt, "store error in the summary stage; retrying");
    })
    .await
}

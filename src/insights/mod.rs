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

use crate::store::StoreError;

pub use sweeper::Insights;

/// Runs `op` again on transient store errors, a few times with backoff.
pub(crate) async fn retry<T, F, Fut>(mut op: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StoreError>>,
{
    let mut attempt: u32 = 0;
    loop {
        attempt += 1;
        match op().await {
            Err(error) if error.is_transient() && attempt < 4 => {
                tracing::warn!(error = %error, attempt, "store error in the summary stage; retrying");
                tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
            }
            other => return other,
        }
    }
}

//! Why an event could not be handled, in the two kinds the lane acts on:
//! the event itself is unusable (dead-letter it) or the store failed (retry).

use crate::retry::Transient;
use crate::store::StoreError;

/// Why an event could not be handled.
#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    /// The event is well-formed but refers to something that cannot be used;
    /// it goes to the dead-letter queue with this reason.
    #[error("{0}")]
    Unprocessable(String),
    /// Postgres failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Transient for HandleError {
    /// Only a transient store error: an unusable event stays unusable.
    fn is_transient(&self) -> bool {
        matches!(self, HandleError::Store(error) if error.is_transient())
    }
}

//! The gateway-wide budget of bytes buffered for protected routes (issue
//! 27, item 3: 100 connections each holding a 1 MiB − 1 byte body took the
//! gateway from 12.7 to 119 MB). A protected request reserves, before its
//! body is read, what it may buffer: its body (the declared Content-Length,
//! or the route's `max_request_bytes` when it declares none) and the route's
//! `max_stored_response_bytes` for the answer. Reserving it all up front
//! means a request never waits for bytes another holds, so the budget
//! cannot deadlock; over it, the request is refused at once with 503 and
//! Retry-After, before anything is begun, rather than queued while holding
//! its connection.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Bytes, one semaphore permit each.
#[derive(Clone, Debug)]
pub struct BufferBudget {
    bytes: Arc<Semaphore>,
}

/// Bytes reserved from the budget; they return to it when this is dropped.
#[derive(Debug)]
pub struct Reserved {
    _bytes: OwnedSemaphorePermit,
}

impl BufferBudget {
    pub fn new(bytes: usize) -> BufferBudget {
        BufferBudget { bytes: Arc::new(Semaphore::new(bytes.min(Semaphore::MAX_PERMITS))) }
    }

    /// `bytes` reserved, or `None` if the budget has not that much left.
    pub fn reserve(&self, bytes: usize) -> Option<Reserved> {
        let bytes = u32::try_from(bytes).ok()?;
        self.bytes.clone().try_acquire_many_owned(bytes).ok().map(|bytes| Reserved { _bytes: bytes })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_past_the_budget_are_refused_until_bytes_return() {
        let budget = BufferBudget::new(1000);
        let first = budget.reserve(600).expect("fits");
        assert!(budget.reserve(600).is_none(), "over the budget");
        let second = budget.reserve(400).expect("the rest fits");
        drop(first);
        assert!(budget.reserve(600).is_some(), "returned on drop");
        drop(second);
        assert!(budget.reserve(usize::MAX).is_none());
    }
}

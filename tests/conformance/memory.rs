//! The conformance suite on the memory store, on tokio's paused clock.

use std::sync::Arc;

use idempotency_coordinator::core::clock::TokioClock;
use idempotency_coordinator::store::memory::MemoryStore;

use crate::harness::Harness;

async fn harness() -> (Harness<MemoryStore>, ()) {
    let clock = Arc::new(TokioClock::new());
    (Harness::new(Arc::new(MemoryStore::new(clock.clone())), clock), ())
}

crate::conformance_suite!(tokio::test(start_paused = true), harness);

//! What the coordinator answers, before the edge encodes it.

use std::time::Duration;

use crate::core::record::{CallError, CallResult, Recovery};

/// The one answer to a Begin (DESIGN.md, "Begin"): expected states are data,
/// not errors.
#[derive(Debug, Clone, PartialEq)]
pub enum BeginOutcome {
    /// The caller owns a new attempt and must now perform the side effect.
    Acquired(Acquired),
    /// Replay of a completed record: perform nothing.
    Completed(Completed),
    /// Replay of a terminal failure.
    Failed(Failed),
    /// Another owner holds a live lease.
    InProgress(InProgress),
}

impl BeginOutcome {
    pub fn attempt(&self) -> u32 {
        match self {
            BeginOutcome::Acquired(a) => a.attempt,
            BeginOutcome::Completed(c) => c.attempt,
            BeginOutcome::Failed(f) => f.attempt,
            BeginOutcome::InProgress(p) => p.attempt,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Acquired {
    pub fencing_token: u64,
    pub attempt: u32,
    pub lease_expires_at_ms: i64,
    pub recovered: Option<Recovery>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Completed {
    pub result: Option<CallResult>,
    pub attempt: u32,
    pub completed_at_ms: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Failed {
    pub error: Option<CallError>,
    pub attempt: u32,
    pub failed_at_ms: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct InProgress {
    pub owner: String,
    pub attempt: u32,
    pub lease_expires_at_ms: i64,
    pub retry_after: Duration,
}

/// The public state of a record: a released record is in progress to its
/// callers (the next Begin takes it over).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublicState {
    InProgress,
    Completed,
    Failed,
}

/// A record as Lookup, Complete and Fail show it.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordView {
    pub state: PublicState,
    pub attempt: u32,
    pub owner: String,
    pub fencing_token: u64,
    /// Set while an attempt holds the lock.
    pub lease_expires_at_ms: Option<i64>,
    pub fingerprint: Vec<u8>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    pub expires_at_ms: i64,
    pub result: Option<CallResult>,
    pub error: Option<CallError>,
}

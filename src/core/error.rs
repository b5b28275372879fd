//! Everything that can go wrong in a coordinator call, as one enum. The edge
//! turns it into gRPC statuses in one table (`grpc::status`).

/// One invalid request field: its path in the request and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub field: String,
    pub description: String,
}

impl Violation {
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self { field: field.into(), description: description.into() }
    }
}

/// Everything that can go wrong in a coordinator call.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    #[error("invalid request: {}", describe(.0))]
    InvalidRequest(Vec<Violation>),

    #[error(
        "idempotency key reused: the record (attempt {attempt}) was created by a request with a different fingerprint{}",
        explain_members(.differing)
    )]
    KeyReused {
        attempt: u32,
        /// The top-level JSON members that differ, when both requests' member digests are known.
        differing: Option<Vec<String>>,
    },

    #[error("record in progress: attempt {attempt} has not finished it, so it cannot be forgotten")]
    RecordInProgress { attempt: u32 },

    #[error("lease lost: attempt {current_attempt} now owns or has finished the record")]
    LeaseLost { current_attempt: u32 },

    #[error("attempt {attempt} already finished the record as {state}; a different outcome cannot replace it")]
    AlreadyFinished { attempt: u32, state: &'static str },

    #[error("record not found (never created, or expired)")]
    NotFound,

    #[error("store unavailable: {0}")]
    StoreUnavailable(String),

    /// The store refuses writes until an operator frees space (etcd's
    /// NOSPACE alarm); reads and replays still work.
    #[error("store full: it refuses new writes until an operator frees space; replays still work: {0}")]
    StoreFull(String),

    #[error("overloaded: too many calls in flight; retry after a short delay")]
    Overloaded,

    /// A sharded store's write found the shard's map state changed since
    /// it was read: the store reads it again and retries, so callers see it
    /// only if that keeps happening.
    #[error("store unavailable: the shard map changed while the write was made; retry")]
    ShardStateMoved,

    #[error("internal error: {0}")]
    Internal(String),

    #[error("unauthenticated: {0}")]
    Unauthenticated(String),

    #[error("permission denied: {0}")]
    PermissionDenied(String),
}

impl Error {
    pub fn invalid(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self::InvalidRequest(vec![Violation::new(field, description)])
    }
}

fn describe(violations: &[Violation]) -> String {
    violations.iter().map(|v| format!("{}: {}", v.field, v.description)).collect::<Vec<_>>().join("; ")
}

fn explain_members(differing: &Option<Vec<String>>) -> String {
    match differing {
        Some(names) if !names.is_empty() => format!(" (top-level members that differ: {})", names.join(", ")),
        _ => String::new(),
    }
}

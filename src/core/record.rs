//! What a record is, in the coordinator's own terms: no wire or storage
//! encoding here. Instants are milliseconds since the Unix epoch, as the
//! record is stored.

/// Which record a request is about (DESIGN.md, "Identity of a record").
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RecordId {
    pub tenant: String,
    pub namespace: String,
    pub key: String,
}

/// Where a record is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// An attempt owns the key.
    InProgress,
    /// Terminal: holds the result to replay.
    Completed,
    /// Terminal: holds a non-retryable error to replay.
    Failed,
    /// A retryable Fail ended the attempt; the next Begin takes over at once.
    Released,
}

impl State {
    pub fn name(self) -> &'static str {
        match self {
            State::InProgress => "IN_PROGRESS",
            State::Completed => "COMPLETED",
            State::Failed => "FAILED",
            State::Released => "RELEASED",
        }
    }
}

/// The durable record.
///
/// While an attempt is in progress the record is never rewritten, so the
/// store revision that wrote it is the attempt's fencing token.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub state: State,
    pub attempt: u32,
    pub owner: String,
    /// The caller's request_id of the current attempt (may be server-made).
    pub request_id: String,
    pub fingerprint: Vec<u8>,
    /// The creating request's top-level member digests, keyed by the
    /// fingerprint (`fingerprint::stored_member_digests`); never values.
    pub member_digests: Vec<(String, Vec<u8>)>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    /// When the record may be forgotten.
    pub expires_at_ms: i64,
    /// The token of the attempt that finished the record (terminal and
    /// released states), so that a repeated Complete or Fail is recognised.
    pub finished_token: u64,
    pub result: Option<CallResult>,
    pub error: Option<CallError>,
    /// Set on the attempt that took over from an unfinished one.
    pub recovered: Option<Recovery>,
    /// Set by a sharded store: the high bits of this record's fencing
    /// tokens, above the store revision (`store::sharded`). 0 elsewhere,
    /// and the core only carries it along.
    pub token_generation: u64,
    /// Set by a sharded store on an attempt in progress that a map change
    /// moved to another shard (`shards status --migrate`): the fencing
    /// token its owner was handed at the previous home, which stays the
    /// attempt's token until another attempt replaces the record. On a
    /// forwarding record: the store revision of the copy it leads to. 0
    /// elsewhere, and the core only carries it along.
    pub moved_token: u64,
    /// Set by a sharded store on a copy that a map change's migration wrote
    /// at the record's new home and has not confirmed yet: that change's
    /// epoch. Such a copy counts only when reached through the forwarding
    /// record that replaced the original and names it, so a copy written
    /// too late (its original changed or went meanwhile) is never read.
    /// Cleared when the move is confirmed and by the record's next write.
    /// 0 elsewhere, and the core only carries it along.
    pub moved_in_epoch: u64,
}

/// The ownership lock of an attempt in progress. Extend rewrites it (never
/// the record), so the fencing token stays valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lock {
    /// The attempt's deadline. The store's lease may outlive it, so a lock
    /// past its deadline counts as lapsed.
    pub deadline_ms: i64,
    /// How long its lease ran from the write that put it: what its owner was
    /// promised, which a hand-back to a retry must not cut short (0: unknown,
    /// a lock written by an earlier release).
    pub lease_ms: i64,
}

/// What a completed side effect produced, to replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallResult {
    pub body: ResultBody,
    pub content_type: String,
    /// A status to replay, e.g. an HTTP status; 0 means none.
    pub status_code: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResultBody {
    Response(Vec<u8>),
    /// Where the outcome lives (a URI or id), so no body need be stored.
    ResourceRef(String),
}

/// An error the caller's side effect reported.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CallError {
    pub code: String,
    pub message: String,
    pub details: Vec<u8>,
}

/// How an attempt came to replace an unfinished one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovery {
    pub reason: RecoveryReason,
    pub previous_attempt: u32,
    pub previous_owner: String,
    /// The error the earlier attempt reported (released attempts only).
    pub last_error: Option<CallError>,
    /// The earlier attempt's fencing token (0 when not known: records
    /// written before it was kept).
    pub previous_token: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecoveryReason {
    /// The earlier attempt's lease lapsed.
    Abandoned,
    /// The earlier attempt ended with a retryable Fail.
    Released,
}

/// A stored value with the store revision that last wrote it.
#[derive(Debug, Clone, PartialEq)]
pub struct Versioned<T> {
    pub value: T,
    pub revision: i64,
}

/// A record and its lock, as of one store revision.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Snapshot {
    pub revision: i64,
    pub record: Option<Versioned<Record>>,
    pub lock: Option<Versioned<Lock>>,
}

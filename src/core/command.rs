//! The commands the coordinator carries out, each already validated by the
//! edge against [`Limits`](crate::core::limits::Limits).

use std::time::Duration;

use crate::core::fingerprint::{Fingerprint, MemberDigest};
use crate::core::record::{CallError, CallResult, RecordId};

#[derive(Debug, Clone)]
pub struct BeginCommand {
    pub id: RecordId,
    pub fingerprint: Fingerprint,
    /// The payload's top-level member digests, when it is a JSON object
    /// (empty otherwise): they let a key-reuse error name what differs.
    pub members: Vec<MemberDigest>,
    pub lease_ttl: Duration,
    pub wait: Duration,
    pub owner: String,
    /// Empty when the caller sent none.
    pub request_id: String,
}

#[derive(Debug, Clone)]
pub struct CompleteCommand {
    pub id: RecordId,
    pub fencing_token: u64,
    pub result: CallResult,
    pub retention: Duration,
}

#[derive(Debug, Clone)]
pub struct FailCommand {
    pub id: RecordId,
    pub fencing_token: u64,
    pub error: CallError,
    pub retryable: bool,
    pub retention: Duration,
}

#[derive(Debug, Clone)]
pub struct ExtendCommand {
    pub id: RecordId,
    pub fencing_token: u64,
    pub lease_ttl: Duration,
}

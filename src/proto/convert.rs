//! Between the generated messages and the core's types: the gRPC edge encodes
//! answers with these, and the etcd store's format embeds the same messages.
//! Time conversions go through `prost-types`.

use std::time::{Duration, UNIX_EPOCH};

use crate::core::outcome::{BeginOutcome, PublicState, RecordView};
use crate::core::record::{CallError, CallResult, Recovery, RecoveryReason, ResultBody};
use crate::core::store::MapStatus;
use crate::proto::v1::{self, begin_response::Outcome};

/// An instant in Unix milliseconds as a protobuf Timestamp.
pub fn timestamp(unix_ms: i64) -> prost_types::Timestamp {
    let offset = Duration::from_millis(unix_ms.unsigned_abs());
    let at = if unix_ms >= 0 { UNIX_EPOCH + offset } else { UNIX_EPOCH - offset };
    prost_types::Timestamp::from(at)
}

/// A std Duration as a protobuf Duration (saturating far beyond any setting).
pub fn duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration::try_from(d).unwrap_or(prost_types::Duration { seconds: i64::MAX, nanos: 999_999_999 })
}

/// A protobuf Duration as a std Duration; None if it is negative or not in
/// normal form (nanos outside 0..1e9).
pub fn std_duration(d: &prost_types::Duration) -> Option<Duration> {
    if !(0..1_000_000_000).contains(&d.nanos) {
        return None;
    }
    Duration::try_from(*d).ok()
}

/// A result as a caller sent it; None without a body.
pub fn call_result(result: v1::Result) -> Option<CallResult> {
    let body = match result.body? {
        v1::result::Body::Response(bytes) => ResultBody::Response(bytes),
        v1::result::Body::ResourceRef(reference) => ResultBody::ResourceRef(reference),
    };
    Some(CallResult { body, content_type: result.content_type, status_code: result.status_code })
}

pub fn call_error(error: v1::Error) -> CallError {
    CallError { code: error.code, message: error.message, details: error.details }
}

pub fn recovery(recovery: v1::Recovery) -> Recovery {
    Recovery {
        reason: match recovery.reason() {
            v1::RecoveryReason::Released => RecoveryReason::Released,
            v1::RecoveryReason::Abandoned | v1::RecoveryReason::Unspecified => RecoveryReason::Abandoned,
        },
        previous_attempt: recovery.previous_attempt,
        previous_owner: recovery.previous_owner,
        last_error: recovery.last_error.map(call_error),
        // Not on the wire: the stored format keeps it beside the message.
        previous_token: 0,
    }
}

pub fn result_message(result: &CallResult) -> v1::Result {
    v1::Result {
        body: Some(match &result.body {
            ResultBody::Response(bytes) => v1::result::Body::Response(bytes.clone()),
            ResultBody::ResourceRef(reference) => v1::result::Body::ResourceRef(reference.clone()),
        }),
        content_type: result.content_type.clone(),
        status_code: result.status_code,
    }
}

pub fn error_message(error: &CallError) -> v1::Error {
    v1::Error { code: error.code.clone(), message: error.message.clone(), details: error.details.clone() }
}

pub fn recovery_message(recovery: &Recovery) -> v1::Recovery {
    v1::Recovery {
        reason: match recovery.reason {
            RecoveryReason::Abandoned => v1::RecoveryReason::Abandoned,
            RecoveryReason::Released => v1::RecoveryReason::Released,
        } as i32,
        previous_attempt: recovery.previous_attempt,
        previous_owner: recovery.previous_owner.clone(),
        last_error: recovery.last_error.as_ref().map(error_message),
    }
}

pub fn outcome_message(outcome: BeginOutcome) -> Outcome {
    match outcome {
        BeginOutcome::Acquired(a) => Outcome::Acquired(v1::Acquired {
            fencing_token: a.fencing_token,
            attempt: a.attempt,
            lease_expires_at: Some(timestamp(a.lease_expires_at_ms)),
            recovered: a.recovered.as_ref().map(recovery_message),
        }),
        BeginOutcome::Completed(c) => Outcome::Completed(v1::Completed {
            result: c.result.as_ref().map(result_message),
            attempt: c.attempt,
            completed_at: Some(timestamp(c.completed_at_ms)),
        }),
        BeginOutcome::Failed(f) => Outcome::Failed(v1::Failed {
            error: f.error.as_ref().map(error_message),
            attempt: f.attempt,
            failed_at: Some(timestamp(f.failed_at_ms)),
        }),
        BeginOutcome::InProgress(p) => Outcome::InProgress(v1::InProgress {
            owner: p.owner,
            attempt: p.attempt,
            lease_expires_at: Some(timestamp(p.lease_expires_at_ms)),
            retry_after: Some(duration(p.retry_after)),
        }),
    }
}

pub fn record_message(record: RecordView) -> v1::Record {
    let state = match record.state {
        PublicState::InProgress => v1::State::InProgress,
        PublicState::Completed => v1::State::Completed,
        PublicState::Failed => v1::State::Failed,
    };
    v1::Record {
        state: state as i32,
        attempt: record.attempt,
        owner: record.owner,
        fencing_token: record.fencing_token,
        lease_expires_at: record.lease_expires_at_ms.map(timestamp),
        fingerprint: record.fingerprint,
        created_at: Some(timestamp(record.created_at_ms)),
        updated_at: Some(timestamp(record.updated_at_ms)),
        expires_at: Some(timestamp(record.expires_at_ms)),
        result: record.result.as_ref().map(result_message),
        error: record.error.as_ref().map(error_message),
    }
}

/// A sharded store's map status (None: the store is not sharded).
pub fn map_status_message(status: Option<MapStatus>) -> v1::GetShardMapStatusResponse {
    let Some(status) = status else { return v1::GetShardMapStatusResponse::default() };
    v1::GetShardMapStatusResponse {
        sharded: true,
        replica_step: status.replica_step,
        shards: status
            .shards
            .into_iter()
            .map(|shard| v1::ShardStatus {
                name: shard.name,
                step: shard.step,
                token_generation: shard.generation,
                settle_checked: shard.settle_checked,
            })
            .collect(),
        left_behind: status.left_behind,
        last_expires_at: status.last_expires_at_ms.map(timestamp),
        settle_safe: status.settle_safe,
        migrated: status.migrated,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_convert_exactly() {
        assert_eq!(timestamp(1_500), prost_types::Timestamp { seconds: 1, nanos: 500_000_000 });
        assert_eq!(timestamp(-1), prost_types::Timestamp { seconds: -1, nanos: 999_000_000 });
    }

    #[test]
    fn durations_must_be_non_negative_and_normal() {
        let d = |seconds, nanos| prost_types::Duration { seconds, nanos };
        assert_eq!(std_duration(&d(2, 500)), Some(Duration::new(2, 500)));
        assert_eq!(std_duration(&d(-1, 0)), None);
        assert_eq!(std_duration(&d(0, -1)), None);
        assert_eq!(std_duration(&d(1, 1_000_000_000)), None);
        assert_eq!(duration(Duration::from_millis(1_500)), d(1, 500_000_000));
    }

    #[test]
    fn results_errors_and_recoveries_round_trip() {
        let result =
            CallResult { body: ResultBody::ResourceRef("orders/1".into()), content_type: "t".into(), status_code: 201 };
        assert_eq!(call_result(result_message(&result)), Some(result));
        let error = CallError { code: "c".into(), message: "m".into(), details: vec![1, 2] };
        assert_eq!(call_error(error_message(&error)), error);
        let recovered = Recovery {
            reason: RecoveryReason::Released,
            previous_attempt: 2,
            previous_owner: "pod".into(),
            last_error: Some(error),
            previous_token: 0,
        };
        assert_eq!(recovery(recovery_message(&recovered)), recovered);
    }
}

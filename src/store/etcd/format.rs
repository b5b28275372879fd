//! The stored format: records and locks as `idempotency.storage.v1`
//! protobuf values (`proto/idempotency/storage/v1/record.proto`), versioned
//! so that a later release can read what an earlier one wrote.

use prost::Message;

use crate::core::error::Error;
use crate::core::record::{Lock, Record, Recovery, State, Versioned};
use crate::proto::convert;
use crate::proto::storage::{StoredLock, StoredRecord, StoredState};
use crate::proto::v1::MemberDigest;

/// The layout version this release writes and the only one it reads.
pub const FORMAT: u32 = 1;

pub fn encode_record(record: &Record) -> Vec<u8> {
    StoredRecord {
        format: FORMAT,
        state: match record.state {
            State::InProgress => StoredState::InProgress,
            State::Completed => StoredState::Completed,
            State::Failed => StoredState::Failed,
            State::Released => StoredState::Released,
        } as i32,
        attempt: record.attempt,
        owner: record.owner.clone(),
        request_id: record.request_id.clone(),
        fingerprint: record.fingerprint.clone(),
        created_at_ms: record.created_at_ms,
        updated_at_ms: record.updated_at_ms,
        expires_at_ms: record.expires_at_ms,
        finished_token: record.finished_token,
        result: record.result.as_ref().map(convert::result_message),
        error: record.error.as_ref().map(convert::error_message),
        recovered: record.recovered.as_ref().map(convert::recovery_message),
        recovered_token: record.recovered.as_ref().map(|r| r.previous_token).unwrap_or_default(),
        member_digests: record
            .member_digests
            .iter()
            .map(|(name, digest)| MemberDigest { name: name.clone(), digest: digest.clone() })
            .collect(),
        token_generation: record.token_generation,
        moved_token: record.moved_token,
        moved_in_epoch: record.moved_in_epoch,
    }
    .encode_to_vec()
}

pub fn encode_lock(lock: &Lock) -> Vec<u8> {
    StoredLock { format: FORMAT, deadline_ms: lock.deadline_ms, lease_ms: lock.lease_ms }.encode_to_vec()
}

/// Decodes the record stored at `key` (named in errors) by `revision`.
pub fn decode_record(key: &[u8], value: &[u8], revision: i64) -> Result<Versioned<Record>, Error> {
    let stored = StoredRecord::decode(value).map_err(|e| undecodable(key, e))?;
    check_format(key, stored.format)?;
    let state = match stored.state() {
        StoredState::Completed => State::Completed,
        StoredState::Failed => State::Failed,
        StoredState::Released => State::Released,
        // No release writes UNSPECIFIED; earlier ones read it as in progress.
        StoredState::InProgress | StoredState::Unspecified => State::InProgress,
    };
    let result = match stored.result {
        None => None,
        Some(result) => Some(
            convert::call_result(result)
                .ok_or_else(|| Error::Internal(format!("the result stored at {:?} has no body", lossy(key))))?,
        ),
    };
    let record = Record {
        state,
        attempt: stored.attempt,
        owner: stored.owner,
        request_id: stored.request_id,
        fingerprint: stored.fingerprint,
        member_digests: stored.member_digests.into_iter().map(|m| (m.name, m.digest)).collect(),
        created_at_ms: stored.created_at_ms,
        updated_at_ms: stored.updated_at_ms,
        expires_at_ms: stored.expires_at_ms,
        finished_token: stored.finished_token,
        result,
        error: stored.error.map(convert::call_error),
        recovered: stored
            .recovered
            .map(|r| Recovery { previous_token: stored.recovered_token, ..convert::recovery(r) }),
        token_generation: stored.token_generation,
        moved_token: stored.moved_token,
        moved_in_epoch: stored.moved_in_epoch,
    };
    Ok(Versioned { value: record, revision })
}

pub fn decode_lock(key: &[u8], value: &[u8], revision: i64) -> Result<Versioned<Lock>, Error> {
    let stored = StoredLock::decode(value).map_err(|e| undecodable(key, e))?;
    check_format(key, stored.format)?;
    Ok(Versioned { value: Lock { deadline_ms: stored.deadline_ms, lease_ms: stored.lease_ms }, revision })
}

fn check_format(key: &[u8], format: u32) -> Result<(), Error> {
    if format == FORMAT {
        return Ok(());
    }
    Err(Error::Internal(format!(
        "value at {:?} has layout version {format}, this release reads only {FORMAT}",
        lossy(key)
    )))
}

fn undecodable(key: &[u8], error: prost::DecodeError) -> Error {
    Error::Internal(format!("undecodable value at {:?}: {error}", lossy(key)))
}

fn lossy(key: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::record::{CallError, CallResult, RecoveryReason, ResultBody};

    fn record() -> Record {
        Record {
            state: State::Released,
            attempt: 3,
            owner: "pod-a".into(),
            request_id: "req".into(),
            fingerprint: vec![9; 32],
            member_digests: vec![],
            created_at_ms: 1,
            updated_at_ms: 2,
            expires_at_ms: 3,
            finished_token: 4,
            result: Some(CallResult {
                body: ResultBody::Response(b"{}".to_vec()),
                content_type: "application/json".into(),
                status_code: 201,
            }),
            error: Some(CallError { code: "timeout".into(), message: "m".into(), details: vec![1] }),
            recovered: Some(Recovery {
                reason: RecoveryReason::Released,
                previous_attempt: 2,
                previous_owner: "pod-b".into(),
                last_error: Some(CallError::default()),
                previous_token: 0,
            }),
            token_generation: 0,
            moved_token: 0,
            moved_in_epoch: 0,
        }
    }

    #[test]
    fn records_round_trip() {
        let encoded = encode_record(&record());
        assert_eq!(decode_record(b"k", &encoded, 7).unwrap(), Versioned { value: record(), revision: 7 });
        let mut recovered_from = record();
        recovered_from.recovered.as_mut().unwrap().previous_token = 41;
        let decoded = decode_record(b"k", &encode_record(&recovered_from), 7).unwrap();
        assert_eq!(decoded.value, recovered_from);
        let mut with_members = record();
        with_members.member_digests = vec![("amount".into(), vec![7; 16]), ("cart".into(), vec![8; 16])];
        let decoded = decode_record(b"k", &encode_record(&with_members), 7).unwrap();
        assert_eq!(decoded.value, with_members);
        let sharded = Record { token_generation: 5, moved_token: (3 << 48) | 41, moved_in_epoch: 4, ..record() };
        assert_eq!(decode_record(b"k", &encode_record(&sharded), 7).unwrap().value, sharded);
        let lock = Lock { deadline_ms: 99, lease_ms: 4_000 };
        assert_eq!(decode_lock(b"k", &encode_lock(&lock), 8).unwrap(), Versioned { value: lock, revision: 8 });
    }

    /// The bytes of this record as the release before the storage seam
    /// (commit e64b237, which encoded `StoredRecord` directly) wrote them: a
    /// renumbered field or a changed conversion breaks this, not just a
    /// round trip.
    #[test]
    fn the_encoding_is_the_stored_format_of_earlier_releases() {
        const EARLIER: &str = concat!(
            "0801100418032205706f642d612a037265713220090909090909090909090909090909090909090909090909",
            "090909090909090938014002480350045a190a027b7d1a106170706c69636174696f6e2f6a736f6e20c90162",
            "0f0a0774696d656f757412016d1a01016a0d080210021a05706f642d622200",
        );
        assert_eq!(hex::encode(encode_record(&record())), EARLIER);
        let decoded = decode_record(b"k", &hex::decode(EARLIER).unwrap(), 1).unwrap();
        assert_eq!(decoded.value, record());
    }

    #[test]
    fn other_layout_versions_are_refused() {
        let future = StoredLock { format: 2, deadline_ms: 1, lease_ms: 0 }.encode_to_vec();
        assert!(decode_lock(b"k", &future, 1).unwrap_err().to_string().contains("layout version 2"));
    }
}

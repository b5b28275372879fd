//! The forwarding record: what a replica that places records by a new shard
//! map leaves at a record's home under the previous map before creating the
//! record at its new home. It holds the record's key there, so a replica
//! still placing by the previous map finds the key taken (a create expects
//! no record) and follows it instead of creating a second record: a record
//! never lives on two shards. Every replica follows forwarding records,
//! whatever its map.

use crate::core::record::{CallError, Record, Snapshot, State};

/// Names the forwarding record to people reading etcd; what tells it apart is
/// attempt 0 with no fingerprint (below), which no real record has.
const OWNER: &str = "%forwarding";

/// The record that says `id` lives on `shard`, as placed by map `epoch`.
pub fn record(shard: &str, epoch: u64) -> Record {
    Record {
        state: State::Failed,
        // Attempts count from 1 and fingerprints are never empty.
        attempt: 0,
        owner: OWNER.into(),
        request_id: shard.into(),
        fingerprint: Vec::new(),
        member_digests: Vec::new(),
        created_at_ms: 0,
        updated_at_ms: 0,
        expires_at_ms: 0,
        finished_token: 0,
        result: None,
        error: Some(CallError {
            code: "RECORD_ON_ANOTHER_SHARD".into(),
            message: format!("this record lives on shard {shard} (placed by shard map epoch {epoch})"),
            details: Vec::new(),
        }),
        recovered: None,
    }
}

/// The shard a forwarding record points to, if `record` is one.
pub fn target(record: &Record) -> Option<&str> {
    (record.attempt == 0 && record.owner == OWNER && record.fingerprint.is_empty())
        .then_some(record.request_id.as_str())
}

/// The shard `snapshot`'s record forwards to, if it is a forwarding record.
pub fn forwarded_to(snapshot: &Snapshot) -> Option<&str> {
    target(&snapshot.record.as_ref()?.value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::record::Versioned;

    #[test]
    fn a_forwarding_record_is_recognised_and_names_its_shard() {
        let snapshot =
            Snapshot { revision: 9, record: Some(Versioned { value: record("c", 2), revision: 9 }), lock: None };
        assert_eq!(forwarded_to(&snapshot), Some("c"));
        let mut real = record("c", 2);
        real.attempt = 1;
        real.fingerprint = vec![0; 32];
        assert_eq!(target(&real), None);
        assert_eq!(forwarded_to(&Snapshot::default()), None);
    }
}

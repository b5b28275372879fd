//! The forwarding record: what a replica that places records by a new shard
//! map leaves at a record's home under the previous map before creating the
//! record at its new home. It holds the record's key there, so a replica
//! still placing by the previous map finds the key taken (a create expects
//! no record) and follows it instead of creating a second record: a record
//! never lives on two shards.
//!
//! A forwarding record counts only for the map change it was written for
//! (its epoch, the new map's): one left over from an earlier change would
//! send a record to a shard that the map no longer places it on, so it is
//! treated as absent and replaced under a compare.
//!
//! A map change's migration (`shards status --migrate`) moves a record by
//! writing a copy at its new home, marked as unconfirmed with the change's
//! epoch (`Record::moved_in_epoch`), then a forwarding record in its place
//! that names that copy's revision, and then confirms the copy (clears the
//! mark). An unconfirmed copy counts only when reached through the
//! forwarding record that names it ([`seen`]): a copy written by a
//! migration that came too late (its original changed, was forgotten, or
//! was moved by another run meanwhile) is never read by anyone, before or
//! after the map settles, and `shards status` confirms every named copy
//! before it says the map may settle.

use crate::core::record::{CallError, Record, Snapshot, State, Versioned};

/// Names the forwarding record to people reading etcd; what tells it apart is
/// attempt 0 with no fingerprint (below), which no real record has.
const OWNER: &str = "%forwarding";

/// The record that says `id` lives on `shard`, as placed by map `epoch`:
/// in the copy a migration wrote there at store revision `copy`, or (0) in
/// whatever is created there.
pub fn record(shard: &str, epoch: u64, copy: i64) -> Record {
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
        // A forwarding record finishes no attempt: the field carries the
        // epoch of the map change it belongs to.
        finished_token: epoch,
        result: None,
        error: Some(CallError {
            code: "RECORD_ON_ANOTHER_SHARD".into(),
            message: format!("this record lives on shard {shard} (placed by shard map epoch {epoch})"),
            details: Vec::new(),
        }),
        recovered: None,
        token_generation: 0,
        // The one field of a forwarding record that names a revision.
        moved_token: copy as u64,
        moved_in_epoch: 0,
    }
}

/// Whether `record` is a forwarding record, of any change.
pub fn is_forwarding(record: &Record) -> bool {
    record.attempt == 0 && record.owner == OWNER && record.fingerprint.is_empty()
}

/// The epoch of the map change a forwarding record was written for.
/// Releases before the epoch was kept in `finished_token` wrote it only in
/// the message; those are read from there.
fn epoch(record: &Record) -> Option<u64> {
    if record.finished_token != 0 {
        return Some(record.finished_token);
    }
    let message = &record.error.as_ref()?.message;
    message.rsplit_once("epoch ")?.1.trim_end_matches(')').parse().ok()
}

/// Whether `record` is a migration's copy that is not confirmed yet.
pub fn unconfirmed(record: &Record) -> bool {
    record.moved_in_epoch != 0
}

/// The store revision of the copy a forwarding record was written for; 0
/// for one that leads to whatever is created where it points.
pub fn copy_revision(forwarding: &Record) -> i64 {
    forwarding.moved_token as i64
}

/// Whether the forwarding record `via` was written for the copy `copy`.
pub fn names(via: &Record, copy: &Versioned<Record>) -> bool {
    copy_revision(via) == copy.revision
}

/// Whether `record` is a forwarding record of the change to `epoch_now`
/// that leads to `copy`, a migration's copy at `at`.
pub fn leads_to(record: &Record, epoch_now: Option<u64>, at: &str, copy: &Versioned<Record>) -> bool {
    target(record, epoch_now) == Some(at) && names(record, copy)
}

/// `snapshot`, read at a shard directly or through the forwarding record
/// `via`, as a reader finds it: an unconfirmed copy counts only through the
/// forwarding record that names it.
pub fn seen(snapshot: Snapshot, via: Option<&Record>) -> Snapshot {
    let unreached =
        snapshot.record.as_ref().is_some_and(|r| unconfirmed(&r.value) && !via.is_some_and(|via| names(via, r)));
    if unreached { Snapshot { record: None, ..snapshot } } else { snapshot }
}

/// The shard a forwarding record of the change to `epoch` points to.
pub fn target(record: &Record, epoch_now: Option<u64>) -> Option<&str> {
    (is_forwarding(record) && epoch_now.is_some() && epoch(record) == epoch_now).then_some(record.request_id.as_str())
}

/// What `snapshot` holds, as a map change to `epoch_now` sees it.
pub enum Found<'a> {
    /// A forwarding record of this change, to this shard.
    Forwarding(&'a str),
    /// A forwarding record of an earlier change (at this revision), which
    /// counts as absent.
    LeftOver(i64),
    /// A record, a lock, or nothing.
    Other,
}

pub fn found(snapshot: &Snapshot, epoch_now: Option<u64>) -> Found<'_> {
    match &snapshot.record {
        Some(record) if is_forwarding(&record.value) => match target(&record.value, epoch_now) {
            Some(shard) => Found::Forwarding(shard),
            None => Found::LeftOver(record.revision),
        },
        _ => Found::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forwarding_record_counts_only_for_its_own_change() {
        let snapshot =
            Snapshot { revision: 9, record: Some(Versioned { value: record("c", 2, 0), revision: 9 }), lock: None };
        assert!(matches!(found(&snapshot, Some(2)), Found::Forwarding("c")));
        assert!(matches!(found(&snapshot, Some(3)), Found::LeftOver(9)));
        assert!(matches!(found(&snapshot, None), Found::LeftOver(9)));
        let mut real = record("c", 2, 0);
        real.attempt = 1;
        real.fingerprint = vec![0; 32];
        assert_eq!(target(&real, Some(2)), None);
        assert!(matches!(found(&Snapshot::default(), Some(2)), Found::Other));
        // Written by a release that kept the epoch only in the message.
        let mut older = record("c", 4, 0);
        older.finished_token = 0;
        assert_eq!(target(&older, Some(4)), Some("c"));
    }

    #[test]
    fn an_unconfirmed_copy_is_seen_only_through_the_forwarding_record_that_names_it() {
        let mut copy = record("c", 2, 0);
        copy.attempt = 1;
        copy.fingerprint = vec![0; 32];
        copy.moved_in_epoch = 2;
        let at = |value: &Record, revision| Snapshot {
            revision: 20,
            record: Some(Versioned { value: value.clone(), revision }),
            lock: None,
        };
        let naming = record("c", 2, 17);
        assert!(seen(at(&copy, 17), None).record.is_none(), "read directly");
        assert!(seen(at(&copy, 17), Some(&record("c", 2, 0))).record.is_none(), "through a claim's forwarding record");
        assert!(seen(at(&copy, 18), Some(&naming)).record.is_none(), "through one naming another copy");
        assert!(seen(at(&copy, 17), Some(&naming)).record.is_some(), "through the one naming it");
        let confirmed = Record { moved_in_epoch: 0, ..copy };
        assert!(seen(at(&confirmed, 18), None).record.is_some(), "once confirmed, as any record");
    }
}

//! The decisions of DESIGN.md as pure functions of what the store holds and
//! the time: what a Begin does, whether a token owns a record, how a
//! Complete, Fail or Extend changes it, and what a record looks like to
//! callers. [`crate::core::coordinator`] applies them.
//!
//! Invariant: an in-progress record is never rewritten, so the revision that
//! wrote it is the fencing token of its attempt, and "the record still has
//! that revision" is the one ownership check for Complete, Fail and Extend.
//! Every takeover rewrites the record, which makes every older token stale.
//!
//! No decision here reads the replica's clock to decide who owns a record or
//! whether it still exists: an attempt is abandoned when its lock is gone
//! from the store (etcd revoked its lease), and a record exists while the
//! store holds it (its retention lease has not run out). Replicas whose clocks
//! disagree therefore decide alike. `now` only stamps new records and sizes
//! `retry_after` (RELIABILITY.md, "Clocks").

use std::time::{Duration, UNIX_EPOCH};

use std::hash::{Hash, Hasher};

use crate::core::command::BeginCommand;
use crate::core::error::Error;
use crate::core::fingerprint;
use crate::core::outcome::{Acquired, BeginOutcome, InProgress, PublicState, RecordView};
use crate::core::record::{CallError, CallResult, Lock, Record, Recovery, RecoveryReason, Snapshot, State, Versioned};
use crate::core::store::{Expect, LeaseWant, LockChange, RecordLease, Write};

/// How far past its deadline an attempt's lock lease may run: the lease
/// keeps the deadline told to the owner, and a takeover waits for etcd to
/// revoke it, so an abandoned attempt is free again this much (plus etcd's
/// revocation lag) after its deadline.
const LOCK_LEASE_SLACK: Duration = Duration::from_secs(2);

/// The longest `retry_after` suggested to a caller that found the record busy.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(1);

/// The shortest `retry_after`, so that busy callers do not spin.
const MIN_RETRY_AFTER: Duration = Duration::from_millis(50);

/// `retry_after` for a lock still held past its deadline: the store has not
/// revoked its lease yet (or this replica's clock runs ahead).
const LAPSED_RETRY_AFTER: Duration = Duration::from_millis(500);

/// What a Begin should do, given what the store holds.
#[derive(Debug, Clone, PartialEq)]
pub enum BeginDecision {
    /// Start an attempt with a write that expects the store unchanged.
    Start { expect: Expect, attempt: AttemptStart },
    /// Answer with this outcome: a replay.
    Answer(BeginOutcome),
    /// The retry of the Begin that started the live attempt: hand it back
    /// through this write, which renews its lock for the retry's TTL if the
    /// record and lock are still exactly as read. The store decides that
    /// the lock still holds, never this replica's clock.
    HandBack { write: Box<Write>, acquired: Acquired },
    /// Another owner holds a live lease.
    Busy(InProgress),
}

/// What a new attempt inherits from the record it starts on.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptStart {
    pub attempt: u32,
    pub created_at_ms: i64,
    pub recovered: Option<Recovery>,
}

pub fn decide_begin(
    snapshot: &Snapshot,
    command: &BeginCommand,
    request_id: &str,
    now: i64,
) -> Result<BeginDecision, Error> {
    let Some(current) = snapshot.record.as_ref() else {
        // The record's lease ran out before its lock's (an Extend past it):
        // the lock's owner was told it holds the key, so it still does.
        if let Some(lock) = &snapshot.lock {
            let deadline = lock.value.deadline_ms;
            let (owner, attempt) = (String::new(), 0);
            let retry_after = retry_after(deadline, now);
            return Ok(BeginDecision::Busy(InProgress { owner, attempt, lease_expires_at_ms: deadline, retry_after }));
        }
        let attempt = AttemptStart { attempt: 1, created_at_ms: now, recovered: None };
        return Ok(BeginDecision::Start { expect: Expect::Absent, attempt });
    };
    let record = &current.value;
    // Replacing the record needs it and its lock exactly as we saw them.
    let expect = Expect::Unchanged {
        record_revision: current.revision,
        lock_revision: snapshot.lock.as_ref().map(|l| l.revision),
    };
    if record.fingerprint != command.fingerprint {
        let differing = fingerprint::differing_members(&record.member_digests, &record.fingerprint, &command.members);
        return Err(Error::KeyReused { attempt: record.attempt, differing });
    }
    let take_over = |reason: RecoveryReason, last_error: Option<CallError>, previous_token: u64| BeginDecision::Start {
        expect,
        attempt: AttemptStart {
            attempt: record.attempt + 1,
            created_at_ms: record.created_at_ms,
            recovered: Some(Recovery {
                reason,
                previous_attempt: record.attempt,
                previous_owner: record.owner.clone(),
                last_error,
                previous_token,
            }),
        },
    };
    Ok(match record.state {
        State::Completed | State::Failed => {
            BeginDecision::Answer(crate::core::cache::replay_of(record).expect("terminal records have a replay"))
        }
        State::Released => take_over(RecoveryReason::Released, record.error.clone(), record.finished_token),
        State::InProgress => match snapshot.lock.as_ref().map(|l| &l.value) {
            None => take_over(RecoveryReason::Abandoned, None, current.revision as u64),
            // The retry of the Begin that started the attempt gets it back
            // with a fresh lease, renewed in the store under a compare on the
            // record and its lock (a lock etcd has revoked fails it, and the
            // retry decides again). Nothing compares this replica's clock
            // with the stored deadline, so a slow clock cannot hand out a
            // lease that has run out; and a caller that times its work from
            // the TTL it asked for is right.
            // Renewed for the longest lease the lock promised, if longer than
            // the retry asks (an Extend, or a first call with a longer TTL):
            // a late duplicate of a Begin must not cut its owner's lease short.
            Some(lock) if record.request_id == request_id => match renew(record, expect, lease_for(command, lock), now)
            {
                Ok((write, lease_expires_at_ms)) => BeginDecision::HandBack {
                    write: Box::new(write),
                    acquired: Acquired {
                        fencing_token: current.revision as u64,
                        attempt: record.attempt,
                        lease_expires_at_ms,
                        recovered: record.recovered.clone(),
                    },
                },
                // The record ends before a fresh lease would: it stays with
                // its lease, and is taken over once that lapses.
                Err(_) => busy(record, snapshot, now),
            },
            Some(_) => busy(record, snapshot, now),
        },
    })
}

/// The lease a hand-back renews the lock of `lock` for: the retry's TTL or
/// the lock's own, whichever is longer.
fn lease_for(command: &BeginCommand, lock: &Lock) -> Duration {
    command.lease_ttl.max(Duration::from_millis(lock.lease_ms.max(0) as u64))
}

/// The answer for a record another attempt holds with a live lock.
fn busy(record: &Record, snapshot: &Snapshot, now: i64) -> BeginDecision {
    let deadline = snapshot.lock.as_ref().map(|l| l.value.deadline_ms).unwrap_or(now);
    BeginDecision::Busy(InProgress {
        owner: record.owner.clone(),
        attempt: record.attempt,
        lease_expires_at_ms: deadline,
        retry_after: retry_after(deadline, now),
    })
}

/// Whether a lease ending at `deadline` may be handed to a caller at `now`:
/// with less than a quarter of it left, acting on it would race its expiry.
pub fn enough_lease_left(deadline: i64, now: i64, lease_ttl: Duration) -> bool {
    deadline - now >= (lease_ttl / 4).as_millis() as i64
}

/// When a caller that found a lock with `deadline` should ask again.
fn retry_after(deadline: i64, now: i64) -> Duration {
    match u64::try_from(deadline - now) {
        Ok(left) if left > 0 => Duration::from_millis(left).clamp(MIN_RETRY_AFTER, MAX_RETRY_AFTER),
        _ => LAPSED_RETRY_AFTER,
    }
}

/// The write that starts `attempt` for `command`, and the attempt's deadline.
pub fn start_attempt(
    expect: Expect,
    attempt: AttemptStart,
    command: &BeginCommand,
    request_id: &str,
    now: i64,
    default_retention: Duration,
) -> (Write, i64) {
    let deadline = now + command.lease_ttl.as_millis() as i64;
    let record = Record {
        state: State::InProgress,
        attempt: attempt.attempt,
        owner: command.owner.clone(),
        request_id: request_id.to_owned(),
        fingerprint: command.fingerprint.to_vec(),
        member_digests: fingerprint::stored_member_digests(&command.fingerprint, &command.members),
        created_at_ms: attempt.created_at_ms,
        updated_at_ms: now,
        expires_at_ms: 0,
        finished_token: 0,
        result: None,
        error: None,
        recovered: attempt.recovered,
        token_generation: 0,
        moved_token: 0,
        moved_in_epoch: 0,
    };
    // An abandoned attempt's record is kept as long as a finished one,
    // spread the same way.
    let record = Record { expires_at_ms: spread_expiry(deadline, default_retention, &record), ..record };
    let lease = RecordLease::Until(retention_lease(record.expires_at_ms, now, default_retention));
    let write = Write { expect, record: Some((record, lease)), lock: lock_until(deadline, now) };
    (write, deadline)
}

/// A lock that lasts until `deadline_ms`, on a lease measured by the store
/// from the write: at least as long as the owner was told.
fn lock_until(deadline_ms: i64, now: i64) -> LockChange {
    let lasts = Duration::from_millis((deadline_ms - now).max(0) as u64);
    let lease_ms = lasts.as_millis() as i64;
    LockChange::Put { lock: Lock { deadline_ms, lease_ms }, lease: LeaseWant { lasts, slack: LOCK_LEASE_SLACK } }
}

/// How a Complete or Fail ends an attempt.
#[derive(Debug, Clone)]
pub enum Finish {
    Complete { result: CallResult, retention: Duration },
    Fail { error: CallError, retention: Duration },
    Release { error: CallError },
}

impl Finish {
    fn state(&self) -> State {
        match self {
            Finish::Complete { .. } => State::Completed,
            Finish::Fail { .. } => State::Failed,
            Finish::Release { .. } => State::Released,
        }
    }

    /// Whether `record`, finished by the same token, is what this call would
    /// have written (so a repeated call is answered with it).
    pub fn matches(&self, record: &Record) -> bool {
        record.state == self.state()
            && match self {
                Finish::Complete { result, .. } => record.result.as_ref() == Some(result),
                Finish::Fail { error, .. } | Finish::Release { error } => record.error.as_ref() == Some(error),
            }
    }

    /// Whether this is a repeated release by `token` that already happened
    /// and was then taken over: `record`'s attempt says it recovered from
    /// exactly that release.
    pub fn was_released_before(&self, record: &Record, token: u64) -> bool {
        let Finish::Release { error } = self else { return false };
        record.recovered.as_ref().is_some_and(|r| {
            r.reason == RecoveryReason::Released && r.previous_token == token && r.last_error.as_ref() == Some(error)
        })
    }

    /// The write that finishes `current`, the attempt holding `token`.
    pub fn write(&self, current: &Record, token: u64, now: i64) -> Write {
        let mut record = Record { state: self.state(), updated_at_ms: now, finished_token: token, ..current.clone() };
        let lease = match self {
            Finish::Complete { result, retention } => {
                record.result = Some(result.clone());
                record.expires_at_ms = spread_expiry(now, *retention, &record);
                RecordLease::Until(retention_lease(record.expires_at_ms, now, *retention))
            }
            Finish::Fail { error, retention } => {
                record.error = Some(error.clone());
                record.expires_at_ms = spread_expiry(now, *retention, &record);
                RecordLease::Until(retention_lease(record.expires_at_ms, now, *retention))
            }
            // A released record keeps the expiry (and lease) of the attempt
            // it ended: it is abandoned unless someone takes over.
            Finish::Release { error } => {
                record.error = Some(error.clone());
                RecordLease::Keep
            }
        };
        Write { expect: Expect::Token(token), record: Some((record, lease)), lock: LockChange::Delete }
    }
}

/// The write that moves the lock of the attempt holding `token` to a
/// deadline `lease_ttl` from now, and that deadline.
pub fn extend(current: &Record, token: u64, lease_ttl: Duration, now: i64) -> Result<(Write, i64), Error> {
    renew(current, Expect::Token(token), lease_ttl, now)
}

/// The write that moves `current`'s lock to a deadline `lease_ttl` from now
/// if the store still holds what `expect` says, and that deadline.
fn renew(current: &Record, expect: Expect, lease_ttl: Duration, now: i64) -> Result<(Write, i64), Error> {
    let deadline = now + lease_ttl.as_millis() as i64;
    if deadline > current.expires_at_ms {
        let expiry = UNIX_EPOCH + Duration::from_millis(current.expires_at_ms.max(0) as u64);
        return Err(Error::invalid(
            "lease_ttl",
            format!(
                "would run the lease past the record's expiry at {}; an attempt must finish within the retention period",
                humantime::format_rfc3339_millis(expiry)
            ),
        ));
    }
    Ok((Write { expect, record: None, lock: lock_until(deadline, now) }, deadline))
}

/// The record, unless the store no longer holds it. A record outlives its
/// `expires_at` until its retention lease runs out (at most 1% of the
/// retention, 2 s to 60 s, later): on this replica's clock alone a record is
/// never treated as gone, since a clock running ahead would make a finished
/// request new again.
pub fn live_record(snapshot: &Snapshot) -> Result<&Versioned<Record>, Error> {
    snapshot.record.as_ref().ok_or(Error::NotFound)
}

/// Whether `token` is the attempt in progress on `record`. A lapsed lease does
/// not matter: if nobody took over, the late owner's word is the truth.
pub fn owns(record: &Versioned<Record>, token: u64) -> bool {
    record.value.state == State::InProgress && record.revision as u64 == token
}

/// Why the holder of `token` may not finish `record`: `LeaseLost` if another
/// attempt owns or finished it, `AlreadyFinished` if this token finished it
/// differently, and `None` if `same` says the call repeats that finish.
pub fn not_owner(record: &Record, token: u64, same: impl Fn(&Record) -> bool) -> Option<Error> {
    let finished_by_token = record.state != State::InProgress && record.finished_token == token;
    if !finished_by_token {
        return Some(Error::LeaseLost { current_attempt: record.attempt });
    }
    if same(record) {
        None
    } else {
        Some(Error::AlreadyFinished { attempt: record.attempt, state: record.state.name() })
    }
}

/// The public view of a record, with the deadline of its lock if it has one.
pub fn record_view(record: &Versioned<Record>, lock: Option<&Versioned<Lock>>) -> RecordView {
    let stored = &record.value;
    let (state, fencing_token) = match stored.state {
        State::Completed => (PublicState::Completed, stored.finished_token),
        State::Failed => (PublicState::Failed, stored.finished_token),
        // Released: the next Begin takes over at once. No token is live and
        // no lease runs, so the view shows neither.
        State::Released => (PublicState::InProgress, 0),
        State::InProgress => (PublicState::InProgress, record.revision as u64),
    };
    RecordView {
        state,
        attempt: stored.attempt,
        owner: stored.owner.clone(),
        fencing_token,
        lease_expires_at_ms: lock.filter(|_| stored.state == State::InProgress).map(|l| l.value.deadline_ms),
        fingerprint: stored.fingerprint.clone(),
        created_at_ms: stored.created_at_ms,
        updated_at_ms: stored.updated_at_ms,
        expires_at_ms: stored.expires_at_ms,
        result: stored.result.clone(),
        error: stored.error.clone(),
    }
}

/// The end of a retention period that starts now, moved later by up to 2%
/// (at most 10 minutes) so that records finished together do not all expire
/// in the same instant. How far is a hash of the record's request (its
/// fingerprint and request_id), not a random draw: records of different
/// requests spread just as well, and a seeded simulation replays exactly.
fn spread_expiry(now: i64, retention: Duration, record: &Record) -> i64 {
    let spread = (retention.as_millis() as u64 / 50).min(600_000);
    let mut hasher = std::hash::DefaultHasher::new();
    (&record.fingerprint, &record.request_id, now).hash(&mut hasher);
    now + retention.as_millis() as i64 + (hasher.finish() % (spread + 1)) as i64
}

/// The lease of a record kept until `expires_at_ms`, written at `now`.
/// Records expiring within a 1% window (2 s to 60 s) share one store lease.
fn retention_lease(expires_at_ms: i64, now: i64, retention: Duration) -> LeaseWant {
    LeaseWant {
        lasts: Duration::from_millis((expires_at_ms - now).max(0) as u64),
        slack: (retention / 100).clamp(Duration::from_secs(2), Duration::from_secs(60)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::record::RecordId;

    const NOW: i64 = 1_000_000;

    fn command(fingerprint: u8) -> BeginCommand {
        BeginCommand {
            id: RecordId { tenant: "t".into(), namespace: "ns".into(), key: "k".into() },
            fingerprint: [fingerprint; 32],
            members: vec![],
            lease_ttl: Duration::from_secs(5),
            wait: Duration::ZERO,
            owner: "me".into(),
            request_id: String::new(),
        }
    }

    fn record(state: State) -> Record {
        Record {
            state,
            attempt: 2,
            owner: "worker-a".into(),
            request_id: "req-a".into(),
            fingerprint: vec![1; 32],
            member_digests: vec![],
            created_at_ms: NOW - 10_000,
            updated_at_ms: NOW - 1_000,
            expires_at_ms: NOW + 60_000,
            finished_token: 0,
            result: None,
            error: Some(CallError { code: "timeout".into(), ..Default::default() }),
            recovered: None,
            token_generation: 0,
            moved_token: 0,
            moved_in_epoch: 0,
        }
    }

    fn snapshot(state: State, lock_deadline: Option<i64>) -> Snapshot {
        Snapshot {
            revision: 50,
            record: Some(Versioned { value: record(state), revision: 42 }),
            lock: lock_deadline
                .map(|deadline_ms| Versioned { value: Lock { deadline_ms, lease_ms: 5_000 }, revision: 43 }),
        }
    }

    fn decide(snapshot: &Snapshot, fingerprint: u8, request_id: &str) -> Result<BeginDecision, Error> {
        decide_begin(snapshot, &command(fingerprint), request_id, NOW)
    }

    /// The attempt a decision starts, and what it expects of the store.
    fn started(decision: BeginDecision) -> (Expect, AttemptStart) {
        match decision {
            BeginDecision::Start { expect, attempt } => (expect, attempt),
            other => panic!("expected a new attempt, got {other:?}"),
        }
    }

    #[test]
    fn no_record_means_create() {
        let (expect, attempt) = started(decide(&Snapshot::default(), 1, "r").unwrap());
        assert_eq!(expect, Expect::Absent);
        assert_eq!(attempt, AttemptStart { attempt: 1, created_at_ms: NOW, recovered: None });
    }

    #[test]
    fn a_live_lock_is_busy_for_others_and_handed_back_to_its_request_id_renewed() {
        let busy = snapshot(State::InProgress, Some(NOW + 3_000));
        match decide(&busy, 1, "someone-else").unwrap() {
            BeginDecision::Busy(in_progress) => {
                assert_eq!((in_progress.owner.as_str(), in_progress.attempt), ("worker-a", 2));
                assert_eq!(in_progress.retry_after, MAX_RETRY_AFTER);
            }
            other => panic!("expected Busy, got {other:?}"),
        }
        match decide(&busy, 1, "req-a").unwrap() {
            BeginDecision::HandBack { write, acquired } => {
                assert_eq!((acquired.fencing_token, acquired.attempt), (42, 2));
                assert_eq!(acquired.lease_expires_at_ms, NOW + 5_000, "a fresh lease of the retry's TTL");
                assert_eq!(
                    write.expect,
                    Expect::Unchanged { record_revision: 42, lock_revision: Some(43) },
                    "renewed only if the store still holds the same record and lock"
                );
                assert!(write.record.is_none(), "the record, and so the token, stay as they are");
                assert!(
                    matches!(write.lock, LockChange::Put { lock: Lock { deadline_ms, .. }, .. } if deadline_ms == NOW + 5_000)
                );
            }
            other => panic!("expected the attempt handed back, got {other:?}"),
        }
    }

    #[test]
    fn its_own_attempt_is_handed_back_by_the_store_whatever_this_clock_says() {
        // The lock's deadline as this replica's clock sees it does not
        // matter: a lock still in the store is renewed under a compare, a
        // lock etcd revoked fails the compare (and is then taken over).
        for deadline in [NOW + 1_250, NOW + 1_249, NOW - 516, NOW - 3_600_000] {
            match decide(&snapshot(State::InProgress, Some(deadline)), 1, "req-a").unwrap() {
                BeginDecision::HandBack { acquired, .. } => assert_eq!(acquired.lease_expires_at_ms, NOW + 5_000),
                other => panic!("deadline {deadline}: got {other:?}"),
            }
        }
        // A late duplicate asking less does not cut a longer promise short.
        let mut extended = snapshot(State::InProgress, Some(NOW + 25_000));
        extended.lock.as_mut().unwrap().value.lease_ms = 30_000;
        match decide(&extended, 1, "req-a").unwrap() {
            BeginDecision::HandBack { acquired, .. } => assert_eq!(acquired.lease_expires_at_ms, NOW + 30_000),
            other => panic!("got {other:?}"),
        }
        // A fresh lease may not outlive the record: then it is not handed back.
        let mut ending = snapshot(State::InProgress, Some(NOW + 3_000));
        ending.record.as_mut().unwrap().value.expires_at_ms = NOW + 4_999;
        assert!(matches!(decide(&ending, 1, "req-a").unwrap(), BeginDecision::Busy(_)));
    }

    #[test]
    fn a_lock_past_its_deadline_on_this_clock_is_still_busy() {
        // Only the store's revocation of the lock's lease frees the record:
        // a clock running ahead must not take over a live attempt.
        for deadline in [NOW, NOW - 1, NOW - 3_600_000] {
            match decide(&snapshot(State::InProgress, Some(deadline)), 1, "req-b").unwrap() {
                BeginDecision::Busy(in_progress) => {
                    assert_eq!(in_progress.lease_expires_at_ms, deadline);
                    assert_eq!(in_progress.retry_after, LAPSED_RETRY_AFTER);
                }
                other => panic!("expected Busy, got {other:?}"),
            }
        }
    }

    #[test]
    fn a_lock_that_outlived_its_record_still_holds_the_key() {
        // Found by the simulation: a replica with a fast clock wrote the
        // record, whose lease therefore ended before an Extend's lock did.
        let mut lock_only = snapshot(State::InProgress, Some(NOW + 2_000));
        lock_only.record = None;
        assert!(matches!(decide(&lock_only, 1, "req-b").unwrap(), BeginDecision::Busy(_)));
        assert!(!Expect::Absent.holds(&lock_only), "a create must not replace the lock");
    }

    #[test]
    fn a_missing_lock_is_taken_over_as_abandoned() {
        let (expect, attempt) = started(decide(&snapshot(State::InProgress, None), 1, "req-b").unwrap());
        assert_eq!(
            expect,
            Expect::Unchanged { record_revision: 42, lock_revision: None },
            "a takeover must lose to any change since the read"
        );
        let recovery = attempt.recovered.expect("a takeover says what it recovered from");
        assert_eq!(attempt.attempt, 3);
        assert_eq!(recovery.reason, RecoveryReason::Abandoned);
        assert_eq!((recovery.previous_attempt, recovery.previous_owner.as_str()), (2, "worker-a"));
        assert_eq!(recovery.last_error, None);
    }

    #[test]
    fn a_released_record_is_taken_over_with_its_error() {
        let (_, attempt) = started(decide(&snapshot(State::Released, None), 1, "req-b").unwrap());
        let recovery = attempt.recovered.expect("recovered");
        assert_eq!((attempt.attempt, attempt.created_at_ms), (3, NOW - 10_000));
        assert_eq!(recovery.reason, RecoveryReason::Released);
        assert_eq!(recovery.last_error.map(|e| e.code), Some("timeout".to_string()));
    }

    #[test]
    fn terminal_records_replay() {
        assert!(matches!(
            decide(&snapshot(State::Completed, None), 1, "x"),
            Ok(BeginDecision::Answer(BeginOutcome::Completed(_)))
        ));
        assert!(matches!(
            decide(&snapshot(State::Failed, None), 1, "x"),
            Ok(BeginDecision::Answer(BeginOutcome::Failed(_)))
        ));
    }

    #[test]
    fn a_different_fingerprint_is_refused_in_every_state() {
        for state in [State::InProgress, State::Completed, State::Failed, State::Released] {
            for lock in [None, Some(NOW + 3_000)] {
                assert!(
                    matches!(decide(&snapshot(state, lock), 9, "req-a"), Err(Error::KeyReused { attempt: 2, .. })),
                    "{state:?} with lock {lock:?}"
                );
            }
        }
    }

    #[test]
    fn a_record_past_its_expiry_on_this_clock_still_replays_while_stored() {
        let mut expired = snapshot(State::Completed, None);
        expired.record.as_mut().unwrap().value.expires_at_ms = NOW - 3_600_000;
        assert!(matches!(decide(&expired, 1, "x"), Ok(BeginDecision::Answer(BeginOutcome::Completed(_)))));
        assert!(matches!(decide(&expired, 9, "x"), Err(Error::KeyReused { .. })));
        assert!(live_record(&expired).is_ok());
    }

    #[test]
    fn only_the_current_attempt_owns_the_record() {
        let current = Versioned { value: record(State::InProgress), revision: 42 };
        assert!(owns(&current, 42));
        assert!(!owns(&current, 41));
        let finished = Versioned { value: record(State::Completed), revision: 42 };
        assert!(!owns(&finished, 42));
    }

    #[test]
    fn repeating_a_finish_is_recognised_and_a_different_one_is_not() {
        let mut completed = record(State::Completed);
        completed.finished_token = 42;
        assert!(not_owner(&completed, 42, |_| true).is_none());
        assert!(matches!(not_owner(&completed, 42, |_| false), Some(Error::AlreadyFinished { .. })));
        assert!(matches!(not_owner(&completed, 41, |_| true), Some(Error::LeaseLost { current_attempt: 2 })));
    }

    #[test]
    fn an_extend_may_not_outlast_the_record() {
        let current = record(State::InProgress);
        assert!(extend(&current, 42, Duration::from_secs(60), NOW).is_ok());
        let refused = extend(&current, 42, Duration::from_secs(61), NOW).unwrap_err();
        assert!(refused.to_string().contains("lease_ttl"), "{refused}");
    }

    #[test]
    fn attempts_begun_together_are_kept_until_different_instants() {
        let retention = Duration::from_secs(86_400);
        let expiries: std::collections::HashSet<i64> = (0..100)
            .map(|n| {
                let attempt = AttemptStart { attempt: 1, created_at_ms: NOW, recovered: None };
                let request_id = format!("request-{n}");
                let (write, deadline) =
                    start_attempt(Expect::Absent, attempt, &command(1), &request_id, NOW, retention);
                let expiry = write.record.expect("a new attempt writes its record").0.expires_at_ms;
                assert!((deadline + 86_400_000..=deadline + 86_400_000 + 600_000).contains(&expiry));
                expiry
            })
            .collect();
        assert!(expiries.len() > 90, "only {} distinct expiries", expiries.len());
    }

    #[test]
    fn expiry_is_spread_but_never_early() {
        let day = Duration::from_secs(86_400);
        let expiries: std::collections::HashSet<i64> = (0..100u8)
            .map(|n| spread_expiry(NOW, day, &Record { fingerprint: vec![n; 32], ..record(State::Completed) }))
            .collect();
        assert!(expiries.len() > 90, "only {} distinct expiries", expiries.len());
        assert!(expiries.iter().all(|e| (NOW + 86_400_000..=NOW + 86_400_000 + 600_000).contains(e)));
    }
}

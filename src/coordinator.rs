//! The state machine of DESIGN.md: who may perform a side effect, and what a
//! retry is told. Decisions are pure functions of a [`Snapshot`]; the
//! [`Coordinator`] applies them with conditional etcd writes and re-decides
//! whenever a write loses a race.
//!
//! Invariant: an in-progress record is never rewritten, so its etcd
//! mod_revision is the fencing token of its attempt, and "the record still has
//! that mod_revision" is the one ownership check for Complete, Fail and Extend.
//! Every takeover rewrites the record, which makes every older token stale.

use std::time::Duration;

use rand::Rng;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::cache::{AttemptCache, ReplayCache, replay_of};
use crate::config::Limits;
use crate::error::Error;
use crate::proto::storage::{StoredLock, StoredRecord, StoredState};
use crate::proto::v1::{self, begin_response::Outcome};
use crate::request::{BeginCommand, CompleteCommand, ExtendCommand, FailCommand, RecordId};
use crate::store::{
    EtcdStore, Expect, LeaseWant, RecordKeys, RecordLease, Snapshot, Versioned, Write, Written, etcd::FORMAT, now_ms,
};

/// How far past its deadline an attempt's lock lease may run. Only cleanup
/// depends on it: takeover follows the deadline stored in the lock.
const LOCK_LEASE_SLACK: Duration = Duration::from_secs(2);

/// How many attempts handed out by this replica are remembered for a
/// read-free Complete (a few hundred bytes each).
const ATTEMPT_CACHE_ENTRIES: u64 = 100_000;

/// The longest `retry_after` suggested to a caller that found the record busy.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(1);

/// What a Begin should do, given what the store holds.
#[derive(Debug, Clone, PartialEq)]
enum BeginDecision {
    /// No record: create attempt 1.
    Create,
    /// Answer with this outcome: a replay, or the caller's own live attempt.
    Answer(Outcome),
    /// Another owner holds a live lease.
    Busy(v1::InProgress),
    /// Start a new attempt over the existing record (a takeover, or a fresh
    /// start over an expired record that etcd has not deleted yet).
    Replace { attempt: u32, created_at_ms: i64, recovered: Option<v1::Recovery> },
}

fn decide_begin(
    snapshot: &Snapshot,
    command: &BeginCommand,
    request_id: &str,
    now: i64,
) -> Result<BeginDecision, Error> {
    let Some(record) = snapshot.record.as_ref() else { return Ok(BeginDecision::Create) };
    let stored = &record.value;
    if stored.expires_at_ms <= now {
        return Ok(BeginDecision::Replace { attempt: 1, created_at_ms: now, recovered: None });
    }
    if stored.fingerprint != command.fingerprint {
        return Err(Error::KeyReused { attempt: stored.attempt });
    }
    let replace = |reason: v1::RecoveryReason, last_error: Option<v1::Error>| BeginDecision::Replace {
        attempt: stored.attempt + 1,
        created_at_ms: stored.created_at_ms,
        recovered: Some(v1::Recovery {
            reason: reason as i32,
            previous_attempt: stored.attempt,
            previous_owner: stored.owner.clone(),
            last_error,
        }),
    };
    Ok(match stored.state() {
        StoredState::Completed | StoredState::Failed => {
            BeginDecision::Answer(replay_of(stored).expect("terminal records have a replay"))
        }
        StoredState::Released => replace(v1::RecoveryReason::Released, stored.error.clone()),
        StoredState::InProgress | StoredState::Unspecified => {
            let live_deadline = snapshot.lock.as_ref().map(|l| l.value.deadline_ms).filter(|&d| d > now);
            match live_deadline {
                None => replace(v1::RecoveryReason::Abandoned, None),
                Some(deadline) if stored.request_id == request_id => {
                    BeginDecision::Answer(Outcome::Acquired(v1::Acquired {
                        fencing_token: record.mod_revision as u64,
                        attempt: stored.attempt,
                        lease_expires_at: Some(timestamp(deadline)),
                        recovered: stored.recovered.clone(),
                    }))
                }
                Some(deadline) => BeginDecision::Busy(v1::InProgress {
                    owner: stored.owner.clone(),
                    attempt: stored.attempt,
                    lease_expires_at: Some(timestamp(deadline)),
                    retry_after: Some(duration(
                        Duration::from_millis((deadline - now) as u64)
                            .clamp(Duration::from_millis(50), MAX_RETRY_AFTER),
                    )),
                }),
            }
        }
    })
}

/// How a Complete or Fail ends an attempt.
#[derive(Debug, Clone)]
enum Finish {
    Complete { result: v1::Result, retention: Duration },
    Fail { error: v1::Error, retention: Duration },
    Release { error: v1::Error },
}

impl Finish {
    fn state(&self) -> StoredState {
        match self {
            Finish::Complete { .. } => StoredState::Completed,
            Finish::Fail { .. } => StoredState::Failed,
            Finish::Release { .. } => StoredState::Released,
        }
    }

    /// Whether `stored`, finished by the same token, is what this call would
    /// have written (so a repeated call is answered with it).
    fn matches(&self, stored: &StoredRecord) -> bool {
        stored.state() == self.state()
            && match self {
                Finish::Complete { result, .. } => stored.result.as_ref() == Some(result),
                Finish::Fail { error, .. } | Finish::Release { error } => stored.error.as_ref() == Some(error),
            }
    }
}

pub struct Coordinator {
    store: EtcdStore,
    limits: Limits,
    replays: ReplayCache,
    attempts: AttemptCache,
    /// Cancelled when the server starts draining, so that waiting Begins
    /// answer with what they know instead of holding up the shutdown.
    draining: CancellationToken,
}

impl Coordinator {
    pub fn new(store: EtcdStore, limits: Limits, replay_cache_bytes: u64, draining: CancellationToken) -> Self {
        Self {
            store,
            limits,
            replays: ReplayCache::new(replay_cache_bytes),
            attempts: AttemptCache::new(ATTEMPT_CACHE_ENTRIES),
            draining,
        }
    }

    /// The record and lock to decide on: this replica's own record of the
    /// attempt holding `token` if it has one (the write's compare on the token
    /// still decides), otherwise a read.
    async fn snapshot_for_token(&self, keys: &RecordKeys, token: u64, deadline: Instant) -> Result<Snapshot, Error> {
        match self.attempts.get(&keys.record, token) {
            Some(value) => Ok(Snapshot {
                revision: token as i64,
                record: Some(Versioned { value, mod_revision: token as i64 }),
                lock: None,
            }),
            None => self.store.read(keys, deadline).await,
        }
    }

    pub async fn begin(&self, command: &BeginCommand, deadline: Instant) -> Result<Outcome, Error> {
        let deadline = self.store.operation_deadline(deadline, command.wait);
        let keys = self.store.keys(&command.id);
        // Without a caller-sent request_id, make one: our own retries of an
        // ambiguous write then recognise the attempt they created.
        let request_id =
            if command.request_id.is_empty() { uuid::Uuid::new_v4().to_string() } else { command.request_id.clone() };
        let wait_until = deadline.min(Instant::now() + command.wait);
        let new_attempt = |attempt, created_at_ms, recovered| {
            let now = now_ms();
            let lease_deadline = now + command.lease_ttl.as_millis() as i64;
            let record = StoredRecord {
                format: FORMAT,
                state: StoredState::InProgress as i32,
                attempt,
                owner: command.owner.clone(),
                request_id: request_id.clone(),
                fingerprint: command.fingerprint.to_vec(),
                created_at_ms,
                updated_at_ms: now,
                // An abandoned attempt's record is kept as long as a finished one.
                expires_at_ms: lease_deadline + self.limits.default_retention.as_millis() as i64,
                finished_token: 0,
                result: None,
                error: None,
                recovered,
            };
            let record_lease = RecordLease::Until(retention_lease(record.expires_at_ms, self.limits.default_retention));
            let lock = StoredLock { format: FORMAT, deadline_ms: lease_deadline };
            let lock_lease = LeaseWant { until_ms: lease_deadline, slack: LOCK_LEASE_SLACK };
            (Some((record, record_lease)), Some(Some((lock, lock_lease))), lease_deadline)
        };

        if let Some(replay) = self.replays.get(&keys.record, &command.fingerprint, now_ms()) {
            return replay;
        }
        let (record, lock, mut lease_deadline) = new_attempt(1, now_ms(), None);
        let mut attempt = 1;
        let mut recovered = None;
        let mut waited = false;
        let mut pending = Write { expect: Expect::Absent, record, lock };
        let mut written = self.store.write(&keys, &pending, deadline).await?;
        loop {
            let snapshot = match written {
                Written::Committed { revision } => {
                    if let Some((stored, _)) = pending.record.take() {
                        self.attempts.remember(&keys.record, revision as u64, stored);
                    }
                    return Ok(Outcome::Acquired(v1::Acquired {
                        fencing_token: revision as u64,
                        attempt,
                        lease_expires_at: Some(timestamp(lease_deadline)),
                        recovered,
                    }));
                }
                Written::Conflict(snapshot) => snapshot,
            };
            let (expect, next_attempt, created_at_ms, next_recovered) =
                match decide_begin(&snapshot, command, &request_id, now_ms())? {
                    BeginDecision::Answer(outcome) => {
                        if let Some(record) = &snapshot.record {
                            self.replays.remember(&keys.record, &record.value);
                        }
                        return Ok(outcome);
                    }
                    BeginDecision::Create => (Expect::Absent, 1, now_ms(), None),
                    BeginDecision::Replace { attempt, created_at_ms, recovered } => {
                        let expect = Expect::Unchanged {
                            record_revision: snapshot.record.as_ref().map(|r| r.mod_revision).unwrap_or_default(),
                            lock_revision: snapshot.lock.as_ref().map(|l| l.mod_revision),
                        };
                        (expect, attempt, created_at_ms, recovered)
                    }
                    BeginDecision::Busy(in_progress) => {
                        if Instant::now() >= wait_until || self.draining.is_cancelled() {
                            return Ok(Outcome::InProgress(in_progress));
                        }
                        if !waited {
                            metrics::counter!(crate::metrics::WAITS).increment(1);
                            waited = true;
                        }
                        if !self.wait_for_change(&keys, &snapshot, wait_until).await? {
                            // Nothing changed: what we know is still the answer,
                            // and the deadline leaves no time to read again.
                            return Ok(Outcome::InProgress(in_progress));
                        }
                        written = Written::Conflict(Box::new(self.store.read(&keys, deadline).await?));
                        continue;
                    }
                };
            debug!(attempt = next_attempt, "starting a new attempt over the record");
            let (record, lock, next_deadline) = new_attempt(next_attempt, created_at_ms, next_recovered.clone());
            (attempt, recovered, lease_deadline) = (next_attempt, next_recovered, next_deadline);
            pending = Write { expect, record, lock };
            written = self.store.write(&keys, &pending, deadline).await?;
        }
    }

    /// Waits until the record or its lock changes or its lock's deadline
    /// passes (true: decide again), or until `until` or a drain (false:
    /// nothing changed). Watches etcd rather than polling; a watch that breaks
    /// counts as a change, so the caller re-reads.
    async fn wait_for_change(&self, keys: &RecordKeys, snapshot: &Snapshot, until: Instant) -> Result<bool, Error> {
        let lock_deadline = snapshot.lock.as_ref().map(|l| l.value.deadline_ms).unwrap_or_default();
        let lapse_at = Instant::now() + Duration::from_millis((lock_deadline - now_ms()).max(0) as u64 + 1);
        let wake_at = until.min(lapse_at);
        let lapses_first = lapse_at < until;
        let mut stream = match self.store.watch(keys, snapshot.revision, wake_at).await {
            Ok(stream) => stream,
            Err(_) if Instant::now() >= wake_at => return Ok(lapses_first),
            Err(error) => return Err(error),
        };
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(wake_at) => return Ok(lapses_first),
                _ = self.draining.cancelled() => return Ok(false),
                message = stream.message() => match message {
                    Ok(Some(response)) if response.events().is_empty() && !response.canceled() => continue,
                    Ok(_) => return Ok(true),
                    Err(error) => {
                        debug!(%error, "watch broke; re-reading");
                        // Do not spin if etcd keeps breaking the stream.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        return Ok(true);
                    }
                },
            }
        }
    }

    pub async fn complete(&self, command: CompleteCommand, deadline: Instant) -> Result<v1::Record, Error> {
        let finish = Finish::Complete { result: command.result, retention: command.retention };
        self.finish(&command.id, command.fencing_token, finish, deadline).await
    }

    pub async fn fail(&self, command: FailCommand, deadline: Instant) -> Result<v1::Record, Error> {
        let finish = if command.retryable {
            Finish::Release { error: command.error }
        } else {
            Finish::Fail { error: command.error, retention: command.retention }
        };
        self.finish(&command.id, command.fencing_token, finish, deadline).await
    }

    async fn finish(&self, id: &RecordId, token: u64, finish: Finish, deadline: Instant) -> Result<v1::Record, Error> {
        let deadline = self.store.operation_deadline(deadline, Duration::ZERO);
        let keys = self.store.keys(id);
        let mut snapshot = self.snapshot_for_token(&keys, token, deadline).await?;
        loop {
            let now = now_ms();
            let record = live_record(&snapshot, now)?;
            if !owns(record, token) {
                // A repeat of the call that finished the record gets the record.
                return match not_owner(&record.value, token, |stored| finish.matches(stored)) {
                    Some(error) => Err(error),
                    None => Ok(record_view(record, None)),
                };
            }
            let mut stored = StoredRecord {
                state: finish.state() as i32,
                updated_at_ms: now,
                finished_token: token,
                ..record.value.clone()
            };
            let lease = match &finish {
                Finish::Complete { result, retention } => {
                    stored.result = Some(result.clone());
                    stored.expires_at_ms = spread_expiry(now, *retention);
                    RecordLease::Until(retention_lease(stored.expires_at_ms, *retention))
                }
                Finish::Fail { error, retention } => {
                    stored.error = Some(error.clone());
                    stored.expires_at_ms = spread_expiry(now, *retention);
                    RecordLease::Until(retention_lease(stored.expires_at_ms, *retention))
                }
                // A released record keeps the expiry (and lease) of the
                // attempt it ended: it is abandoned unless someone takes over.
                Finish::Release { error } => {
                    stored.error = Some(error.clone());
                    RecordLease::Keep
                }
            };
            let write = Write { expect: Expect::Token(token), record: Some((stored.clone(), lease)), lock: Some(None) };
            match self.store.write(&keys, &write, deadline).await? {
                Written::Committed { revision } => {
                    self.attempts.forget(&keys.record);
                    self.replays.remember(&keys.record, &stored);
                    return Ok(record_view(&Versioned { value: stored, mod_revision: revision }, None));
                }
                Written::Conflict(latest) => snapshot = *latest,
            }
        }
    }

    pub async fn extend(&self, command: ExtendCommand, deadline: Instant) -> Result<prost_types::Timestamp, Error> {
        let deadline = self.store.operation_deadline(deadline, Duration::ZERO);
        let keys = self.store.keys(&command.id);
        let mut snapshot = self.snapshot_for_token(&keys, command.fencing_token, deadline).await?;
        loop {
            let now = now_ms();
            let record = live_record(&snapshot, now)?;
            if !owns(record, command.fencing_token) {
                // Nothing is "the same Extend" once the attempt has finished.
                let error = not_owner(&record.value, command.fencing_token, |_| false);
                return Err(error.unwrap_or(Error::LeaseLost { current_attempt: record.value.attempt }));
            }
            let lease_deadline = now + command.lease_ttl.as_millis() as i64;
            if lease_deadline > record.value.expires_at_ms {
                return Err(Error::invalid(
                    "lease_ttl",
                    format!(
                        "would run the lease past the record's expiry at {}; an attempt must finish within the retention period",
                        timestamp(record.value.expires_at_ms)
                    ),
                ));
            }
            let lock = StoredLock { format: FORMAT, deadline_ms: lease_deadline };
            let lock_lease = LeaseWant { until_ms: lease_deadline, slack: LOCK_LEASE_SLACK };
            let write = Write {
                expect: Expect::Token(command.fencing_token),
                record: None,
                lock: Some(Some((lock, lock_lease))),
            };
            match self.store.write(&keys, &write, deadline).await? {
                Written::Committed { .. } => return Ok(timestamp(lease_deadline)),
                Written::Conflict(latest) => snapshot = *latest,
            }
        }
    }

    pub async fn lookup(&self, id: &RecordId, deadline: Instant) -> Result<v1::Record, Error> {
        let keys = self.store.keys(id);
        let snapshot = self.store.read(&keys, deadline).await?;
        let record = live_record(&snapshot, now_ms())?;
        Ok(record_view(record, snapshot.lock.as_ref()))
    }
}

/// The record, unless it is missing or past its expiry (etcd deletes expired
/// records a little after their expiry; callers must not see the difference).
fn live_record(snapshot: &Snapshot, now: i64) -> Result<&Versioned<StoredRecord>, Error> {
    snapshot.record.as_ref().filter(|r| r.value.expires_at_ms > now).ok_or(Error::NotFound)
}

/// Whether `token` is the attempt in progress on `record`. A lapsed lease does
/// not matter: if nobody took over, the late owner's word is the truth.
fn owns(record: &Versioned<StoredRecord>, token: u64) -> bool {
    record.value.state() == StoredState::InProgress && record.mod_revision as u64 == token
}

/// Why the holder of `token` may not finish `stored`: `LeaseLost` if another
/// attempt owns or finished it, `AlreadyFinished` if this token finished it
/// differently, and `None` if `same` says the call repeats that finish.
fn not_owner(stored: &StoredRecord, token: u64, same: impl Fn(&StoredRecord) -> bool) -> Option<Error> {
    let finished_by_token = stored.state() != StoredState::InProgress && stored.finished_token == token;
    if !finished_by_token {
        return Some(Error::LeaseLost { current_attempt: stored.attempt });
    }
    if same(stored) {
        None
    } else {
        Some(Error::AlreadyFinished { attempt: stored.attempt, state: state_name(stored.state()) })
    }
}

fn state_name(state: StoredState) -> &'static str {
    match state {
        StoredState::Completed => "COMPLETED",
        StoredState::Failed => "FAILED",
        StoredState::Released => "RELEASED",
        StoredState::InProgress | StoredState::Unspecified => "IN_PROGRESS",
    }
}

/// The public view of a stored record.
fn record_view(record: &Versioned<StoredRecord>, lock: Option<&Versioned<StoredLock>>) -> v1::Record {
    let stored = &record.value;
    let (state, fencing_token) = match stored.state() {
        StoredState::Completed => (v1::State::Completed, stored.finished_token),
        StoredState::Failed => (v1::State::Failed, stored.finished_token),
        StoredState::Released => (v1::State::InProgress, stored.finished_token),
        StoredState::InProgress | StoredState::Unspecified => (v1::State::InProgress, record.mod_revision as u64),
    };
    let lease_expires_at =
        lock.filter(|_| stored.state() == StoredState::InProgress).map(|l| timestamp(l.value.deadline_ms));
    v1::Record {
        state: state as i32,
        attempt: stored.attempt,
        owner: stored.owner.clone(),
        fencing_token,
        lease_expires_at,
        fingerprint: stored.fingerprint.clone(),
        created_at: Some(timestamp(stored.created_at_ms)),
        updated_at: Some(timestamp(stored.updated_at_ms)),
        expires_at: Some(timestamp(stored.expires_at_ms)),
        result: stored.result.clone(),
        error: stored.error.clone(),
    }
}

/// The end of a retention period that starts now, moved later by up to 2%
/// (at most 10 minutes) so that records finished together do not all expire
/// in the same instant.
fn spread_expiry(now: i64, retention: Duration) -> i64 {
    let spread = (retention.as_millis() as i64 / 50).min(600_000);
    now + retention.as_millis() as i64 + rand::rng().random_range(0..=spread)
}

/// Records expiring within a 1% window (2 s to 60 s) share one etcd lease.
fn retention_lease(expires_at_ms: i64, retention: Duration) -> LeaseWant {
    LeaseWant {
        until_ms: expires_at_ms,
        slack: (retention / 100).clamp(Duration::from_secs(2), Duration::from_secs(60)),
    }
}

pub fn timestamp(unix_ms: i64) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: unix_ms.div_euclid(1000), nanos: (unix_ms.rem_euclid(1000) * 1_000_000) as i32 }
}

fn duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration { seconds: d.as_secs() as i64, nanos: d.subsec_nanos() as i32 }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_000_000;

    fn command(fingerprint: u8) -> BeginCommand {
        BeginCommand {
            id: RecordId { tenant: "t".into(), namespace: "ns".into(), key: "k".into() },
            fingerprint: [fingerprint; 32],
            lease_ttl: Duration::from_secs(5),
            wait: Duration::ZERO,
            owner: "me".into(),
            request_id: String::new(),
        }
    }

    fn stored(state: StoredState) -> StoredRecord {
        StoredRecord {
            format: FORMAT,
            state: state as i32,
            attempt: 2,
            owner: "worker-a".into(),
            request_id: "req-a".into(),
            fingerprint: vec![1; 32],
            created_at_ms: NOW - 10_000,
            updated_at_ms: NOW - 1_000,
            expires_at_ms: NOW + 60_000,
            error: Some(v1::Error { code: "timeout".into(), ..Default::default() }),
            ..Default::default()
        }
    }

    fn snapshot(state: StoredState, lock_deadline: Option<i64>) -> Snapshot {
        Snapshot {
            revision: 50,
            record: Some(Versioned { value: stored(state), mod_revision: 42 }),
            lock: lock_deadline
                .map(|deadline_ms| Versioned { value: StoredLock { format: FORMAT, deadline_ms }, mod_revision: 43 }),
        }
    }

    fn decide(snapshot: &Snapshot, fingerprint: u8, request_id: &str) -> Result<BeginDecision, Error> {
        decide_begin(snapshot, &command(fingerprint), request_id, NOW)
    }

    #[test]
    fn no_record_means_create() {
        assert_eq!(decide(&Snapshot::default(), 1, "r").unwrap(), BeginDecision::Create);
    }

    #[test]
    fn a_live_lock_is_busy_for_others_and_reacquired_by_its_request_id() {
        let busy = snapshot(StoredState::InProgress, Some(NOW + 3_000));
        match decide(&busy, 1, "someone-else").unwrap() {
            BeginDecision::Busy(in_progress) => {
                assert_eq!((in_progress.owner.as_str(), in_progress.attempt), ("worker-a", 2));
                assert_eq!(in_progress.retry_after, Some(duration(MAX_RETRY_AFTER)));
            }
            other => panic!("expected Busy, got {other:?}"),
        }
        match decide(&busy, 1, "req-a").unwrap() {
            BeginDecision::Answer(Outcome::Acquired(acquired)) => assert_eq!(acquired.fencing_token, 42),
            other => panic!("expected the same acquisition, got {other:?}"),
        }
    }

    #[test]
    fn a_lapsed_or_missing_lock_is_taken_over_as_abandoned() {
        for lock in [None, Some(NOW), Some(NOW - 1)] {
            match decide(&snapshot(StoredState::InProgress, lock), 1, "req-b").unwrap() {
                BeginDecision::Replace { attempt: 3, recovered: Some(recovery), .. } => {
                    assert_eq!(recovery.reason(), v1::RecoveryReason::Abandoned);
                    assert_eq!((recovery.previous_attempt, recovery.previous_owner.as_str()), (2, "worker-a"));
                    assert_eq!(recovery.last_error, None);
                }
                other => panic!("expected a takeover, got {other:?}"),
            }
        }
    }

    #[test]
    fn a_released_record_is_taken_over_with_its_error() {
        match decide(&snapshot(StoredState::Released, None), 1, "req-b").unwrap() {
            BeginDecision::Replace { attempt: 3, recovered: Some(recovery), created_at_ms } => {
                assert_eq!(recovery.reason(), v1::RecoveryReason::Released);
                assert_eq!(recovery.last_error.map(|e| e.code), Some("timeout".to_string()));
                assert_eq!(created_at_ms, NOW - 10_000);
            }
            other => panic!("expected a takeover, got {other:?}"),
        }
    }

    #[test]
    fn terminal_records_replay() {
        assert!(matches!(
            decide(&snapshot(StoredState::Completed, None), 1, "x"),
            Ok(BeginDecision::Answer(Outcome::Completed(_)))
        ));
        assert!(matches!(
            decide(&snapshot(StoredState::Failed, None), 1, "x"),
            Ok(BeginDecision::Answer(Outcome::Failed(_)))
        ));
    }

    #[test]
    fn a_different_fingerprint_is_refused_in_every_state() {
        for state in [StoredState::InProgress, StoredState::Completed, StoredState::Failed, StoredState::Released] {
            for lock in [None, Some(NOW + 3_000)] {
                assert!(
                    matches!(decide(&snapshot(state, lock), 9, "req-a"), Err(Error::KeyReused { attempt: 2 })),
                    "{state:?} with lock {lock:?}"
                );
            }
        }
    }

    #[test]
    fn an_expired_record_is_new_again_whatever_its_fingerprint() {
        let mut expired = snapshot(StoredState::Completed, None);
        expired.record.as_mut().unwrap().value.expires_at_ms = NOW;
        assert_eq!(
            decide(&expired, 9, "x").unwrap(),
            BeginDecision::Replace { attempt: 1, created_at_ms: NOW, recovered: None }
        );
    }

    #[test]
    fn only_the_current_attempt_owns_the_record() {
        let record = Versioned { value: stored(StoredState::InProgress), mod_revision: 42 };
        assert!(owns(&record, 42));
        assert!(!owns(&record, 41));
        let finished = Versioned { value: stored(StoredState::Completed), mod_revision: 42 };
        assert!(!owns(&finished, 42));
    }

    #[test]
    fn repeating_a_finish_is_recognised_and_a_different_one_is_not() {
        let mut completed = stored(StoredState::Completed);
        completed.finished_token = 42;
        assert!(not_owner(&completed, 42, |_| true).is_none());
        assert!(matches!(not_owner(&completed, 42, |_| false), Some(Error::AlreadyFinished { .. })));
        assert!(matches!(not_owner(&completed, 41, |_| true), Some(Error::LeaseLost { current_attempt: 2 })));
    }

    #[test]
    fn expiry_is_spread_but_never_early() {
        let day = Duration::from_secs(86_400);
        let expiries: std::collections::HashSet<i64> = (0..100).map(|_| spread_expiry(NOW, day)).collect();
        assert!(expiries.len() > 90, "only {} distinct expiries", expiries.len());
        assert!(expiries.iter().all(|e| (NOW + 86_400_000..=NOW + 86_400_000 + 600_000).contains(e)));
    }

    #[test]
    fn timestamps_convert_exactly() {
        assert_eq!(timestamp(1_500), prost_types::Timestamp { seconds: 1, nanos: 500_000_000 });
        assert_eq!(timestamp(-1), prost_types::Timestamp { seconds: -1, nanos: 999_000_000 });
    }
}

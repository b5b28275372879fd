//! A store in one process's memory, with the semantics of the etcd store:
//! store-wide revisions that grow with every change (so fencing tokens grow
//! per record), values that vanish when their lease runs out by the
//! [`Clock`], and watches.
//!
//! For local development, client tests and the conformance suite: records
//! are lost when the process exits and are not shared between replicas.
//! Expired values are removed on the next call to the store, and a lock also
//! when its lease runs out, as etcd's leader revokes leases by itself: a
//! waiting Begin hears of a freed lock from its watch, whatever its own
//! clock says.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::{broadcast, watch};
use tokio::time::Instant;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::{BroadcastStream, IntervalStream, WatchStream};

use crate::core::clock::Clock;
use crate::core::error::Error;
use crate::core::record::{Lock, Record, RecordId, Snapshot, Versioned};
use crate::core::store::{
    Capacity, Changes, FEED_ALIVE_EVERY, FeedEvent, Forgotten, LeaseWant, Listing, LockChange, Page, RecordLease,
    RecordStore, Scan, ShardState, Write, Written,
};

pub struct MemoryStore {
    clock: Arc<dyn Clock>,
    // A std Mutex, not a tokio one: nothing awaits while it is held.
    state: Arc<Mutex<State>>,
    forgotten: broadcast::Sender<RecordId>,
}

/// Forgotten ids a slow follower may fall behind by before it must drop every replay.
const FORGOTTEN_BACKLOG: usize = 1024;

#[derive(Default)]
struct State {
    /// The revision of the latest change, store-wide.
    revision: i64,
    entries: HashMap<RecordId, Entry>,
    /// When each stored value runs out, soonest first.
    expiries: BTreeSet<(i64, Part, RecordId)>,
    shard_state: Option<Versioned<ShardState>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Part {
    Record,
    Lock,
}

/// One record's values, and the revision of its latest change for watchers.
struct Entry {
    record: Option<Stored<Record>>,
    lock: Option<Stored<Lock>>,
    changed: watch::Sender<i64>,
}

struct Stored<T> {
    value: Versioned<T>,
    expires_at_ms: i64,
}

impl MemoryStore {
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self::starting_at(clock, 0)
    }

    /// A store whose first change gets revision `revision + 1`, as an etcd
    /// cluster with a history does: two clusters' revisions then differ (the
    /// simulation runs shards both ways).
    pub fn starting_at(clock: Arc<dyn Clock>, revision: i64) -> Self {
        let state = State { revision, ..State::default() };
        Self { clock, state: Arc::new(Mutex::new(state)), forgotten: broadcast::Sender::new(FORGOTTEN_BACKLOG) }
    }

    fn write_unless_moved(&self, id: &RecordId, write: &Write, fence: Option<i64>) -> Result<Written, Error> {
        let mut state = self.state();
        if fence.is_some_and(|fence| state.shard_state.as_ref().map_or(0, |s| s.revision) != fence) {
            return Err(Error::ShardStateMoved);
        }
        let snapshot = state.snapshot(id);
        if !write.expect.holds(&snapshot) {
            return Ok(Written::Conflict(Box::new(snapshot)));
        }
        let revision = state.apply(id, write, self.clock.now_ms())?;
        if let LockChange::Put { lease, .. } = &write.lock {
            self.expire_after(lease.lasts);
        }
        Ok(Written::Committed { revision })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        lock_and_expire(&self.state, self.clock.as_ref())
    }

    /// Removes a lock when its lease runs out, so that its watchers hear of
    /// it then (a few hundred bytes for one sleeping task per lock).
    fn expire_after(&self, lasts: Duration) {
        let (state, clock) = (Arc::downgrade(&self.state), self.clock.clone());
        tokio::spawn(async move {
            tokio::time::sleep(lasts).await;
            if let Some(state) = Weak::upgrade(&state) {
                drop(lock_and_expire(&state, clock.as_ref()));
            }
        });
    }
}

fn scan_token(id: &RecordId) -> String {
    serde_json::json!([id.tenant, id.namespace, id.key]).to_string()
}

fn parse_scan_token(token: &str) -> Result<RecordId, Error> {
    let [tenant, namespace, key]: [String; 3] = serde_json::from_str(token)
        .map_err(|_| Error::invalid("page_token", format!("{token:?} is not a token this server gave")))?;
    Ok(RecordId { tenant, namespace, key })
}

fn lock_and_expire<'a>(state: &'a Mutex<State>, clock: &dyn Clock) -> std::sync::MutexGuard<'a, State> {
    let mut state = state.lock().expect("memory store lock poisoned");
    state.expire(clock.now_ms());
    state
}

impl State {
    /// Removes every value whose lease has run out by `now_ms`, each removal
    /// a change at a revision of its own.
    fn expire(&mut self, now_ms: i64) {
        while let Some((at, part, id)) = self.expiries.first().cloned() {
            if at > now_ms {
                return;
            }
            self.expiries.pop_first();
            self.revision += 1;
            let revision = self.revision;
            let Some(entry) = self.entries.get_mut(&id) else { continue };
            match part {
                Part::Record => entry.record = None,
                Part::Lock => entry.lock = None,
            }
            entry.changed.send_replace(revision);
            if entry.record.is_none() && entry.lock.is_none() {
                // Dropping the sender ends the watches, which then re-read.
                self.entries.remove(&id);
            }
        }
    }

    fn snapshot(&self, id: &RecordId) -> Snapshot {
        let entry = self.entries.get(id);
        Snapshot {
            revision: self.revision,
            record: entry.and_then(|e| e.record.as_ref()).map(|s| s.value.clone()),
            lock: entry.and_then(|e| e.lock.as_ref()).map(|s| s.value.clone()),
        }
    }

    /// Applies `write` at `now_ms`, on the store's own clock.
    fn apply(&mut self, id: &RecordId, write: &Write, now_ms: i64) -> Result<i64, Error> {
        let ends = |want: &LeaseWant| now_ms + want.lasts.as_millis() as i64;
        let old_expiry = self.entries.get(id).and_then(|e| e.record.as_ref()).map(|s| s.expires_at_ms);
        let new_expiry = match &write.record {
            None => None,
            Some((_, RecordLease::Until(want))) => Some(ends(want)),
            // etcd refuses the same: "ignore_lease" on a key that does not exist.
            Some((_, RecordLease::Keep)) => Some(
                old_expiry
                    .ok_or_else(|| Error::Internal("a write kept the lease of a record that does not exist".into()))?,
            ),
        };
        self.revision += 1;
        let revision = self.revision;
        let entry = self.entries.entry(id.clone()).or_insert_with(|| Entry {
            record: None,
            lock: None,
            changed: watch::Sender::new(revision),
        });
        if let (Some((record, _)), Some(expires_at_ms)) = (&write.record, new_expiry) {
            entry.record = Some(Stored { value: Versioned { value: record.clone(), revision }, expires_at_ms });
            if let Some(old) = old_expiry {
                self.expiries.remove(&(old, Part::Record, id.clone()));
            }
            self.expiries.insert((expires_at_ms, Part::Record, id.clone()));
        }
        let old_lock_expiry = entry.lock.as_ref().map(|s| s.expires_at_ms);
        match &write.lock {
            LockChange::Keep => {}
            LockChange::Put { lock, lease } => {
                let expires_at_ms = ends(lease);
                entry.lock = Some(Stored { value: Versioned { value: *lock, revision }, expires_at_ms });
                if let Some(old) = old_lock_expiry {
                    self.expiries.remove(&(old, Part::Lock, id.clone()));
                }
                self.expiries.insert((expires_at_ms, Part::Lock, id.clone()));
            }
            LockChange::Delete => {
                entry.lock = None;
                if let Some(old) = old_lock_expiry {
                    self.expiries.remove(&(old, Part::Lock, id.clone()));
                }
            }
        }
        entry.changed.send_replace(revision);
        if entry.record.is_none() && entry.lock.is_none() {
            self.entries.remove(id);
        }
        Ok(revision)
    }
}

impl RecordStore for MemoryStore {
    async fn read(&self, id: &RecordId, _deadline: Instant) -> Result<Snapshot, Error> {
        Ok(self.state().snapshot(id))
    }

    async fn write(&self, id: &RecordId, write: &Write, _deadline: Instant) -> Result<Written, Error> {
        self.write_unless_moved(id, write, None)
    }

    async fn write_fenced(
        &self,
        id: &RecordId,
        write: &Write,
        fence: i64,
        _deadline: Instant,
    ) -> Result<Written, Error> {
        self.write_unless_moved(id, write, Some(fence))
    }

    async fn shard_state(&self, _deadline: Instant) -> Result<Option<Versioned<ShardState>>, Error> {
        Ok(self.state().shard_state.clone())
    }

    async fn put_shard_state(&self, expected: i64, shard_state: ShardState, _deadline: Instant) -> Result<bool, Error> {
        let mut state = self.state();
        if state.shard_state.as_ref().map_or(0, |s| s.revision) != expected {
            return Ok(false);
        }
        state.revision += 1;
        state.shard_state = Some(Versioned { value: shard_state, revision: state.revision });
        Ok(true)
    }

    /// In id order; the token is the last id listed, as JSON.
    async fn record_lease_left(
        &self,
        id: &RecordId,
        record_revision: i64,
        _deadline: Instant,
    ) -> Result<Option<Duration>, Error> {
        let state = self.state();
        let stored =
            state.entries.get(id).and_then(|e| e.record.as_ref()).filter(|s| s.value.revision == record_revision);
        Ok(stored.map(|s| Duration::from_millis((s.expires_at_ms - self.clock.now_ms()).max(0) as u64)))
    }

    async fn scan(&self, after: &str, limit: usize, _deadline: Instant) -> Result<Scan, Error> {
        let after: Option<RecordId> = match after {
            "" => None,
            token => Some(parse_scan_token(token)?),
        };
        let state = self.state();
        let mut ids: Vec<&RecordId> =
            state.entries.keys().filter(|id| after.as_ref().is_none_or(|a| *id > a)).collect();
        ids.sort();
        let more = ids.len() > limit;
        ids.truncate(limit);
        let entries: Vec<_> = ids
            .into_iter()
            .map(|id| (id.clone(), state.entries[id].record.as_ref().map(|r| r.value.clone())))
            .collect();
        let next = more.then(|| entries.last().map(|(id, _)| scan_token(id))).flatten();
        Ok(Scan { entries, next })
    }

    async fn watch(&self, id: &RecordId, after_revision: i64, _deadline: Instant) -> Result<Changes, Error> {
        let state = self.state();
        let Some(entry) = state.entries.get(id) else {
            // Nothing stored: whatever was there has gone since.
            return Ok(Box::pin(tokio_stream::iter([Ok(state.revision)])));
        };
        let changes = WatchStream::new(entry.changed.subscribe()).filter(move |r| *r > after_revision).map(Ok);
        Ok(Box::pin(changes))
    }

    async fn ping(&self, _within: Duration) -> Result<Capacity, Error> {
        Ok(Capacity::Writable)
    }

    /// Keys in byte order; the token is the last key listed.
    async fn list(&self, page: &Page, _deadline: Instant) -> Result<Listing, Error> {
        let (state, limit) = (self.state(), page.limit.max(1));
        let mut records: Vec<_> = state
            .entries
            .iter()
            .filter(|(id, _)| id.tenant == page.tenant && id.namespace == page.namespace && id.key > page.after)
            .filter_map(|(id, entry)| {
                let record = entry.record.as_ref()?.value.clone();
                Some((id.key.clone(), record, entry.lock.as_ref().map(|l| l.value.clone())))
            })
            .collect();
        records.sort_by(|a, b| a.0.cmp(&b.0));
        let next = (records.len() > limit).then(|| records[limit - 1].0.clone());
        records.truncate(limit);
        Ok(Listing { records, next })
    }

    async fn forget(&self, id: &RecordId, record_revision: i64, _deadline: Instant) -> Result<Option<i64>, Error> {
        let mut state = self.state();
        let snapshot = state.snapshot(id);
        let unchanged = snapshot.record.as_ref().is_some_and(|r| r.revision == record_revision);
        if !unchanged || snapshot.lock.is_some() {
            return Ok(None);
        }
        state.revision += 1;
        let revision = state.revision;
        if let Some(entry) = state.entries.remove(id) {
            entry.changed.send_replace(revision);
            if let Some(record) = entry.record {
                state.expiries.remove(&(record.expires_at_ms, Part::Record, id.clone()));
            }
        }
        // Nobody following is no error: there is no replica to tell.
        let _ = self.forgotten.send(id.clone());
        Ok(Some(revision))
    }

    /// One source, alive every [`FEED_ALIVE_EVERY`]; a follower that fell
    /// behind the backlog hears a restart.
    fn forgotten(&self) -> Forgotten {
        let heard = BroadcastStream::new(self.forgotten.subscribe()).map(|forgotten| match forgotten {
            Ok(id) => FeedEvent::Forgotten(id),
            Err(_) => FeedEvent::Restarted,
        });
        let alive = IntervalStream::new(tokio::time::interval(FEED_ALIVE_EVERY)).map(FeedEvent::Alive);
        Forgotten { sources: 1, events: Box::pin(heard.merge(alive).map(|event| (0, event))) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::clock::TokioClock;
    use crate::core::record::State;
    use crate::core::store::Expect;

    fn id() -> RecordId {
        RecordId { tenant: "t".into(), namespace: "ns".into(), key: "k".into() }
    }

    fn record() -> Record {
        Record {
            state: State::InProgress,
            attempt: 1,
            owner: String::new(),
            request_id: String::new(),
            fingerprint: vec![],
            member_digests: vec![],
            created_at_ms: 0,
            updated_at_ms: 0,
            expires_at_ms: 0,
            finished_token: 0,
            result: None,
            error: None,
            recovered: None,
            token_generation: 0,
            moved_token: 0,
            moved_in_epoch: 0,
        }
    }

    fn lease(lasts_ms: u64) -> LeaseWant {
        LeaseWant { lasts: Duration::from_millis(lasts_ms), slack: Duration::from_secs(2) }
    }

    #[tokio::test(start_paused = true)]
    async fn a_lapsed_lock_is_gone_and_its_watchers_hear_of_it() {
        let clock = Arc::new(TokioClock::new());
        let store = MemoryStore::new(clock.clone());
        let now = clock.now_ms();
        let write = Write {
            expect: Expect::Absent,
            record: Some((record(), RecordLease::Until(lease(60_000)))),
            lock: LockChange::Put { lock: Lock { deadline_ms: now + 2_000, lease_ms: 2_000 }, lease: lease(2_000) },
        };
        let Written::Committed { revision } = store.write(&id(), &write, Instant::now()).await.unwrap() else {
            panic!("the first write commits")
        };
        let mut changes = store.watch(&id(), revision, Instant::now()).await.unwrap();
        tokio::time::advance(Duration::from_millis(2_000)).await;
        let snapshot = store.read(&id(), Instant::now()).await.unwrap();
        assert!(snapshot.lock.is_none(), "the lock outlived its lease");
        assert_eq!(snapshot.record.map(|r| r.revision), Some(revision));
        assert_eq!(changes.next().await.map(|c| c.unwrap()), Some(revision + 1));
    }

    #[tokio::test]
    async fn keeping_the_lease_of_a_missing_record_is_refused() {
        let store = MemoryStore::new(Arc::new(TokioClock::new()));
        let write =
            Write { expect: Expect::Absent, record: Some((record(), RecordLease::Keep)), lock: LockChange::Keep };
        assert!(matches!(store.write(&id(), &write, Instant::now()).await, Err(Error::Internal(_))));
        assert_eq!(store.read(&id(), Instant::now()).await.unwrap(), Snapshot::default());
    }
}

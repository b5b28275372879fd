//! What the coordinator needs from a store, and no more: read a record and
//! its lock with their revisions, write them under a condition, watch one
//! record for changes, and say whether the store answers. Implementations
//! live in [`crate::store`]; every one passes the same conformance suite
//! (`tests/conformance`).
//!
//! The contract every implementation keeps:
//! - Revisions grow strictly with every write, store-wide; a record's
//!   revision is the fencing token of the attempt that wrote it.
//! - A write either happens entirely, when its [`Expect`] holds, or not at
//!   all, and then answers with what the store holds instead.
//! - A value written with a lease is there for every read until `lasts` has
//!   passed since the write and gone for reads after `lasts + slack`. Leases
//!   are durations, never instants, so no replica's clock decides when a
//!   value goes: only the store's (etcd: its leader's). Its removal is a
//!   change that watches see, possibly late (etcd's leader revokes leases
//!   when it gets to them), so the core never waits on a watch alone for a
//!   deadline to pass.
//! - Retrying a call whose outcome was unknown is safe: the coordinator
//!   recognises its own earlier write on a second look.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tokio::time::Instant;
use tokio_stream::Stream;

use crate::core::error::Error;
use crate::core::record::{Lock, Record, RecordId, Snapshot, Versioned};

/// How long a value must live, from its write: it must not vanish before
/// `lasts` and may outlive it by at most `slack`, which lets values that end at
/// about the same time share one store lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseWant {
    pub lasts: Duration,
    pub slack: Duration,
}

/// What a record and its lock must look like for a write to go ahead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// There is no record and no lock: a lock that outlived its record
    /// (an Extend can run it past the record's lease when the replica that
    /// wrote the record had a fast clock) still holds the key.
    Absent,
    /// The record and its lock are exactly as at these revisions (`None`:
    /// no lock).
    Unchanged { record_revision: i64, lock_revision: Option<i64> },
    /// The record has not changed since the attempt holding this token
    /// began.
    Token(u64),
}

impl Expect {
    /// Whether a write expecting this would go ahead on `snapshot`.
    pub fn holds(self, snapshot: &Snapshot) -> bool {
        let record_revision = snapshot.record.as_ref().map(|r| r.revision);
        let lock_revision = snapshot.lock.as_ref().map(|l| l.revision);
        match self {
            Expect::Absent => record_revision.is_none() && lock_revision.is_none(),
            Expect::Unchanged { record_revision: expected_record, lock_revision: expected_lock } => {
                record_revision.unwrap_or(0) == expected_record && lock_revision == expected_lock
            }
            Expect::Token(token) => record_revision == Some(token as i64),
        }
    }
}

/// How long a written record lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordLease {
    Until(LeaseWant),
    /// As long as the record already lives.
    Keep,
}

/// What a write does to the lock.
#[derive(Debug, Clone, PartialEq)]
pub enum LockChange {
    /// Leave it as it is.
    Keep,
    /// Put this lock, living as `lease` says.
    Put {
        lock: Lock,
        lease: LeaseWant,
    },
    Delete,
}

/// One conditional write: what to expect, then what to change.
#[derive(Debug, Clone, PartialEq)]
pub struct Write {
    pub expect: Expect,
    /// `None` leaves the record as it is.
    pub record: Option<(Record, RecordLease)>,
    pub lock: LockChange,
}

/// The outcome of a conditional write.
#[derive(Debug, Clone, PartialEq)]
pub enum Written {
    /// The write happened at this revision.
    Committed { revision: i64 },
    /// The condition did not hold; this is what the store holds instead.
    Conflict(Box<Snapshot>),
}

/// Whether a store that answers also takes writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Capacity {
    Writable,
    /// It serves reads but refuses writes until an operator frees space.
    Full(String),
}

/// The revisions at which a watched record or its lock changed. The stream
/// ending, or an error, means changes may have been missed: read again.
pub type Changes = Pin<Box<dyn Stream<Item = Result<i64, Error>> + Send>>;

/// Which page of one namespace's records to list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub tenant: String,
    pub namespace: String,
    /// Empty: from the first record; else a [`Listing::next`] this store gave.
    pub after: String,
    pub limit: usize,
}

/// A page of one namespace's records, in the store's order.
#[derive(Debug, Clone, Default)]
pub struct Listing {
    /// (key, record, its lock if any).
    pub records: Vec<(String, Versioned<Record>, Option<Versioned<Lock>>)>,
    /// Where the next page starts (a token only this store reads); None after the last.
    pub next: Option<String>,
}

/// What a replica hears from one source of its feed of forgotten records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeedEvent {
    /// This record was forgotten, on any replica.
    Forgotten(RecordId),
    /// The source had delivered everything up to this instant: when the
    /// feed asked etcd for a progress notification (after a linearizable
    /// read, so a member without a leader does not count), not when the
    /// answer came, so a link that delivers late does not look fresh.
    Alive(Instant),
    /// The source's feed (re)started: records may have been forgotten unheard.
    Restarted,
}

/// Records forgotten by any replica, as they happen, from `sources`
/// independent sources (a sharded store's shards; events carry their
/// source's index). Each source says it is [`FeedEvent::Alive`] at least
/// every [`FEED_ALIVE_EVERY`] while it works; one that falls silent may be
/// cut off (a dead connection delivers nothing and reports nothing), so
/// replays are served from memory only while every source has been heard
/// from within [`FEED_SILENCE_LIMIT`].
pub struct Forgotten {
    pub sources: usize,
    pub events: Pin<Box<dyn Stream<Item = (usize, FeedEvent)> + Send>>,
}

/// Where a shard is in the changes of its shard map, kept in the shard
/// itself so that every replica sees the same (see `store::sharded`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardState {
    /// The rollout step replicas have reached on this shard: 3 x epoch for
    /// a settled map, one more once the next map is announced, one less
    /// (3 x the new epoch - 1) once it is switched to.
    pub step: u64,
    /// The high bits of the fencing tokens of records written here
    /// ([`crate::core::record::Record::token_generation`]): raised past
    /// every other shard's when this shard receives records in a map change.
    pub generation: u64,
    /// A replica of the switch step found no record left where the new map
    /// will not look: the map may settle.
    pub settle_checked: bool,
    /// The placements of the map that brought the shard to its step, by
    /// epoch (a digest of each one's shard names): two maps with one epoch
    /// but other shards are refused, not run side by side.
    pub placements: Vec<(u64, String)>,
}

/// Where a sharded store's map change stands (`shards status`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MapStatus {
    /// The step the replica that answers acts at.
    pub replica_step: String,
    pub shards: Vec<ShardStatus>,
    /// At the switch step: records (or lone locks) on a shard other than
    /// their home under the new map, forwarding records aside.
    pub left_behind: u64,
    /// Finished records this call moved to their new home.
    pub migrated: u64,
    /// The latest `expires_at` among them, when known.
    pub last_expires_at_ms: Option<i64>,
    /// Nothing is left behind: replicas may move to the settled map.
    pub settle_safe: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShardStatus {
    pub name: String,
    pub step: String,
    pub generation: u64,
    pub settle_checked: bool,
}

/// One page of every record of a store, whatever its tenant and namespace.
#[derive(Debug, Clone, Default)]
pub struct Scan {
    /// Each id with its record (None: only a lock is there).
    pub entries: Vec<(RecordId, Option<Versioned<Record>>)>,
    /// Where the next page starts; None after the last.
    pub next: Option<String>,
}

/// How often a working feed says it is alive.
pub const FEED_ALIVE_EVERY: Duration = Duration::from_secs(1);

/// How long a feed may be silent before cached replays stop being served:
/// the bound on how long a replica may replay a record after it was
/// forgotten (README, "Admin").
pub const FEED_SILENCE_LIMIT: Duration = Duration::from_secs(3);

pub trait RecordStore: Send + Sync + 'static {
    /// The record and its lock, linearizably: a read after any committed
    /// write, on any replica, sees it.
    fn read(&self, id: &RecordId, deadline: Instant) -> impl Future<Output = Result<Snapshot, Error>> + Send;

    /// Performs `write` if its expectation holds.
    fn write(
        &self,
        id: &RecordId,
        write: &Write,
        deadline: Instant,
    ) -> impl Future<Output = Result<Written, Error>> + Send;

    /// Changes to the record or its lock after `after_revision`.
    fn watch(
        &self,
        id: &RecordId,
        after_revision: i64,
        deadline: Instant,
    ) -> impl Future<Output = Result<Changes, Error>> + Send;

    /// Whether the store answers within `within` (the readiness check), and
    /// whether it takes writes.
    fn ping(&self, within: Duration) -> impl Future<Output = Result<Capacity, Error>> + Send;

    /// Up to `page.limit` records of the page's tenant and namespace.
    fn list(&self, page: &Page, deadline: Instant) -> impl Future<Output = Result<Listing, Error>> + Send;

    /// Deletes the record if it is still the one at `record_revision` and has
    /// no lock, and tells every replica's [`Self::forgotten`] feed: the
    /// revision of the delete, or None if the record changed meanwhile.
    fn forget(
        &self,
        id: &RecordId,
        record_revision: i64,
        deadline: Instant,
    ) -> impl Future<Output = Result<Option<i64>, Error>> + Send;

    /// The feed of forgotten records, from now on, for as long as it is held.
    fn forgotten(&self) -> Forgotten;

    /// The shard state and the revision that wrote it. Only stores a
    /// sharded store is built on keep one.
    fn shard_state(
        &self,
        _deadline: Instant,
    ) -> impl Future<Output = Result<Option<Versioned<ShardState>>, Error>> + Send {
        async { keeps_no_shard_state() }
    }

    /// Puts `state` if the stored one is still the one at `expected`
    /// (0: none); whether it did.
    fn put_shard_state(
        &self,
        _expected: i64,
        _state: ShardState,
        _deadline: Instant,
    ) -> impl Future<Output = Result<bool, Error>> + Send {
        async { keeps_no_shard_state() }
    }

    /// [`Self::write`], only while the shard state is still the one at
    /// `fence` (0: none); else [`Error::ShardStateMoved`] and nothing written.
    fn write_fenced(
        &self,
        _id: &RecordId,
        _write: &Write,
        _fence: i64,
        _deadline: Instant,
    ) -> impl Future<Output = Result<Written, Error>> + Send {
        async { keeps_no_shard_state() }
    }

    /// Where the map change stands, for a sharded store; None for others.
    /// With `migrate`, finished records left behind are moved first.
    fn map_status(
        &self,
        _migrate: bool,
        _deadline: Instant,
    ) -> impl Future<Output = Result<Option<MapStatus>, Error>> + Send {
        async { Ok(None) }
    }

    /// How much longer the store keeps `id`'s record, measured by the store
    /// itself (its lease's time to live), if the record is still the one
    /// at `record_revision`. A map change's migration gives a record's copy
    /// that long: no replica's clock is asked.
    fn record_lease_left(
        &self,
        _id: &RecordId,
        _record_revision: i64,
        _deadline: Instant,
    ) -> impl Future<Output = Result<Option<Duration>, Error>> + Send {
        async { keeps_no_shard_state() }
    }

    /// Up to `limit` records (or lone locks) of every tenant and namespace,
    /// after `after` (empty, or a [`Scan::next`] this store gave).
    fn scan(
        &self,
        _after: &str,
        _limit: usize,
        _deadline: Instant,
    ) -> impl Future<Output = Result<Scan, Error>> + Send {
        async { keeps_no_shard_state() }
    }
}

/// What a store that no sharded store is built on answers to the shard
/// calls: a sharded store never makes them on one.
fn keeps_no_shard_state<T>() -> Result<T, Error> {
    Err(Error::Internal("this store keeps no shard state and cannot scan".into()))
}

//! One simulated etcd cluster, and each replica's link to it.
//!
//! A [`Cluster`] is the real [`MemoryStore`] on the simulation's true clock:
//! one revision counter, linearizable compare-and-put writes, leases that
//! lapse by the cluster's (its leader's) clock, and watches. What etcd adds
//! on top and the coordinator must survive lives here: the cluster can be
//! down, and its writes can be ambiguous (applied, then the answer lost).
//!
//! A [`Link`] is one replica's client of one cluster, with that replica's
//! own faults: latency on every call (so that calls interleave), watches
//! that lag, and a feed of forgotten records that can break (and say so) or
//! go silent (a dead TCP connection: no end, no error, just nothing).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use idempotency_coordinator::core::error::Error;
use idempotency_coordinator::core::record::{RecordId, Snapshot, Versioned};
use idempotency_coordinator::core::store::{
    Capacity, Changes, Expect, FeedEvent, Forgotten, Listing, Page, RecordStore, Scan, ShardState, Write, Written,
};
use idempotency_coordinator::store::memory::MemoryStore;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;
use tokio_stream::StreamExt;

/// A fence turned off on purpose, to show that the simulation notices
/// (the mutation check).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mutation {
    /// Complete, Fail and Extend write whatever token they hold.
    TokenCompare,
    /// A takeover ignores a lock written since it read the record.
    LockCompare,
    /// Replicas never hear that a record was forgotten (the feed is alive
    /// otherwise).
    ForgetFeed,
    /// Writes go ahead whatever the shard's map state now says.
    ShardFence,
    /// Records keep token generation 0: tokens are bare revisions again.
    TokenGenerations,
    /// A shard counts as checked for settling without any check.
    SettleCheck,
}

impl Mutation {
    pub fn name(self) -> &'static str {
        match self {
            Mutation::TokenCompare => "token-compare",
            Mutation::LockCompare => "lock-compare",
            Mutation::ForgetFeed => "forget-feed",
            Mutation::ShardFence => "shard-fence",
            Mutation::TokenGenerations => "token-generations",
            Mutation::SettleCheck => "settle-check",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "token-compare" => Some(Mutation::TokenCompare),
            "lock-compare" => Some(Mutation::LockCompare),
            "forget-feed" => Some(Mutation::ForgetFeed),
            "shard-fence" => Some(Mutation::ShardFence),
            "token-generations" => Some(Mutation::TokenGenerations),
            "settle-check" => Some(Mutation::SettleCheck),
            _ => None,
        }
    }
}

pub struct Cluster {
    pub name: String,
    store: MemoryStore,
    down: AtomicBool,
    /// While set, about one write in four is applied and then answered
    /// with an error, as when etcd commits but the reply is lost.
    flaky: AtomicBool,
    mutation: Option<Mutation>,
}

impl Cluster {
    pub fn new(name: &str, store: MemoryStore, mutation: Option<Mutation>) -> Self {
        Self { name: name.into(), store, down: AtomicBool::new(false), flaky: AtomicBool::new(false), mutation }
    }

    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::Relaxed);
    }

    pub fn set_flaky(&self, flaky: bool) {
        self.flaky.store(flaky, Ordering::Relaxed);
    }

    fn check_up(&self) -> Result<(), Error> {
        if self.down.load(Ordering::Relaxed) {
            return Err(Error::StoreUnavailable(format!("cluster {} is down", self.name)));
        }
        Ok(())
    }

    /// What the cluster holds for `id`, read by the simulation itself (the
    /// operator's view), never through a replica.
    pub async fn peek(&self, id: &RecordId) -> Snapshot {
        self.store.read(id, Instant::now()).await.expect("the memory store always answers")
    }

    /// `write` as the coordinator meant it, or with this cluster's mutation.
    async fn mutated(&self, id: &RecordId, write: &Write) -> Write {
        let mut write = write.clone();
        let current = || async { self.store.read(id, Instant::now()).await.expect("memory store") };
        match (self.mutation, write.expect) {
            (Some(Mutation::TokenCompare), Expect::Token(_)) => {
                let snapshot = current().await;
                write.expect = Expect::Unchanged {
                    record_revision: snapshot.record.map_or(0, |r| r.revision),
                    lock_revision: snapshot.lock.map(|l| l.revision),
                };
            }
            (Some(Mutation::LockCompare), Expect::Unchanged { record_revision, .. }) => {
                let snapshot = current().await;
                write.expect = Expect::Unchanged { record_revision, lock_revision: snapshot.lock.map(|l| l.revision) };
            }
            (Some(Mutation::TokenGenerations), _) => {
                if let Some((record, _)) = &mut write.record {
                    record.token_generation = 0;
                }
            }
            _ => {}
        }
        write
    }
}

/// Holds `item` while the link is silent: a connection that stops
/// delivering loses nothing, it delivers late (or breaks, which the plan
/// models as a restart of the feed).
async fn held_while_silent<T>(faults: Arc<LinkFaults>, item: T) -> T {
    while faults.silent.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    item
}

/// Faults of one replica's link to one cluster, switched by the plan.
#[derive(Default)]
pub struct LinkFaults {
    /// Watches deliver nothing (the connection is dead but not closed).
    pub silent: AtomicBool,
    /// How late watch events arrive, in milliseconds.
    pub watch_lag_ms: AtomicU64,
}

pub struct Link {
    pub cluster: Arc<Cluster>,
    pub faults: Arc<LinkFaults>,
    rng: Mutex<StdRng>,
    /// Senders of a break (a `None`) into this link's feeds of forgotten records.
    breaks: Mutex<Vec<tokio::sync::mpsc::UnboundedSender<()>>>,
}

impl Link {
    pub fn new(cluster: Arc<Cluster>, seed: u64) -> Self {
        Self { cluster, faults: Arc::default(), rng: Mutex::new(StdRng::seed_from_u64(seed)), breaks: Mutex::default() }
    }

    /// The feed of forgotten records breaks (and resumes): replicas must
    /// then drop every cached replay.
    pub fn break_feed(&self) {
        self.breaks.lock().expect("breaks").retain(|sender| sender.send(()).is_ok());
    }

    /// A call's network and etcd time: mostly a few milliseconds, sometimes
    /// long enough for other calls to overtake it.
    async fn latency(&self) {
        let delay = {
            let mut rng = self.rng.lock().expect("link rng");
            if rng.random_range(0..20) == 0 { rng.random_range(100..400) } else { rng.random_range(0..15) }
        };
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }

    fn reply_lost(&self) -> bool {
        self.cluster.flaky.load(Ordering::Relaxed) && self.rng.lock().expect("link rng").random_range(0..4) == 0
    }
}

impl Link {
    async fn write_unless_moved(
        &self,
        id: &RecordId,
        write: &Write,
        fence: Option<i64>,
        deadline: Instant,
    ) -> Result<Written, Error> {
        self.latency().await;
        self.cluster.check_up()?;
        let write = self.cluster.mutated(id, write).await;
        let written = match fence.filter(|_| self.cluster.mutation != Some(Mutation::ShardFence)) {
            Some(fence) => self.cluster.store.write_fenced(id, &write, fence, deadline).await?,
            None => self.cluster.store.write(id, &write, deadline).await?,
        };
        if self.reply_lost() {
            return Err(Error::StoreUnavailable("the reply was lost".into()));
        }
        self.latency().await;
        Ok(written)
    }
}

impl RecordStore for Link {
    async fn read(&self, id: &RecordId, deadline: Instant) -> Result<Snapshot, Error> {
        self.latency().await;
        self.cluster.check_up()?;
        let snapshot = self.cluster.store.read(id, deadline).await;
        self.latency().await;
        snapshot
    }

    async fn write(&self, id: &RecordId, write: &Write, deadline: Instant) -> Result<Written, Error> {
        self.write_unless_moved(id, write, None, deadline).await
    }

    async fn write_fenced(
        &self,
        id: &RecordId,
        write: &Write,
        fence: i64,
        deadline: Instant,
    ) -> Result<Written, Error> {
        self.write_unless_moved(id, write, Some(fence), deadline).await
    }

    async fn shard_state(&self, deadline: Instant) -> Result<Option<Versioned<ShardState>>, Error> {
        self.latency().await;
        self.cluster.check_up()?;
        let state = self.cluster.store.shard_state(deadline).await;
        self.latency().await;
        state
    }

    async fn put_shard_state(&self, expected: i64, mut state: ShardState, deadline: Instant) -> Result<bool, Error> {
        if self.cluster.mutation == Some(Mutation::SettleCheck) {
            state.settle_checked = true;
        }
        self.latency().await;
        self.cluster.check_up()?;
        let put = self.cluster.store.put_shard_state(expected, state, deadline).await?;
        if self.reply_lost() {
            return Err(Error::StoreUnavailable("the reply was lost".into()));
        }
        self.latency().await;
        Ok(put)
    }

    async fn record_lease_left(
        &self,
        id: &RecordId,
        record_revision: i64,
        deadline: Instant,
    ) -> Result<Option<Duration>, Error> {
        self.latency().await;
        self.cluster.check_up()?;
        let left = self.cluster.store.record_lease_left(id, record_revision, deadline).await;
        self.latency().await;
        left
    }

    async fn scan(&self, after: &str, limit: usize, deadline: Instant) -> Result<Scan, Error> {
        self.latency().await;
        self.cluster.check_up()?;
        self.cluster.store.scan(after, limit, deadline).await
    }

    async fn watch(&self, id: &RecordId, after_revision: i64, deadline: Instant) -> Result<Changes, Error> {
        self.latency().await;
        self.cluster.check_up()?;
        let changes = self.cluster.store.watch(id, after_revision, deadline).await?;
        let faults = self.faults.clone();
        let changes = changes.then(move |change| held_while_silent(faults.clone(), change)).then({
            let faults = self.faults.clone();
            move |change| {
                let lag = faults.watch_lag_ms.load(Ordering::Relaxed);
                async move {
                    tokio::time::sleep(Duration::from_millis(lag)).await;
                    change
                }
            }
        });
        Ok(Box::pin(changes))
    }

    async fn ping(&self, _within: Duration) -> Result<Capacity, Error> {
        self.cluster.check_up()?;
        Ok(Capacity::Writable)
    }

    async fn list(&self, page: &Page, deadline: Instant) -> Result<Listing, Error> {
        self.latency().await;
        self.cluster.check_up()?;
        self.cluster.store.list(page, deadline).await
    }

    async fn forget(&self, id: &RecordId, record_revision: i64, deadline: Instant) -> Result<Option<i64>, Error> {
        self.latency().await;
        self.cluster.check_up()?;
        let forgotten = self.cluster.store.forget(id, record_revision, deadline).await;
        self.latency().await;
        forgotten
    }

    /// The cluster's feed as this replica hears it: without its forgets
    /// under the forget-feed mutation; nothing at all while the link is
    /// silent (no end, no error, no progress), then everything held back, in
    /// order, as TCP delivers it; a restart whenever the plan breaks it.
    fn forgotten(&self) -> Forgotten {
        let (sender, breaks) = tokio::sync::mpsc::unbounded_channel();
        self.breaks.lock().expect("breaks").push(sender);
        let (faults, mutation) = (self.faults.clone(), self.cluster.mutation);
        let heard = self
            .cluster
            .store
            .forgotten()
            .events
            .filter(move |(_, event)| {
                mutation != Some(Mutation::ForgetFeed) || !matches!(event, FeedEvent::Forgotten(_))
            })
            .then(move |event| held_while_silent(faults.clone(), event));
        let breaks = tokio_stream::wrappers::UnboundedReceiverStream::new(breaks).map(|()| (0, FeedEvent::Restarted));
        Forgotten { sources: 1, events: Box::pin(heard.merge(breaks)) }
    }
}

//! The apply loops: each call decides on what the store holds
//! ([`crate::core::decide`]), writes under the condition that nothing changed,
//! and decides again whenever the write loses a race. Waiting Begins watch
//! the record rather than poll it.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::core::cache::{AttemptCache, ReplayCache};
use crate::core::clock::Clock;
use crate::core::command::{BeginCommand, CompleteCommand, ExtendCommand, FailCommand};
use crate::core::decide::{self, BeginDecision, Finish};
use crate::core::error::Error;
use crate::core::limits::Limits;
use crate::core::outcome::{Acquired, BeginOutcome, RecordView};
use crate::core::record::{Record, RecordId, Snapshot, State, Versioned};
use crate::core::store::{FEED_SILENCE_LIMIT, FeedEvent, MapStatus, Page, RecordLease, RecordStore, Written};
use crate::core::wait_shares::WaitShares;

/// Memory for the attempts handed out by this replica, remembered for a
/// read-free Complete (a few hundred bytes each; up to ~33 KiB with a
/// recovered error).
const ATTEMPT_CACHE_BYTES: u64 = 32 * 1024 * 1024;

/// What a coordinator is configured with, beside its store and clock.
#[derive(Debug, Clone)]
pub struct Settings {
    pub limits: Limits,
    /// Memory for replays served without a store read (0: none).
    pub replay_cache_bytes: u64,
    /// The longest one operation may spend on store calls (lost races
    /// re-decided, transient errors retried), on top of a Begin's wait.
    pub request_timeout: Duration,
    /// The most Begins of one tenant that may wait at once; more answer
    /// `in_progress` at once, so that one tenant's waits cannot hold every
    /// in-flight slot of the server.
    pub max_waits_per_tenant: usize,
    /// How far apart replicas' wall clocks may be: a replay read from the
    /// store is served from memory only until this long before the record's
    /// expiry on this replica's clock, so that a replica whose clock runs
    /// behind the writer's does not replay a record etcd has dropped (and
    /// a new request may have replaced). [`REPLAY_CLOCK_MARGIN`] in production.
    pub replay_clock_margin: Duration,
}

/// How far apart replica clocks may be before a replay cached from a read
/// could outlive its record (RELIABILITY.md, "Clocks").
pub const REPLAY_CLOCK_MARGIN: Duration = Duration::from_secs(60);

pub struct Coordinator<S> {
    store: Arc<S>,
    clock: Arc<dyn Clock>,
    settings: Settings,
    replays: ReplayCache,
    attempts: AttemptCache,
    /// Cancelled when the server starts draining, so that waiting Begins
    /// answer with what they know instead of holding up the shutdown.
    draining: CancellationToken,
    waits: WaitShares,
}

impl<S: RecordStore> Coordinator<S> {
    pub fn new(store: Arc<S>, clock: Arc<dyn Clock>, settings: Settings, draining: CancellationToken) -> Self {
        Self {
            store,
            clock,
            replays: ReplayCache::new(settings.replay_cache_bytes),
            attempts: AttemptCache::new(ATTEMPT_CACHE_BYTES, settings.limits.max_lease_ttl),
            settings,
            draining,
            waits: WaitShares::default(),
        }
    }

    /// When an operation that may spend `waiting` on purpose must be over:
    /// the caller's deadline, capped so that a loop of store calls can never
    /// outlast one request timeout plus the wait.
    fn operation_deadline(&self, deadline: Instant, waiting: Duration) -> Instant {
        deadline.min(Instant::now() + waiting + self.settings.request_timeout)
    }

    /// When a write that starts or extends a lease of `lease_ttl` must have
    /// committed: within half the lease, so that the caller told "you own
    /// it" still has at least that half to act. A write that commits later
    /// (etcd stalled, then resumed) leaves a lock whose deadline is near or
    /// past — an abandoned attempt nobody was told they own — and the caller
    /// gets UNAVAILABLE and retries.
    fn lease_bound(&self, deadline: Instant, lease_ttl: Duration) -> Instant {
        deadline.min(Instant::now() + lease_ttl / 2)
    }

    /// Refuses to hand out a lease with less than a quarter of it left: with
    /// [`Self::lease_bound`] that happens only if the clock jumped while the
    /// write was in flight.
    fn check_lease_left(&self, lease_deadline: i64, lease_ttl: Duration) -> Result<(), Error> {
        let now = self.clock.now_ms();
        if !decide::enough_lease_left(lease_deadline, now, lease_ttl) {
            let left = lease_deadline - now;
            return Err(Error::StoreUnavailable(format!(
                "the store committed too late: {left} ms of the {lease_ttl:?} lease left; retry"
            )));
        }
        Ok(())
    }

    /// The record and lock to decide on: this replica's own record of the
    /// attempt holding `token` if it has one (the write's compare on the token
    /// still decides), otherwise a read.
    async fn snapshot_for_token(&self, id: &RecordId, token: u64, deadline: Instant) -> Result<Snapshot, Error> {
        match self.attempts.get(id, token) {
            Some(value) => Ok(Snapshot {
                revision: token as i64,
                record: Some(Versioned { value, revision: token as i64 }),
                lock: None,
            }),
            None => self.store.read(id, deadline).await,
        }
    }

    /// Caches the replay of a terminal record read by a call that took
    /// `ticket` before it started reading, for as long as it surely lives:
    /// until its expiry on this replica's clock, less the margin for clocks
    /// that disagree with the writer's.
    fn remember_read(&self, id: &RecordId, record: &Record, ticket: u64) {
        let margin = self.settings.replay_clock_margin.as_millis() as i64;
        let left = record.expires_at_ms - self.clock.now_ms() - margin;
        self.replays.remember(id, record, ticket, Duration::from_millis(left.max(0) as u64));
    }

    pub async fn begin(&self, command: &BeginCommand, deadline: Instant) -> Result<BeginOutcome, Error> {
        let deadline = self.operation_deadline(deadline, command.wait);
        let id = &command.id;
        if let Some(replay) = self.replays.get(id, &command.fingerprint, &command.members) {
            return replay;
        }
        let ticket = self.replays.ticket();
        // Without a caller-sent request_id, make one: our own retries of an
        // ambiguous write then recognise the attempt they created.
        let request_id =
            if command.request_id.is_empty() { uuid::Uuid::new_v4().to_string() } else { command.request_id.clone() };
        let wait_until = deadline.min(Instant::now() + command.wait);
        // Taken on the first wait, held until this Begin answers.
        let mut wait_slot = None;
        // Most keys are new: try to create the record before reading it; a
        // conflict answers with what is there instead.
        let mut snapshot = Snapshot::default();
        loop {
            let now = self.clock.now_ms();
            let (expect, attempt) = match decide::decide_begin(&snapshot, command, &request_id, now)? {
                BeginDecision::Start { expect, attempt } => (expect, attempt),
                BeginDecision::HandBack { write, acquired } => {
                    match self.store.write(id, &write, self.lease_bound(deadline, command.lease_ttl)).await? {
                        Written::Committed { .. } => {
                            self.check_lease_left(acquired.lease_expires_at_ms, command.lease_ttl)?;
                            return Ok(BeginOutcome::Acquired(acquired));
                        }
                        Written::Conflict(latest) => {
                            snapshot = *latest;
                            continue;
                        }
                    }
                }
                BeginDecision::Answer(outcome) => {
                    if let Some(record) = &snapshot.record {
                        self.remember_read(id, &record.value, ticket);
                    }
                    return Ok(outcome);
                }
                BeginDecision::Busy(in_progress) => {
                    if Instant::now() >= wait_until || self.draining.is_cancelled() {
                        return Ok(BeginOutcome::InProgress(in_progress));
                    }
                    if wait_slot.is_none() {
                        wait_slot = self.waits.take(&id.tenant, self.settings.max_waits_per_tenant);
                        if wait_slot.is_none() {
                            metrics::counter!(WAITS_REFUSED).increment(1);
                            return Ok(BeginOutcome::InProgress(in_progress));
                        }
                        metrics::counter!(WAITS).increment(1);
                    }
                    // Boxed: a rare path whose large future need not be
                    // part of every Begin's (futures are moved by copying).
                    if !Box::pin(self.wait_for_change(id, &snapshot, wait_until)).await? {
                        // Nothing changed: what we know is still the answer,
                        // and the deadline leaves no time to read again.
                        return Ok(BeginOutcome::InProgress(in_progress));
                    }
                    snapshot = self.store.read(id, deadline).await?;
                    continue;
                }
            };
            if attempt.attempt > 1 {
                debug!(attempt = attempt.attempt, "starting a new attempt over the record");
            }
            let (attempt_number, recovered) = (attempt.attempt, attempt.recovered.clone());
            let (write, lease_deadline) = decide::start_attempt(
                expect,
                attempt,
                command,
                &request_id,
                now,
                self.settings.limits.default_retention,
            );
            match self.store.write(id, &write, self.lease_bound(deadline, command.lease_ttl)).await? {
                Written::Committed { revision } => {
                    self.check_lease_left(lease_deadline, command.lease_ttl)?;
                    if let Some((record, _)) = write.record {
                        self.attempts.remember(id, revision as u64, record);
                    }
                    return Ok(BeginOutcome::Acquired(Acquired {
                        fencing_token: revision as u64,
                        attempt: attempt_number,
                        lease_expires_at_ms: lease_deadline,
                        recovered,
                    }));
                }
                Written::Conflict(latest) => snapshot = *latest,
            }
        }
    }

    /// Waits until the record or its lock changes or its lock's deadline
    /// passes (true: decide again), or until `until` or a drain (false:
    /// nothing changed). A watch that breaks counts as a change, so the caller
    /// re-reads. The lock's removal is what frees the record, and watches
    /// may hear of it late: a lock still there past its deadline is looked at
    /// again every [`LAPSE_POLL`].
    async fn wait_for_change(&self, id: &RecordId, snapshot: &Snapshot, until: Instant) -> Result<bool, Error> {
        let lock_deadline = snapshot.lock.as_ref().map(|l| l.value.deadline_ms).unwrap_or_default();
        let until_lapse = Duration::from_millis((lock_deadline - self.clock.now_ms()).max(0) as u64 + 1);
        let lapse_at = Instant::now() + until_lapse.max(LAPSE_POLL);
        let wake_at = until.min(lapse_at);
        let lapses_first = lapse_at < until;
        let mut changes = match self.store.watch(id, snapshot.revision, wake_at).await {
            Ok(changes) => changes,
            Err(_) if Instant::now() >= wake_at => return Ok(lapses_first),
            Err(error) => return Err(error),
        };
        // Biased: polled in this order, not a random one, so that a seeded
        // simulation (tests/simulation) replays the same history.
        tokio::select! {
            biased;
            _ = tokio::time::sleep_until(wake_at) => Ok(lapses_first),
            _ = self.draining.cancelled() => Ok(false),
            change = changes.next() => {
                if let Some(Err(error)) = change {
                    debug!(%error, "watch broke; re-reading");
                    // Do not spin if the store keeps breaking the stream.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Ok(true)
            }
        }
    }

    pub async fn complete(&self, command: CompleteCommand, deadline: Instant) -> Result<RecordView, Error> {
        let finish = Finish::Complete { result: command.result, retention: command.retention };
        self.finish(&command.id, command.fencing_token, finish, deadline).await
    }

    pub async fn fail(&self, command: FailCommand, deadline: Instant) -> Result<RecordView, Error> {
        let finish = if command.retryable {
            Finish::Release { error: command.error }
        } else {
            Finish::Fail { error: command.error, retention: command.retention }
        };
        self.finish(&command.id, command.fencing_token, finish, deadline).await
    }

    async fn finish(&self, id: &RecordId, token: u64, finish: Finish, deadline: Instant) -> Result<RecordView, Error> {
        let deadline = self.operation_deadline(deadline, Duration::ZERO);
        let ticket = self.replays.ticket();
        let mut snapshot = self.snapshot_for_token(id, token, deadline).await?;
        loop {
            let now = self.clock.now_ms();
            let current = decide::live_record(&snapshot)?;
            if !decide::owns(current, token) {
                self.remember_read(id, &current.value, ticket);
                // A repeated release whose first answer was lost, taken over
                // since: it happened, so say so.
                if finish.was_released_before(&current.value, token) {
                    return Ok(decide::record_view(current, None));
                }
                // A repeat of the call that finished the record gets the record.
                return match decide::not_owner(&current.value, token, |record| finish.matches(record)) {
                    Some(error) => Err(error),
                    None => Ok(decide::record_view(current, None)),
                };
            }
            let write = finish.write(&current.value, token, now);
            let writing_since = Instant::now();
            match self.store.write(id, &write, deadline).await? {
                Written::Committed { revision } => {
                    let (record, lease) = write.record.expect("a finish writes the record");
                    self.attempts.forget(id);
                    // The store keeps it at least `lasts` from the write,
                    // which began after `writing_since`: no clock involved.
                    if let RecordLease::Until(lease) = lease {
                        let lives = (writing_since + lease.lasts).saturating_duration_since(Instant::now());
                        self.replays.remember(id, &record, ticket, lives);
                    }
                    return Ok(decide::record_view(&Versioned { value: record, revision }, None));
                }
                Written::Conflict(latest) => snapshot = *latest,
            }
        }
    }

    /// Moves the lease of the attempt holding the token; the new deadline.
    pub async fn extend(&self, command: ExtendCommand, deadline: Instant) -> Result<i64, Error> {
        let deadline = self.operation_deadline(deadline, Duration::ZERO);
        let mut snapshot = self.snapshot_for_token(&command.id, command.fencing_token, deadline).await?;
        loop {
            let now = self.clock.now_ms();
            let current = decide::live_record(&snapshot)?;
            if !decide::owns(current, command.fencing_token) {
                // Nothing is "the same Extend" once the attempt has finished.
                let error = decide::not_owner(&current.value, command.fencing_token, |_| false);
                return Err(error.unwrap_or(Error::LeaseLost { current_attempt: current.value.attempt }));
            }
            let (write, lease_deadline) =
                decide::extend(&current.value, command.fencing_token, command.lease_ttl, now)?;
            match self.store.write(&command.id, &write, self.lease_bound(deadline, command.lease_ttl)).await? {
                Written::Committed { .. } => {
                    self.check_lease_left(lease_deadline, command.lease_ttl)?;
                    return Ok(lease_deadline);
                }
                Written::Conflict(latest) => snapshot = *latest,
            }
        }
    }

    /// A page of a namespace's records, with each one's key, and where the next page starts.
    pub async fn list(
        &self,
        page: &Page,
        deadline: Instant,
    ) -> Result<(Vec<(String, RecordView)>, Option<String>), Error> {
        let deadline = self.operation_deadline(deadline, Duration::ZERO);
        let listing = self.store.list(page, deadline).await?;
        let records = listing
            .records
            .iter()
            .map(|(key, record, lock)| (key.clone(), decide::record_view(record, lock.as_ref())))
            .collect();
        Ok((records, listing.next))
    }

    /// Where a sharded store's map change stands (None: not sharded). At
    /// the switch step this scans every shard (with `migrate`, moving
    /// records no attempt holds to their new homes), and marks them ready to
    /// settle when no record is left where the settled map won't look.
    /// The caller's deadline bounds the whole pass, which reads every
    /// record; the store bounds each of its calls by its request timeout.
    pub async fn map_status(&self, migrate: bool, deadline: Instant) -> Result<Option<MapStatus>, Error> {
        self.store.map_status(migrate, deadline).await
    }

    /// Deletes a finished record, so that its key is new again, and drops
    /// its replay here; other replicas drop theirs from the store's feed
    /// ([`Self::follow_forgets`]). Answers the record as it was.
    pub async fn forget(&self, id: &RecordId, deadline: Instant) -> Result<RecordView, Error> {
        let deadline = self.operation_deadline(deadline, Duration::ZERO);
        loop {
            let snapshot = self.store.read(id, deadline).await?;
            let current = decide::live_record(&snapshot)?;
            let view = decide::record_view(current, snapshot.lock.as_ref());
            if !matches!(current.value.state, State::Completed | State::Failed) || snapshot.lock.is_some() {
                return Err(Error::RecordInProgress { attempt: current.value.attempt });
            }
            // None: it changed since the read (a repeated Complete, another forget); look again.
            if self.store.forget(id, current.revision, deadline).await?.is_some() {
                self.replays.forget(id);
                self.attempts.forget(id);
                return Ok(view);
            }
        }
    }

    /// Drops the replays of records forgotten on any replica, and lets the
    /// replay cache serve only while every source of the feed has been
    /// heard from within [`FEED_SILENCE_LIMIT`], for as long as the
    /// coordinator lives; the server starts it. Without it, no replay is
    /// served from memory.
    pub fn follow_forgets(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let (feed, coordinator) = (self.store.forgotten(), Arc::downgrade(self));
        tokio::spawn(async move {
            let (mut events, mut heard) = (feed.events, vec![None::<Instant>; feed.sources]);
            while let Some((source, event)) = events.next().await {
                let Some(coordinator) = coordinator.upgrade() else { return };
                let Some(slot) = heard.get_mut(source) else { continue };
                match event {
                    FeedEvent::Forgotten(id) => coordinator.replays.forget(&id),
                    FeedEvent::Alive(as_of) => *slot = Some(slot.map_or(as_of, |heard| heard.max(as_of))),
                    FeedEvent::Restarted => {
                        coordinator.replays.clear();
                        *slot = None;
                    }
                }
                // Every source must be fresh: one silent shard may hide a forget.
                let fresh_until = heard.iter().try_fold(None::<Instant>, |soonest, at| {
                    let until = (*at)? + FEED_SILENCE_LIMIT;
                    Some(Some(soonest.map_or(until, |s| s.min(until))))
                });
                coordinator.replays.serve_until(fresh_until.flatten());
            }
            if let Some(coordinator) = coordinator.upgrade() {
                coordinator.replays.serve_until(None);
            }
        })
    }

    pub async fn lookup(&self, id: &RecordId, deadline: Instant) -> Result<RecordView, Error> {
        let deadline = self.operation_deadline(deadline, Duration::ZERO);
        let ticket = self.replays.ticket();
        let snapshot = self.store.read(id, deadline).await?;
        let current = decide::live_record(&snapshot)?;
        // A terminal record read for any reason can answer replays from now on.
        self.remember_read(id, &current.value, ticket);
        Ok(decide::record_view(current, snapshot.lock.as_ref()))
    }
}

/// How often a waiting Begin looks again at a lock kept past its deadline.
const LAPSE_POLL: Duration = Duration::from_millis(250);

/// Begins that waited for another owner (a Prometheus counter).
pub const WAITS: &str = "idempotency_waits_total";

/// Begins told `in_progress` without waiting because their tenant already
/// had its share of waiters.
pub const WAITS_REFUSED: &str = "idempotency_waits_refused_total";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::clock::TokioClock;
    use crate::core::record::RecordId;
    use crate::store::memory::MemoryStore;

    fn begin(tenant: &str, wait: Duration) -> BeginCommand {
        BeginCommand {
            id: RecordId { tenant: tenant.into(), namespace: "ns".into(), key: "busy".into() },
            fingerprint: [1; 32],
            members: vec![],
            lease_ttl: Duration::from_secs(30),
            wait,
            owner: tenant.into(),
            request_id: String::new(),
        }
    }

    /// The wall clock, pushed forward by whatever the test says.
    #[derive(Default)]
    struct JumpingClock(std::sync::atomic::AtomicI64);

    impl Clock for JumpingClock {
        fn now_ms(&self) -> i64 {
            crate::core::clock::SystemClock.now_ms() + self.0.load(std::sync::atomic::Ordering::Relaxed)
        }
    }

    /// A memory store whose writes see the wall clock jump `jump_ms` ahead.
    struct ClockJumpingStore {
        inner: MemoryStore,
        clock: Arc<JumpingClock>,
        jump_ms: i64,
    }

    impl RecordStore for ClockJumpingStore {
        async fn read(&self, id: &RecordId, deadline: Instant) -> Result<Snapshot, Error> {
            self.inner.read(id, deadline).await
        }

        async fn write(
            &self,
            id: &RecordId,
            write: &crate::core::store::Write,
            deadline: Instant,
        ) -> Result<Written, Error> {
            let written = self.inner.write(id, write, deadline).await;
            self.clock.0.fetch_add(self.jump_ms, std::sync::atomic::Ordering::Relaxed);
            written
        }

        async fn watch(
            &self,
            id: &RecordId,
            after_revision: i64,
            deadline: Instant,
        ) -> Result<crate::core::store::Changes, Error> {
            self.inner.watch(id, after_revision, deadline).await
        }

        async fn ping(&self, within: Duration) -> Result<crate::core::store::Capacity, Error> {
            self.inner.ping(within).await
        }

        async fn list(&self, page: &Page, deadline: Instant) -> Result<crate::core::store::Listing, Error> {
            self.inner.list(page, deadline).await
        }

        async fn forget(&self, id: &RecordId, record_revision: i64, deadline: Instant) -> Result<Option<i64>, Error> {
            self.inner.forget(id, record_revision, deadline).await
        }

        fn forgotten(&self) -> crate::core::store::Forgotten {
            self.inner.forgotten()
        }
    }

    #[tokio::test]
    async fn a_lease_mostly_gone_by_the_time_it_committed_is_not_handed_out() {
        let clock = Arc::new(JumpingClock::default());
        let store = ClockJumpingStore { inner: MemoryStore::new(clock.clone()), clock: clock.clone(), jump_ms: 25_000 };
        let coordinator = Coordinator::new(Arc::new(store), clock, settings(), CancellationToken::new());
        let deadline = Instant::now() + Duration::from_secs(10);
        // A 30 s lease with 25 s of it gone while the write was in flight: refused.
        let refused = coordinator.begin(&begin("t", Duration::ZERO), deadline).await;
        assert!(matches!(refused, Err(Error::StoreUnavailable(_))), "{refused:?}");
    }

    fn settings() -> Settings {
        let limits = Limits {
            default_lease_ttl: Duration::from_secs(30),
            max_lease_ttl: Duration::from_secs(60),
            max_wait: Duration::from_secs(60),
            default_retention: Duration::from_secs(600),
            max_retention: Duration::from_secs(600),
            max_payload_bytes: 1024,
            max_result_bytes: 1024,
        };
        Settings {
            limits,
            replay_cache_bytes: 0,
            request_timeout: Duration::from_secs(5),
            max_waits_per_tenant: 2,
            replay_clock_margin: REPLAY_CLOCK_MARGIN,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn one_tenant_cannot_hold_more_than_its_share_of_waiters() {
        let clock = Arc::new(TokioClock::new());
        let store = Arc::new(MemoryStore::new(clock.clone()));
        let coordinator = Arc::new(Coordinator::new(store, clock, settings(), CancellationToken::new()));
        let deadline = Instant::now() + Duration::from_secs(60);
        for tenant in ["greedy", "modest"] {
            let first = coordinator.begin(&begin(tenant, Duration::ZERO), deadline).await.unwrap();
            assert!(matches!(first, BeginOutcome::Acquired(_)));
        }
        let waiter = |tenant: &'static str| {
            let coordinator = coordinator.clone();
            tokio::spawn(async move {
                let started = Instant::now();
                let outcome = coordinator.begin(&begin(tenant, Duration::from_secs(10)), deadline).await.unwrap();
                assert!(matches!(outcome, BeginOutcome::InProgress(_)));
                started.elapsed()
            })
        };
        let greedy: Vec<_> = (0..3).map(|_| waiter("greedy")).collect();
        let modest = waiter("modest");
        let mut waited: Vec<Duration> = Vec::new();
        for call in greedy {
            waited.push(call.await.unwrap());
        }
        waited.sort();
        assert_eq!(waited[0], Duration::ZERO, "the third waiter of one tenant must not wait: {waited:?}");
        assert!(waited[1..].iter().all(|w| *w >= Duration::from_secs(10)), "{waited:?}");
        assert!(modest.await.unwrap() >= Duration::from_secs(10), "another tenant still waits");
    }
}

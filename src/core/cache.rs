//! Two per-replica caches that save store round trips without changing any
//! answer.
//!
//! - [`ReplayCache`]: terminal records (COMPLETED, FAILED) cannot change until
//!   they expire, so a replica may answer replays from memory. Entries are
//!   bounded in bytes and served for as long as the caller says the record
//!   surely lives (on the monotonic clock, so a wall clock stepped back
//!   cannot stretch it), and the request fingerprint is still checked
//!   against the record's.
//! - [`AttemptCache`]: the record of each attempt this replica handed out. If
//!   the same caller completes through this replica, the record to rewrite is
//!   already known and Complete needs no read first; the write's compare on
//!   the fencing token still decides, so a stale entry can only cost a retry.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use moka::sync::Cache;
use tokio::time::Instant;

use crate::core::error::Error;
use crate::core::fingerprint::{MemberDigest, differing_members};
use crate::core::outcome::{BeginOutcome, Completed, Failed};
use crate::core::record::{Record, RecordId, ResultBody, State};

struct Replay {
    fingerprint: Vec<u8>,
    member_digests: Vec<(String, Vec<u8>)>,
    attempt: u32,
    /// Which record this is (with the fingerprint): a record kept anew gets another.
    expires_at_ms: i64,
    /// Until when it may be served.
    served_until: Instant,
    outcome: BeginOutcome,
}

pub struct ReplayCache {
    by_record: Option<Cache<RecordId, Arc<Replay>>>,
    /// Counts what the feed of forgotten records said (a forget, a restart).
    /// A read takes a [`ReplayCache::ticket`] before it starts; what it read
    /// is cached only if nothing that concerns it was heard since, so a read
    /// from before a forget, answered after the forget was heard of, is not
    /// cached again. A count, not store revisions: those of two shards are
    /// not comparable.
    heard: AtomicU64,
    /// The count at which each recently forgotten record was heard of.
    forgotten: Cache<RecordId, u64>,
    /// The count at the last restart of the feed (every replay dropped).
    cleared_at: AtomicU64,
    /// Replays are served only before this many milliseconds after `since`:
    /// while every source of the feed has been heard from recently.
    fresh_until_ms: AtomicU64,
    since: Instant,
}

/// How long a forget is remembered: far longer than any read in flight.
const FORGOTTEN_FOR: std::time::Duration = std::time::Duration::from_secs(600);

/// The replay a terminal record gives a Begin.
pub fn replay_of(record: &Record) -> Option<BeginOutcome> {
    match record.state {
        State::Completed => Some(BeginOutcome::Completed(Completed {
            result: record.result.clone(),
            attempt: record.attempt,
            completed_at_ms: record.updated_at_ms,
        })),
        State::Failed => Some(BeginOutcome::Failed(Failed {
            error: record.error.clone(),
            attempt: record.attempt,
            failed_at_ms: record.updated_at_ms,
        })),
        State::InProgress | State::Released => None,
    }
}

/// What a cached replay costs beyond its variable bytes: the cache's own
/// entry, the key's three strings, the `Arc<Replay>` and the allocator's
/// headers. Measured: 758 bytes of RSS per entry with ~24 variable bytes
/// (`measure_bytes_per_entry` below); counting 128 here let a 64 MiB cache
/// grow to over 300 MiB.
const REPLAY_ENTRY_OVERHEAD: usize = 768;

/// The same for a remembered attempt (a whole `Record`): measured 1,029
/// bytes of RSS per entry with ~94 variable bytes.
const ATTEMPT_ENTRY_OVERHEAD: usize = 960;

/// About how many bytes a cached replay holds.
fn weight(id: &RecordId, replay: &Arc<Replay>) -> u32 {
    let body = match &replay.outcome {
        BeginOutcome::Completed(c) => c.result.as_ref().map(|r| {
            let body = match &r.body {
                ResultBody::Response(bytes) => bytes.len(),
                ResultBody::ResourceRef(reference) => reference.len(),
            };
            body + r.content_type.len()
        }),
        BeginOutcome::Failed(f) => f.error.as_ref().map(|e| e.code.len() + e.message.len() + e.details.len()),
        _ => None,
    };
    let id_bytes = id.tenant.len() + id.namespace.len() + id.key.len();
    (id_bytes + body.unwrap_or_default() + REPLAY_ENTRY_OVERHEAD).try_into().unwrap_or(u32::MAX)
}

impl ReplayCache {
    /// A cache holding about `max_bytes` of replays; 0 disables it.
    pub fn new(max_bytes: u64) -> Self {
        let by_record = (max_bytes > 0).then(|| Cache::builder().max_capacity(max_bytes).weigher(weight).build());
        let forgotten = Cache::builder().max_capacity(100_000).time_to_live(FORGOTTEN_FOR).build();
        Self {
            by_record,
            forgotten,
            heard: AtomicU64::new(0),
            cleared_at: AtomicU64::new(0),
            fresh_until_ms: AtomicU64::new(0),
            since: Instant::now(),
        }
    }

    /// Taken before a read whose record may be remembered.
    pub fn ticket(&self) -> u64 {
        self.heard.load(Ordering::Acquire)
    }

    /// Serve replays until `until` (None: not at all): the feed of forgotten
    /// records is known to work until then.
    pub fn serve_until(&self, until: Option<Instant>) {
        let ms = until.map_or(0, |until| until.saturating_duration_since(self.since).as_millis() as u64);
        self.fresh_until_ms.store(ms, Ordering::Release);
    }

    fn fresh(&self, now: Instant) -> bool {
        (now.saturating_duration_since(self.since).as_millis() as u64) < self.fresh_until_ms.load(Ordering::Acquire)
    }

    /// The replay for `id` if cached and still to be served; KeyReused if it
    /// was made by a request with another fingerprint.
    pub fn get(
        &self,
        id: &RecordId,
        fingerprint: &[u8],
        members: &[MemberDigest],
    ) -> Option<Result<BeginOutcome, Error>> {
        let cache = self.by_record.as_ref()?;
        // One clock read per replay, for both checks.
        let now = Instant::now();
        if !self.fresh(now) {
            return None;
        }
        let replay = cache.get(id)?;
        if replay.served_until <= now {
            cache.invalidate(id);
            return None;
        }
        if replay.fingerprint != fingerprint {
            let differing = differing_members(&replay.member_digests, &replay.fingerprint, members);
            return Some(Err(Error::KeyReused { attempt: replay.attempt, differing }));
        }
        Some(Ok(replay.outcome.clone()))
    }

    /// Drops the replay of a forgotten record, and keeps any read that
    /// started before now out.
    pub fn forget(&self, id: &RecordId) {
        if let Some(cache) = &self.by_record {
            let heard = self.heard.fetch_add(1, Ordering::AcqRel) + 1;
            self.forgotten.insert(id.clone(), heard);
            cache.invalidate(id);
        }
    }

    /// Drops every replay, and keeps every read that started before now out:
    /// some records may have been forgotten unheard.
    pub fn clear(&self) {
        if let Some(cache) = &self.by_record {
            let heard = self.heard.fetch_add(1, Ordering::AcqRel) + 1;
            self.cleared_at.store(heard, Ordering::Release);
            cache.invalidate_all();
        }
    }

    /// Remembers `record`, read (or written) by a call that took `ticket`
    /// before it started, to serve for `lives` from now, if it is terminal
    /// and nothing was heard since that could make it stale.
    pub fn remember(&self, id: &RecordId, record: &Record, ticket: u64, lives: Duration) {
        let Some(cache) = self.by_record.as_ref() else { return };
        if lives.is_zero() || self.stale(id, ticket) {
            return;
        }
        // Every read of a finished record lands here: the same record already
        // cached needs no copy of its result made again.
        if cache.get(id).is_some_and(|cached| cached.expires_at_ms == record.expires_at_ms) {
            return;
        }
        let Some(outcome) = replay_of(record) else { return };
        let replay = Replay {
            fingerprint: record.fingerprint.clone(),
            member_digests: record.member_digests.clone(),
            attempt: record.attempt,
            expires_at_ms: record.expires_at_ms,
            served_until: Instant::now() + lives,
            outcome,
        };
        cache.insert(id.clone(), Arc::new(replay));
        // A forget or restart heard between the checks above and the insert
        // may have invalidated before it: look again, now that it is in.
        if self.stale(id, ticket) {
            cache.invalidate(id);
        }
    }

    /// Whether something heard since `ticket` was taken may make a read of `id` stale.
    fn stale(&self, id: &RecordId, ticket: u64) -> bool {
        self.cleared_at.load(Ordering::Acquire) > ticket || self.forgotten.get(id).is_some_and(|heard| heard > ticket)
    }
}

pub struct AttemptCache {
    by_record: Cache<RecordId, Arc<(u64, Record)>>,
}

/// About how many bytes a remembered attempt holds.
fn attempt_weight(id: &RecordId, entry: &Arc<(u64, Record)>) -> u32 {
    let record = &entry.1;
    let error = |e: &crate::core::record::CallError| e.code.len() + e.message.len() + e.details.len();
    let recovered = record.recovered.as_ref().map(|r| r.previous_owner.len() + r.last_error.as_ref().map_or(0, error));
    let bytes = id.tenant.len()
        + id.namespace.len()
        + id.key.len()
        + record.owner.len()
        + record.request_id.len()
        + record.fingerprint.len()
        + record.error.as_ref().map_or(0, error)
        + recovered.unwrap_or_default()
        + ATTEMPT_ENTRY_OVERHEAD;
    bytes.try_into().unwrap_or(u32::MAX)
}

impl AttemptCache {
    /// A cache of about `max_bytes` of attempts, each kept at most
    /// `time_to_live` (an attempt cannot outlive its longest lease by much,
    /// and a miss only costs a read).
    pub fn new(max_bytes: u64, time_to_live: std::time::Duration) -> Self {
        let by_record =
            Cache::builder().max_capacity(max_bytes).weigher(attempt_weight).time_to_live(time_to_live).build();
        Self { by_record }
    }

    pub fn remember(&self, id: &RecordId, token: u64, record: Record) {
        self.by_record.insert(id.clone(), Arc::new((token, record)));
    }

    /// The record as this replica wrote it when it handed out `token`.
    pub fn get(&self, id: &RecordId, token: u64) -> Option<Record> {
        let entry = self.by_record.get(id)?;
        (entry.0 == token).then(|| entry.1.clone())
    }

    pub fn forget(&self, id: &RecordId) {
        self.by_record.invalidate(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::record::CallResult;

    fn id() -> RecordId {
        RecordId { tenant: "t".into(), namespace: "ns".into(), key: "k".into() }
    }

    fn completed(expires_at_ms: i64) -> Record {
        Record {
            state: State::Completed,
            attempt: 1,
            owner: String::new(),
            request_id: String::new(),
            fingerprint: vec![7; 32],
            member_digests: vec![],
            created_at_ms: 0,
            updated_at_ms: 0,
            expires_at_ms,
            finished_token: 1,
            result: Some(CallResult {
                body: ResultBody::ResourceRef("r".into()),
                content_type: String::new(),
                status_code: 0,
            }),
            error: None,
            recovered: None,
            token_generation: 0,
            moved_token: 0,
            moved_in_epoch: 0,
        }
    }

    const LIVES: Duration = Duration::from_secs(1);

    /// A cache whose feed of forgotten records works for the next hour.
    fn fed(max_bytes: u64) -> ReplayCache {
        let cache = ReplayCache::new(max_bytes);
        cache.serve_until(Some(Instant::now() + Duration::from_secs(3600)));
        cache
    }

    #[tokio::test(start_paused = true)]
    async fn replays_are_served_for_as_long_as_told_and_check_the_fingerprint() {
        let cache = fed(1 << 20);
        cache.remember(&id(), &completed(1_000), cache.ticket(), LIVES);
        tokio::time::advance(Duration::from_millis(999)).await;
        assert!(matches!(cache.get(&id(), &[7; 32], &[]), Some(Ok(BeginOutcome::Completed(_)))));
        assert!(matches!(cache.get(&id(), &[8; 32], &[]), Some(Err(Error::KeyReused { attempt: 1, .. }))));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(cache.get(&id(), &[7; 32], &[]).is_none(), "served past what it was told");
    }

    #[tokio::test(start_paused = true)]
    async fn nothing_is_served_while_the_feed_of_forgotten_records_is_silent() {
        let cache = ReplayCache::new(1 << 20);
        cache.remember(&id(), &completed(1_000), cache.ticket(), Duration::from_secs(60));
        assert!(cache.get(&id(), &[7; 32], &[]).is_none(), "a feed never heard from");
        cache.serve_until(Some(Instant::now() + Duration::from_secs(3)));
        assert!(cache.get(&id(), &[7; 32], &[]).is_some());
        tokio::time::advance(Duration::from_secs(3)).await;
        assert!(cache.get(&id(), &[7; 32], &[]).is_none(), "the feed went silent");
        cache.serve_until(Some(Instant::now() + Duration::from_secs(3)));
        assert!(cache.get(&id(), &[7; 32], &[]).is_some(), "heard from again, with nothing missed");
    }

    #[tokio::test(start_paused = true)]
    async fn a_record_after_an_expired_one_replaces_it() {
        let cache = fed(1 << 20);
        cache.remember(&id(), &completed(1_000), cache.ticket(), LIVES);
        cache.remember(&id(), &completed(1_000), cache.ticket(), LIVES);
        let mut later = completed(5_000);
        later.fingerprint = vec![8; 32];
        cache.remember(&id(), &later, cache.ticket(), LIVES);
        assert!(matches!(cache.get(&id(), &[8; 32], &[]), Some(Ok(BeginOutcome::Completed(_)))));
    }

    #[test]
    fn only_terminal_records_are_cached_and_zero_bytes_or_no_time_disables() {
        let cache = fed(1 << 20);
        let mut in_progress = completed(1_000);
        in_progress.state = State::InProgress;
        cache.remember(&id(), &in_progress, cache.ticket(), LIVES);
        assert!(cache.get(&id(), &[7; 32], &[]).is_none());
        cache.remember(&id(), &completed(1_000), cache.ticket(), Duration::ZERO);
        assert!(cache.get(&id(), &[7; 32], &[]).is_none(), "nothing to serve for no time");
        let disabled = fed(0);
        disabled.remember(&id(), &completed(1_000), disabled.ticket(), LIVES);
        assert!(disabled.get(&id(), &[7; 32], &[]).is_none());
    }

    #[test]
    fn a_read_from_before_a_forget_or_a_restart_is_not_cached_again() {
        let cache = fed(1 << 20);
        let before = cache.ticket();
        cache.remember(&id(), &completed(1_000), before, LIVES);
        cache.forget(&id());
        assert!(cache.get(&id(), &[7; 32], &[]).is_none(), "forgotten");
        cache.remember(&id(), &completed(1_000), before, LIVES);
        assert!(cache.get(&id(), &[7; 32], &[]).is_none(), "a read from before the forget came back late");
        let after = cache.ticket();
        cache.remember(&id(), &completed(1_000), after, LIVES);
        assert!(cache.get(&id(), &[7; 32], &[]).is_some(), "a record read after the forget is cached");
        cache.clear();
        cache.remember(&id(), &completed(1_000), after, LIVES);
        assert!(cache.get(&id(), &[7; 32], &[]).is_none(), "a read from before the feed restarted");
    }

    #[test]
    fn attempts_are_found_only_with_their_token() {
        let cache = AttemptCache::new(1 << 20, std::time::Duration::from_secs(60));
        cache.remember(&id(), 42, completed(1));
        assert!(cache.get(&id(), 42).is_some());
        assert!(cache.get(&id(), 41).is_none());
        cache.forget(&id());
        assert!(cache.get(&id(), 42).is_none());
    }

    fn rss_bytes() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").expect("Linux /proc");
        let kib = status.lines().find_map(|l| l.strip_prefix("VmRSS:")).expect("a VmRSS line");
        kib.trim().trim_end_matches("kB").trim().parse::<u64>().expect("a number of kB") * 1024
    }

    /// Not a check but a measurement (RSS is shared by every test of the
    /// process): how many bytes an entry really costs, against its weight.
    /// `cargo test --release --lib measure_bytes_per_entry -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn measure_bytes_per_entry() {
        const ENTRIES: u64 = 200_000;
        let key = |kind: &str, i: u64| RecordId {
            tenant: "default".into(),
            namespace: "bench".into(),
            key: format!("{kind}-{i}"),
        };
        let mut record = completed(i64::MAX);
        record.owner = "bench".into();
        record.result = Some(CallResult {
            body: ResultBody::Response(b"ok".to_vec()),
            content_type: String::new(),
            status_code: 0,
        });
        let (replays, before) = (ReplayCache::new(1 << 40), rss_bytes());
        let mut weights = 0u64;
        for i in 0..ENTRIES {
            let id = key("replay", i);
            replays.remember(&id, &record, 0, Duration::from_secs(3600));
            let replay = Replay {
                fingerprint: record.fingerprint.clone(),
                member_digests: vec![],
                attempt: 1,
                expires_at_ms: 0,
                served_until: Instant::now(),
                outcome: replay_of(&record).unwrap(),
            };
            weights += weight(&id, &Arc::new(replay)) as u64;
        }
        replays.by_record.as_ref().unwrap().run_pending_tasks();
        println!("replay: {} bytes of RSS, weighed {}", (rss_bytes() - before) / ENTRIES, weights / ENTRIES);

        let mut attempt = record.clone();
        (attempt.state, attempt.result, attempt.request_id) =
            (State::InProgress, None, uuid::Uuid::new_v4().to_string());
        let (attempts, before) = (AttemptCache::new(1 << 40, std::time::Duration::from_secs(3600)), rss_bytes());
        let mut weights = 0u64;
        for i in 0..ENTRIES {
            let id = key("attempt", i);
            weights += attempt_weight(&id, &Arc::new((1, attempt.clone()))) as u64;
            attempts.remember(&id, 1, attempt.clone());
        }
        attempts.by_record.run_pending_tasks();
        println!("attempt: {} bytes of RSS, weighed {}", (rss_bytes() - before) / ENTRIES, weights / ENTRIES);
    }
}

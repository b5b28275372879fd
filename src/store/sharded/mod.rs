//! Records spread over several stores (etcd clusters, in production): each
//! record lives, with all its keys, on one shard, so its fencing tokens stay
//! one cluster's revisions. [`shard_map`] says which shard; while the map
//! changes, a record is looked for under both maps the replica knows, and
//! [`forwarding`] records keep it from ever being created on two shards.

pub mod forwarding;
pub mod shard_map;
mod steps;
mod tokens;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tokio_stream::StreamExt;

use crate::core::error::{Error, Violation};
use crate::core::record::{Record, RecordId, Snapshot, Versioned};
use crate::core::store::{
    Capacity, Changes, Expect, Forgotten, LeaseWant, Listing, LockChange, Page, RecordLease, RecordStore, ShardState,
    Write, Written,
};
use forwarding::Found;
use shard_map::{Homes, ShardMap};

/// 1 while a shard answers its health check, else 0 (a Prometheus gauge, by `shard`).
pub const SHARD_READY: &str = "idempotency_store_shard_ready";
/// The epoch of the shard map new records are placed by (a Prometheus gauge,
/// by `step`: `settled`, `announce` or `switch`).
pub const SHARD_MAP_EPOCH: &str = "idempotency_store_shard_map_epoch";

pub struct ShardedStore<S> {
    /// Every shard the map names, by name.
    stores: BTreeMap<String, Shard<S>>,
    /// The map this replica runs with.
    map: ShardMap,
    /// At the announce step, the switch step's map. The replica acts by it
    /// once a shard says the switch began ([`Self::switch_began`]), so that
    /// it never creates a record at a home the switch step has left.
    switched: Option<ShardMap>,
    switch_began: AtomicBool,
    /// The switch step whose shards have all been seen at it or later. At
    /// the switch step nothing is written before: a record created on a
    /// receiving shard before its token generation is raised would get
    /// tokens below those of its previous home.
    reached: AtomicU64,
    /// How long a forwarding record lasts: as long as a record it stands
    /// for may live, so that it outlasts the switch to its map.
    forwarding_lasts: Duration,
    /// Set once a shard says another map file placed one of this map's
    /// epochs on other shards: every call is refused from then on, since
    /// the two maps disagree on where any record lives.
    conflict: Mutex<Option<String>>,
}

struct Shard<S> {
    store: Arc<S>,
    /// Cleared when the shard fails a health check, set again when it
    /// answers one. While clear, its calls are refused at once: each
    /// waiting out the request timeout would hold a slot of
    /// `--max-in-flight` that the other shards' calls need.
    answering: AtomicBool,
    /// The shard's map state as last read or written; None: read it again.
    /// A std Mutex: nothing awaits while it is held.
    state: Mutex<Option<Versioned<ShardState>>>,
}

/// Where a record was found, following forwarding records.
struct Located<'a> {
    shard: &'a str,
    snapshot: Snapshot,
    /// The forwarding record followed to `shard`, if one was.
    via: Option<Record>,
    /// Set when the record is nowhere and its previous home holds no
    /// forwarding record yet: creating it must leave one there first.
    unclaimed: Option<&'a str>,
}

/// How many times a call starts again because a shard's map state moved.
const STATE_MOVES: usize = 4;

impl<S: RecordStore> ShardedStore<S> {
    /// `stores` must hold every shard `map` names, under the same names.
    pub fn new(stores: BTreeMap<String, Arc<S>>, map: ShardMap, forwarding_lasts: Duration) -> Result<Self, String> {
        map.check()?;
        if let Some(missing) = map.shard_names().into_iter().find(|name| !stores.contains_key(*name)) {
            return Err(format!("the shard map names shard {missing:?}, which has no store"));
        }
        let stores = stores
            .into_iter()
            .map(|(name, store)| (name, Shard { store, answering: AtomicBool::new(true), state: Mutex::new(None) }));
        let switched = map.switched();
        Ok(Self {
            stores: stores.collect(),
            map,
            switched,
            switch_began: AtomicBool::new(false),
            reached: AtomicU64::new(0),
            forwarding_lasts,
            conflict: Mutex::new(None),
        })
    }

    /// The map this replica places and looks for records by now.
    fn acting(&self) -> &ShardMap {
        match &self.switched {
            Some(switched) if self.switch_began.load(Ordering::Relaxed) => switched,
            _ => &self.map,
        }
    }

    fn store(&self, shard: &str) -> Result<&S, Error> {
        Ok(&self.shard(shard)?.store)
    }

    fn shard(&self, shard: &str) -> Result<&Shard<S>, Error> {
        let shard_of = self.stores.get(shard).ok_or_else(|| unknown_shard(shard))?;
        if !shard_of.answering.load(Ordering::Relaxed) {
            return Err(Error::StoreUnavailable(format!("shard {shard} did not answer its last health check")));
        }
        Ok(shard_of)
    }

    /// Reads `id` on `shard`, or where a forwarding record of the change
    /// under way points (and that record); a forwarding record left over
    /// from an earlier change reads as nothing, and so does a migration's
    /// copy not reached through the forwarding record written for it
    /// ([`forwarding::seen`]).
    async fn read_following<'a>(
        &'a self,
        map: &ShardMap,
        shard: &'a str,
        id: &RecordId,
        deadline: Instant,
    ) -> Result<(&'a str, Snapshot, Option<Record>), Error> {
        let epoch = map.forwarding_epoch();
        // A shard this replica is out of step with may hold what its map
        // does not say: read nothing there.
        self.state_of(shard, deadline).await?;
        let snapshot = self.store(shard)?.read(id, deadline).await?;
        let target = match forwarding::found(&snapshot, epoch) {
            Found::Other => return Ok((shard, forwarding::seen(snapshot, None), None)),
            Found::LeftOver(_) => return Ok((shard, Snapshot { record: None, ..snapshot }, None)),
            Found::Forwarding(target) => target,
        };
        let Some((target, _)) = self.stores.get_key_value(target) else { return Err(unknown_shard(target)) };
        let via = snapshot.record.map(|r| r.value);
        self.state_of(target, deadline).await?;
        let forwarded = self.store(target)?.read(id, deadline).await?;
        match forwarding::found(&forwarded, epoch) {
            Found::Other => Ok((target.as_str(), forwarding::seen(forwarded, via.as_ref()), via)),
            Found::LeftOver(_) => Ok((target.as_str(), Snapshot { record: None, ..forwarded }, via)),
            Found::Forwarding(_) => {
                Err(Error::Internal(format!("{id:?}: the forwarding record on {shard} points to another on {target}")))
            }
        }
    }

    /// Where `id` lives: under the previous (or next) map first, then the
    /// current one; when it is nowhere, its home under the current map.
    async fn locate<'a>(
        &'a self,
        map: &'a ShardMap,
        homes: Homes<'a>,
        id: &RecordId,
        deadline: Instant,
    ) -> Result<Located<'a>, Error> {
        let holds = |snapshot: &Snapshot| snapshot.record.is_some() || snapshot.lock.is_some();
        let Some(other) = homes.other else {
            let (shard, snapshot, via) = self.read_following(map, homes.place, id, deadline).await?;
            return Ok(Located { shard, snapshot, via, unclaimed: None });
        };
        let order = if homes.forward_from_other { [other, homes.place] } else { [homes.place, other] };
        let (first, snapshot, via) = self.read_following(map, order[0], id, deadline).await?;
        // A forwarding record at the previous home claims the record for
        // wherever it points, even when nothing lives there (yet or any more).
        if holds(&snapshot) || via.is_some() {
            return Ok(Located { shard: first, snapshot, via, unclaimed: None });
        }
        let (second, second_snapshot, via) = self.read_following(map, order[1], id, deadline).await?;
        if holds(&second_snapshot) || via.is_some() {
            return Ok(Located { shard: second, snapshot: second_snapshot, via, unclaimed: None });
        }
        // Nowhere: it will be created at its current home.
        let snapshot = if homes.forward_from_other { second_snapshot } else { snapshot };
        Ok(Located { shard: homes.place, snapshot, via: None, unclaimed: homes.forward_from_other.then_some(other) })
    }

    /// Writes on `shard` (reached through the forwarding record `via`, if
    /// one was followed) while its map state is the one this replica knows,
    /// with the shard's token generation; the revision committed comes back
    /// as the record's token. A conflict is answered with what a reader
    /// finds there ([`forwarding::seen`]). A create that finds a forwarding
    /// record left over from an earlier change, or a migration's copy that
    /// reads as nothing (unless it writes such a copy itself), replaces it.
    /// The coordinator's writes (`decided`: what it expects, in fencing
    /// tokens; None for a forwarding record or a migration's copy) go
    /// further: one naming a moved attempt by its owner's token is compared
    /// on the attempt's revision here; a create goes where a forwarding
    /// record of this change points; any other write that meets one decides
    /// again on what is where it points.
    #[allow(clippy::too_many_arguments)]
    async fn write_on(
        &self,
        map: &ShardMap,
        shard: &str,
        id: &RecordId,
        write: &Write,
        decided: Option<Expect>,
        via: Option<Record>,
        deadline: Instant,
    ) -> Result<Written, Error> {
        let follow = decided.is_some();
        let mut write = Cow::Borrowed(write);
        let (mut shard, mut via) = (shard, via);
        let epoch = map.forwarding_epoch();
        for _ in 0..3 {
            let state = self.state_of(shard, deadline).await?;
            // Reading the state may have shown the switch began: this call
            // was placed by the announce step's map, so it starts again.
            if !std::ptr::eq(map, self.acting()) {
                return Err(Error::ShardStateMoved);
            }
            // Only a written record carries the generation: a lock-only
            // write (Extend, a hand-back) goes as it is, uncopied.
            let stamped = match &write.record {
                Some((record, _)) if record.token_generation != state.value.generation => {
                    let mut stamped = write.clone().into_owned();
                    if let Some((record, _)) = &mut stamped.record {
                        record.token_generation = state.value.generation;
                    }
                    Cow::Owned(stamped)
                }
                _ => write.clone(),
            };
            let written = match self.store(shard)?.write_fenced(id, &stamped, state.revision, deadline).await {
                Err(Error::ShardStateMoved) => {
                    self.forget_state(shard);
                    return Err(Error::ShardStateMoved);
                }
                written => written?,
            };
            let snapshot = match written {
                Written::Committed { revision } => {
                    let generation = stamped.record.as_ref().map_or(0, |(record, _)| record.token_generation);
                    return Ok(Written::Committed { revision: tokens::token(generation, revision)? });
                }
                Written::Conflict(snapshot) => *snapshot,
            };
            // An attempt moved here by a map change, named by its owner's token.
            if let Some(expect) = decided.and_then(|decided| tokens::on_moved(decided, &snapshot))
                && expect != write.expect
            {
                write = Cow::Owned(Write { expect, ..write.into_owned() });
                continue;
            }
            let creates = write.expect == Expect::Absent && snapshot.lock.is_none();
            let replace = |revision| Expect::Unchanged { record_revision: revision, lock_revision: None };
            let target = match forwarding::found(&snapshot, epoch) {
                Found::LeftOver(revision) if creates => {
                    write = Cow::Owned(Write { expect: replace(revision), ..write.into_owned() });
                    continue;
                }
                Found::LeftOver(_) => {
                    return Ok(Written::Conflict(Box::new(Snapshot { record: None, ..snapshot })));
                }
                Found::Forwarding(target) if follow => target,
                Found::Forwarding(_) => return Ok(Written::Conflict(Box::new(tokens::snapshot(snapshot)?))),
                Found::Other => {
                    let hidden = snapshot.record.as_ref().map(|r| r.revision);
                    let seen = forwarding::seen(snapshot, via.as_ref());
                    // A copy that reads as nothing is replaced like nothing,
                    // except by a migration's own copy: the copy there may be
                    // another run's, which that run may be about to name.
                    let copying = write.record.as_ref().is_some_and(|(r, _)| forwarding::unconfirmed(r));
                    match hidden.filter(|_| creates && !copying && seen.record.is_none()) {
                        Some(revision) => {
                            write = Cow::Owned(Write { expect: replace(revision), ..write.into_owned() });
                            continue;
                        }
                        None => return Ok(Written::Conflict(Box::new(tokens::snapshot(seen)?))),
                    }
                }
            };
            shard = self.stores.get_key_value(target).ok_or_else(|| unknown_shard(target))?.0;
            via = snapshot.record.map(|r| r.value);
            // Moved meanwhile (`shards status --migrate`): the call decides
            // again on the record where it went.
            if !creates {
                let moved = forwarding::seen(self.store(shard)?.read(id, deadline).await?, via.as_ref());
                return Ok(Written::Conflict(Box::new(tokens::snapshot(moved)?)));
            }
        }
        Err(Error::Internal(format!("{id:?}: forwarding records kept a create from {shard}")))
    }

    /// Leaves a forwarding record to `to` at `at`, unless a record is there:
    /// then that record is the one to use, and its snapshot is the answer.
    async fn claim(
        &self,
        map: &ShardMap,
        at: &str,
        to: &str,
        id: &RecordId,
        deadline: Instant,
    ) -> Result<Option<Snapshot>, Error> {
        let lease = LeaseWant { lasts: self.forwarding_lasts, slack: self.forwarding_lasts / 16 };
        let write = Write {
            expect: Expect::Absent,
            record: Some((forwarding::record(to, map.place.epoch, 0), RecordLease::Until(lease))),
            lock: LockChange::Keep,
        };
        match self.write_on(map, at, id, &write, None, None, deadline).await? {
            Written::Committed { .. } => Ok(None),
            // Another replica of this map claimed it first.
            Written::Conflict(snapshot)
                if matches!(forwarding::found(&snapshot, map.forwarding_epoch()), Found::Forwarding(_)) =>
            {
                Ok(None)
            }
            Written::Conflict(snapshot) => Ok(Some(*snapshot)),
        }
    }

    /// One try of [`RecordStore::write`] under the map acted by now.
    async fn try_write(&self, id: &RecordId, write: &Write, deadline: Instant) -> Result<Written, Error> {
        self.check_no_conflict()?;
        let map = self.acting();
        self.reach(map, deadline).await?;
        let homes = map.homes(id);
        if homes.other.is_none() {
            return self
                .write_on(map, homes.place, id, &self.unwrapped(write), Some(write.expect), None, deadline)
                .await;
        }
        let located = self.locate(map, homes, id, deadline).await?;
        // Written only where the record was found as the call expects it:
        // a record elsewhere whose revision happens to match is not the one
        // the call was decided on, and a create where something was found
        // would land at a previous home if that something lapsed meanwhile.
        let seen = tokens::snapshot(located.snapshot.clone())?;
        if !write.expect.holds(&seen) {
            return Ok(Written::Conflict(Box::new(seen)));
        }
        if let Some(previous_home) = located.unclaimed
            && let Some(found) = self.claim(map, previous_home, located.shard, id, deadline).await?
        {
            // Created there meanwhile by a replica of the previous map.
            return Ok(Written::Conflict(Box::new(found)));
        }
        self.write_on(map, located.shard, id, &self.unwrapped(write), Some(write.expect), located.via, deadline).await
    }

    /// The coordinator's `write` with the store revisions inside the tokens
    /// it expects, and without the mark of a migration's copy on the record
    /// it writes: the coordinator decided on that copy, so it reached it
    /// through its forwarding record, and what it writes is the record.
    fn unwrapped<'w>(&self, write: &'w Write) -> Cow<'w, Write> {
        let expect = match write.expect {
            Expect::Absent => write.expect,
            Expect::Unchanged { record_revision, lock_revision } => {
                Expect::Unchanged { record_revision: tokens::revision(record_revision), lock_revision }
            }
            Expect::Token(token) => Expect::Token(tokens::revision(token as i64) as u64),
        };
        let marked = write.record.as_ref().is_some_and(|(record, _)| record.moved_in_epoch != 0);
        if expect == write.expect && !marked {
            return Cow::Borrowed(write);
        }
        let mut unwrapped = Write { expect, ..write.clone() };
        if let Some((record, _)) = &mut unwrapped.record {
            record.moved_in_epoch = 0;
        }
        Cow::Owned(unwrapped)
    }

    /// The shard `id` lives on, for calls that follow a read of it.
    async fn shard_for<'a>(&'a self, map: &'a ShardMap, id: &RecordId, deadline: Instant) -> Result<&'a str, Error> {
        let homes = map.homes(id);
        if homes.other.is_none() {
            return Ok(homes.place);
        }
        Ok(self.locate(map, homes, id, deadline).await?.shard)
    }
}

impl<S: RecordStore> RecordStore for ShardedStore<S> {
    async fn read(&self, id: &RecordId, deadline: Instant) -> Result<Snapshot, Error> {
        self.check_no_conflict()?;
        let map = self.acting();
        tokens::snapshot(self.locate(map, map.homes(id), id, deadline).await?.snapshot)
    }

    /// Outside a map change, or for a record that stays where it is, a
    /// write goes straight to its home. Otherwise the record is found
    /// first; one created at its new home first leaves a forwarding record
    /// at its previous home. Every write is fenced by the shard's map state:
    /// when that moved, the write starts again under what it says now.
    async fn write(&self, id: &RecordId, write: &Write, deadline: Instant) -> Result<Written, Error> {
        for _ in 0..STATE_MOVES {
            match self.try_write(id, write, deadline).await {
                Err(Error::ShardStateMoved) => continue,
                written => return written,
            }
        }
        Err(Error::ShardStateMoved)
    }

    async fn watch(&self, id: &RecordId, after_revision: i64, deadline: Instant) -> Result<Changes, Error> {
        let map = self.acting();
        let shard = self.shard_for(map, id, deadline).await?;
        self.store(shard)?.watch(id, tokens::revision(after_revision), deadline).await
    }

    /// Ready while any shard answers: a shard that does not only makes its
    /// own records UNAVAILABLE. `idempotency_store_shard_ready{shard}` says
    /// which; a full shard makes the store report itself full. Each check
    /// also reads every shard's map state again, so that a replica left out
    /// of step hears of it without a write.
    async fn ping(&self, within: Duration) -> Result<Capacity, Error> {
        // Set here, not at startup: the metrics recorder may not be installed yet then.
        metrics::gauge!(SHARD_MAP_EPOCH, "step" => self.map.step()).set(self.map.place.epoch as f64);
        let (mut capacity, mut down) = (Capacity::Writable, Vec::new());
        // All at once: a shard that does not answer must not delay the others' checks.
        let answers = futures::future::join_all(self.stores.values().map(|shard| shard.store.ping(within))).await;
        for ((name, shard), answer) in self.stores.iter().zip(answers) {
            shard.answering.store(answer.is_ok(), Ordering::Relaxed);
            metrics::gauge!(SHARD_READY, "shard" => name.clone()).set(if answer.is_ok() { 1.0 } else { 0.0 });
            match answer {
                Ok(Capacity::Writable) => {}
                Ok(Capacity::Full(why)) => capacity = Capacity::Full(format!("shard {name}: {why}")),
                Err(error) => down.push(format!("shard {name}: {error}")),
            }
        }
        if down.len() == self.stores.len() {
            return Err(Error::StoreUnavailable(down.join("; ")));
        }
        if !down.is_empty() {
            tracing::warn!(down = %down.join("; "), "some shards are unavailable; their records are too");
        }
        let deadline = Instant::now() + within;
        for name in self.acting().shard_names() {
            self.forget_state(name);
            if let Err(error) = self.state_of(name, deadline).await {
                tracing::warn!(shard = name, %error, "cannot bring the shard's map state to this replica's step");
            }
        }
        Ok(capacity)
    }

    /// Shard by shard in name order; the token is `{shard}:{that shard's
    /// token}`, the shard's name percent-encoded so that a `:` in it cannot
    /// be taken for the separator. Forwarding records and unconfirmed copies
    /// are left out, so a page may hold fewer than `limit` records before
    /// the last.
    async fn list(&self, page: &Page, deadline: Instant) -> Result<Listing, Error> {
        let (after, limit) = (page.after.as_str(), page.limit);
        let named = |shard: &str| {
            let shard = percent_encoding::percent_decode_str(shard).decode_utf8().ok()?;
            self.stores.get_key_value(shard.as_ref()).map(|(name, _)| name.as_str())
        };
        let (start, mut inner) = match after.split_once(':').map(|(shard, token)| (named(shard), token)) {
            Some((Some(shard), token)) => (shard, token.to_owned()),
            None if after.is_empty() => ("", String::new()),
            _ => return Err(bad_token(after)),
        };
        let token = |shard: &str, inner: &str| format!("{}:{inner}", page_token_shard(shard));
        // The same tenant and namespace, with this shard's token and what is left of the page.
        let on_shard = |after: &str, limit| Page { after: after.to_owned(), limit, ..page.clone() };
        let mut shards = self.stores.range::<str, _>((Bound::Included(start), Bound::Unbounded)).map(|(name, _)| name);
        let mut records = Vec::new();
        while let Some(name) = shards.next() {
            let listed = self.store(name)?.list(&on_shard(&inner, limit - records.len()), deadline).await?;
            for (key, record, lock) in listed.records {
                if forwarding::is_forwarding(&record.value) {
                    continue;
                }
                // An unconfirmed copy counts only through the forwarding
                // record that names it, as everywhere else.
                if forwarding::unconfirmed(&record.value) {
                    let id =
                        RecordId { tenant: page.tenant.clone(), namespace: page.namespace.clone(), key: key.clone() };
                    if !self.named_copy(self.acting(), name, &id, &record, deadline).await? {
                        continue;
                    }
                }
                records.push((key, tokens::tokened(record)?, lock));
            }
            if let Some(next) = listed.next {
                return Ok(Listing { records, next: Some(token(name, &next)) });
            }
            inner.clear();
            if records.len() == limit {
                // A later shard that holds a record gets a page of its own.
                for later in shards.by_ref() {
                    if !self.store(later)?.list(&on_shard("", 1), deadline).await?.records.is_empty() {
                        return Ok(Listing { records, next: Some(token(later, "")) });
                    }
                }
            }
        }
        Ok(Listing { records, next: None })
    }

    async fn forget(&self, id: &RecordId, record_revision: i64, deadline: Instant) -> Result<Option<i64>, Error> {
        let map = self.acting();
        let homes = map.homes(id);
        let located = self.locate(map, homes, id, deadline).await?;
        // Compared on the store revision: the token differs for a moved attempt.
        let Some(record) = located.snapshot.record else { return Ok(None) };
        if tokens::tokened(record.clone())?.revision != record_revision {
            return Ok(None);
        }
        // A copy that a half-done migration left at the new home is never
        // read: it is unconfirmed, and no forwarding record will name it.
        self.store(located.shard)?.forget(id, record.revision, deadline).await
    }

    async fn map_status(
        &self,
        migrate: bool,
        deadline: Instant,
    ) -> Result<Option<crate::core::store::MapStatus>, Error> {
        Ok(Some(ShardedStore::map_status(self, migrate, deadline).await?))
    }

    /// One source per shard: a shard whose feed is silent stops every
    /// replay from memory, since it may be hiding a forget.
    fn forgotten(&self) -> Forgotten {
        let mut sources = 0;
        let feeds = self.stores.values().map(|shard| {
            let feed = shard.store.forgotten();
            let first = sources;
            sources += feed.sources;
            feed.events.map(move |(source, event)| (first + source, event))
        });
        let events = futures::stream::select_all(feeds.collect::<Vec<_>>());
        Forgotten { sources, events: Box::pin(events) }
    }
}

/// A shard's name as page tokens carry it: `%` and `:` escaped.
fn page_token_shard(shard: &str) -> String {
    const ESCAPED: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS.add(b'%').add(b':');
    percent_encoding::utf8_percent_encode(shard, ESCAPED).to_string()
}

fn unknown_shard(shard: &str) -> Error {
    Error::StoreUnavailable(format!(
        "the record lives on shard {shard:?}, which this replica's shard map does not name"
    ))
}

fn bad_token(token: &str) -> Error {
    Error::InvalidRequest(vec![Violation {
        field: "page_token".into(),
        description: format!("{token:?} is not a token this server gave"),
    }])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::clock::TokioClock;
    use crate::core::record::State;
    use crate::store::memory::MemoryStore;

    fn record() -> Record {
        Record {
            state: State::Completed,
            attempt: 1,
            owner: String::new(),
            request_id: String::new(),
            fingerprint: vec![1; 32],
            member_digests: vec![],
            created_at_ms: 0,
            updated_at_ms: 0,
            expires_at_ms: 0,
            finished_token: 1,
            result: None,
            error: None,
            recovered: None,
            token_generation: 0,
            moved_token: 0,
            moved_in_epoch: 0,
        }
    }

    /// Issue 25, 5: the token was split at its first `:`, so a shard named
    /// `eu:1` gave tokens no page could follow.
    #[tokio::test(start_paused = true)]
    async fn pages_follow_shards_whose_names_hold_a_colon() {
        let clock = Arc::new(TokioClock::new());
        let names = ["eu:1", "eu:2%"];
        let stores = names.map(|n| (n.to_owned(), Arc::new(MemoryStore::new(clock.clone())))).into();
        let map = ShardMap::single(1, names.map(str::to_owned).to_vec());
        let store = ShardedStore::new(stores, map, Duration::from_secs(60)).expect("shards");
        let lease = LeaseWant { lasts: Duration::from_secs(60), slack: Duration::from_secs(2) };
        for key in ["a:1", "b:2", "c:3", "d:4", "e:5"] {
            let id = RecordId { tenant: "t".into(), namespace: "ns".into(), key: key.into() };
            let write = Write {
                expect: Expect::Absent,
                record: Some((record(), RecordLease::Until(lease))),
                lock: LockChange::Keep,
            };
            store.write(&id, &write, Instant::now()).await.expect("write");
        }
        let (mut seen, mut after) = (Vec::new(), String::new());
        for _ in 0..10 {
            let page = Page { tenant: "t".into(), namespace: "ns".into(), after: after.clone(), limit: 2 };
            let listing = store.list(&page, Instant::now()).await.expect("a page");
            seen.extend(listing.records.into_iter().map(|(key, _, _)| key));
            match listing.next {
                Some(next) => after = next,
                None => break,
            }
        }
        seen.sort();
        assert_eq!(seen, ["a:1", "b:2", "c:3", "d:4", "e:5"]);
    }
}

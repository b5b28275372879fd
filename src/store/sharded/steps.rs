//! The map state every shard keeps, and what a replica does with it. Each
//! shard holds the rollout step replicas have brought it to and its token
//! generation ([`ShardState`]). A replica brings each shard to its own step
//! when it first needs it (and at every health check), fences every write
//! by the state it read, and refuses to act on a shard more than one step
//! from its own: a replica left behind by two steps, or a step started
//! before the one before it reached every shard, is refused with an error
//! that names both steps, instead of writing where the map no longer looks.
//!
//! Two steps do more than count:
//! - **Switch.** The shards records move onto get a token generation above
//!   every shard they move from, so that a key's tokens keep growing on its
//!   new home. A replica of the switch step writes nothing until every
//!   shard is at that step, and a replica of the announce step that finds a
//!   shard there acts as one of the switch step from then on.
//! - **Settle.** A shard moves to the settled step only once a replica of
//!   the switch step has checked that no record is left where the settled
//!   map won't look ([`MapStatus`], `idempotency-coordinator shards status`).
//!   No new record can appear there after that check, since no replica of
//!   the switch step creates one at a previous home.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;

use super::forwarding;
use super::shard_map::{Neighbour, ShardMap};
use super::{ShardedStore, tokens, unknown_shard};
use crate::core::error::Error;
use crate::core::record::{Record, RecordId, State, Versioned};
use crate::core::store::{
    Expect, LeaseWant, LockChange, MapStatus, RecordLease, RecordStore, ShardState, ShardStatus, Write, Written,
};

/// Records read per page while looking for records left behind.
const SCAN_PAGE: usize = 512;

/// How much longer than its retention, by this replica's clock, a moved
/// record lives at its new home.
const MIGRATION_MARGIN: Duration = Duration::from_secs(60);

/// Whether two stored records are one record's value (a copy of it, which
/// differs only in what the move itself sets).
pub(super) fn same_record(a: &Record, b: &Record) -> bool {
    let moved = |r: &Record| Record { token_generation: 0, moved_token: 0, moved_in_epoch: 0, ..r.clone() };
    moved(a) == moved(b)
}

/// "epoch 2, switch" for a step number.
pub fn step_name(step: u64) -> String {
    match step % 3 {
        0 => format!("epoch {}, settled", step / 3),
        1 => format!("epoch {} announcing epoch {}", step / 3, step / 3 + 1),
        _ => format!("epoch {}, switch", step / 3 + 1),
    }
}

impl<S: RecordStore> ShardedStore<S> {
    /// The shard's map state, brought to this replica's step if it is one
    /// behind; an error if it is further from it.
    pub(super) async fn state_of(&self, shard: &str, deadline: Instant) -> Result<Versioned<ShardState>, Error> {
        let entry = self.stores.get(shard).ok_or_else(|| unknown_shard(shard))?;
        // A state known from before this replica began acting at the switch
        // step may be below it: read it again (and raise it).
        let known = entry.state.lock().expect("shard state lock poisoned").clone();
        if let Some(state) = known.filter(|state| state.value.step >= self.acting().step_number()) {
            return Ok(state);
        }
        for _ in 0..4 {
            let stored = self.store(shard)?.shard_state(deadline).await?;
            let target = self.acting().step_number();
            if let Some(state) = &stored {
                self.check_placements(shard, &state.value)?;
            }
            if let Some(state) = &stored
                && state.value.step >= target
            {
                self.check_step(shard, state.value.step)?;
                if self.switched.as_ref().is_some_and(|switched| state.value.step >= switched.step_number()) {
                    self.switch_began.store(true, Ordering::Relaxed);
                }
                *entry.state.lock().expect("shard state lock poisoned") = Some(state.clone());
                return Ok(state.clone());
            }
            let raised = self.raised(shard, stored.as_ref(), target, deadline).await?;
            let expected = stored.as_ref().map_or(0, |state| state.revision);
            let (step, generation) = (raised.step, raised.generation);
            if self.store(shard)?.put_shard_state(expected, raised, deadline).await? {
                tracing::info!(shard, step = %step_name(step), generation, "brought the shard to this replica's step");
            }
        }
        Err(Error::ShardStateMoved)
    }

    /// Drops what is known of `shard`'s state, so that it is read again.
    pub(super) fn forget_state(&self, shard: &str) {
        if let Some(entry) = self.stores.get(shard) {
            *entry.state.lock().expect("shard state lock poisoned") = None;
        }
    }

    /// An error if the map that brought `shard` to its step placed an epoch
    /// this replica knows on other shards (a map file edited mid-rollout).
    fn check_placements(&self, shard: &str, state: &ShardState) -> Result<(), Error> {
        let ours = self.acting().placements();
        for (epoch, digest) in &state.placements {
            if let Some((_, own)) = ours.iter().find(|(e, own)| e == epoch && own != digest) {
                tracing::error!(shard, epoch, shard_map = %digest, replica_map = %own, "two shard maps with one epoch");
                let why = format!(
                    "shard {shard} was brought to its step by a map whose epoch {epoch} names other shards than \
                     this replica's: every replica must run the same map file for an epoch (README, \"Resharding\")"
                );
                *self.conflict.lock().expect("conflict lock poisoned") = Some(why.clone());
                return Err(Error::StoreUnavailable(why));
            }
        }
        Ok(())
    }

    /// Refuses every call once two maps were seen to disagree.
    pub(super) fn check_no_conflict(&self) -> Result<(), Error> {
        match self.conflict.lock().expect("conflict lock poisoned").as_ref() {
            Some(why) => Err(Error::StoreUnavailable(why.clone())),
            None => Ok(()),
        }
    }

    /// An error unless a shard at `step` is within one step of this replica.
    fn check_step(&self, shard: &str, step: u64) -> Result<(), Error> {
        let own = self.map.step_number();
        if step <= own + 1 && step + 1 >= own {
            return Ok(());
        }
        let (ours, theirs) = (step_name(own), step_name(step));
        tracing::error!(shard, replica = %ours, shard_step = %theirs, "shard map out of step: refusing to act on the shard");
        Err(Error::StoreUnavailable(format!(
            "this replica's shard map is at {ours} but shard {shard} is at {theirs}: more than one step apart. \
             Roll a map change out one step at a time, every replica finishing a step before the next \
             (README, \"Resharding\")"
        )))
    }

    /// The state `shard` gets when it is brought from `stored` to `target`.
    async fn raised(
        &self,
        shard: &str,
        stored: Option<&Versioned<ShardState>>,
        target: u64,
        deadline: Instant,
    ) -> Result<ShardState, Error> {
        let map = self.acting();
        let current = stored.map(|s| &s.value);
        // A shard this change adds may still be at the step its removal
        // left it at; its generation still counts.
        if let Some(current) = current
            && current.step + 1 != target
            && !(map.adds(shard) && current.step < target)
        {
            self.check_step(shard, current.step)?;
            return Err(self.too_far(shard, current.step, target));
        }
        let generation = current.map_or(0, |c| c.generation);
        let generation = match &map.neighbour {
            Some(Neighbour::Previous(_)) => {
                let (receivers, senders) = map.movement().expect("a switch map has a previous one");
                if receivers.contains(&shard) {
                    let mut highest = generation;
                    for sender in senders {
                        let state = self.store(sender)?.shard_state(deadline).await?;
                        match state {
                            Some(state) if state.value.step + 1 >= target => {
                                highest = highest.max(state.value.generation)
                            }
                            other => {
                                return Err(self.too_far(sender, other.map_or(0, |s| s.value.step), target));
                            }
                        }
                    }
                    highest + 1
                } else {
                    generation
                }
            }
            None if current.is_some_and(|c| !c.settle_checked) => {
                return Err(Error::StoreUnavailable(format!(
                    "not settling shard {shard} yet: no replica of the switch step has checked that no record is \
                     left at a previous home. Run `idempotency-coordinator shards status` against a replica of \
                     the switch step; it says what is left and marks the shards once nothing is"
                )));
            }
            _ => generation,
        };
        Ok(ShardState { step: target, generation, settle_checked: false, placements: map.placements() })
    }

    fn too_far(&self, shard: &str, step: u64, target: u64) -> Error {
        let (theirs, ours) = (step_name(step), step_name(target));
        tracing::error!(shard, shard_step = %theirs, replica = %ours, "a step started before the one before it reached every shard");
        Error::StoreUnavailable(format!(
            "shard {shard} is at {theirs}, so this replica cannot bring it to {ours}: the step before has not \
             reached it. Finish rolling out the step before (README, \"Resharding\")"
        ))
    }

    /// At the switch step, waits for nothing but makes sure every shard of
    /// both maps has reached it before the first write.
    pub(super) async fn reach(&self, map: &ShardMap, deadline: Instant) -> Result<(), Error> {
        let step = map.step_number();
        if !matches!(map.neighbour, Some(Neighbour::Previous(_))) || self.reached.load(Ordering::Relaxed) == step {
            return Ok(());
        }
        for shard in map.shard_names() {
            self.state_of(shard, deadline).await?;
        }
        self.reached.store(step, Ordering::Relaxed);
        Ok(())
    }

    /// Where every shard is, and at the switch step whether the map may
    /// settle: the records left where the settled map won't look. With
    /// `migrate`, each finished one is moved to its new home first
    /// ([`Self::migrate`]). When none are left, every shard of the new map
    /// is marked so.
    pub async fn map_status(&self, migrate: bool, deadline: Instant) -> Result<MapStatus, Error> {
        let map = self.acting();
        let mut status = MapStatus { replica_step: step_name(map.step_number()), ..MapStatus::default() };
        let switching = matches!(map.neighbour, Some(Neighbour::Previous(_)));
        let epoch = map.forwarding_epoch();
        if switching {
            self.reach(map, deadline).await?;
            for shard in map.shard_names() {
                let mut after = String::new();
                loop {
                    let page = self.store(shard)?.scan(&after, SCAN_PAGE, deadline).await?;
                    for (id, record) in &page.entries {
                        // A forwarding record holds nothing: one of an earlier
                        // change reads as absent, and this change's point to
                        // the home the settled map looks at (unless another
                        // map file gave this epoch other shards), where a
                        // moved record's copy must be confirmed.
                        if let Some(r) = record.as_ref().filter(|r| forwarding::is_forwarding(&r.value)) {
                            let left = match forwarding::target(&r.value, epoch) {
                                Some(to) if !map.place.shards.iter().any(|s| s == to) => true,
                                Some(to) if forwarding::copy_revision(&r.value) != 0 => {
                                    !self.confirm_named(map, to, id, &r.value, migrate, deadline).await?
                                }
                                _ => false,
                            };
                            status.left_behind += u64::from(left);
                            continue;
                        }
                        if map.place.home(id) == shard {
                            let copy = record.as_ref().is_some_and(|r| forwarding::unconfirmed(&r.value));
                            if copy && !self.settle_copy(map, shard, id, migrate, deadline).await? {
                                status.left_behind += 1;
                            }
                            continue;
                        }
                        // A copy an earlier change left unconfirmed is read by
                        // no one: not a record, and never moved.
                        if let Some(garbage) = record.as_ref().filter(|r| forwarding::unconfirmed(&r.value)) {
                            if migrate {
                                self.store(shard)?.forget(id, garbage.revision, deadline).await?;
                            }
                            continue;
                        }
                        if migrate
                            && let Some(record) = record
                            && self.migrate(map, shard, id, record, deadline).await?
                        {
                            status.migrated += 1;
                            continue;
                        }
                        status.left_behind += 1;
                        let expires = record.as_ref().map(|r| r.value.expires_at_ms).filter(|ms| *ms > 0);
                        status.last_expires_at_ms = status.last_expires_at_ms.max(expires);
                    }
                    match page.next {
                        Some(next) => after = next,
                        None => break,
                    }
                }
            }
            if status.left_behind == 0 {
                for shard in &map.place.shards {
                    self.mark_settle_checked(shard, deadline).await?;
                }
            }
        }
        for shard in map.shard_names() {
            self.forget_state(shard);
            let state = self.state_of(shard, deadline).await?;
            status.shards.push(ShardStatus {
                name: shard.to_owned(),
                step: step_name(state.value.step),
                generation: state.value.generation,
                settle_checked: state.value.settle_checked,
            });
        }
        status.settle_safe = switching && status.left_behind == 0;
        Ok(status)
    }

    /// Moves a record no attempt holds from `from`, a previous home, to its
    /// home under the new map: a finished or released one, or an attempt in
    /// progress whose lock is gone (abandoned, unless its owner is late).
    /// An unconfirmed copy goes there first, then a forwarding record that
    /// names it in the record's place, compared on the record's revision
    /// and on there being no lock, then the copy is confirmed. A reader of
    /// the switch step finds the record at its old home until the
    /// forwarding record replaces it, and the copy through it after; an
    /// unconfirmed copy alone reads as nothing ([`forwarding::seen`]), so a
    /// copy written too late (the record changed, was forgotten or was
    /// moved by another run meanwhile) is never read by anyone, and one
    /// whose confirmation was lost is confirmed by [`Self::settle_copy`]
    /// before the map may settle. A moved attempt keeps the token its owner
    /// holds ([`Record::moved_token`]), so that its late Complete still
    /// counts. Whether the record moved.
    async fn migrate(
        &self,
        map: &ShardMap,
        from: &str,
        id: &RecordId,
        record: &Versioned<Record>,
        deadline: Instant,
    ) -> Result<bool, Error> {
        // The scan may be old: only the record as it is now moves. A live
        // lock: its owner may still finish; moved once it lapses.
        let now = self.store(from)?.read(id, deadline).await?;
        if now.record.as_ref().is_none_or(|r| r.revision != record.revision) || now.lock.is_some() {
            return Ok(false);
        }
        let mut value = Record { moved_in_epoch: map.place.epoch, ..record.value.clone() };
        if value.state == State::InProgress && value.moved_token == 0 {
            value.moved_token = tokens::token(value.token_generation, record.revision)? as u64;
        }
        // The copy lives as long as the store would have kept the record,
        // by the store's own measure (no replica's clock is asked), plus a
        // margin: a result may outlive its retention, never fall short.
        let Some(left) = self.store(from)?.record_lease_left(id, record.revision, deadline).await? else {
            return Ok(false);
        };
        let lasts = left + MIGRATION_MARGIN;
        let to = map.place.home(id);
        let lease = RecordLease::Until(LeaseWant { lasts, slack: lasts / 16 });
        let Some(copy) = self.copy(map, to, id, value.clone(), lease, deadline).await? else { return Ok(false) };
        // The forwarding record outlasts the copy it leads to, whatever the
        // retention this replica allows.
        let lasts = lasts + MIGRATION_MARGIN;
        let replace = Write {
            expect: Expect::Unchanged { record_revision: record.revision, lock_revision: None },
            record: Some((
                forwarding::record(to, map.place.epoch, copy),
                RecordLease::Until(LeaseWant { lasts, slack: lasts / 16 }),
            )),
            lock: LockChange::Keep,
        };
        if let Written::Conflict(_) = self.write_on(map, from, id, &replace, None, None, deadline).await? {
            return Ok(false);
        }
        // If this is lost, the next `shards status` confirms it.
        self.confirm(map, to, id, &Versioned { value, revision: copy }, None, deadline).await?;
        Ok(true)
    }

    /// Clears the mark of the copy `copy` at `at`, whose forwarding record
    /// names it, if it and its lock are as read; whether it did.
    async fn confirm(
        &self,
        map: &ShardMap,
        at: &str,
        id: &RecordId,
        copy: &Versioned<Record>,
        lock_revision: Option<i64>,
        deadline: Instant,
    ) -> Result<bool, Error> {
        let write = Write {
            expect: Expect::Unchanged { record_revision: copy.revision, lock_revision },
            record: Some((Record { moved_in_epoch: 0, ..copy.value.clone() }, RecordLease::Keep)),
            lock: LockChange::Keep,
        };
        Ok(matches!(self.write_on(map, at, id, &write, None, None, deadline).await?, Written::Committed { .. }))
    }

    /// Writes `value`, a migration's copy, at `to`; the store revision it
    /// has there, or None if something else is there. Another run's copy of
    /// this very record is used as it is (that run may be about to name it
    /// in its forwarding record), also when it appears while this one is
    /// written.
    async fn copy(
        &self,
        map: &ShardMap,
        to: &str,
        id: &RecordId,
        value: Record,
        lease: RecordLease,
        deadline: Instant,
    ) -> Result<Option<i64>, Error> {
        for _ in 0..2 {
            let there = self.store(to)?.read(id, deadline).await?;
            let expect = match &there.record {
                _ if there.lock.is_some() => return Ok(None),
                None => Expect::Absent,
                Some(found) if forwarding::is_forwarding(&found.value) => Expect::Absent,
                Some(found) if forwarding::unconfirmed(&found.value) && same_record(&found.value, &value) => {
                    return Ok(Some(found.revision));
                }
                // Anything else, even a copy of an older state of the record
                // (another run's forwarding record may name it by now):
                // `settle_copy` removes a copy that nothing names.
                Some(_) => return Ok(None),
            };
            let write = Write { expect, record: Some((value.clone(), lease)), lock: LockChange::Keep };
            if let Written::Committed { revision } = self.write_on(map, to, id, &write, None, None, deadline).await? {
                return Ok(Some(tokens::revision(revision)));
            }
        }
        Ok(None)
    }

    /// Whether the forwarding record of this change at the previous home
    /// of `id` names `copy`, a migration's copy at `at`.
    pub(super) async fn named_copy(
        &self,
        map: &ShardMap,
        at: &str,
        id: &RecordId,
        copy: &Versioned<Record>,
        deadline: Instant,
    ) -> Result<bool, Error> {
        let Some(previous) = map.homes(id).other else { return Ok(false) };
        let there = self.store(previous)?.read(id, deadline).await?;
        Ok(there.record.is_some_and(|o| forwarding::leads_to(&o.value, map.forwarding_epoch(), at, copy)))
    }

    /// Whether the unconfirmed copy of `id` at `at`, its home, if there is
    /// one, is accounted for: named by its forwarding record (confirmed from
    /// that side, [`Self::confirm_named`]), or its original still at the
    /// previous home (the migration stopped half way; counted there).
    /// Otherwise it was written too late and is never read: removed, with
    /// `act`.
    async fn settle_copy(
        &self,
        map: &ShardMap,
        at: &str,
        id: &RecordId,
        act: bool,
        deadline: Instant,
    ) -> Result<bool, Error> {
        let here = self.store(at)?.read(id, deadline).await?;
        let Some(copy) = here.record.filter(|r| forwarding::unconfirmed(&r.value)) else { return Ok(true) };
        let Some(previous) = map.homes(id).other else { return Ok(true) };
        let there = self.store(previous)?.read(id, deadline).await?;
        let accounted = there.record.is_some_and(|o| {
            same_record(&o.value, &copy.value) || forwarding::leads_to(&o.value, map.forwarding_epoch(), at, &copy)
        });
        if accounted {
            return Ok(true);
        }
        Ok(act && self.store(at)?.forget(id, copy.revision, deadline).await?.is_some())
    }

    /// Whether the copy that `forwarding`, this change's forwarding record
    /// of `id`, names at `to` is confirmed, confirming it with `act` (its
    /// confirmation was lost). A copy it does not name is
    /// [`Self::settle_copy`]'s.
    async fn confirm_named(
        &self,
        map: &ShardMap,
        to: &str,
        id: &RecordId,
        forwarding: &Record,
        act: bool,
        deadline: Instant,
    ) -> Result<bool, Error> {
        let here = self.store(to)?.read(id, deadline).await?;
        let named = here.record.filter(|r| forwarding::unconfirmed(&r.value) && forwarding::names(forwarding, r));
        let Some(copy) = named else { return Ok(true) };
        Ok(act && self.confirm(map, to, id, &copy, here.lock.map(|l| l.revision), deadline).await?)
    }

    async fn mark_settle_checked(&self, shard: &str, deadline: Instant) -> Result<(), Error> {
        for _ in 0..4 {
            self.forget_state(shard);
            let state = self.state_of(shard, deadline).await?;
            if state.value.settle_checked {
                return Ok(());
            }
            let checked = ShardState { settle_checked: true, ..state.value.clone() };
            if self.store(shard)?.put_shard_state(state.revision, checked, deadline).await? {
                self.forget_state(shard);
                return Ok(());
            }
        }
        Err(Error::ShardStateMoved)
    }
}

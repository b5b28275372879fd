//! Which shard a record lives on. A placement puts each record on the shard
//! that rendezvous (highest random weight) hashing of (tenant, namespace,
//! key) picks among its shards' names, so adding or removing a shard moves
//! only the records that hash to it, and every replica with the same names
//! agrees without talking to the others.
//!
//! While the map changes, a replica knows two placements: the one it places
//! new records by, and its neighbour (the map announced next, or the one
//! before), and looks for a record under both. Changing maps therefore takes
//! three rollouts, one epoch step at a time (README, "Resharding"):
//! announce the next map, switch to it, and drop the previous one once no
//! record placed under it can still live.

use std::collections::BTreeSet;

use sha2::{Digest, Sha256};

use crate::core::record::RecordId;

/// Shards by name under one epoch of the map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub epoch: u64,
    pub shards: Vec<String>,
}

impl Placement {
    /// The shard `id` is placed on.
    pub fn home(&self, id: &RecordId) -> &str {
        let weight = |name: &str| {
            let mut digest = Sha256::new();
            for part in [name, &id.tenant, &id.namespace, &id.key] {
                digest.update((part.len() as u64).to_be_bytes());
                digest.update(part.as_bytes());
            }
            u64::from_be_bytes(digest.finalize()[..8].try_into().expect("8 bytes"))
        };
        self.shards.iter().max_by_key(|name| weight(name)).expect("a placement names at least one shard")
    }
}

/// The other placement a replica knows while the map changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Neighbour {
    /// The next map is announced: records are still placed by the current
    /// one, but replicas that have switched may have placed some by the next.
    Next(Placement),
    /// The previous map: records it placed stay where they are until they
    /// expire, and a record placed elsewhere now leaves a forwarding record
    /// where the previous map would have put it.
    Previous(Placement),
}

/// The shard map a replica runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardMap {
    /// Where new records go.
    pub place: Placement,
    pub neighbour: Option<Neighbour>,
}

/// Where to look for one record, in order, and what creating it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Homes<'a> {
    /// Its home under the placement new records go by.
    pub place: &'a str,
    /// Its home under the neighbouring map, when that differs.
    pub other: Option<&'a str>,
    /// Whether `other` is looked at first and must hold a forwarding record
    /// before the record is created at `place` (the previous map's home).
    pub forward_from_other: bool,
}

impl ShardMap {
    /// One placement, no change under way.
    pub fn single(epoch: u64, shards: Vec<String>) -> Self {
        Self { place: Placement { epoch, shards }, neighbour: None }
    }

    /// Which step of a map change this map is at (README.md, "Resharding"),
    /// so that operators can see every replica reached it before the next.
    pub fn step(&self) -> &'static str {
        match self.neighbour {
            None => "settled",
            Some(Neighbour::Next(_)) => "announce",
            Some(Neighbour::Previous(_)) => "switch",
        }
    }

    /// Names are non-empty and unique within a placement, and the neighbour
    /// is one epoch step away.
    pub fn check(&self) -> Result<(), String> {
        let mut placements = vec![("shards", &self.place)];
        match &self.neighbour {
            None => {}
            Some(Neighbour::Next(next)) => {
                if next.epoch != self.place.epoch + 1 {
                    return Err(format!("the next map's epoch must be {} (epoch + 1)", self.place.epoch + 1));
                }
                placements.push(("next.shards", next));
            }
            Some(Neighbour::Previous(previous)) => {
                if previous.epoch + 1 != self.place.epoch {
                    return Err(format!("the previous map's epoch must be {} (epoch - 1)", self.place.epoch - 1));
                }
                placements.push(("previous.shards", previous));
            }
        }
        if let [(_, first), (field, second)] = placements[..] {
            let (a, b): (BTreeSet<&String>, BTreeSet<&String>) =
                (first.shards.iter().collect(), second.shards.iter().collect());
            if !a.is_subset(&b) && !b.is_subset(&a) {
                return Err(format!(
                    "{field}: a map change either adds shards or removes them, not both (its fencing tokens \
                     must grow along every move); make two changes"
                ));
            }
        }
        for (field, placement) in placements {
            if placement.shards.is_empty() {
                return Err(format!("{field} names no shard"));
            }
            let unique: BTreeSet<&String> = placement.shards.iter().collect();
            if unique.len() != placement.shards.len() {
                return Err(format!("{field} names a shard twice"));
            }
        }
        Ok(())
    }

    /// The step as the shards keep it ([`crate::core::store::ShardState::step`]),
    /// so that a replica can tell how far it is from a shard.
    pub fn step_number(&self) -> u64 {
        let epoch = self.place.epoch;
        match self.neighbour {
            None => 3 * epoch,
            Some(Neighbour::Next(_)) => 3 * epoch + 1,
            Some(Neighbour::Previous(_)) => 3 * epoch - 1,
        }
    }

    /// The switch step's map, for a replica at the announce step: it acts
    /// by it once a shard says the switch began.
    pub fn switched(&self) -> Option<ShardMap> {
        match &self.neighbour {
            Some(Neighbour::Next(next)) => {
                Some(ShardMap { place: next.clone(), neighbour: Some(Neighbour::Previous(self.place.clone())) })
            }
            _ => None,
        }
    }

    /// The epoch whose forwarding records count: those written for the map
    /// change under way. Any other is left over from an earlier change.
    pub fn forwarding_epoch(&self) -> Option<u64> {
        match &self.neighbour {
            None => None,
            Some(Neighbour::Next(next)) => Some(next.epoch),
            Some(Neighbour::Previous(_)) => Some(self.place.epoch),
        }
    }

    /// At the switch step, the shards that records move onto and the shards
    /// they move from: the added shards and every previous one, or, when
    /// shards are removed, the remaining ones and the removed ones.
    pub fn movement(&self) -> Option<(Vec<&str>, Vec<&str>)> {
        let Some(Neighbour::Previous(previous)) = &self.neighbour else { return None };
        let (old, new): (BTreeSet<&str>, BTreeSet<&str>) = (
            previous.shards.iter().map(String::as_str).collect(),
            self.place.shards.iter().map(String::as_str).collect(),
        );
        let removed: Vec<&str> = old.difference(&new).copied().collect();
        if removed.is_empty() {
            Some((new.difference(&old).copied().collect(), old.into_iter().collect()))
        } else {
            Some((new.into_iter().collect(), removed))
        }
    }

    /// Whether this change adds `shard`: it may hold the state of an
    /// earlier life, from before it was removed.
    pub fn adds(&self, shard: &str) -> bool {
        let (old, new) = match &self.neighbour {
            None => return false,
            Some(Neighbour::Next(next)) => (&self.place, next),
            Some(Neighbour::Previous(previous)) => (previous, &self.place),
        };
        new.shards.iter().any(|s| s == shard) && !old.shards.iter().any(|s| s == shard)
    }

    /// Each placement this map knows, by epoch, with a digest of its shard
    /// names (order aside: rendezvous hashing ignores it).
    pub fn placements(&self) -> Vec<(u64, String)> {
        let neighbour = match &self.neighbour {
            Some(Neighbour::Next(p) | Neighbour::Previous(p)) => Some(p),
            None => None,
        };
        let digest = |placement: &Placement| {
            let names: BTreeSet<&str> = placement.shards.iter().map(String::as_str).collect();
            let mut hash = Sha256::new();
            for name in names {
                hash.update((name.len() as u64).to_be_bytes());
                hash.update(name.as_bytes());
            }
            hex::encode(&hash.finalize()[..8])
        };
        std::iter::once(&self.place).chain(neighbour).map(|p| (p.epoch, digest(p))).collect()
    }

    /// Every shard a record may live on under this map.
    pub fn shard_names(&self) -> BTreeSet<&str> {
        let neighbour = match &self.neighbour {
            Some(Neighbour::Next(p) | Neighbour::Previous(p)) => p.shards.as_slice(),
            None => &[],
        };
        self.place.shards.iter().chain(neighbour).map(String::as_str).collect()
    }

    pub fn homes(&self, id: &RecordId) -> Homes<'_> {
        let place = self.place.home(id);
        let (other, forward_from_other) = match &self.neighbour {
            None => (None, false),
            Some(Neighbour::Next(next)) => (Some(next.home(id)), false),
            Some(Neighbour::Previous(previous)) => (Some(previous.home(id)), true),
        };
        let other = other.filter(|other| *other != place);
        Homes { place, other, forward_from_other: forward_from_other && other.is_some() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn placement(epoch: u64, names: &[&str]) -> Placement {
        Placement { epoch, shards: names.iter().map(|n| n.to_string()).collect() }
    }

    fn id(key: &str) -> RecordId {
        RecordId { tenant: "t".into(), namespace: "ns".into(), key: key.into() }
    }

    #[test]
    fn records_spread_and_adding_a_shard_moves_only_the_records_it_takes() {
        let (three, four) = (placement(1, &["a", "b", "c"]), placement(2, &["a", "b", "c", "d"]));
        let mut per_shard = std::collections::BTreeMap::<&str, usize>::new();
        let mut moved = 0;
        for i in 0..3000 {
            let id = id(&format!("key-{i}"));
            let before = three.home(&id);
            *per_shard.entry(before).or_default() += 1;
            let after = four.home(&id);
            if after != before {
                assert_eq!(after, "d", "a record moved between old shards");
                moved += 1;
            }
        }
        assert!(per_shard.values().all(|&n| (900..1100).contains(&n)), "{per_shard:?}");
        assert!((600..900).contains(&moved), "about a quarter moves to the new shard: {moved}");
    }

    #[test]
    fn only_records_that_move_have_another_home() {
        let map = ShardMap {
            place: placement(2, &["a", "b", "c"]),
            neighbour: Some(Neighbour::Previous(placement(1, &["a", "b"]))),
        };
        let mut others = 0;
        for i in 0..300 {
            let homes = map.homes(&id(&format!("key-{i}")));
            if let Some(other) = homes.other {
                assert_eq!(homes.place, "c");
                assert_ne!(other, "c");
                assert!(homes.forward_from_other);
                others += 1;
            } else {
                assert!(!homes.forward_from_other);
            }
        }
        assert!((60..140).contains(&others), "about a third moves: {others}");
    }

    #[test]
    fn maps_step_one_epoch_at_a_time_with_unique_names() {
        let next = |epoch, names: &[&str]| ShardMap {
            place: placement(1, &["a"]),
            neighbour: Some(Neighbour::Next(placement(epoch, names))),
        };
        assert!(next(2, &["a", "b"]).check().is_ok());
        assert_eq!(next(2, &["a", "b"]).step(), "announce");
        assert!(next(3, &["a", "b"]).check().unwrap_err().contains("epoch must be 2"));
        assert!(next(2, &["a", "a"]).check().unwrap_err().contains("next.shards names a shard twice"));
        assert!(next(2, &[]).check().unwrap_err().contains("next.shards names no shard"));
        let previous =
            ShardMap { place: placement(5, &["a", "b"]), neighbour: Some(Neighbour::Previous(placement(3, &["a"]))) };
        assert!(previous.check().unwrap_err().contains("epoch must be 4"));
        assert_eq!(previous.step(), "switch");
        assert_eq!(ShardMap::single(1, vec!["a".into()]).step(), "settled");
        assert_eq!(previous.shard_names().into_iter().collect::<Vec<_>>(), ["a", "b"]);
    }
}

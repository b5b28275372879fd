//! Records spread over several stores (etcd clusters, in production): each
//! record lives, with all its keys, on the one shard that rendezvous hashing
//! of its (tenant, namespace, key) picks, so its fencing tokens stay one
//! cluster's revisions. Rendezvous (highest random weight) hashing moves only
//! the records of a shard that is added or removed, which resharding will
//! build on.
//!
//! WORK IN PROGRESS (issue 16): no resharding, no per-shard readiness yet.

use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::time::Instant;
use tokio_stream::StreamExt;
use tokio_stream::StreamMap;

use crate::core::error::Error;
use crate::core::record::{RecordId, Snapshot};
use crate::core::store::{Capacity, Changes, Forgotten, Listing, RecordStore, Write, Written};

/// 1 while a shard answers its health check, else 0 (a Prometheus gauge, by `shard`).
pub const SHARD_READY: &str = "idempotency_store_shard_ready";

pub struct ShardedStore<S> {
    shards: Vec<(String, Arc<S>)>,
}

impl<S: RecordStore> ShardedStore<S> {
    /// Shards by name; names must be unique and stay the same across restarts.
    pub fn new(shards: Vec<(String, Arc<S>)>) -> Result<Self, String> {
        if shards.is_empty() {
            return Err("a sharded store needs at least one shard".into());
        }
        let mut names: Vec<&str> = shards.iter().map(|(n, _)| n.as_str()).collect();
        names.sort();
        if names.windows(2).any(|w| w[0] == w[1]) {
            return Err("shard names must be unique".into());
        }
        Ok(Self { shards })
    }

    /// The index of the shard `id` lives on.
    pub fn shard_of(&self, id: &RecordId) -> usize {
        let weight = |name: &str| {
            let mut digest = Sha256::new();
            for part in [name, &id.tenant, &id.namespace, &id.key] {
                digest.update((part.len() as u64).to_be_bytes());
                digest.update(part.as_bytes());
            }
            u64::from_be_bytes(digest.finalize()[..8].try_into().expect("8 bytes"))
        };
        (0..self.shards.len()).max_by_key(|&i| weight(&self.shards[i].0)).expect("at least one shard")
    }

    fn store(&self, id: &RecordId) -> &S {
        &self.shards[self.shard_of(id)].1
    }
}

impl<S: RecordStore> RecordStore for ShardedStore<S> {
    async fn read(&self, id: &RecordId, deadline: Instant) -> Result<Snapshot, Error> {
        self.store(id).read(id, deadline).await
    }

    async fn write(&self, id: &RecordId, write: &Write, deadline: Instant) -> Result<Written, Error> {
        self.store(id).write(id, write, deadline).await
    }

    async fn watch(&self, id: &RecordId, after_revision: i64, deadline: Instant) -> Result<Changes, Error> {
        self.store(id).watch(id, after_revision, deadline).await
    }

    /// Ready while any shard answers: a shard that does not only makes its
    /// own records UNAVAILABLE. `idempotency_store_shard_ready{shard}` says
    /// which; a full shard makes the store report itself full.
    async fn ping(&self, within: Duration) -> Result<Capacity, Error> {
        let (mut capacity, mut down) = (Capacity::Writable, Vec::new());
        for (name, shard) in &self.shards {
            let answer = shard.ping(within).await;
            metrics::gauge!(SHARD_READY, "shard" => name.clone()).set(if answer.is_ok() { 1.0 } else { 0.0 });
            match answer {
                Ok(Capacity::Writable) => {}
                Ok(Capacity::Full(why)) => capacity = Capacity::Full(format!("shard {name}: {why}")),
                Err(error) => down.push(format!("shard {name}: {error}")),
            }
        }
        if down.len() == self.shards.len() {
            return Err(Error::StoreUnavailable(down.join("; ")));
        }
        if !down.is_empty() {
            tracing::warn!(down = %down.join("; "), "some shards are unavailable; their records are too");
        }
        Ok(capacity)
    }

    /// Shard by shard; the token is `{shard index}:{that shard's token}`.
    async fn list(
        &self,
        tenant: &str,
        namespace: &str,
        after: &str,
        limit: usize,
        deadline: Instant,
    ) -> Result<Listing, Error> {
        let (mut shard, mut inner) = match after.split_once(':') {
            Some((index, token)) => (index.parse::<usize>().map_err(|_| bad_token(after))?, token.to_owned()),
            None if after.is_empty() => (0, String::new()),
            None => return Err(bad_token(after)),
        };
        // Pages are filled across shards; at a page's end, a later shard is
        // asked for one record so that the last page says it is the last.
        let mut records = Vec::new();
        while shard < self.shards.len() {
            let want = limit - records.len();
            let page = self.shards[shard].1.list(tenant, namespace, &inner, want, deadline).await?;
            records.extend(page.records);
            if let Some(next) = page.next {
                return Ok(Listing { records, next: Some(format!("{shard}:{next}")) });
            }
            shard += 1;
            inner.clear();
            if records.len() == limit {
                for later in shard..self.shards.len() {
                    let peek = self.shards[later].1.list(tenant, namespace, "", 1, deadline).await?;
                    if !peek.records.is_empty() {
                        return Ok(Listing { records, next: Some(format!("{later}:")) });
                    }
                }
                return Ok(Listing { records, next: None });
            }
        }
        Ok(Listing { records, next: None })
    }

    async fn forget(&self, id: &RecordId, record_revision: i64, deadline: Instant) -> Result<Option<i64>, Error> {
        self.store(id).forget(id, record_revision, deadline).await
    }

    fn forgotten(&self) -> Forgotten {
        let mut feeds = StreamMap::new();
        for (index, (_, shard)) in self.shards.iter().enumerate() {
            feeds.insert(index, shard.forgotten());
        }
        Box::pin(feeds.map(|(_, forgotten)| forgotten))
    }
}

fn bad_token(token: &str) -> Error {
    Error::InvalidRequest(vec![crate::core::error::Violation {
        field: "page_token".into(),
        description: format!("{token:?} is not a token this server gave"),
    }])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::clock::TokioClock;
    use crate::store::memory::MemoryStore;

    fn shards(names: &[&str]) -> ShardedStore<MemoryStore> {
        let clock = Arc::new(TokioClock::new());
        let shards = names.iter().map(|n| (n.to_string(), Arc::new(MemoryStore::new(clock.clone())))).collect();
        ShardedStore::new(shards).expect("valid shards")
    }

    fn id(key: &str) -> RecordId {
        RecordId { tenant: "t".into(), namespace: "ns".into(), key: key.into() }
    }

    #[tokio::test]
    async fn records_spread_and_adding_a_shard_moves_only_the_records_it_takes() {
        let three = shards(&["a", "b", "c"]);
        let four = shards(&["a", "b", "c", "d"]);
        let mut per_shard = [0usize; 3];
        let mut moved = 0;
        for i in 0..3000 {
            let id = id(&format!("key-{i}"));
            let before = three.shard_of(&id);
            per_shard[before] += 1;
            let after = four.shard_of(&id);
            if after != before {
                assert_eq!(after, 3, "a record moved between old shards");
                moved += 1;
            }
        }
        assert!(per_shard.iter().all(|&n| (900..1100).contains(&n)), "{per_shard:?}");
        assert!((600..900).contains(&moved), "about a quarter moves to the new shard: {moved}");
    }

    #[test]
    fn shard_names_are_unique() {
        let clock = Arc::new(TokioClock::new());
        let store = || Arc::new(MemoryStore::new(clock.clone()));
        assert!(ShardedStore::new(vec![("a".into(), store()), ("a".into(), store())]).is_err());
        assert!(ShardedStore::<MemoryStore>::new(vec![]).is_err());
    }
}

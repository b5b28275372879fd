//! Two per-replica caches that save etcd round trips without changing any
//! answer.
//!
//! - [`ReplayCache`]: terminal records (COMPLETED, FAILED) cannot change until
//!   they expire, so a replica may answer replays from memory. Entries are
//!   bounded in bytes, never served past the record's expiry, and the request
//!   fingerprint is still checked against the record's.
//! - [`AttemptCache`]: the record of each attempt this replica handed out. If
//!   the same caller completes through this replica, the record to rewrite is
//!   already known and Complete needs no read first; the write's compare on
//!   the fencing token still decides, so a stale entry can only cost a retry.

use std::sync::Arc;

use moka::sync::Cache;

use crate::error::Error;
use crate::proto::storage::{StoredRecord, StoredState};
use crate::proto::v1::{self, begin_response::Outcome};

struct Replay {
    fingerprint: Vec<u8>,
    attempt: u32,
    expires_at_ms: i64,
    outcome: Outcome,
}

pub struct ReplayCache {
    by_record_key: Option<Cache<String, Arc<Replay>>>,
}

/// The replay a terminal stored record gives a Begin.
pub fn replay_of(stored: &StoredRecord) -> Option<Outcome> {
    let at = Some(crate::coordinator::timestamp(stored.updated_at_ms));
    match stored.state() {
        StoredState::Completed => Some(Outcome::Completed(v1::Completed {
            result: stored.result.clone(),
            attempt: stored.attempt,
            completed_at: at,
        })),
        StoredState::Failed => {
            Some(Outcome::Failed(v1::Failed { error: stored.error.clone(), attempt: stored.attempt, failed_at: at }))
        }
        _ => None,
    }
}

impl ReplayCache {
    /// A cache holding about `max_bytes` of replays; 0 disables it.
    pub fn new(max_bytes: u64) -> Self {
        let by_record_key = (max_bytes > 0).then(|| {
            Cache::builder()
                .max_capacity(max_bytes)
                .weigher(|key: &String, replay: &Arc<Replay>| {
                    let body = match &replay.outcome {
                        Outcome::Completed(c) => c.result.as_ref().map(prost::Message::encoded_len),
                        Outcome::Failed(f) => f.error.as_ref().map(prost::Message::encoded_len),
                        _ => None,
                    };
                    (key.len() + body.unwrap_or_default() + 128).try_into().unwrap_or(u32::MAX)
                })
                .build()
        });
        Self { by_record_key }
    }

    /// The replay for `record_key` if cached and not expired at `now_ms`;
    /// KeyReused if it was made by a request with another fingerprint.
    pub fn get(&self, record_key: &str, fingerprint: &[u8], now_ms: i64) -> Option<Result<Outcome, Error>> {
        let cache = self.by_record_key.as_ref()?;
        let replay = cache.get(record_key)?;
        if replay.expires_at_ms <= now_ms {
            cache.invalidate(record_key);
            return None;
        }
        if replay.fingerprint != fingerprint {
            return Some(Err(Error::KeyReused { attempt: replay.attempt }));
        }
        Some(Ok(replay.outcome.clone()))
    }

    /// Remembers `stored` if it is terminal.
    pub fn remember(&self, record_key: &str, stored: &StoredRecord) {
        let (Some(cache), Some(outcome)) = (self.by_record_key.as_ref(), replay_of(stored)) else { return };
        let replay = Replay {
            fingerprint: stored.fingerprint.clone(),
            attempt: stored.attempt,
            expires_at_ms: stored.expires_at_ms,
            outcome,
        };
        cache.insert(record_key.to_owned(), Arc::new(replay));
    }
}

pub struct AttemptCache {
    by_record_key: Cache<String, Arc<(u64, StoredRecord)>>,
}

impl AttemptCache {
    pub fn new(max_entries: u64) -> Self {
        Self { by_record_key: Cache::new(max_entries) }
    }

    pub fn remember(&self, record_key: &str, token: u64, stored: StoredRecord) {
        self.by_record_key.insert(record_key.to_owned(), Arc::new((token, stored)));
    }

    /// The record as this replica wrote it when it handed out `token`.
    pub fn get(&self, record_key: &str, token: u64) -> Option<StoredRecord> {
        let entry = self.by_record_key.get(record_key)?;
        (entry.0 == token).then(|| entry.1.clone())
    }

    pub fn forget(&self, record_key: &str) {
        self.by_record_key.invalidate(record_key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn completed(expires_at_ms: i64) -> StoredRecord {
        StoredRecord {
            state: StoredState::Completed as i32,
            attempt: 1,
            fingerprint: vec![7; 32],
            expires_at_ms,
            result: Some(v1::Result { body: Some(v1::result::Body::ResourceRef("r".into())), ..Default::default() }),
            ..Default::default()
        }
    }

    #[test]
    fn replays_are_served_until_expiry_and_check_the_fingerprint() {
        let cache = ReplayCache::new(1 << 20);
        cache.remember("k", &completed(1_000));
        assert!(matches!(cache.get("k", &[7; 32], 999), Some(Ok(Outcome::Completed(_)))));
        assert!(matches!(cache.get("k", &[8; 32], 999), Some(Err(Error::KeyReused { attempt: 1 }))));
        assert!(cache.get("k", &[7; 32], 1_000).is_none(), "served at its expiry");
        assert!(cache.get("k", &[7; 32], 0).is_none(), "an expired entry must be gone");
    }

    #[test]
    fn only_terminal_records_are_cached_and_zero_bytes_disables() {
        let cache = ReplayCache::new(1 << 20);
        let mut in_progress = completed(1_000);
        in_progress.state = StoredState::InProgress as i32;
        cache.remember("k", &in_progress);
        assert!(cache.get("k", &[7; 32], 0).is_none());
        let disabled = ReplayCache::new(0);
        disabled.remember("k", &completed(1_000));
        assert!(disabled.get("k", &[7; 32], 0).is_none());
    }

    #[test]
    fn attempts_are_found_only_with_their_token() {
        let cache = AttemptCache::new(10);
        cache.remember("k", 42, completed(1));
        assert!(cache.get("k", 42).is_some());
        assert!(cache.get("k", 41).is_none());
        cache.forget("k");
        assert!(cache.get("k", 42).is_none());
    }
}

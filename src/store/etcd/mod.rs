//! The etcd store: every read and conditional write the coordinator needs as
//! one etcd transaction, committed in groups ([`batch`]), on shared leases
//! ([`leases`]), under the key layout of [`keys`], in the stored format of
//! [`format`].
//!
//! Each write is a transaction whose else-branch reads the record and its lock,
//! so a write that loses a race returns the state it lost to in the same round
//! trip. The fencing token is the etcd revision that wrote the record.
//! `etcd-client` neither retries nor reconnects streams by itself: every call
//! here is retried on transient errors ([`failure`]) until the caller's
//! deadline or the configured request timeout, whichever is sooner. Retrying a
//! write is safe because every write the coordinator makes is recognisable on
//! a second look (request ids for Begin, fencing tokens for the rest).

pub mod admin;
pub mod batch;
pub mod config;
pub mod failure;
pub mod format;
pub mod keys;
pub mod leases;
pub mod shard_state;
pub mod space;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use etcd_client::{
    AlarmAction, AlarmType, Client, Compare, CompareOp, ConnectOptions, DeleteOptions, PutOptions, Txn, TxnOp,
    TxnOpResponse, WatchOptions,
};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, timeout_at};
use tokio_stream::StreamExt;
use tracing::{Instrument, debug, info, warn};

use crate::core::error::Error;
use crate::core::record::{RecordId, Snapshot, Versioned};
use crate::core::store::{
    Capacity, Changes, Expect, Forgotten, LeaseWant, Listing, LockChange, Page, RecordLease, RecordStore, Scan,
    ShardState, Write, Written,
};
use config::EtcdConfig;
use failure::{Backoff, Failure, classify, timed_out};
use keys::RecordKeys;
use leases::LeasePool;

#[derive(Clone)]
pub struct EtcdStore {
    /// Set once connected: at startup, or later in the background when etcd
    /// was unreachable then (a client that authenticates must reach etcd to
    /// connect, and a pod must start, and report itself alive, without it).
    client: Arc<OnceLock<Client>>,
    prefix: String,
    request_timeout: Duration,
    leases: Arc<LeasePool>,
    /// Where reads and conditional writes go to be committed in groups.
    batcher: mpsc::Sender<batch::Call>,
    /// Calls per transaction, as etcd's `--max-txn-ops` allows.
    limit: Arc<batch::CallLimit>,
    counters: Arc<batch::Counters>,
    /// Set while etcd's NOSPACE alarm is raised. etcd's own quota check does
    /// not see puts inside nested transactions (it counts their cost as 0),
    /// and group commit nests every call: without this a full etcd would
    /// refuse only the writes that need a new lease and take the rest.
    full: Arc<AtomicBool>,
    /// Reports the backend's size against the quota at every health check.
    space: Arc<space::SpaceReport>,
}

impl EtcdStore {
    /// Connects lazily: the process starts (and reports itself alive) even
    /// while etcd is down, and requests fail with STORE_UNAVAILABLE until it
    /// is back.
    pub async fn connect(config: &EtcdConfig) -> Result<Self, Error> {
        let mut options = ConnectOptions::new()
            .with_connect_timeout(config.connect_timeout)
            .with_timeout(config.request_timeout)
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5))
            .with_keep_alive_while_idle(true)
            // Without this a member cut off from the leader answers reads
            // and stalls writes instead of failing fast.
            .with_require_leader(true);
        if let Some(tls) = &config.tls {
            options = options.with_tls(tls.options());
        }
        if let Some((user, password)) = &config.credentials {
            let password = String::from_utf8_lossy(password.expose()).into_owned();
            // etcd auth tokens expire (after 5 idle minutes by default, and on
            // any auth change with JWT tokens): re-authenticate and retry once
            // when etcd says so, rather than failing every call until restart.
            options = options.with_user(user, password).with_auto_token_refresh(true);
        }
        let client = Arc::new(OnceLock::new());
        let limit = Arc::new(batch::CallLimit::new(&config.batching));
        let probe_key = health_key(&config.prefix);
        match Client::connect(&config.endpoints, Some(options.clone())).await {
            Ok(connected) => {
                fit_call_limit(&connected, &probe_key, &limit).await;
                drop(client.set(connected));
            }
            Err(error) => {
                let message = error.to_string();
                if !matches!(classify(error), Failure::Transient(_)) {
                    // A wrong password or unusable TLS material: no retry helps.
                    return Err(Error::StoreUnavailable(format!(
                        "cannot set up the etcd client (check --etcd-endpoints and the --etcd-* TLS and user flags): {message}"
                    )));
                }
                warn!(error = %message, "etcd is unreachable; connecting in the background, not ready until then");
                let endpoints = config.endpoints.clone();
                tokio::spawn(connect_in_background(client.clone(), endpoints, options, probe_key, limit.clone()));
            }
        }
        let counters = Arc::new(batch::Counters::default());
        Ok(Self {
            batcher: batch::spawn(
                client.clone(),
                config.request_timeout,
                config.batching,
                limit.clone(),
                counters.clone(),
            ),
            limit,
            counters,
            client,
            full: Default::default(),
            space: Arc::new(space::SpaceReport::new(&config.shard, config.quota_bytes)),
            prefix: config.prefix.clone(),
            request_timeout: config.request_timeout,
            leases: Default::default(),
        })
    }

    /// The etcd client, once connected.
    fn connected(&self) -> Result<&Client, Failure> {
        self.client.get().ok_or_else(|| Failure::Transient(NOT_CONNECTED.into()))
    }

    /// The most calls group commit now puts in one etcd transaction.
    pub fn calls_per_transaction(&self) -> usize {
        self.limit.get()
    }

    /// What group commit has sent so far.
    pub fn counters(&self) -> &batch::Counters {
        &self.counters
    }

    /// Hands one call to the batcher and waits for its share of the answer.
    async fn submit(
        &self,
        keys: &RecordKeys,
        txn: Txn,
        bytes: usize,
        solo: bool,
        deadline: Instant,
    ) -> Result<batch::Answer, Failure> {
        let (reply, answer) = oneshot::channel();
        let call = batch::Call { scope: keys.scope.clone(), txn, bytes, solo, reply };
        let exchange = async {
            self.batcher.send(call).await.map_err(|_| Failure::Permanent("the batcher has stopped".into()))?;
            answer.await.map_err(|_| Failure::Permanent("the batcher dropped a call".into()))?
        };
        // A span per etcd transaction this call takes part in (its share of
        // a group commit), inside the call's span when traces are exported.
        let span = tracing::debug_span!("etcd.txn", otel.kind = "client", db.system = "etcd", solo);
        timeout_at(deadline, exchange)
            .instrument(span)
            .await
            .unwrap_or_else(|_| Err(Failure::Transient("etcd did not answer in time".into())))
    }

    /// The transaction of `write`, and the bytes it counts against a batch's
    /// size limit.
    async fn build_txn(&self, keys: &RecordKeys, write: &Write, fence: Option<i64>) -> Result<(Txn, usize), Failure> {
        let mut compares = match write.expect {
            Expect::Absent => vec![
                Compare::version(keys.record.as_str(), CompareOp::Equal, 0),
                Compare::version(keys.lock.as_str(), CompareOp::Equal, 0),
            ],
            Expect::Unchanged { record_revision, lock_revision } => vec![
                Compare::mod_revision(keys.record.as_str(), CompareOp::Equal, record_revision),
                match lock_revision {
                    Some(revision) => Compare::mod_revision(keys.lock.as_str(), CompareOp::Equal, revision),
                    None => Compare::version(keys.lock.as_str(), CompareOp::Equal, 0),
                },
            ],
            Expect::Token(token) => {
                vec![Compare::mod_revision(keys.record.as_str(), CompareOp::Equal, token as i64)]
            }
        };
        let mut reads = read_ops(keys);
        if let Some(fence) = fence {
            let state = shard_state::state_key(&self.prefix);
            compares.push(Compare::mod_revision(state.as_str(), CompareOp::Equal, fence));
            reads.push(TxnOp::get(state, None));
        }
        // Every key the transaction names: its compares, puts and deletes,
        // and the reads of its else-branch.
        let mut bytes = compares.len() * op_bytes(&keys.record) + reads.len() * op_bytes(&keys.record);
        let mut then = Vec::new();
        if let Some((record, lease)) = &write.record {
            let options = match lease {
                RecordLease::Until(want) => PutOptions::new().with_lease(self.lease(*want).await?),
                RecordLease::Keep => PutOptions::new().with_ignore_lease(),
            };
            let value = format::encode_record(record);
            bytes += op_bytes(&keys.record) + value.len();
            then.push(TxnOp::put(keys.record.as_str(), value, Some(options)));
        }
        match &write.lock {
            LockChange::Keep => {}
            LockChange::Put { lock, lease } => {
                let options = PutOptions::new().with_lease(self.lease(*lease).await?);
                let value = format::encode_lock(lock);
                bytes += op_bytes(&keys.lock) + value.len();
                then.push(TxnOp::put(keys.lock.as_str(), value, Some(options)));
            }
            LockChange::Delete => {
                bytes += op_bytes(&keys.lock);
                then.push(TxnOp::delete(keys.lock.as_str(), None::<DeleteOptions>));
            }
        }
        Ok((Txn::new().when(compares).and_then(then).or_else(reads), bytes))
    }

    async fn write_unless_moved(
        &self,
        id: &RecordId,
        write: &Write,
        fence: Option<i64>,
        deadline: Instant,
    ) -> Result<Written, Error> {
        let keys = RecordKeys::new(&self.prefix, id);
        let deadline = self.bound(deadline);
        let mut backoff = Backoff::default();
        let mut solo = false;
        loop {
            if self.full.load(Ordering::Relaxed) {
                return self.refused_for_space(id, write, NOSPACE_ALARM.into(), deadline).await;
            }
            let (txn, bytes) = match timeout_at(deadline, self.build_txn(&keys, write, fence)).await {
                Err(_) => return Err(timed_out()),
                Ok(Err(Failure::Full(message))) => return self.refused_for_space(id, write, message, deadline).await,
                Ok(Err(failure)) => {
                    backoff.after(failure, deadline, &self.leases).await?;
                    continue;
                }
                Ok(Ok(built)) => built,
            };
            match self.submit(&keys, txn, bytes, solo, deadline).await {
                Ok(answer) if answer.succeeded => return Ok(Written::Committed { revision: answer.revision }),
                Ok(answer) => {
                    if fence.is_some_and(|fence| fenced_off(&answer.responses, fence)) {
                        return Err(Error::ShardStateMoved);
                    }
                    return Ok(Written::Conflict(Box::new(snapshot_of(&answer.responses, answer.revision)?)));
                }
                Err(Failure::Full(message)) => return self.refused_for_space(id, write, message, deadline).await,
                // Sent again alone: safe even if the batch committed, since
                // the compare then fails and answers with what we wrote.
                Err(Failure::TooLarge(_)) if !solo => solo = true,
                // Whether it committed, only etcd knows: ask it, and let the
                // coordinator recognise its own write (or not) in the answer.
                Err(Failure::Unknown(why)) => {
                    debug!(%why, "a write's outcome is unknown; reading what etcd holds");
                    return Ok(Written::Conflict(Box::new(Box::pin(self.read(id, deadline)).await?)));
                }
                Err(failure) => backoff.after(failure, deadline, &self.leases).await?,
            }
        }
    }

    /// A lease ending inside `want`'s window: pooled, or granted now. The
    /// pool measures on the monotonic clock; the wall clock plays no part.
    async fn lease(&self, want: LeaseWant) -> Result<i64, Failure> {
        let now = Instant::now();
        let until = now + want.lasts;
        if let Some(id) = self.leases.find(until, want.slack, now) {
            return Ok(id);
        }
        // About one grant a second per TTL: boxed, so that the client's
        // large grant future is not part of every write's future (which
        // is moved, byte by byte, on every call).
        let ttl = leases::grant_ttl_secs(want);
        let mut client = self.connected()?.lease_client();
        let granted = Box::pin(async move { client.grant(ttl, None).await }).await.map_err(classify)?;
        debug!(lease = granted.id(), ttl, "granted a shared lease");
        self.leases.insert(now + Duration::from_secs(granted.ttl().max(0) as u64), granted.id());
        Ok(granted.id())
    }

    /// etcd refused `write` for lack of space. If what the write expected no
    /// longer holds, the coordinator decides again on what etcd holds (a
    /// replay needs no write); if it still holds, the write was needed and
    /// cannot be made: STORE_FULL.
    async fn refused_for_space(
        &self,
        id: &RecordId,
        write: &Write,
        message: String,
        deadline: Instant,
    ) -> Result<Written, Error> {
        self.full.store(true, Ordering::Relaxed);
        let snapshot = Box::pin(self.read(id, deadline)).await?;
        if write.expect.holds(&snapshot) {
            return Err(Error::StoreFull(message));
        }
        Ok(Written::Conflict(Box::new(snapshot)))
    }

    /// The caller's deadline, capped at one request timeout from now.
    fn bound(&self, deadline: Instant) -> Instant {
        deadline.min(Instant::now() + self.request_timeout)
    }
}

impl RecordStore for EtcdStore {
    async fn read(&self, id: &RecordId, deadline: Instant) -> Result<Snapshot, Error> {
        let keys = RecordKeys::new(&self.prefix, id);
        let deadline = self.bound(deadline);
        let mut backoff = Backoff::default();
        let mut solo = false;
        loop {
            let txn = Txn::new().and_then(read_ops(&keys));
            match self.submit(&keys, txn, read_bytes(&keys), solo, deadline).await {
                Ok(answer) => return snapshot_of(&answer.responses, answer.revision),
                // A full etcd refused the batch for the writes in it; a
                // read alone it serves.
                Err(Failure::TooLarge(_) | Failure::Full(_)) if !solo => solo = true,
                Err(failure) => backoff.after(failure, deadline, &self.leases).await?,
            }
        }
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
        let client = self.connected().map_err(|_| Error::StoreUnavailable(NOT_CONNECTED.into()))?;
        shard_state::read(client, &self.prefix, self.bound(deadline)).await
    }

    async fn put_shard_state(&self, expected: i64, state: ShardState, deadline: Instant) -> Result<bool, Error> {
        let client = self.connected().map_err(|_| Error::StoreUnavailable(NOT_CONNECTED.into()))?;
        shard_state::put(client, &self.prefix, expected, state, self.bound(deadline)).await
    }

    async fn scan(&self, after: &str, limit: usize, deadline: Instant) -> Result<Scan, Error> {
        let client = self.connected().map_err(|_| Error::StoreUnavailable(NOT_CONNECTED.into()))?;
        shard_state::scan(client, &self.prefix, after, limit, self.bound(deadline)).await
    }

    async fn record_lease_left(
        &self,
        id: &RecordId,
        record_revision: i64,
        deadline: Instant,
    ) -> Result<Option<Duration>, Error> {
        let client = self.connected().map_err(|_| Error::StoreUnavailable(NOT_CONNECTED.into()))?;
        let key = RecordKeys::new(&self.prefix, id).record;
        shard_state::lease_left(client, &key, record_revision, self.bound(deadline)).await
    }

    /// A watch on every key of one record.
    async fn watch(&self, id: &RecordId, after_revision: i64, deadline: Instant) -> Result<Changes, Error> {
        let keys = RecordKeys::new(&self.prefix, id);
        let options = WatchOptions::new().with_prefix().with_start_revision(after_revision + 1);
        let mut client = self.connected().map_err(|_| Error::StoreUnavailable(NOT_CONNECTED.into()))?.watch_client();
        // Boxed: only waiting Begins watch (see `lease`).
        let stream = match timeout_at(self.bound(deadline), Box::pin(client.watch(keys.scope, Some(options)))).await {
            Err(_) => return Err(timed_out()),
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => return Err(Error::StoreUnavailable(format!("cannot watch: {e}"))),
        };
        // Responses without events (the watch's creation, progress notes)
        // are no change; a cancelled watch ends the stream.
        let changes = stream
            .filter_map(|message| match message {
                Ok(response) if response.canceled() => Some(None),
                Ok(response) if response.events().is_empty() => None,
                Ok(response) => Some(Some(Ok(response.header().map(|h| h.revision()).unwrap_or_default()))),
                Err(e) => Some(Some(Err(Error::StoreUnavailable(format!("the watch broke: {e}"))))),
            })
            .map_while(|change| change);
        Ok(Box::pin(changes))
    }

    /// A linearizable read that needs an etcd quorum, and etcd's alarms: a
    /// NOSPACE alarm means it refuses writes.
    async fn ping(&self, within: Duration) -> Result<Capacity, Error> {
        let key = health_key(&self.prefix);
        let client = self.connected().map_err(|_| Error::StoreUnavailable(NOT_CONNECTED.into()))?;
        let (mut kv, mut maintenance) = (client.kv_client(), client.maintenance_client());
        let mut status_client = maintenance.clone();
        let (read, alarms, status) = tokio::join!(
            tokio::time::timeout(within, kv.get(key, None)),
            tokio::time::timeout(within, maintenance.alarm(AlarmAction::Get, AlarmType::None, None)),
            tokio::time::timeout(within, status_client.status()),
        );
        if let Ok(Ok(status)) = &status {
            self.space.observe(status);
        }
        match read {
            Err(_) => return Err(timed_out()),
            Ok(Err(e)) => return Err(Error::StoreUnavailable(e.to_string())),
            Ok(Ok(_)) => {}
        }
        // An alarm list that cannot be read counts as no alarm: a write that
        // etcd refuses for space raises the flag again.
        let full = match alarms {
            Ok(Ok(alarms)) => alarms.alarms().iter().any(|a| a.alarm() == AlarmType::Nospace),
            Ok(Err(error)) => {
                debug!(%error, "cannot list etcd's alarms");
                false
            }
            Err(_) => false,
        };
        self.full.store(full, Ordering::Relaxed);
        Ok(if full { Capacity::Full(NOSPACE_ALARM.into()) } else { Capacity::Writable })
    }

    async fn list(&self, page: &Page, deadline: Instant) -> Result<Listing, Error> {
        let client = self.connected().map_err(|_| Error::StoreUnavailable(NOT_CONNECTED.into()))?;
        admin::list(client, &self.prefix, page, self.bound(deadline)).await
    }

    async fn forget(&self, id: &RecordId, record_revision: i64, deadline: Instant) -> Result<Option<i64>, Error> {
        let client = self.connected().map_err(|_| Error::StoreUnavailable(NOT_CONNECTED.into()))?;
        admin::forget(client, &self.prefix, id, record_revision, self.bound(deadline)).await
    }

    fn forgotten(&self) -> Forgotten {
        let client = self.client.clone();
        admin::forgotten(move || client.get().cloned(), self.prefix.clone())
    }
}

/// What one operation on `key` adds to a request: the key and the framing
/// around it (operation and field tags, lengths, lease id, revisions).
fn op_bytes(key: &str) -> usize {
    key.len() + 32
}

/// What the two reads of [`read_ops`] add to a request.
fn read_bytes(keys: &RecordKeys) -> usize {
    op_bytes(&keys.record) + op_bytes(&keys.lock)
}

const NOT_CONNECTED: &str = "not connected to etcd yet";

const NOSPACE_ALARM: &str = "etcd's NOSPACE alarm is raised (its --quota-backend-bytes is reached)";

/// A key no record uses, read by the readiness check and the size probe.
fn health_key(prefix: &str) -> String {
    format!("{prefix}health")
}

/// Checks how many calls etcd takes per transaction (see
/// [`batch::fit_call_limit`]); if etcd does not answer now, the batcher finds
/// out from its first refused transaction instead.
async fn fit_call_limit(client: &Client, probe_key: &str, limit: &batch::CallLimit) {
    match batch::fit_call_limit(client, probe_key, limit).await {
        Ok(()) => info!(calls_per_transaction = limit.get(), "group commit sized to what etcd takes"),
        Err(failure) => warn!(?failure, "cannot check etcd's --max-txn-ops now; checking on the first batch"),
    }
}

/// Connects until it succeeds, then hands the client to the store.
async fn connect_in_background(
    client: Arc<OnceLock<Client>>,
    endpoints: Vec<String>,
    options: ConnectOptions,
    probe_key: String,
    limit: Arc<batch::CallLimit>,
) {
    let mut delay = Duration::from_millis(100);
    loop {
        tokio::time::sleep(delay).await;
        match Client::connect(&endpoints, Some(options.clone())).await {
            Ok(connected) => {
                info!("connected to etcd");
                fit_call_limit(&connected, &probe_key, &limit).await;
                drop(client.set(connected));
                return;
            }
            Err(error) => debug!(%error, "etcd still unreachable"),
        }
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}

fn read_ops(keys: &RecordKeys) -> Vec<TxnOp> {
    vec![TxnOp::get(keys.record.as_str(), None), TxnOp::get(keys.lock.as_str(), None)]
}

/// Whether the shard state read third in a refused fenced write's answer
/// is no longer the one at `fence`.
fn fenced_off(responses: &[TxnOpResponse], fence: i64) -> bool {
    let state = match responses.get(2) {
        Some(TxnOpResponse::Get(get)) => get.kvs().first().map_or(0, |kv| kv.mod_revision()),
        _ => return true,
    };
    state != fence
}

/// Parses the two gets of `read_ops` out of a transaction response.
fn snapshot_of(responses: &[TxnOpResponse], revision: i64) -> Result<Snapshot, Error> {
    let mut kvs = responses.iter().map(|r| match r {
        TxnOpResponse::Get(get) => Ok(get.kvs().first()),
        other => Err(Error::Internal(format!("expected a get in the transaction response, got {other:?}"))),
    });
    let record = kvs.next().transpose()?.flatten();
    let lock = kvs.next().transpose()?.flatten();
    Ok(Snapshot {
        revision,
        record: record.map(|kv| format::decode_record(kv.key(), kv.value(), kv.mod_revision())).transpose()?,
        lock: lock.map(|kv| format::decode_lock(kv.key(), kv.value(), kv.mod_revision())).transpose()?,
    })
}

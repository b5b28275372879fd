//! The etcd store: every read and conditional write the coordinator needs, as
//! single etcd transactions.
//!
//! Each write is a transaction whose else-branch reads the record and its lock,
//! so a write that loses a race returns the state it lost to in the same round
//! trip. `etcd-client` neither retries nor reconnects streams by itself: every
//! call here is retried on transient errors until the caller's deadline or the
//! configured request timeout, whichever is sooner. Retrying a write is safe
//! because every write the coordinator makes is recognisable on a second look
//! (request ids for Begin, fencing tokens for the rest).

use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, KeyValue, PutOptions, Txn, TxnOp, TxnOpResponse,
    WatchOptions, WatchStream,
};
use prost::Message;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, sleep, timeout_at};
use tracing::{debug, warn};

use crate::config::StoreConfig;
use crate::error::Error;
use crate::proto::storage::{StoredLock, StoredRecord};
use crate::store::batch;
use crate::store::keys::RecordKeys;
use crate::store::leases::{LeasePool, LeaseWant};

/// The layout version this release writes and the only one it reads.
pub const FORMAT: u32 = 1;

/// A decoded etcd value with the metadata the coordinator decides on.
#[derive(Debug, Clone, PartialEq)]
pub struct Versioned<T> {
    pub value: T,
    pub mod_revision: i64,
}

/// A record and its lock, as of one etcd revision.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Snapshot {
    pub revision: i64,
    pub record: Option<Versioned<StoredRecord>>,
    pub lock: Option<Versioned<StoredLock>>,
}

/// The outcome of a conditional write.
#[derive(Debug, Clone, PartialEq)]
pub enum Written {
    /// The write happened at this revision.
    Committed { revision: i64 },
    /// The condition did not hold; this is what the store holds instead.
    Conflict(Box<Snapshot>),
}

/// What a record must look like for a write to go ahead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// There is no record.
    Absent,
    /// The record and its lock are exactly as in this snapshot.
    Unchanged { record_revision: i64, lock_revision: Option<i64> },
    /// The record has not changed since the attempt holding this token began.
    Token(u64),
}

/// How a written record's etcd lease is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordLease {
    /// A lease that lasts until about this time.
    Until(LeaseWant),
    /// The lease the record already has.
    Keep,
}

/// One conditional write: what to expect, then what to put.
#[derive(Debug, Clone)]
pub struct Write {
    pub expect: Expect,
    pub record: Option<(StoredRecord, RecordLease)>,
    /// `Some(Some(..))` puts the lock, `Some(None)` deletes it.
    pub lock: Option<Option<(StoredLock, LeaseWant)>>,
}

#[derive(Clone)]
pub struct EtcdStore {
    client: Client,
    prefix: String,
    request_timeout: Duration,
    leases: std::sync::Arc<LeasePool>,
    /// Where reads and conditional writes go to be committed in groups.
    batcher: mpsc::Sender<batch::Call>,
    counters: std::sync::Arc<batch::Counters>,
}

/// What went wrong with one etcd call, before deciding whether to retry.
#[derive(Debug, Clone)]
pub(super) enum Failure {
    Transient(String),
    LeaseGone(String),
    Permanent(String),
}

pub(super) fn classify(error: etcd_client::Error) -> Failure {
    use etcd_client::Error as E;
    use tonic::Code;
    match error {
        E::TransportError(e) => Failure::Transient(e.to_string()),
        E::IoError(e) => Failure::Transient(e.to_string()),
        E::GRpcStatus(status) => match status.code() {
            // etcd answers Unavailable for "no leader", "leader changed" and
            // its own request timeouts; the channel answers Unavailable or
            // Unknown while reconnecting.
            Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown | Code::ResourceExhausted => {
                Failure::Transient(status.message().to_owned())
            }
            Code::NotFound if status.message().contains("lease not found") => {
                Failure::LeaseGone(status.message().to_owned())
            }
            _ => Failure::Permanent(format!("{:?}: {}", status.code(), status.message())),
        },
        other => Failure::Permanent(other.to_string()),
    }
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or_default()
}

impl EtcdStore {
    /// Connects lazily: the process starts (and reports itself alive) even
    /// while etcd is down, and requests fail with STORE_UNAVAILABLE until it
    /// is back.
    pub async fn connect(config: &StoreConfig) -> Result<Self, Error> {
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
        let client = Client::connect(&config.endpoints, Some(options)).await.map_err(|e| {
            Error::StoreUnavailable(format!(
                "cannot set up the etcd client (check --etcd-endpoints and the --etcd-* TLS and user flags): {e}"
            ))
        })?;
        let counters = std::sync::Arc::new(batch::Counters::default());
        Ok(Self {
            batcher: batch::spawn(client.clone(), config.request_timeout, counters.clone()),
            counters,
            client,
            prefix: config.prefix.clone(),
            request_timeout: config.request_timeout,
            leases: Default::default(),
        })
    }

    /// What group commit has sent so far.
    pub fn counters(&self) -> &batch::Counters {
        &self.counters
    }

    pub fn keys(&self, id: &crate::request::RecordId) -> RecordKeys {
        RecordKeys::new(&self.prefix, id)
    }

    /// The record and its lock, linearizably.
    pub async fn read(&self, keys: &RecordKeys, deadline: Instant) -> Result<Snapshot, Error> {
        let deadline = self.bound(deadline);
        let mut backoff = Backoff::new();
        loop {
            let txn = Txn::new().and_then(read_ops(keys));
            match self.submit(keys, txn, 0, deadline).await {
                Ok(answer) => return snapshot_of(&answer.responses, answer.revision),
                Err(failure) => backoff.after(failure, deadline, &self.leases).await?,
            }
        }
    }

    /// Performs `write` if its expectation holds, as one (nested) transaction.
    pub async fn write(&self, keys: &RecordKeys, write: &Write, deadline: Instant) -> Result<Written, Error> {
        let deadline = self.bound(deadline);
        let bytes = write.record.as_ref().map(|(r, _)| r.encoded_len()).unwrap_or_default() + 256;
        let mut backoff = Backoff::new();
        loop {
            let txn = match timeout_at(deadline, self.build_txn(keys, write)).await {
                Err(_) => return Err(timed_out()),
                Ok(Err(e)) => {
                    backoff.after(classify(e), deadline, &self.leases).await?;
                    continue;
                }
                Ok(Ok(txn)) => txn,
            };
            match self.submit(keys, txn, bytes, deadline).await {
                Ok(answer) if answer.succeeded => return Ok(Written::Committed { revision: answer.revision }),
                Ok(answer) => {
                    return Ok(Written::Conflict(Box::new(snapshot_of(&answer.responses, answer.revision)?)));
                }
                Err(failure) => backoff.after(failure, deadline, &self.leases).await?,
            }
        }
    }

    /// Hands one call to the batcher and waits for its share of the answer.
    async fn submit(
        &self,
        keys: &RecordKeys,
        txn: Txn,
        bytes: usize,
        deadline: Instant,
    ) -> Result<batch::Answer, Failure> {
        let (reply, answer) = oneshot::channel();
        let call = batch::Call { scope: keys.scope.clone(), txn, bytes, reply };
        let exchange = async {
            self.batcher.send(call).await.map_err(|_| Failure::Permanent("the batcher has stopped".into()))?;
            answer.await.map_err(|_| Failure::Permanent("the batcher dropped a call".into()))?
        };
        timeout_at(deadline, exchange)
            .await
            .unwrap_or_else(|_| Err(Failure::Transient("etcd did not answer in time".into())))
    }

    async fn build_txn(&self, keys: &RecordKeys, write: &Write) -> Result<Txn, etcd_client::Error> {
        let compares = match write.expect {
            Expect::Absent => vec![Compare::version(keys.record.as_str(), CompareOp::Equal, 0)],
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
        let mut then = Vec::new();
        if let Some((record, lease)) = &write.record {
            let options = match lease {
                RecordLease::Until(want) => PutOptions::new().with_lease(self.lease(*want).await?),
                RecordLease::Keep => PutOptions::new().with_ignore_lease(),
            };
            then.push(TxnOp::put(keys.record.as_str(), record.encode_to_vec(), Some(options)));
        }
        match &write.lock {
            None => {}
            Some(Some((lock, want))) => {
                let options = PutOptions::new().with_lease(self.lease(*want).await?);
                then.push(TxnOp::put(keys.lock.as_str(), lock.encode_to_vec(), Some(options)));
            }
            Some(None) => then.push(TxnOp::delete(keys.lock.as_str(), None::<DeleteOptions>)),
        }
        Ok(Txn::new().when(compares).and_then(then).or_else(read_ops(keys)))
    }

    /// A lease ending inside `want`'s window: pooled, or granted now.
    async fn lease(&self, want: LeaseWant) -> Result<i64, etcd_client::Error> {
        let now = now_ms();
        if let Some(id) = self.leases.find(want, now) {
            return Ok(id);
        }
        let ttl = want.grant_ttl_secs(now);
        let granted = self.client.clone().lease_grant(ttl, None).await?;
        debug!(lease = granted.id(), ttl, "granted a shared lease");
        self.leases.insert(now + granted.ttl() * 1000, granted.id());
        Ok(granted.id())
    }

    /// A watch on every key of one record, from `after_revision + 1` on.
    pub async fn watch(&self, keys: &RecordKeys, after_revision: i64, deadline: Instant) -> Result<WatchStream, Error> {
        let options = WatchOptions::new().with_prefix().with_start_revision(after_revision + 1);
        match timeout_at(self.bound(deadline), self.client.clone().watch(keys.scope.as_str(), Some(options))).await {
            Err(_) => Err(timed_out()),
            Ok(Ok(stream)) => Ok(stream),
            Ok(Err(e)) => Err(Error::StoreUnavailable(format!("cannot watch: {e}"))),
        }
    }

    /// A linearizable read that needs an etcd quorum: the readiness check.
    pub async fn ping(&self, within: Duration) -> Result<(), Error> {
        let key = format!("{}health", self.prefix);
        match tokio::time::timeout(within, self.client.clone().get(key, None)).await {
            Err(_) => Err(timed_out()),
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(Error::StoreUnavailable(e.to_string())),
        }
    }

    fn bound(&self, deadline: Instant) -> Instant {
        self.operation_deadline(deadline, Duration::ZERO)
    }

    /// When an operation that may spend `waiting` on purpose must be over:
    /// the caller's deadline, capped so that a loop of etcd calls (lost races
    /// re-decided) can never outlast one request timeout plus the wait.
    pub fn operation_deadline(&self, deadline: Instant, waiting: Duration) -> Instant {
        deadline.min(Instant::now() + waiting + self.request_timeout)
    }
}

fn timed_out() -> Error {
    Error::StoreUnavailable("etcd did not answer in time".into())
}

fn read_ops(keys: &RecordKeys) -> Vec<TxnOp> {
    vec![TxnOp::get(keys.record.as_str(), None), TxnOp::get(keys.lock.as_str(), None)]
}

pub(super) fn header_revision(header: Option<&etcd_client::ResponseHeader>) -> i64 {
    header.map(|h| h.revision()).unwrap_or_default()
}

/// Parses the two gets of `read_ops` out of a transaction response.
fn snapshot_of(responses: &[TxnOpResponse], revision: i64) -> Result<Snapshot, Error> {
    let mut kvs = responses.iter().map(|r| match r {
        TxnOpResponse::Get(get) => Ok(get.kvs().first()),
        other => Err(Error::Internal(format!("expected a get in the transaction response, got {other:?}"))),
    });
    let record = kvs.next().transpose()?.flatten().map(decode::<StoredRecord>).transpose()?;
    let lock = kvs.next().transpose()?.flatten().map(decode::<StoredLock>).transpose()?;
    Ok(Snapshot { revision, record, lock })
}

trait Formatted {
    fn format(&self) -> u32;
}

impl Formatted for StoredRecord {
    fn format(&self) -> u32 {
        self.format
    }
}

impl Formatted for StoredLock {
    fn format(&self) -> u32 {
        self.format
    }
}

fn decode<T: Message + Default + Formatted>(kv: &KeyValue) -> Result<Versioned<T>, Error> {
    let value = T::decode(kv.value())
        .map_err(|e| Error::Internal(format!("undecodable value at {:?}: {e}", String::from_utf8_lossy(kv.key()))))?;
    if value.format() != FORMAT {
        return Err(Error::Internal(format!(
            "value at {:?} has layout version {}, this release reads only {FORMAT}",
            String::from_utf8_lossy(kv.key()),
            value.format()
        )));
    }
    Ok(Versioned { value, mod_revision: kv.mod_revision() })
}

/// Retry pacing for one call: exponential from 25 ms to 500 ms.
struct Backoff {
    delay: Duration,
}

impl Backoff {
    fn new() -> Self {
        Self { delay: Duration::from_millis(25) }
    }

    /// Sleeps before the next try, or returns the error if there is no time
    /// (or no point) left.
    async fn after(&mut self, failure: Failure, deadline: Instant, leases: &LeasePool) -> Result<(), Error> {
        let message = match failure {
            Failure::Permanent(message) => return Err(Error::Internal(format!("etcd refused the request: {message}"))),
            Failure::LeaseGone(message) => {
                warn!(%message, "a pooled lease no longer exists in etcd; forgetting pooled leases");
                leases.clear();
                message
            }
            Failure::Transient(message) => message,
        };
        if Instant::now() + self.delay >= deadline {
            return Err(Error::StoreUnavailable(message));
        }
        debug!(%message, delay = ?self.delay, "retrying an etcd request");
        sleep(self.delay).await;
        self.delay = (self.delay * 2).min(Duration::from_millis(500));
        Ok(())
    }
}

//! Group commit: concurrent calls share etcd transactions.
//!
//! Every store call is its own small transaction (its compares, its writes,
//! its else-branch reads). Instead of sending each alone — one round trip and
//! one raft proposal apiece — a single batcher task wraps the calls waiting
//! at that moment as nested transactions of one etcd transaction. Each nested
//! transaction keeps its own compare and its own result, so every call sees
//! exactly what it would have seen alone. While batches are in flight (a few
//! at once) the next one forms. A batch never names the same record twice (etcd refuses a
//! transaction that writes one key twice, and two calls on one record must be
//! ordered anyway), and stays within etcd's limits on operations per
//! transaction and on request size. One call never fails the others: a
//! batch that etcd refuses as too large, or whose answer is too large to
//! decode, is answered [`Failure::TooLarge`] and each of its calls comes back
//! alone (`solo`); only a call too large by itself fails.
//!
//! All calls of a batch commit at one etcd revision. Fencing tokens are
//! revisions, so two records begun in one batch share a token value — which is
//! fine: a token only has to grow per record.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use etcd_client::{Client, KvClient, Txn, TxnOp, TxnOpResponse};
use tokio::sync::{mpsc, oneshot};
use tracing::warn;

use crate::store::etcd::config::Batching;
use crate::store::etcd::failure::{Failure, classify};

/// The most operations one call's own transaction has in a branch (three
/// compares with a sharded store's fence on the shard state, two puts, or
/// the three reads of its else-branch). etcd counts a
/// nested transaction against what its parent leaves: N calls at the top,
/// each with up to this many, need `N + OPS_PER_CALL <= --max-txn-ops`.
pub const OPS_PER_CALL: usize = 3;

/// The calls one transaction may carry under etcd's `--max-txn-ops`.
pub fn calls_within(max_txn_ops: usize) -> usize {
    max_txn_ops.saturating_sub(OPS_PER_CALL).max(1)
}

/// etcd's default request limit is 1.5 MiB; stay well under it.
pub const MAX_BYTES: usize = 1024 * 1024;

/// The largest answer the client decodes (etcd-client's default is 4 MiB, which
/// 64 conflicting writes on 64 KiB records already exceed). Stored records are
/// at most about 800 KiB (`--max-result-bytes` is at most 768 KiB), so a full
/// batch's answer fits; a larger one is split like a too-large request.
const MAX_ANSWER_BYTES: usize = 128 * 1024 * 1024;

/// Latency of each etcd transaction (a Prometheus histogram, in seconds).
pub const ETCD_REQUEST_SECONDS: &str = "idempotency_etcd_request_seconds";

/// etcd transactions that failed, by `kind` (a Prometheus counter).
pub const ETCD_ERRORS: &str = "idempotency_etcd_errors_total";

/// The kinds of [`ETCD_ERRORS`].
pub const ETCD_ERROR_KINDS: [&str; 2] = ["refused_or_unreachable", "timeout"];

/// Calls per etcd transaction (a Prometheus histogram).
pub const ETCD_BATCH_CALLS: &str = "idempotency_etcd_batch_calls";

/// What the batcher has sent, for tests and benchmarks.
#[derive(Debug, Default)]
pub struct Counters {
    /// etcd transactions sent.
    pub batches: AtomicU64,
    /// Calls carried by them.
    pub calls: AtomicU64,
    /// The most calls one transaction carried.
    pub largest: AtomicU64,
}

/// What one call gets back.
#[derive(Debug)]
pub(super) struct Answer {
    pub succeeded: bool,
    pub responses: Vec<TxnOpResponse>,
    /// The revision the whole batch committed (or read) at.
    pub revision: i64,
}

pub(super) struct Call {
    /// The record this call touches; at most one call per record per batch.
    pub scope: String,
    pub txn: Txn,
    /// What the call adds to the request: its keys, values and operations.
    pub bytes: usize,
    /// Sent in a transaction of its own (after its batch was too large).
    pub solo: bool,
    pub reply: oneshot::Sender<Result<Answer, Failure>>,
}

/// The calls per transaction the batcher uses: set from `--etcd-max-txn-ops`,
/// lowered when etcd turns out to allow fewer (at connection, or later if
/// etcd is restarted with a lower limit).
#[derive(Debug)]
pub struct CallLimit(AtomicUsize);

impl CallLimit {
    pub fn new(batching: &Batching) -> Self {
        Self(AtomicUsize::new(calls_within(batching.max_txn_ops)))
    }

    pub fn get(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }

    /// etcd refused a transaction of `refused` calls: allow at most half.
    fn refused(&self, refused: usize) {
        let lower = (refused / 2).max(1);
        if self.0.fetch_min(lower, Ordering::Relaxed) > lower {
            warn!(
                refused,
                now = lower,
                "etcd refused a transaction as having too many operations: its --max-txn-ops is lower than \
                 --etcd-max-txn-ops says; sending fewer calls per transaction (set the two to agree)"
            );
        }
    }
}

/// Finds how many calls per transaction etcd takes, starting from what the
/// limit says, with one read-only transaction per try (no raft proposal):
/// the size is checked before anything runs.
pub(super) async fn fit_call_limit(client: &Client, probe_key: &str, limit: &CallLimit) -> Result<(), Failure> {
    loop {
        let calls = limit.get();
        let nested =
            (0..calls).map(|_| TxnOp::txn(Txn::new().and_then(vec![TxnOp::get(probe_key, None); OPS_PER_CALL])));
        match client.kv_client().txn(Txn::new().and_then(nested.collect::<Vec<_>>())).await {
            Ok(_) => return Ok(()),
            Err(error) if too_many_operations(&error) && calls > 1 => limit.refused(calls),
            Err(error) => return Err(classify(error)),
        }
    }
}

fn too_many_operations(error: &etcd_client::Error) -> bool {
    matches!(error, etcd_client::Error::GRpcStatus(status) if status.message().contains("too many operations"))
}

/// Starts the batcher on the client `connected` holds once set; it stops
/// when every sender is dropped.
pub(super) fn spawn(
    connected: Arc<OnceLock<Client>>,
    request_timeout: Duration,
    batching: Batching,
    limit: Arc<CallLimit>,
    counters: Arc<Counters>,
) -> mpsc::Sender<Call> {
    // Enough queued for every batch in flight and the next, at full size.
    let (sender, receiver) = mpsc::channel(limit.get() * (batching.in_flight + 1));
    let batcher =
        Batcher { connected, client: None, request_timeout, in_flight_limit: batching.in_flight, limit, counters };
    tokio::spawn(batcher.run(receiver));
    sender
}

struct Batcher {
    connected: Arc<OnceLock<Client>>,
    client: Option<KvClient>,
    request_timeout: Duration,
    in_flight_limit: usize,
    limit: Arc<CallLimit>,
    counters: Arc<Counters>,
}

impl Batcher {
    /// Forms batches and sends them. Sizes adapt to the load: with nothing
    /// in flight a batch goes at once, whatever it holds (an idle service
    /// answers in one round trip); while others are in flight, the next goes
    /// only once it holds a fair share of a full batch (`limit / in_flight`)
    /// or when one comes back. Under load, transactions therefore grow
    /// towards the limit instead of many small ones each paying etcd's
    /// per-request cost (a raft entry, an fsync, a gRPC request).
    async fn run(mut self, mut queue: mpsc::Receiver<Call>) {
        let (done, mut finished) = mpsc::unbounded_channel::<()>();
        let mut in_flight = 0usize;
        let mut batch = Batch::default();
        // Calls that did not fit the batch (same record, or over a limit):
        // first in line for the next.
        let mut held: VecDeque<Call> = VecDeque::new();
        let mut open = true;
        loop {
            let max_calls = self.limit.get();
            batch.take_from(&mut held, max_calls);
            while open && !batch.full(max_calls) {
                match queue.try_recv() {
                    Ok(call) => batch.offer(call, &mut held, max_calls),
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => open = false,
                }
            }
            let share = (max_calls / self.in_flight_limit).max(1);
            let worth_sending = in_flight == 0 || batch.calls.len() >= share || batch.full(max_calls) || !open;
            if !batch.calls.is_empty() && in_flight < self.in_flight_limit && worth_sending {
                self.send(std::mem::take(&mut batch), done.clone());
                in_flight += 1;
                continue;
            }
            if !open && batch.calls.is_empty() && held.is_empty() {
                return;
            }
            tokio::select! {
                Some(()) = finished.recv() => in_flight -= 1,
                call = queue.recv(), if open && !batch.full(max_calls) => match call {
                    Some(call) => batch.offer(call, &mut held, max_calls),
                    None => open = false,
                },
            }
        }
    }

    fn send(&mut self, batch: Batch, done: mpsc::UnboundedSender<()>) {
        let done = Done(done);
        if self.client.is_none() {
            self.client = self.connected.get().map(|c| c.kv_client().max_decoding_message_size(MAX_ANSWER_BYTES));
        }
        let Some(client) = self.client.clone() else {
            let failure = Failure::Transient("not connected to etcd yet".into());
            batch.calls.into_iter().for_each(|call| drop(call.reply.send(Err(failure.clone()))));
            return;
        };
        let (counters, limit, request_timeout) = (self.counters.clone(), self.limit.clone(), self.request_timeout);
        tokio::spawn(async move {
            batch.send(&client, request_timeout, &counters, &limit).await;
            drop(done);
        });
    }
}

/// Tells the batcher a transaction is no longer in flight when dropped:
/// also if the task sending it panics, so its slot is never lost.
struct Done(mpsc::UnboundedSender<()>);

impl Drop for Done {
    fn drop(&mut self) {
        let _ = self.0.send(());
    }
}

#[derive(Default)]
struct Batch {
    calls: Vec<Call>,
    scopes: HashSet<String>,
    bytes: usize,
    /// Holds one solo call and nothing else.
    solo: bool,
}

impl Batch {
    fn push(&mut self, call: Call) {
        self.scopes.insert(call.scope.clone());
        self.bytes += call.bytes;
        self.solo |= call.solo;
        self.calls.push(call);
    }

    fn full(&self, max_calls: usize) -> bool {
        self.solo || self.calls.len() >= max_calls
    }

    /// Adds `call` if it fits, else holds it for a later batch. A solo call
    /// fits only an empty batch.
    fn offer(&mut self, call: Call, held: &mut VecDeque<Call>, max_calls: usize) {
        let fits = self.calls.is_empty()
            || (!self.full(max_calls)
                && !call.solo
                && self.bytes + call.bytes <= MAX_BYTES
                && !self.scopes.contains(&call.scope));
        if fits { self.push(call) } else { held.push_back(call) }
    }

    /// Moves the held calls that fit into this batch, in their order.
    fn take_from(&mut self, held: &mut VecDeque<Call>, max_calls: usize) {
        for _ in 0..held.len() {
            if self.full(max_calls) {
                return;
            }
            let call = held.pop_front().expect("counted");
            self.offer(call, held, max_calls);
        }
    }

    async fn send(self, client: &KvClient, request_timeout: Duration, counters: &Counters, limit: &CallLimit) {
        // A caller that gave up has been told UNAVAILABLE; skipping its call
        // is one of the outcomes that answer allows.
        let calls: Vec<Call> = self.calls.into_iter().filter(|c| !c.reply.is_closed()).collect();
        if calls.is_empty() {
            return;
        }
        counters.batches.fetch_add(1, Ordering::Relaxed);
        counters.calls.fetch_add(calls.len() as u64, Ordering::Relaxed);
        counters.largest.fetch_max(calls.len() as u64, Ordering::Relaxed);
        metrics::histogram!(ETCD_BATCH_CALLS).record(calls.len() as f64);
        let size = calls.len();
        let (replies, nested): (Vec<_>, Vec<_>) = calls.into_iter().map(|c| (c.reply, TxnOp::txn(c.txn))).unzip();
        let started = std::time::Instant::now();
        let outcome = tokio::time::timeout(request_timeout, client.clone().txn(Txn::new().and_then(nested))).await;
        metrics::histogram!(ETCD_REQUEST_SECONDS).record(started.elapsed());
        let error_kind = match &outcome {
            Ok(Ok(_)) => None,
            Ok(Err(_)) => Some(ETCD_ERROR_KINDS[0]),
            Err(_) => Some(ETCD_ERROR_KINDS[1]),
        };
        if let Some(kind) = error_kind {
            metrics::counter!(ETCD_ERRORS, "kind" => kind).increment(1);
        }
        match outcome {
            Ok(Ok(response)) => {
                let revision = response.header().map(|h| h.revision()).unwrap_or_default();
                let answers = response.op_responses();
                if answers.len() != replies.len() {
                    // Committed or not, nobody can tell from this answer.
                    let failure =
                        Failure::Unknown(format!("etcd answered {} of {} calls", answers.len(), replies.len()));
                    replies.into_iter().for_each(|reply| drop(reply.send(Err(failure.clone()))));
                    return;
                }
                for (reply, answer) in replies.into_iter().zip(answers) {
                    let answer = match answer {
                        TxnOpResponse::Txn(txn) => {
                            Ok(Answer { succeeded: txn.succeeded(), responses: txn.op_responses(), revision })
                        }
                        other => Err(Failure::Unknown(format!("expected a nested transaction, got {other:?}"))),
                    };
                    let _ = reply.send(answer);
                }
            }
            // Refused before anything ran: lower the limit, and the calls
            // go again in smaller batches.
            Ok(Err(error)) if too_many_operations(&error) => {
                limit.refused(size);
                let failure = Failure::Transient(error.to_string());
                replies.into_iter().for_each(|reply| drop(reply.send(Err(failure.clone()))));
            }
            Ok(Err(error)) => {
                let failure = classify(error);
                replies.into_iter().for_each(|reply| drop(reply.send(Err(failure.clone()))));
            }
            Err(_) => {
                let failure = Failure::Transient("etcd did not answer the batch in time".into());
                replies.into_iter().for_each(|reply| drop(reply.send(Err(failure.clone()))));
            }
        }
    }
}

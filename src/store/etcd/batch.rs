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
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use etcd_client::{Client, KvClient, Txn, TxnOp, TxnOpResponse};
use tokio::sync::{mpsc, oneshot};

use crate::store::etcd::failure::{Failure, classify};

/// etcd's default `--max-txn-ops` is 128, and a nested transaction may only
/// use what its parent leaves: with N calls at the top, each call's own
/// transaction (at most 2 operations per branch) must fit in 128 - N.
pub const MAX_CALLS: usize = 64;

/// etcd's default request limit is 1.5 MiB; stay well under it.
pub const MAX_BYTES: usize = 1024 * 1024;

/// The largest answer the client decodes (etcd-client's default is 4 MiB, which
/// 64 conflicting writes on 64 KiB records already exceed). Stored records are
/// at most about 800 KiB (`--max-result-bytes` is at most 768 KiB), so a full
/// batch's answer fits; a larger one is split like a too-large request.
const MAX_ANSWER_BYTES: usize = 128 * 1024 * 1024;

/// How many calls may queue for the batcher before callers wait to enqueue.
const QUEUE: usize = 8 * MAX_CALLS;

/// Batches in flight at once. Every call is an atomic transaction of its own,
/// so batches need no order among them; a few in flight keep etcd busy while
/// the next forms (one alone caps throughput at MAX_CALLS per round trip).
const IN_FLIGHT: usize = 4;

/// Latency of each etcd transaction (a Prometheus histogram, in seconds).
pub const ETCD_REQUEST_SECONDS: &str = "idempotency_etcd_request_seconds";

/// etcd transactions that failed, by `kind` (a Prometheus counter).
pub const ETCD_ERRORS: &str = "idempotency_etcd_errors_total";

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

/// Starts the batcher on the client `connected` holds once set; it stops
/// when every sender is dropped.
pub(super) fn spawn(
    connected: Arc<OnceLock<Client>>,
    request_timeout: Duration,
    counters: Arc<Counters>,
) -> mpsc::Sender<Call> {
    let (sender, receiver) = mpsc::channel(QUEUE);
    tokio::spawn(run(connected, receiver, request_timeout, counters));
    sender
}

async fn run(
    connected: Arc<OnceLock<Client>>,
    mut queue: mpsc::Receiver<Call>,
    request_timeout: Duration,
    counters: Arc<Counters>,
) {
    let mut client: Option<KvClient> = None;
    // Calls that did not fit the last batch (same record, or over a limit):
    // first in line for the next.
    let mut held: VecDeque<Call> = VecDeque::new();
    let slots = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
    loop {
        // Wait for a free slot first: meanwhile the next batch fills up.
        let Ok(slot) = slots.clone().acquire_owned().await else { return };
        let first = match held.pop_front() {
            Some(call) => call,
            None => match queue.recv().await {
                Some(call) => call,
                None => return,
            },
        };
        let mut batch = Batch::default();
        batch.push(first);
        let mut still_held = VecDeque::new();
        for call in held.drain(..) {
            batch.offer(call, &mut still_held);
        }
        while batch.calls.len() < MAX_CALLS && !batch.solo {
            match queue.try_recv() {
                Ok(call) => batch.offer(call, &mut still_held),
                Err(_) => break,
            }
        }
        held = still_held;
        if client.is_none() {
            client = connected.get().map(|c| c.kv_client().max_decoding_message_size(MAX_ANSWER_BYTES));
        }
        let Some(client) = client.clone() else {
            let failure = Failure::Transient("not connected to etcd yet".into());
            batch.calls.into_iter().for_each(|call| drop(call.reply.send(Err(failure.clone()))));
            continue;
        };
        let counters = counters.clone();
        tokio::spawn(async move {
            batch.send(&client, request_timeout, &counters).await;
            drop(slot);
        });
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

    fn offer(&mut self, call: Call, held: &mut VecDeque<Call>) {
        let fits = !self.solo
            && !call.solo
            && self.calls.len() < MAX_CALLS
            && self.bytes + call.bytes <= MAX_BYTES
            && !self.scopes.contains(&call.scope);
        if fits { self.push(call) } else { held.push_back(call) }
    }

    async fn send(self, client: &KvClient, request_timeout: Duration, counters: &Counters) {
        // A caller that gave up has been told UNAVAILABLE; skipping its call
        // is one of the outcomes that answer allows.
        let calls: Vec<Call> = self.calls.into_iter().filter(|c| !c.reply.is_closed()).collect();
        if calls.is_empty() {
            return;
        }
        counters.batches.fetch_add(1, Ordering::Relaxed);
        counters.calls.fetch_add(calls.len() as u64, Ordering::Relaxed);
        counters.largest.fetch_max(calls.len() as u64, Ordering::Relaxed);
        let (replies, nested): (Vec<_>, Vec<_>) = calls.into_iter().map(|c| (c.reply, TxnOp::txn(c.txn))).unzip();
        let started = std::time::Instant::now();
        let outcome = tokio::time::timeout(request_timeout, client.clone().txn(Txn::new().and_then(nested))).await;
        metrics::histogram!(ETCD_REQUEST_SECONDS).record(started.elapsed());
        let error_kind = match &outcome {
            Ok(Ok(_)) => None,
            Ok(Err(_)) => Some("refused_or_unreachable"),
            Err(_) => Some("timeout"),
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

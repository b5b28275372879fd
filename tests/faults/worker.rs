//! What a well-behaved caller does: Begin; on `acquired`, reconcile with the
//! ledger if an earlier attempt was recovered, perform the side effect with
//! the fencing token, then Complete; on a replay, take the stored result;
//! retry on UNAVAILABLE with the same request_id or token. Everything it is
//! told is recorded for the end-of-run checks.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use idempotency_coordinator::proto::v1::{
    self, begin_response::Outcome, coordinator_service_client::CoordinatorServiceClient,
};
use rand::Rng;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tonic::Code;
use tonic::transport::Channel;
use tonic_types::StatusExt;

use crate::ledger::LedgerClient;

pub const NAMESPACE: &str = "payments.charge";
pub const LEASE_TTL_SECONDS: i64 = 2;

/// What one worker (or the finisher) saw.
#[derive(Default, Debug, Serialize, Deserialize)]
pub struct Report {
    /// (key, result) for every call that answered success with a result: a
    /// Complete accepted, or a completed replay.
    pub observed: Vec<(String, String)>,
    pub begins: u64,
    pub completes: u64,
    pub acquired: u64,
    pub takeovers_abandoned: u64,
    pub takeovers_released: u64,
    pub released_by_fail: u64,
    pub lease_lost: u64,
    pub unavailable: u64,
    pub overloaded: u64,
    pub stale_stopped_by_ledger: u64,
    pub crashes: u64,
    /// (key, attempt, the earliest its lease can end, Unix ms): when its
    /// Begin was sent plus the lease TTL. The machine's clock, which the
    /// workers read unskewed.
    pub acquisitions: Vec<(String, u32, i64)>,
    /// (key, the attempt taken over as abandoned, when the takeover's answer
    /// arrived, Unix ms).
    pub abandoned_takeovers: Vec<(String, u32, i64)>,
    pub violations: Vec<String>,
}

impl Report {
    pub fn merge(&mut self, other: Report) {
        self.observed.extend(other.observed);
        self.begins += other.begins;
        self.completes += other.completes;
        self.acquired += other.acquired;
        self.takeovers_abandoned += other.takeovers_abandoned;
        self.takeovers_released += other.takeovers_released;
        self.released_by_fail += other.released_by_fail;
        self.lease_lost += other.lease_lost;
        self.unavailable += other.unavailable;
        self.overloaded += other.overloaded;
        self.stale_stopped_by_ledger += other.stale_stopped_by_ledger;
        self.crashes += other.crashes;
        self.acquisitions.extend(other.acquisitions);
        self.abandoned_takeovers.extend(other.abandoned_takeovers);
        self.violations.extend(other.violations);
    }
}

/// How an owned attempt ended for its owner.
enum Owned {
    Done(String),
    Lost,
    Crashed,
}

pub struct Worker {
    clients: Vec<CoordinatorServiceClient<Channel>>,
    ledger_addr: String,
    pub report: Arc<Mutex<Report>>,
    /// Share of attempts that hit a transient error before their side
    /// effect and release the key with a retryable Fail.
    release_share: f64,
    /// Share of attempts whose owner "crashes": walks away without Complete
    /// or Fail, half of them after the side effect, leaving the key to lapse.
    crash_share: f64,
}

fn payload(key: &str) -> v1::BeginRequest {
    v1::BeginRequest {
        namespace: NAMESPACE.into(),
        key: key.into(),
        request: Some(v1::begin_request::Request::Payload(v1::Payload {
            data: format!(r#"{{"charge":"{key}","amount":100}}"#).into_bytes(),
            canonicalization: v1::Canonicalization::Json as i32,
            ignore_fields: vec![],
        })),
        lease_ttl: Some(prost_types::Duration { seconds: LEASE_TTL_SECONDS, nanos: 0 }),
        wait: Some(prost_types::Duration { seconds: 1, nanos: 0 }),
        owner: format!("worker-{}", std::process::id()),
        request_id: uuid::Uuid::new_v4().to_string(),
        ..Default::default()
    }
}

/// Errors a caller must expect while processes and etcd members die: retry.
fn transient(status: &tonic::Status) -> bool {
    matches!(status.code(), Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown)
}

/// The machine's wall clock, Unix ms.
pub fn wall_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

fn reason(status: &tonic::Status) -> String {
    status.get_error_details().error_info().map(|i| i.reason.clone()).unwrap_or_default()
}

impl Worker {
    pub fn new(coordinator_urls: &[String], ledger_addr: &str, release_share: f64, crash_share: f64) -> Worker {
        let clients = coordinator_urls
            .iter()
            .map(|url| {
                let channel = Channel::from_shared(url.clone())
                    .unwrap()
                    .connect_timeout(Duration::from_millis(500))
                    .timeout(Duration::from_secs(4))
                    .connect_lazy();
                CoordinatorServiceClient::new(channel)
            })
            .collect();
        Worker { clients, ledger_addr: ledger_addr.to_owned(), report: Default::default(), release_share, crash_share }
    }

    fn client(&self) -> CoordinatorServiceClient<Channel> {
        self.clients[rand::rng().random_range(0..self.clients.len())].clone()
    }

    fn note(&self, f: impl FnOnce(&mut Report)) {
        f(&mut self.report.lock().unwrap());
    }

    async fn backoff(&self) {
        let ms = rand::rng().random_range(50..250);
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }

    /// Drives one logical charge for `key` until it is completed or `until`
    /// passes. Returns the result it learned, if any.
    pub async fn settle(&self, key: &str, until: Instant) -> Option<String> {
        let request = payload(key); // one request_id for all retries of this call
        // When the first Begin that may have made the next acquisition was
        // sent: a Begin retried with the same request_id after a lost answer
        // gets back an attempt decided at an earlier send, so only the first
        // send since the last acquisition bounds its deadline from below.
        let mut first_sent_ms = None;
        while Instant::now() < until {
            self.note(|r| r.begins += 1);
            let sent_ms = *first_sent_ms.get_or_insert_with(wall_ms);
            let outcome = match self.client().begin(request.clone()).await {
                Ok(response) => response.into_inner().outcome,
                Err(status) if transient(&status) => {
                    self.note(|r| r.unavailable += 1);
                    self.backoff().await;
                    continue;
                }
                Err(status) if status.code() == Code::ResourceExhausted => {
                    self.note(|r| r.overloaded += 1);
                    self.backoff().await;
                    continue;
                }
                Err(status) => {
                    self.note(|r| r.violations.push(format!("Begin {key}: unexpected {status:?}")));
                    return None;
                }
            };
            match outcome {
                Some(Outcome::Completed(replay)) => {
                    let result = match replay.result.and_then(|r| r.body) {
                        Some(v1::result::Body::Response(bytes)) => String::from_utf8_lossy(&bytes).into_owned(),
                        other => {
                            self.note(|r| r.violations.push(format!("replay of {key} has body {other:?}")));
                            return None;
                        }
                    };
                    self.note(|r| r.observed.push((key.to_owned(), result.clone())));
                    return Some(result);
                }
                Some(Outcome::InProgress(_)) => continue, // Begin already waited 1 s
                Some(Outcome::Acquired(acquired)) => match self.own(key, acquired, sent_ms, until).await {
                    Owned::Done(result) => return Some(result),
                    // Lost the attempt or released it: ask again.
                    Owned::Lost => {
                        first_sent_ms = None;
                        continue;
                    }
                    // A crashed process forgets its request_id with the rest
                    // of its memory. (Retrying Begin with it would hand back
                    // this very attempt, token and all, and the effect would
                    // be performed twice under one token: request_ids are for
                    // retrying a Begin whose answer was lost, never after
                    // acting on it.)
                    Owned::Crashed => return None,
                },
                other => {
                    self.note(|r| r.violations.push(format!("Begin {key}: unexpected outcome {other:?}")));
                    return None;
                }
            }
        }
        None
    }

    /// The owner's part: reconcile, act, complete.
    async fn own(&self, key: &str, acquired: v1::Acquired, sent_ms: i64, until: Instant) -> Owned {
        let token = acquired.fencing_token;
        let answered_ms = wall_ms();
        self.note(|r| {
            r.acquired += 1;
            r.acquisitions.push((key.to_owned(), acquired.attempt, sent_ms + LEASE_TTL_SECONDS * 1000));
        });
        let mut ledger = LedgerClient::connect(&self.ledger_addr).await;
        let mut already_done = None;
        if let Some(recovered) = &acquired.recovered {
            match recovered.reason() {
                v1::RecoveryReason::Released => self.note(|r| r.takeovers_released += 1),
                _ => self.note(|r| {
                    r.takeovers_abandoned += 1;
                    r.abandoned_takeovers.push((key.to_owned(), recovered.previous_attempt, answered_ms));
                }),
            }
            // The earlier attempt may have half-happened: look before acting.
            match ledger.claim(key, token).await {
                Ok(existing) => already_done = existing,
                Err(()) => {
                    self.note(|r| r.stale_stopped_by_ledger += 1);
                    return Owned::Lost;
                }
            }
        }
        let crash = rand::rng().random_bool(self.crash_share);
        if crash && rand::rng().random_bool(0.5) {
            self.note(|r| r.crashes += 1);
            return Owned::Crashed; // before the side effect
        }
        let effect = match already_done {
            Some(effect) => effect,
            None => {
                // The side effect takes a while: a window for pauses and kills.
                let ms = rand::rng().random_range(0..400);
                tokio::time::sleep(Duration::from_millis(ms)).await;
                if rand::rng().random_bool(self.release_share) {
                    self.release(key, token).await;
                    return Owned::Lost;
                }
                let effect = format!("charge-{key}-{token}");
                if ledger.write(key, token, &effect).await.is_err() {
                    self.note(|r| r.stale_stopped_by_ledger += 1);
                    return Owned::Lost;
                }
                effect
            }
        };
        if crash {
            self.note(|r| r.crashes += 1);
            return Owned::Crashed; // after the side effect, before recording it
        }
        match self.complete(key, token, effect, until).await {
            Some(result) => Owned::Done(result),
            None => Owned::Lost,
        }
    }

    async fn complete(&self, key: &str, token: u64, effect: String, until: Instant) -> Option<String> {
        let request = v1::CompleteRequest {
            namespace: NAMESPACE.into(),
            key: key.into(),
            fencing_token: token,
            result: Some(v1::Result {
                body: Some(v1::result::Body::Response(effect.clone().into_bytes())),
                content_type: "text/plain".into(),
                status_code: 201,
            }),
            ..Default::default()
        };
        // Retry past `until` a little: the effect happened, its record matters.
        let give_up = until + Duration::from_secs(10);
        while Instant::now() < give_up {
            self.note(|r| r.completes += 1);
            match self.client().complete(request.clone()).await {
                Ok(_) => {
                    self.note(|r| r.observed.push((key.to_owned(), effect.clone())));
                    return Some(effect);
                }
                Err(status) if transient(&status) => {
                    self.note(|r| r.unavailable += 1);
                    self.backoff().await;
                }
                Err(status) if status.code() == Code::ResourceExhausted => {
                    self.note(|r| r.overloaded += 1);
                    self.backoff().await;
                }
                Err(status) if reason(&status) == "LEASE_LOST" => {
                    self.note(|r| r.lease_lost += 1);
                    return None;
                }
                Err(status) => {
                    self.note(|r| r.violations.push(format!("Complete {key}/{token}: unexpected {status:?}")));
                    return None;
                }
            }
        }
        None
    }

    async fn release(&self, key: &str, token: u64) {
        let request = v1::FailRequest {
            namespace: NAMESPACE.into(),
            key: key.into(),
            fencing_token: token,
            error: Some(v1::Error { code: "provider_timeout".into(), message: "simulated".into(), details: vec![] }),
            retryable: true,
            ..Default::default()
        };
        match self.client().fail(request).await {
            Ok(_) => self.note(|r| r.released_by_fail += 1),
            Err(status) if reason(&status) == "LEASE_LOST" => self.note(|r| r.lease_lost += 1),
            // Unreleased, the attempt is abandoned instead: also fine.
            Err(status) if transient(&status) => self.note(|r| r.unavailable += 1),
            Err(status) => self.note(|r| r.violations.push(format!("Fail {key}/{token}: unexpected {status:?}"))),
        }
    }
}

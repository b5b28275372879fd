//! A coordinator on a store, and the commands the cases send it.

use std::sync::Arc;
use std::time::Duration;

use idempotency_coordinator::core::clock::Clock;
use idempotency_coordinator::core::command::{BeginCommand, CompleteCommand, ExtendCommand, FailCommand};
use idempotency_coordinator::core::coordinator::{Coordinator, Settings};
use idempotency_coordinator::core::error::Error;
use idempotency_coordinator::core::fingerprint::{Canonicalization, of_payload};
use idempotency_coordinator::core::limits::Limits;
use idempotency_coordinator::core::outcome::{Acquired, BeginOutcome, RecordView};
use idempotency_coordinator::core::record::{CallError, CallResult, RecordId, ResultBody};
use idempotency_coordinator::core::store::RecordStore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub const NAMESPACE: &str = "payments.create";

/// Retention when a call names none: short, so that the retention cases
/// finish in seconds on etcd too.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(6);

/// How long after its `expires_at` a store may still hold a record with a
/// short retention: the retention lease's slack (2 s) and etcd's lease
/// revocation lag (its leader checks every 500 ms).
pub const RECORD_GONE_WITHIN: Duration = Duration::from_millis(3_000);

/// Retention the cases ask for when they finish a record.
pub const RETENTION: Duration = Duration::from_secs(600);

pub struct Harness<S> {
    store: Arc<S>,
    clock: Arc<dyn Clock>,
    /// The first replica; [`Harness::replica`] makes more.
    pub coordinator: Arc<Coordinator<S>>,
}

impl<S: RecordStore> Harness<S> {
    pub fn new(store: Arc<S>, clock: Arc<dyn Clock>) -> Self {
        let coordinator = replica(&store, &clock);
        Self { store, clock, coordinator }
    }

    /// Another replica on the same store, with caches of its own.
    pub fn replica(&self) -> Arc<Coordinator<S>> {
        replica(&self.store, &self.clock)
    }

    /// Another replica whose clock is `skew` ahead of (or behind) the
    /// store's.
    pub fn replica_with_skew(&self, skew: Duration, ahead: bool) -> Arc<Coordinator<S>> {
        let offset = skew.as_millis() as i64 * if ahead { 1 } else { -1 };
        replica(&self.store, &(Arc::new(SkewedClock { clock: self.clock.clone(), offset }) as Arc<dyn Clock>))
    }

    pub async fn begin(&self, command: &BeginCommand) -> Result<BeginOutcome, Error> {
        self.coordinator.begin(command, deadline()).await
    }

    /// A Begin that must acquire.
    pub async fn acquire(&self, command: &BeginCommand) -> Acquired {
        acquired(self.begin(command).await)
    }

    pub async fn complete(&self, key: &str, token: u64, response: &str) -> Result<RecordView, Error> {
        self.coordinator.complete(complete(key, token, response), deadline()).await
    }

    pub async fn fail(&self, key: &str, token: u64, code: &str, retryable: bool) -> Result<RecordView, Error> {
        self.coordinator.fail(fail(key, token, code, retryable), deadline()).await
    }

    pub async fn extend(&self, key: &str, token: u64, ttl_seconds: u64) -> Result<i64, Error> {
        let command = ExtendCommand { id: id(key), fencing_token: token, lease_ttl: Duration::from_secs(ttl_seconds) };
        self.coordinator.extend(command, deadline()).await
    }

    pub async fn lookup(&self, key: &str) -> Result<RecordView, Error> {
        self.coordinator.lookup(&id(key), deadline()).await
    }

    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }
}

/// A clock `offset` ms off another.
struct SkewedClock {
    clock: Arc<dyn Clock>,
    offset: i64,
}

impl Clock for SkewedClock {
    fn now_ms(&self) -> i64 {
        self.clock.now_ms() + self.offset
    }
}

fn replica<S: RecordStore>(store: &Arc<S>, clock: &Arc<dyn Clock>) -> Arc<Coordinator<S>> {
    let limits = Limits {
        default_lease_ttl: Duration::from_secs(5),
        max_lease_ttl: Duration::from_secs(3600),
        max_wait: Duration::from_secs(60),
        default_retention: DEFAULT_RETENTION,
        max_retention: Duration::from_secs(86_400),
        max_payload_bytes: 1 << 20,
        max_result_bytes: 1 << 18,
    };
    let settings = Settings {
        limits,
        replay_cache_bytes: 1 << 20,
        request_timeout: Duration::from_secs(5),
        max_waits_per_tenant: 64,
        replay_clock_margin: idempotency_coordinator::core::coordinator::REPLAY_CLOCK_MARGIN,
    };
    Arc::new(Coordinator::new(store.clone(), clock.clone(), settings, CancellationToken::new()))
}

/// Long enough for any case; the caller's deadline case sets its own.
pub fn deadline() -> Instant {
    Instant::now() + Duration::from_secs(30)
}

pub fn id(key: &str) -> RecordId {
    RecordId { tenant: "default".into(), namespace: NAMESPACE.into(), key: key.into() }
}

/// A Begin for `key` guarding the request `payload`, with a lease of `ttl_seconds`.
pub fn begin(key: &str, payload: &str, ttl_seconds: u64) -> BeginCommand {
    BeginCommand {
        id: id(key),
        fingerprint: of_payload(payload.as_bytes(), Canonicalization::Raw, &[]).expect("raw payloads fingerprint"),
        members: vec![],
        lease_ttl: Duration::from_secs(ttl_seconds),
        wait: Duration::ZERO,
        owner: "test".into(),
        request_id: String::new(),
    }
}

pub fn owned_by(mut command: BeginCommand, owner: &str) -> BeginCommand {
    command.owner = owner.into();
    command
}

pub fn waiting(mut command: BeginCommand, wait_seconds: u64) -> BeginCommand {
    command.wait = Duration::from_secs(wait_seconds);
    command.owner = "waiter".into();
    command
}

pub fn complete(key: &str, token: u64, response: &str) -> CompleteCommand {
    CompleteCommand {
        id: id(key),
        fencing_token: token,
        result: CallResult {
            body: ResultBody::Response(response.as_bytes().to_vec()),
            content_type: "application/json".into(),
            status_code: 201,
        },
        retention: RETENTION,
    }
}

pub fn fail(key: &str, token: u64, code: &str, retryable: bool) -> FailCommand {
    FailCommand {
        id: id(key),
        fencing_token: token,
        error: CallError { code: code.into(), message: format!("{code} happened"), details: vec![] },
        retryable,
        retention: RETENTION,
    }
}

pub fn acquired(outcome: Result<BeginOutcome, Error>) -> Acquired {
    match outcome {
        Ok(BeginOutcome::Acquired(acquired)) => acquired,
        other => panic!("expected acquired, got {other:?}"),
    }
}

/// The response bytes of a completed replay.
pub fn replayed_response(outcome: &BeginOutcome) -> Option<&[u8]> {
    match outcome {
        BeginOutcome::Completed(c) => match c.result.as_ref().map(|r| &r.body) {
            Some(ResultBody::Response(bytes)) => Some(bytes),
            _ => None,
        },
        _ => None,
    }
}

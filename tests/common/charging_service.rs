//! A payment service for the gateway tests, served on a real loopback port:
//! each POST it completes is one charge, recorded under the request's
//! `Idempotency-Key` with the fencing token it carried, so a test can check
//! that every key caused exactly one effect.
//!
//! Test headers steer one request (they are not part of any fingerprint, so a
//! retry may differ in them): `x-test-delay-ms` (work this long before
//! charging), `x-test-status` (answer this status without charging),
//! `x-test-response-bytes` (pad the answer to about this size),
//! `x-test-break-after-status` (charge, send the status line and 10 of 100
//! body bytes, then drop the connection), `x-test-stall-after-status` (the
//! same, but hold the connection open instead).
//!
//! Every request's path and headers are kept ([`Ledger::seen`]).
//!
//! [`ChargingService::kill`] drops every open connection mid-request, as a
//! crashed process would; [`ChargingService::restart`] serves again on the same port.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::response::Response;
use http::{HeaderMap, Method, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

/// What the service did, kept across restarts.
#[derive(Default)]
pub struct Ledger {
    /// Fencing tokens of the charges made, by idempotency key header value.
    charges: Mutex<HashMap<String, Vec<Option<u64>>>>,
    /// Every request that reached the service, charged or not.
    pub requests: AtomicUsize,
    /// The path and headers of every request, in arrival order.
    seen: Mutex<Vec<(String, HeaderMap)>>,
    next_id: AtomicU64,
}

impl Ledger {
    pub fn charges(&self, key_header: &str) -> usize {
        self.charges.lock().expect("ledger lock").get(key_header).map_or(0, Vec::len)
    }

    pub fn tokens(&self, key_header: &str) -> Vec<Option<u64>> {
        self.charges.lock().expect("ledger lock").get(key_header).cloned().unwrap_or_default()
    }

    /// Keys charged more than once, with their counts.
    pub fn charged_twice(&self) -> Vec<(String, usize)> {
        let charges = self.charges.lock().expect("ledger lock");
        charges.iter().filter(|(_, c)| c.len() > 1).map(|(k, c)| (k.clone(), c.len())).collect()
    }

    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    /// The path and headers of every request that reached the service.
    pub fn seen(&self) -> Vec<(String, HeaderMap)> {
        self.seen.lock().expect("ledger lock").clone()
    }
}

pub struct ChargingService {
    pub addr: SocketAddr,
    pub ledger: Arc<Ledger>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl ChargingService {
    pub async fn start() -> ChargingService {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind port 0");
        let addr = listener.local_addr().expect("local addr");
        let ledger = Arc::new(Ledger::default());
        let task = Some(serve(listener, ledger.clone()));
        ChargingService { addr, ledger, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops at once: open connections are dropped mid-request.
    pub fn kill(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }

    pub async fn restart(&mut self) {
        assert!(self.task.is_none(), "the service is running");
        let listener = TcpListener::bind(self.addr).await.expect("bind the same port again");
        self.task = Some(serve(listener, self.ledger.clone()));
    }
}

impl Drop for ChargingService {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Accepts connections until aborted; the connections live in a JoinSet the
/// task owns, so aborting it aborts them too.
fn serve(listener: TcpListener, ledger: Arc<Ledger>) -> tokio::task::JoinHandle<()> {
    let app = axum::Router::new().fallback(handle).with_state(ledger);
    tokio::spawn(async move {
        let mut connections = JoinSet::new();
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let service = TowerToHyperService::new(app.clone());
            connections.spawn(async move {
                let _ = auto::Builder::new(TokioExecutor::new()).serve_connection(TokioIo::new(stream), service).await;
            });
        }
    })
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

async fn handle(
    State(ledger): State<Arc<Ledger>>,
    method: Method,
    uri: http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    ledger.requests.fetch_add(1, Ordering::SeqCst);
    ledger.seen.lock().expect("ledger lock").push((uri.path().to_owned(), headers.clone()));
    if method != Method::POST {
        return Response::builder().status(200).body("a read, no charge".into()).expect("a response");
    }
    if let Some(ms) = header(&headers, "x-test-delay-ms").and_then(|v| v.parse().ok()) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if let Some(status) = header(&headers, "x-test-status").and_then(|v| v.parse::<u16>().ok()) {
        let status = StatusCode::from_u16(status).expect("a test status");
        return Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(format!("{{\"error\":\"refused with {status}\"}}").into())
            .expect("a response");
    }
    let key = header(&headers, "idempotency-key").unwrap_or("").to_owned();
    let token = header(&headers, "idempotency-fencing-token").and_then(|v| v.parse().ok());
    ledger.charges.lock().expect("ledger lock").entry(key).or_default().push(token);
    let id = ledger.next_id.fetch_add(1, Ordering::SeqCst) + 1;
    let breaks = header(&headers, "x-test-break-after-status").is_some();
    if breaks || header(&headers, "x-test-stall-after-status").is_some() {
        let first = tokio_stream::once(Ok::<_, std::io::Error>(Bytes::from_static(b"{\"id\":\"12")));
        let rest = async move {
            // After a pause, so the status line and first bytes are on the wire.
            tokio::time::sleep(Duration::from_millis(200)).await;
            if !breaks {
                std::future::pending::<()>().await;
            }
            Err::<Bytes, _>(std::io::Error::other("the service crashed mid-answer"))
        };
        let stream = tokio_stream::StreamExt::chain(first, futures::stream::once(rest));
        return Response::builder()
            .status(StatusCode::CREATED)
            .header("content-type", "application/json")
            .header("content-length", "100")
            .body(axum::body::Body::from_stream(stream))
            .expect("a response");
    }
    let padding = header(&headers, "x-test-response-bytes").and_then(|v| v.parse().ok()).unwrap_or(0);
    let body = format!(
        "{{\"id\":{id},\"charged\":{},\"padding\":\"{}\"}}",
        String::from_utf8_lossy(&body).len(),
        "x".repeat(padding)
    );
    Response::builder()
        .status(StatusCode::CREATED)
        .header("content-type", "application/json")
        .header("location", format!("/payments/{id}"))
        .header("etag", format!("\"charge-{id}\""))
        .header("x-served-at", format!("{:?}", std::time::SystemTime::now()))
        .body(body.into())
        .expect("a response")
}

//! Test harness: a real etcd on free loopback ports with its own data
//! directory, and the real coordinator server on port 0. Every process is
//! stopped when its handle drops, also when a test panics.
#![allow(dead_code)] // each test binary uses a different part of the harness

pub mod charging_service;
pub mod fault_proxy;
pub mod gateway_harness;
pub mod pki;
pub mod process;

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use clap::Parser;
use idempotency_coordinator::proto::v1::{
    self, begin_response::Outcome, coordinator_service_client::CoordinatorServiceClient,
};
use idempotency_coordinator::shell::config::ServeArgs;
use tokio::sync::oneshot;
use tonic::transport::Channel;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};
use tonic_types::StatusExt;

pub type Client = CoordinatorServiceClient<Channel>;

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free loopback port")
}

/// One etcd member, single-node cluster.
pub struct Etcd {
    child: Option<Child>,
    pub data_dir: tempfile::TempDir,
    pub client_url: String,
    peer_url: String,
    /// Flags beyond the single-member basics (TLS, auth token settings);
    /// a change applies from the next restart.
    pub extra_args: Vec<String>,
    /// How the readiness probe connects (TLS options for an https etcd, a
    /// user once authentication is on).
    pub probe_options: Option<etcd_client::ConnectOptions>,
}

impl Etcd {
    pub async fn start() -> Etcd {
        Etcd::start_with("http", vec![], None).await
    }

    /// An etcd whose client URL uses `scheme`, with `extra_args`, probed with `probe_options`.
    pub async fn start_with(
        scheme: &str,
        extra_args: Vec<String>,
        probe_options: Option<etcd_client::ConnectOptions>,
    ) -> Etcd {
        let mut etcd = Etcd {
            child: None,
            data_dir: tempfile::tempdir().expect("a temp dir for etcd"),
            client_url: format!("{scheme}://127.0.0.1:{}", free_port()),
            peer_url: format!("http://127.0.0.1:{}", free_port()),
            extra_args,
            probe_options,
        };
        etcd.restart().await;
        etcd
    }

    /// Starts (again) on the same ports and data, and waits until it serves.
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "etcd is already running");
        let log = std::fs::File::create(self.data_dir.path().join("etcd.log")).expect("etcd log file");
        let child = Command::new(etcd_binary())
            .arg("--name=test")
            .arg(format!("--data-dir={}", self.data_dir.path().join("data").display()))
            .arg(format!("--listen-client-urls={}", self.client_url))
            .arg(format!("--advertise-client-urls={}", self.client_url))
            .arg(format!("--listen-peer-urls={}", self.peer_url))
            .arg(format!("--initial-advertise-peer-urls={}", self.peer_url))
            .arg(format!("--initial-cluster=test={}", self.peer_url))
            .arg("--heartbeat-interval=50")
            .arg("--election-timeout=500")
            .args(&self.extra_args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("etcd must be installed (scripts/install-deps.sh installs etcd-server)");
        self.child = Some(child);
        self.wait_until_serving().await;
    }

    async fn wait_until_serving(&self) {
        for _ in 0..100 {
            let probe = async {
                let mut client =
                    etcd_client::Client::connect([&self.client_url], self.probe_options.clone()).await.ok()?;
                client.put("/probe", "", None).await.ok()
            };
            if tokio::time::timeout(Duration::from_millis(500), probe).await.ok().flatten().is_some() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("etcd did not start; see {}", self.data_dir.path().join("etcd.log").display());
    }

    /// Sends `signal` (e.g. "STOP", "CONT") to the etcd process: a stopped
    /// etcd keeps its connections open and answers nothing, like a member
    /// stalled on a disk.
    pub fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("etcd is running").id().to_string();
        let status = Command::new("kill").args([&format!("-{signal}"), &pid]).status().expect("kill runs");
        assert!(status.success(), "kill -{signal} {pid} failed");
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
    }
}

fn etcd_binary() -> PathBuf {
    std::env::var_os("ETCD_BIN").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("etcd"))
}

/// How the etcd store reaches `etcd`, its keys under `prefix`.
pub fn etcd_config(etcd: &Etcd, prefix: &str) -> idempotency_coordinator::store::etcd::config::EtcdConfig {
    idempotency_coordinator::store::etcd::config::EtcdConfig {
        endpoints: vec![etcd.client_url.clone()],
        prefix: prefix.into(),
        connect_timeout: Duration::from_secs(1),
        request_timeout: Duration::from_secs(10),
        tls: None,
        credentials: None,
        batching: Default::default(),
        quota_bytes: idempotency_coordinator::store::etcd::config::DEFAULT_QUOTA_BYTES,
        shard: "default".into(),
    }
}

/// A coordinator on `store` with `limits`, the replay cache off (so every
/// replay reads the whole record from the store), for tests that drive the
/// core directly.
pub fn uncached_coordinator(
    store: std::sync::Arc<idempotency_coordinator::store::etcd::EtcdStore>,
    clock: std::sync::Arc<dyn idempotency_coordinator::core::clock::Clock>,
    limits: idempotency_coordinator::core::limits::Limits,
) -> idempotency_coordinator::core::coordinator::Coordinator<idempotency_coordinator::store::etcd::EtcdStore> {
    let settings = idempotency_coordinator::core::coordinator::Settings {
        limits,
        replay_cache_bytes: 0,
        request_timeout: Duration::from_secs(10),
        max_waits_per_tenant: 64,
        replay_clock_margin: idempotency_coordinator::core::coordinator::REPLAY_CLOCK_MARGIN,
    };
    idempotency_coordinator::core::coordinator::Coordinator::new(
        store,
        clock,
        settings,
        tokio_util::sync::CancellationToken::new(),
    )
}

/// The Prometheus text a server's metrics port at `port` answers with.
pub async fn scrape_metrics(port: u16) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.expect("the metrics port answers");
    stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response:.200}");
    response.split_once("\r\n\r\n").map(|(_, body)| body.to_owned()).unwrap_or_default()
}

/// A channel to a server process at `url` as soon as it accepts
/// connections, failing the test after 10 s.
pub async fn connect_when_up(url: &str) -> Channel {
    let started = std::time::Instant::now();
    loop {
        if let Ok(channel) = Channel::from_shared(url.to_owned()).expect("valid url").connect().await {
            return channel;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "the server at {url} did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The coordinator, served in-process from `server::run`.
pub struct Server {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Server {
    /// Starts a server on etcd with test-friendly settings plus `extra` flags.
    pub async fn start(etcd: &Etcd, extra: &[&str]) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind port 0");
        let addr = listener.local_addr().expect("local addr");
        let config = test_config(etcd, extra).validate().expect("valid test config");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let shutdown = async {
                let _ = stopped.await;
            };
            idempotency_coordinator::shell::server::run(config, listener, shutdown).await.expect("server runs");
        });
        Server { addr, stop: Some(stop), task: Some(task) }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn client(&self) -> Client {
        CoordinatorServiceClient::new(self.channel().await)
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(self.url()).expect("valid url").connect().await.expect("connect to the test server")
    }

    /// A TLS channel to a server started with --tls-cert; Err if the handshake fails.
    pub async fn tls_channel(
        &self,
        tls: tonic::transport::ClientTlsConfig,
    ) -> Result<Channel, tonic::transport::Error> {
        Channel::from_shared(format!("https://{}", self.addr)).expect("valid url").tls_config(tls)?.connect().await
    }

    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("server task ends cleanly");
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// The server flags tests use: short timeouts, fast health checks, any free
/// metrics port, plus `extra`.
pub fn test_config(etcd: &Etcd, extra: &[&str]) -> ServeArgs {
    let defaults = [
        ("--etcd-endpoints", etcd.client_url.as_str()),
        ("--etcd-request-timeout", "2s"),
        ("--etcd-connect-timeout", "500ms"),
        ("--health-check-interval", "200ms"),
        ("--default-lease-ttl", "5s"),
        ("--shutdown-grace", "5s"),
        // Any free port, so that parallel test servers never collide.
        ("--metrics-listen", "127.0.0.1:0"),
    ];
    let mut argv = vec!["test"];
    for (flag, value) in defaults {
        if !extra.contains(&flag) {
            argv.extend_from_slice(&[flag, value]);
        }
    }
    argv.extend_from_slice(extra);
    ServeCli::parse_from(argv).serve
}

#[derive(Parser)]
struct ServeCli {
    #[command(flatten)]
    serve: ServeArgs,
}

/// A coordinator on its own fresh etcd.
pub async fn start() -> (Etcd, Server, Client) {
    start_with(&[]).await
}

pub async fn start_with(extra: &[&str]) -> (Etcd, Server, Client) {
    let etcd = Etcd::start().await;
    let server = Server::start(&etcd, extra).await;
    let client = server.client().await;
    (etcd, server, client)
}

pub fn secs(seconds: i64) -> prost_types::Duration {
    prost_types::Duration { seconds, nanos: 0 }
}

/// A Begin request on namespace "payments.create" with a raw payload.
pub fn begin_request(key: &str, payload: &str, ttl_seconds: i64) -> v1::BeginRequest {
    v1::BeginRequest {
        namespace: "payments.create".into(),
        key: key.into(),
        request: Some(v1::begin_request::Request::Payload(v1::Payload {
            data: payload.as_bytes().to_vec(),
            canonicalization: v1::Canonicalization::Raw as i32,
            ignore_fields: vec![],
        })),
        lease_ttl: Some(secs(ttl_seconds)),
        owner: "test".into(),
        ..Default::default()
    }
}

pub async fn begin(client: &mut Client, request: v1::BeginRequest) -> Outcome {
    client.begin(request).await.expect("begin succeeds").into_inner().outcome.expect("begin has an outcome")
}

pub fn acquired(outcome: Outcome) -> v1::Acquired {
    match outcome {
        Outcome::Acquired(a) => a,
        other => panic!("expected acquired, got {other:?}"),
    }
}

pub fn complete_request(key: &str, token: u64, response: &str) -> v1::CompleteRequest {
    v1::CompleteRequest {
        namespace: "payments.create".into(),
        key: key.into(),
        fencing_token: token,
        result: Some(v1::Result {
            body: Some(v1::result::Body::Response(response.as_bytes().to_vec())),
            content_type: "application/json".into(),
            status_code: 201,
        }),
        ..Default::default()
    }
}

pub fn fail_request(key: &str, token: u64, code: &str, retryable: bool) -> v1::FailRequest {
    v1::FailRequest {
        namespace: "payments.create".into(),
        key: key.into(),
        fencing_token: token,
        error: Some(v1::Error { code: code.into(), message: format!("{code} happened"), details: vec![] }),
        retryable,
        ..Default::default()
    }
}

pub fn extend_request(key: &str, token: u64, ttl_seconds: i64) -> v1::ExtendRequest {
    v1::ExtendRequest {
        namespace: "payments.create".into(),
        key: key.into(),
        fencing_token: token,
        lease_ttl: Some(secs(ttl_seconds)),
        ..Default::default()
    }
}

pub fn lookup_request(key: &str) -> v1::LookupRequest {
    v1::LookupRequest { namespace: "payments.create".into(), key: key.into(), ..Default::default() }
}

/// The status `service` reports over plaintext gRPC at `url`, or None while
/// nothing answers there (a server still starting).
pub async fn health(url: &str, service: &str) -> Option<ServingStatus> {
    let channel = Channel::from_shared(url.to_owned()).expect("valid url").connect().await.ok()?;
    let reply = HealthClient::new(channel).check(HealthCheckRequest { service: service.into() }).await.ok()?;
    Some(reply.into_inner().status())
}

/// Waits until `service` at `url` reports `wanted`, failing the test after `within`.
pub async fn wait_for_health(url: &str, service: &str, wanted: ServingStatus, within: Duration) {
    let started = std::time::Instant::now();
    while health(url, service).await != Some(wanted) {
        assert!(started.elapsed() < within, "{service:?} did not become {wanted:?} within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The ErrorInfo reason of a failed call.
pub fn reason(status: &tonic::Status) -> String {
    status.get_error_details().error_info().map(|i| i.reason.clone()).unwrap_or_default()
}

/// Asserts a call failed with `code` and ErrorInfo `reason`.
pub fn assert_status<T: std::fmt::Debug>(
    result: Result<T, tonic::Status>,
    code: tonic::Code,
    expected_reason: &str,
) -> tonic::Status {
    let status = result.expect_err("the call must fail");
    assert_eq!(status.code(), code, "status: {status:?}");
    assert_eq!(reason(&status), expected_reason, "status: {status:?}");
    status
}

/// The fields named by the BadRequest details of an INVALID_ARGUMENT.
pub fn violated_fields(status: &tonic::Status) -> Vec<String> {
    status
        .get_error_details()
        .bad_request()
        .map(|b| b.field_violations.iter().map(|v| v.field.clone()).collect())
        .unwrap_or_default()
}

/// A Begin with a 500 ms deadline against an etcd out of reach ends as
/// UNAVAILABLE (or the deadline's own codes) within 900 ms: the caller's
/// deadline bounds the wait, not the etcd request timeout.
pub async fn assert_short_deadline_is_kept(client: &mut Client, key: &str) {
    let mut request = tonic::IntoRequest::into_request(begin_request(key, "cart", 5));
    request.set_timeout(Duration::from_millis(500));
    let started = std::time::Instant::now();
    let status = client.begin(request).await.expect_err("etcd is out of reach");
    assert!(
        matches!(status.code(), tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled),
        "{status:?}"
    );
    assert!(started.elapsed() < Duration::from_millis(900), "took {:?}", started.elapsed());
}

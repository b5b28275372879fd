//! The HTTP gateway for end-to-end tests, served in-process from
//! `gateway::server::run` in front of the charging service, with a real
//! coordinator on a real etcd, and a real HTTP client (reqwest).
#![allow(dead_code)] // each gateway test binary uses a different part

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use idempotency_coordinator::cli::ClientArgs;
use idempotency_coordinator::gateway::config::{ClientLimits, GatewayConfig, parse_routes};
use reqwest::StatusCode;
use tokio::sync::oneshot;

use super::charging_service::ChargingService;
use super::{Etcd, Server, free_port};

/// The caller every [`Setup::pay`] speaks for, in its `Authorization` header.
pub const CALLER: &str = "Bearer alice";

/// The gateway, served in-process.
pub struct Gateway {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    pub task: tokio::task::JoinHandle<()>,
}

impl Gateway {
    pub async fn start(upstream: &str, coordinator: &str, routes: &str) -> Gateway {
        Gateway::start_with(upstream, plaintext(coordinator), routes).await
    }

    /// A gateway calling the coordinator as `client` says (TLS, bearer token).
    pub async fn start_with(upstream: &str, client: ClientArgs, routes: &str) -> Gateway {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind port 0");
        let addr = listener.local_addr().expect("local addr");
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("an address");
        let config = GatewayConfig {
            listen: addr,
            admin_listen: admin,
            upstream: upstream.parse().expect("upstream URI"),
            routes: parse_routes(routes).expect("valid routes"),
            tenant: String::new(),
            owner: "gateway-test".into(),
            shutdown_grace: Duration::from_secs(5),
            limits: ClientLimits::default(),
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let shutdown = async {
                let _ = stopped.await;
            };
            idempotency_coordinator::gateway::server::run(config, &client, listener, shutdown)
                .await
                .expect("the gateway runs");
        });
        // Ready once its admin port answers: both ports are bound by then.
        let deadline = Instant::now() + Duration::from_secs(10);
        while reqwest::get(format!("http://{admin}/livez")).await.is_err() {
            assert!(Instant::now() < deadline, "the gateway did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Gateway { addr, admin, stop: Some(stop), task }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// What SIGTERM does to the binary: the drain starts.
    pub fn begin_shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

pub fn plaintext(coordinator: &str) -> ClientArgs {
    ClientArgs {
        addr: coordinator.to_owned(),
        timeout: Duration::from_secs(2),
        ca_cert: None,
        client_cert: None,
        client_key: None,
        bearer_token: None,
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.abort();
    }
}

/// Everything a test needs, stopped when dropped.
pub struct Setup {
    pub service: ChargingService,
    pub gateway: Gateway,
    pub http: reqwest::Client,
    pub coordinator: Option<Server>,
    pub _etcd: Option<Etcd>,
}

impl Setup {
    pub async fn start(routes: &str) -> Setup {
        let etcd = Etcd::start().await;
        let coordinator = Server::start(&etcd, &[]).await;
        let service = ChargingService::start().await;
        let gateway = Gateway::start(&service.url(), &coordinator.url(), routes).await;
        Setup { service, gateway, http: reqwest::Client::new(), coordinator: Some(coordinator), _etcd: Some(etcd) }
    }

    /// A POST of `body` (JSON) with `key` as a Structured Field string, as [`CALLER`].
    pub fn pay(&self, path: &str, key: &str, body: &str) -> reqwest::RequestBuilder {
        self.http
            .post(self.gateway.url(path))
            .header("idempotency-key", format!("\"{key}\""))
            .header("content-type", "application/json")
            .header("authorization", CALLER)
            .body(body.to_owned())
    }

    /// The key as the service sees it in the header.
    pub fn charges(&self, key: &str) -> usize {
        self.service.ledger.charges(&format!("\"{key}\""))
    }

    pub fn assert_no_key_charged_twice(&self) {
        assert_eq!(self.service.ledger.charged_twice(), vec![], "a key caused more than one charge");
    }
}

/// An answer read whole.
pub struct Answer {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: bytes::Bytes,
}

impl Answer {
    pub async fn of(response: reqwest::Response) -> Answer {
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.bytes().await.expect("the whole body");
        Answer { status, headers, body }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn replayed(&self) -> bool {
        self.header("idempotent-replayed") == Some("true")
    }

    /// The problem document's `type`, checking it is one.
    pub fn problem_type(&self) -> String {
        self.problem()["type"].as_str().expect("a type").to_owned()
    }

    /// The problem document, checking it is one.
    pub fn problem(&self) -> serde_json::Value {
        assert_eq!(self.header("content-type"), Some("application/problem+json"), "{:?}", self.body);
        let document: serde_json::Value = serde_json::from_slice(&self.body).expect("problem+json");
        assert_eq!(document["status"], self.status.as_u16(), "{document}");
        document
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

pub async fn send(request: reqwest::RequestBuilder) -> Answer {
    Answer::of(request.send().await.expect("an answer")).await
}

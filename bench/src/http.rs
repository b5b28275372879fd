//! The HTTP side: a payments service that does nothing but answer (the
//! floor, as the do-nothing gRPC server is for the coordinator), and a client
//! that drives it directly or through the gateway with an `Idempotency-Key`.
//! The service runs in its own process (`bench --serve-upstream ADDR`) so that
//! its CPU is measured apart from the callers' and the gateway's.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::post;

use crate::targets::{Begun, Target};

/// The JSON every benchmarked request sends.
const REQUEST_BODY: &str = r#"{"amount":1000,"currency":"EUR","customer":"cus_4711"}"#;

/// Answers every `POST /payments` with 201, a Location and a small JSON
/// body, as a payments API creating a charge would.
pub async fn serve_upstream(addr: SocketAddr) -> anyhow::Result<()> {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let charge = |body: String| async move {
        let id = NEXT.fetch_add(1, Ordering::Relaxed);
        let answer = format!(r#"{{"id":"ch_{id}","status":"succeeded","request_bytes":{}}}"#, body.len());
        (
            StatusCode::CREATED,
            [(header::LOCATION, format!("/payments/ch_{id}")), (header::CONTENT_TYPE, "application/json".into())],
            answer,
        )
            .into_response()
    };
    let app = Router::new().route("/payments", post(charge));
    axum::serve(tokio::net::TcpListener::bind(addr).await?, app).await?;
    Ok(())
}

/// `POST /payments` with a fresh `Idempotency-Key` per key, over HTTP/1.1
/// keep-alive connections (reqwest's pool: one per concurrent caller).
pub struct HttpPayments {
    client: reqwest::Client,
    url: String,
    /// Through the gateway, a retry of a finished request must be a replay.
    gateway: bool,
}

impl HttpPayments {
    pub fn new(addr: SocketAddr, gateway: bool) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder().http1_only().pool_max_idle_per_host(usize::MAX).build()?;
        Ok(HttpPayments { client, url: format!("http://{addr}/payments"), gateway })
    }

    async fn post(&self, key: &str) -> Result<Begun, String> {
        let response = self
            .client
            .post(&self.url)
            .header("Idempotency-Key", format!("\"{key}\""))
            .header("Authorization", "Bearer bench")
            .header(header::CONTENT_TYPE, "application/json")
            .body(REQUEST_BODY)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let (status, replayed) = (response.status(), response.headers().contains_key("idempotent-replayed"));
        // Read the whole answer, as a client does, so the connection is reused.
        response.bytes().await.map_err(|e| e.to_string())?;
        match status {
            StatusCode::CREATED if replayed => Ok(Begun::Replayed),
            StatusCode::CREATED => Ok(Begun::Acquired(0)),
            StatusCode::CONFLICT => Ok(Begun::Busy),
            other => Err(format!("POST /payments answered {other}")),
        }
    }
}

#[async_trait]
impl Target for HttpPayments {
    /// The whole request: through the gateway that is Begin, the service's
    /// call and Complete.
    async fn begin(&self, key: &str) -> Result<Begun, String> {
        self.post(key).await
    }

    /// Nothing: the gateway completes the record itself.
    async fn complete(&self, _key: &str, _token: u64) -> Result<(), String> {
        Ok(())
    }

    /// A retry of a finished request. The service alone has no replays, so
    /// there it runs again; that is the floor the replay is compared with.
    async fn replay(&self, key: &str) -> Result<(), String> {
        match self.post(key).await? {
            Begun::Replayed => Ok(()),
            Begun::Acquired(_) if !self.gateway => Ok(()),
            other => Err(format!("a retry of {key} was {other:?}")),
        }
    }
}

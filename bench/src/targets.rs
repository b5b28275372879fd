//! What is benchmarked: the coordinator, and what a team would otherwise write
//! by hand — one etcd transaction per operation, Redis `SET NX PX` then `SET`,
//! PostgreSQL `INSERT ... ON CONFLICT DO NOTHING` then `UPDATE`. Each answers
//! the same three questions so the scenarios can drive any of them.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use etcd_client::{Compare, CompareOp, Txn, TxnOp, TxnOpResponse};
use idempotency_coordinator::proto::v1::{
    self, begin_response::Outcome, coordinator_service_client::CoordinatorServiceClient,
};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Channel, ClientTlsConfig};

/// How a claim on a key went.
#[derive(Debug, PartialEq)]
pub enum Begun {
    /// The caller owns the key; the token (or 0) goes to `complete`.
    Acquired(u64),
    /// Already completed: the stored result is the answer.
    Replayed,
    /// Someone else is working on it.
    Busy,
}

#[async_trait]
pub trait Target: Send + Sync {
    /// Claims `key` (and, if it is taken, learns whether it is done).
    async fn begin(&self, key: &str) -> Result<Begun, String>;
    /// Stores the result of an acquired key.
    async fn complete(&self, key: &str, token: u64) -> Result<(), String>;
    /// Answers a retry of a completed key.
    async fn replay(&self, key: &str) -> Result<(), String>;
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

pub struct Coordinator {
    clients: Vec<CoordinatorServiceClient<Channel>>,
    next: AtomicUsize,
    /// `Bearer <token>` for a server with authentication on.
    authorization: Option<MetadataValue<Ascii>>,
}

impl Coordinator {
    /// `connections` HTTP/2 connections, used in turn; over TLS and with a
    /// bearer token when given.
    pub async fn connect(
        url: &str,
        connections: usize,
        tls: Option<ClientTlsConfig>,
        token: Option<&str>,
    ) -> anyhow::Result<Self> {
        let mut clients = Vec::new();
        for _ in 0..connections {
            let mut endpoint = Channel::from_shared(url.to_owned())?;
            if let Some(tls) = &tls {
                endpoint = endpoint.tls_config(tls.clone())?;
            }
            clients.push(CoordinatorServiceClient::new(endpoint.connect().await?));
        }
        let authorization = token.map(|t| format!("Bearer {t}").parse()).transpose()?;
        Ok(Self { clients, next: AtomicUsize::new(0), authorization })
    }

    fn client(&self) -> CoordinatorServiceClient<Channel> {
        self.clients[self.next.fetch_add(1, Ordering::Relaxed) % self.clients.len()].clone()
    }

    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        if let Some(authorization) = &self.authorization {
            request.metadata_mut().insert("authorization", authorization.clone());
        }
        request
    }
}

#[async_trait]
impl Target for Coordinator {
    async fn begin(&self, key: &str) -> Result<Begun, String> {
        let request = v1::BeginRequest {
            namespace: "bench".into(),
            key: key.into(),
            request: Some(v1::begin_request::Request::Fingerprint(vec![1; 32])),
            lease_ttl: Some(prost_types_duration(30)),
            ..Default::default()
        };
        match self.client().begin(self.request(request)).await.map_err(err)?.into_inner().outcome {
            Some(Outcome::Acquired(a)) => Ok(Begun::Acquired(a.fencing_token)),
            Some(Outcome::Completed(_)) => Ok(Begun::Replayed),
            Some(Outcome::InProgress(_)) => Ok(Begun::Busy),
            other => Err(format!("unexpected {other:?}")),
        }
    }

    async fn complete(&self, key: &str, token: u64) -> Result<(), String> {
        let request = v1::CompleteRequest {
            namespace: "bench".into(),
            key: key.into(),
            fencing_token: token,
            result: Some(v1::Result { body: Some(v1::result::Body::ResourceRef("done".into())), ..Default::default() }),
            ..Default::default()
        };
        self.client().complete(self.request(request)).await.map(|_| ()).map_err(err)
    }

    async fn replay(&self, key: &str) -> Result<(), String> {
        match self.begin(key).await? {
            Begun::Replayed => Ok(()),
            other => Err(format!("expected a replay, got {other:?}")),
        }
    }
}

fn prost_types_duration(seconds: i64) -> prost_types::Duration {
    prost_types::Duration { seconds, nanos: 0 }
}

/// (a) etcd directly: a create-if-absent transaction to claim, a
/// compare-on-revision transaction to complete, a linearizable get to replay.
pub struct DirectEtcd {
    client: etcd_client::Client,
}

impl DirectEtcd {
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        Ok(Self { client: etcd_client::Client::connect([url], None).await? })
    }
}

fn etcd_key(key: &str) -> String {
    format!("/direct/{key}")
}

#[async_trait]
impl Target for DirectEtcd {
    async fn begin(&self, key: &str) -> Result<Begun, String> {
        let k = etcd_key(key);
        let txn = Txn::new()
            .when([Compare::version(k.as_str(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(k.as_str(), "in_progress", None)])
            .or_else([TxnOp::get(k.as_str(), None)]);
        let response = self.client.clone().txn(txn).await.map_err(err)?;
        if response.succeeded() {
            return Ok(Begun::Acquired(response.header().map(|h| h.revision()).unwrap_or_default() as u64));
        }
        let done = response.op_responses().iter().any(|r| match r {
            TxnOpResponse::Get(get) => get.kvs().first().is_some_and(|kv| kv.value() == b"completed"),
            _ => false,
        });
        Ok(if done { Begun::Replayed } else { Begun::Busy })
    }

    async fn complete(&self, key: &str, token: u64) -> Result<(), String> {
        let k = etcd_key(key);
        let txn = Txn::new()
            .when([Compare::mod_revision(k.as_str(), CompareOp::Equal, token as i64)])
            .and_then([TxnOp::put(k.as_str(), "completed", None)]);
        let response = self.client.clone().txn(txn).await.map_err(err)?;
        if response.succeeded() { Ok(()) } else { Err("lost the key".into()) }
    }

    async fn replay(&self, key: &str) -> Result<(), String> {
        let response = self.client.clone().get(etcd_key(key), None).await.map_err(err)?;
        match response.kvs().first() {
            Some(kv) if kv.value() == b"completed" => Ok(()),
            other => Err(format!("expected a completed key, got {other:?}")),
        }
    }
}

/// (b) Redis: `SET key in_progress NX PX 30000` to claim, `SET key completed`
/// to complete, `GET` to replay.
pub struct Redis {
    connection: redis::aio::MultiplexedConnection,
}

impl Redis {
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        Ok(Self { connection: redis::Client::open(url)?.get_multiplexed_async_connection().await? })
    }
}

#[async_trait]
impl Target for Redis {
    async fn begin(&self, key: &str) -> Result<Begun, String> {
        let mut connection = self.connection.clone();
        let claimed: Option<String> = redis::cmd("SET")
            .arg(key)
            .arg("in_progress")
            .arg("NX")
            .arg("PX")
            .arg(30_000)
            .query_async(&mut connection)
            .await
            .map_err(err)?;
        if claimed.is_some() {
            return Ok(Begun::Acquired(0));
        }
        let state: Option<String> = redis::cmd("GET").arg(key).query_async(&mut connection).await.map_err(err)?;
        Ok(if state.as_deref() == Some("completed") { Begun::Replayed } else { Begun::Busy })
    }

    async fn complete(&self, key: &str, _token: u64) -> Result<(), String> {
        let mut connection = self.connection.clone();
        redis::cmd("SET")
            .arg(key)
            .arg("completed")
            .arg("EX")
            .arg(86_400)
            .query_async::<()>(&mut connection)
            .await
            .map_err(err)
    }

    async fn replay(&self, key: &str) -> Result<(), String> {
        let mut connection = self.connection.clone();
        let state: Option<String> = redis::cmd("GET").arg(key).query_async(&mut connection).await.map_err(err)?;
        if state.as_deref() == Some("completed") { Ok(()) } else { Err(format!("expected completed, got {state:?}")) }
    }
}

/// (c) PostgreSQL: `INSERT ... ON CONFLICT DO NOTHING` to claim, `UPDATE` to
/// complete, `SELECT` to replay; a pool of connections used in turn.
pub struct Postgres {
    connections: Vec<Arc<tokio_postgres::Client>>,
    next: AtomicUsize,
}

impl Postgres {
    pub async fn connect(config: &str, connections: usize) -> anyhow::Result<Self> {
        let mut clients = Vec::new();
        for _ in 0..connections {
            let (client, connection) = tokio_postgres::connect(config, tokio_postgres::NoTls).await?;
            tokio::spawn(connection);
            clients.push(Arc::new(client));
        }
        clients[0]
            .batch_execute(
                "CREATE TABLE IF NOT EXISTS idempotency (key text PRIMARY KEY, state text NOT NULL, result text)",
            )
            .await?;
        Ok(Self { connections: clients, next: AtomicUsize::new(0) })
    }

    fn client(&self) -> Arc<tokio_postgres::Client> {
        self.connections[self.next.fetch_add(1, Ordering::Relaxed) % self.connections.len()].clone()
    }
}

#[async_trait]
impl Target for Postgres {
    async fn begin(&self, key: &str) -> Result<Begun, String> {
        let client = self.client();
        let inserted = client
            .execute("INSERT INTO idempotency (key, state) VALUES ($1, 'in_progress') ON CONFLICT DO NOTHING", &[&key])
            .await
            .map_err(err)?;
        if inserted == 1 {
            return Ok(Begun::Acquired(0));
        }
        let row = client.query_opt("SELECT state FROM idempotency WHERE key = $1", &[&key]).await.map_err(err)?;
        let state: Option<String> = row.map(|r| r.get(0));
        Ok(if state.as_deref() == Some("completed") { Begun::Replayed } else { Begun::Busy })
    }

    async fn complete(&self, key: &str, _token: u64) -> Result<(), String> {
        self.client()
            .execute("UPDATE idempotency SET state = 'completed', result = 'done' WHERE key = $1", &[&key])
            .await
            .map(|_| ())
            .map_err(err)
    }

    async fn replay(&self, key: &str) -> Result<(), String> {
        let row =
            self.client().query_opt("SELECT state FROM idempotency WHERE key = $1", &[&key]).await.map_err(err)?;
        match row.map(|r| r.get::<_, String>(0)) {
            Some(state) if state == "completed" => Ok(()),
            other => Err(format!("expected completed, got {other:?}")),
        }
    }
}

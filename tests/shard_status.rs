//! `GetShardMapStatus` and `shards status` over two real etcd clusters in
//! the middle of a map change from [a] to [a, b]: a record begun under the
//! announce step stays at its previous home a, so a replica of the switch
//! step says settle is not safe yet; once that record is forgotten it says
//! settle is safe, and every shard of the new map is marked settle-checked.

mod common;

use std::process::Command;
use std::time::Duration;

use common::pki::Pki;
use common::*;
use idempotency_coordinator::cli::{Authorization, ClientArgs};
use idempotency_coordinator::core::record::RecordId;
use idempotency_coordinator::proto::v1::{
    self, admin_service_client::AdminServiceClient, coordinator_service_client::CoordinatorServiceClient,
};
use idempotency_coordinator::shell::auth::tokens::hash_token;
use idempotency_coordinator::store::sharded::shard_map::Placement;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

const OPS: &str = "ops-token-0123456789abcdefgh";

/// TLS, a bearer token for tenant ops, and ops as the admin tenant.
struct Secured {
    pki: Pki,
    flags: Vec<String>,
}

impl Secured {
    fn new() -> Secured {
        let pki = Pki::new("shard-status");
        let cert = pki.server("server");
        let tokens = pki.dir.path().join("tokens");
        std::fs::write(&tokens, format!("ops {}\n", hash_token(OPS))).expect("tokens file");
        let path = |p: &std::path::Path| p.to_str().expect("UTF-8").to_owned();
        let flags = vec![
            "--tls-cert".into(),
            path(&cert.cert),
            "--tls-key".into(),
            path(&cert.key),
            "--tokens-file".into(),
            path(&tokens),
            "--admin-tenants".into(),
            "ops".into(),
        ];
        Secured { pki, flags }
    }

    /// A server over `etcd`, sharded by the map file at `map`.
    async fn server(&self, etcd: &Etcd, map: &str) -> Server {
        let health = format!("127.0.0.1:{}", free_port());
        let mut flags: Vec<&str> = self.flags.iter().map(String::as_str).collect();
        flags.extend(["--health-listen", &health, "--shard-map", map]);
        Server::start(etcd, &flags).await
    }

    /// The command-line client's flags for `server`, as tenant ops.
    fn client_args(&self, server: &Server) -> ClientArgs {
        ClientArgs {
            addr: format!("https://{}", server.addr),
            timeout: Duration::from_secs(10),
            ca_cert: Some(self.pki.ca_path()),
            client_cert: None,
            client_key: None,
            bearer_token: Some(OPS.into()),
        }
    }

    async fn channel(&self, server: &Server) -> (Channel, Authorization) {
        let args = self.client_args(server);
        let channel = args.endpoint().expect("endpoint").connect().await.expect("connect over TLS");
        (channel, args.authorization().expect("a printable token"))
    }

    async fn admin(&self, server: &Server) -> AdminServiceClient<InterceptedService<Channel, Authorization>> {
        let (channel, token) = self.channel(server).await;
        AdminServiceClient::with_interceptor(channel, token)
    }

    /// `shards status` plus `extra` against `server`: exit code and stdout.
    async fn cli(&self, server: &Server, extra: &[&str]) -> (Option<i32>, String) {
        let mut command = Command::new(env!("CARGO_BIN_EXE_idempotency-coordinator"));
        command.args(["shards", "status"]).args(extra).args(["--addr", &format!("https://{}", server.addr)]);
        command.arg("--ca-cert").arg(self.pki.ca_path()).env("IDEMPOTENCY_BEARER_TOKEN", OPS);
        // Off the runtime: the server answering runs on it.
        let output = tokio::task::spawn_blocking(move || command.output()).await.unwrap().expect("the CLI runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.is_empty(), "{stderr}");
        (output.status.code(), String::from_utf8_lossy(&output.stdout).into_owned())
    }
}

/// A shard-map file naming `clusters` as shards a and b, after `map`.
fn shard_map(dir: &tempfile::TempDir, file: &str, clusters: &[Etcd], map: &str) -> String {
    let mut text = map.to_owned();
    for (name, etcd) in ["a", "b"].iter().zip(clusters) {
        text.push_str(&format!("\n[shard.{name}]\nendpoints = [\"{}\"]\n", etcd.client_url));
    }
    let path = dir.path().join(file);
    std::fs::write(&path, text).expect("write the shard map");
    path.display().to_string()
}

async fn status(
    admin: &mut AdminServiceClient<InterceptedService<Channel, Authorization>>,
) -> v1::GetShardMapStatusResponse {
    admin
        .get_shard_map_status(v1::GetShardMapStatusRequest { migrate: false })
        .await
        .expect("shard map status")
        .into_inner()
}

#[tokio::test]
async fn settle_is_safe_only_once_no_record_is_left_at_a_previous_home() {
    let clusters = [Etcd::start().await, Etcd::start().await];
    let dir = tempfile::tempdir().expect("temp dir");
    let announce = "epoch = 1\nshards = [\"a\"]\n[next]\nepoch = 2\nshards = [\"a\", \"b\"]";
    let announce = shard_map(&dir, "announce.toml", &clusters, announce);
    let switch = "epoch = 2\nshards = [\"a\", \"b\"]\n[previous]\nepoch = 1\nshards = [\"a\"]";
    let switch = shard_map(&dir, "switch.toml", &clusters, switch);
    let secured = Secured::new();

    // A key whose home moves from a to b, begun and completed under the
    // announce step: it stays on a.
    let new_map = Placement { epoch: 2, shards: vec!["a".into(), "b".into()] };
    let key = (0..)
        .map(|i| format!("order-{i}"))
        .find(|key| {
            let id = RecordId { tenant: "ops".into(), namespace: "payments.create".into(), key: key.clone() };
            new_map.home(&id) == "b"
        })
        .expect("some key moves to b");
    let announcing = secured.server(&clusters[0], &announce).await;
    let (channel, token) = secured.channel(&announcing).await;
    let mut client = CoordinatorServiceClient::with_interceptor(channel, token);
    let begun = client.begin(begin_request(&key, "cart", 30)).await.expect("begin").into_inner().outcome;
    let owner = acquired(begun.expect("an outcome"));
    client.complete(complete_request(&key, owner.fencing_token, "receipt")).await.expect("complete");
    let asked = status(&mut secured.admin(&announcing).await).await;
    eprintln!("announce step: {asked:?}");
    assert!(asked.sharded && !asked.settle_safe && asked.left_behind == 0, "not at a switch step: {asked:?}");
    announcing.shutdown().await;

    let switching = secured.server(&clusters[0], &switch).await;
    let mut admin = secured.admin(&switching).await;
    let asked = status(&mut admin).await;
    eprintln!("switch step, {key} left on a: {asked:?}");
    assert!(asked.sharded && !asked.settle_safe, "{asked:?}");
    assert_eq!(asked.left_behind, 1, "{asked:?}");
    assert!(asked.last_expires_at.is_some(), "{asked:?}");
    assert!(asked.shards.iter().all(|shard| !shard.settle_checked), "{asked:?}");
    let (code, out) = secured.cli(&switching, &[]).await;
    eprintln!("shards status (exit {code:?}):\n{out}");
    assert_eq!(code, Some(3), "{out}");
    assert!(out.contains("left behind: 1 (last expires at ") && out.contains("settle: not yet"), "{out}");

    let forget = v1::ForgetRecordRequest {
        tenant: "ops".into(),
        namespace: "payments.create".into(),
        key: key.clone(),
        reason: "settle".into(),
    };
    admin.forget_record(forget).await.expect("forget the record left behind");
    let asked = status(&mut admin).await;
    eprintln!("switch step, nothing left: {asked:?}");
    assert!(asked.settle_safe && asked.left_behind == 0 && asked.last_expires_at.is_none(), "{asked:?}");
    for shard in ["a", "b"] {
        let found = asked.shards.iter().find(|s| s.name == shard).unwrap_or_else(|| panic!("{shard} in {asked:?}"));
        assert!(found.settle_checked, "{asked:?}");
    }
    let (code, out) = secured.cli(&switching, &["--json"]).await;
    eprintln!("shards status --json (exit {code:?}):\n{out}");
    assert_eq!(code, Some(0), "{out}");
    let answer: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(answer["settle_safe"], true);
    assert_eq!(answer["left_behind"], 0);
    let (code, out) = secured.cli(&switching, &[]).await;
    eprintln!("shards status (exit {code:?}):\n{out}");
    assert!(code == Some(0) && out.trim_end().ends_with("settle: safe"), "{out}");
}

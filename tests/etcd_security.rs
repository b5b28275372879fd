//! The coordinator on an etcd that demands TLS, a client certificate and a
//! user with a password, whose auth tokens expire after one idle second; and
//! on a shard map whose shards each have their own TLS and user.

mod common;

use std::time::Duration;

use common::pki::Pki;
use common::*;
use etcd_client::{Certificate, Client, ConnectOptions, Identity, Permission, TlsOptions};
use idempotency_coordinator::proto::v1::begin_response::Outcome;
use tonic_health::pb::health_check_response::ServingStatus;

const PASSWORD: &str = "coordinator-password-5f2e";

struct SecureEtcd {
    etcd: Etcd,
    pki: Pki,
    tls: TlsOptions,
    /// --etcd-* flags for the coordinator, password file included.
    flags: Vec<String>,
}

/// etcd with client-certificate TLS and authentication on: a root user and a
/// "coordinator" user allowed read-write under /idempotency/ only.
async fn secure_etcd() -> SecureEtcd {
    let pki = Pki::new("etcd");
    let server = pki.server("etcd-server");
    // Its CN is no etcd user, so only the password can make calls succeed.
    let client = pki.client("etcd-client", Some("coordinator-client"), &[]);
    let tls = TlsOptions::new()
        .ca_certificate(Certificate::from_pem(pki.ca_pem()))
        .identity(Identity::from_pem(client.cert_pem(), client.key_pem()));
    let path = |p: &std::path::Path| p.to_str().unwrap().to_owned();
    let args = vec![
        format!("--cert-file={}", path(&server.cert)),
        format!("--key-file={}", path(&server.key)),
        format!("--trusted-ca-file={}", path(&pki.ca_path())),
        "--client-cert-auth".to_owned(),
        "--auth-token=simple".to_owned(),
        "--auth-token-ttl=1".to_owned(),
    ];
    let etcd = Etcd::start_with("https", args, Some(ConnectOptions::new().with_tls(tls.clone()))).await;

    let mut admin = Client::connect([&etcd.client_url], Some(ConnectOptions::new().with_tls(tls.clone())))
        .await
        .expect("admin connects over TLS");
    admin.role_add("root").await.unwrap();
    admin.user_add("root", "root-password", None).await.unwrap();
    admin.user_grant_role("root", "root").await.unwrap();
    admin.role_add("idempotency").await.unwrap();
    admin.role_grant_permission("idempotency", Permission::read_write("/idempotency/").with_prefix()).await.unwrap();
    admin.user_add("coordinator", PASSWORD, None).await.unwrap();
    admin.user_grant_role("coordinator", "idempotency").await.unwrap();
    admin.auth_enable().await.unwrap();
    let mut etcd = etcd;
    // A restart's readiness probe writes a key: as root from now on.
    etcd.probe_options = Some(ConnectOptions::new().with_tls(tls.clone()).with_user("root", "root-password"));

    let password_file = pki.dir.path().join("etcd-password");
    std::fs::write(&password_file, format!("{PASSWORD}\n")).unwrap();
    let flags = vec![
        "--etcd-ca".to_owned(),
        path(&pki.ca_path()),
        "--etcd-cert".to_owned(),
        path(&client.cert),
        "--etcd-key".to_owned(),
        path(&client.key),
        "--etcd-user".to_owned(),
        "coordinator".to_owned(),
        "--etcd-password-file".to_owned(),
        path(&password_file),
    ];
    SecureEtcd { etcd, pki, tls, flags }
}

#[tokio::test]
async fn serves_over_tls_with_a_password_and_survives_token_expiry() {
    let secure = secure_etcd().await;
    let mut flags: Vec<&str> = secure.flags.iter().map(String::as_str).collect();
    // Readiness checks would keep the token fresh; space them out so it expires.
    flags.extend_from_slice(&["--health-check-interval", "30s"]);
    let server = Server::start(&secure.etcd, &flags).await;
    let mut client = server.client().await;
    // Readiness reads a key under the granted prefix, so it must turn SERVING.
    wait_for_health(&server.url(), "readiness", ServingStatus::Serving, Duration::from_secs(5)).await;

    let owner = acquired(begin(&mut client, begin_request("secure-1", "cart", 5)).await);
    client.complete(complete_request("secure-1", owner.fencing_token, "ok")).await.expect("complete");

    // The record is in etcd, where root can read it.
    let mut root = Client::connect(
        [&secure.etcd.client_url],
        Some(ConnectOptions::new().with_tls(secure.tls.clone()).with_user("root", "root-password")),
    )
    .await
    .expect("root connects");
    let stored = root.get("/idempotency/", Some(etcd_client::GetOptions::new().with_prefix())).await.unwrap();
    assert!(stored.kvs().iter().any(|kv| kv.key_str().unwrap_or_default().contains("secure-1")));

    // Past the token's one-second TTL with no call in between: the client must
    // re-authenticate by itself, or every call from now on would fail.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(matches!(begin(&mut client, begin_request("secure-1", "cart", 5)).await, Outcome::Completed(_)));
    let second = acquired(begin(&mut client, begin_request("secure-2", "cart", 5)).await);
    client.complete(complete_request("secure-2", second.fencing_token, "ok")).await.expect("complete after expiry");
    drop(secure.pki);
}

/// Shard a is a plain etcd, shard b the secure one: each shard gets its own
/// TLS and user from the shard-map file, and records land on both.
#[tokio::test]
async fn each_shard_of_a_shard_map_has_its_own_tls_and_user() {
    let secure = secure_etcd().await;
    let plain = Etcd::start().await;
    let value = |flag: &str| &secure.flags[secure.flags.iter().position(|f| f == flag).unwrap() + 1];
    let map = format!(
        "epoch = 1\nshards = [\"a\", \"b\"]\n\
         [shard.a]\nendpoints = [\"{}\"]\n\
         [shard.b]\nendpoints = [\"{}\"]\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\nuser = \"coordinator\"\npassword_file = \"{}\"\n",
        plain.client_url,
        secure.etcd.client_url,
        value("--etcd-ca"),
        value("--etcd-cert"),
        value("--etcd-key"),
        value("--etcd-password-file"),
    );
    let map_file = secure.pki.dir.path().join("shard-map.toml");
    std::fs::write(&map_file, map).unwrap();
    let server = Server::start(&plain, &["--shard-map", map_file.to_str().unwrap()]).await;
    wait_for_health(&server.url(), "readiness", ServingStatus::Serving, Duration::from_secs(5)).await;
    let mut client = server.client().await;
    for i in 0..20 {
        let key = format!("sharded-{i}");
        let owner = acquired(begin(&mut client, begin_request(&key, "cart", 5)).await);
        client.complete(complete_request(&key, owner.fencing_token, "ok")).await.expect("complete");
    }
    let count = |client: &mut Client| {
        let mut client = client.clone();
        async move {
            let all = client.get("/idempotency/", Some(etcd_client::GetOptions::new().with_prefix())).await.unwrap();
            all.kvs().iter().filter(|kv| kv.key_str().unwrap_or_default().ends_with("/record")).count()
        }
    };
    let mut on_plain = Client::connect([&plain.client_url], None).await.unwrap();
    let mut on_secure = Client::connect(
        [&secure.etcd.client_url],
        Some(ConnectOptions::new().with_tls(secure.tls.clone()).with_user("root", "root-password")),
    )
    .await
    .unwrap();
    let (a, b) = (count(&mut on_plain).await, count(&mut on_secure).await);
    assert_eq!(a + b, 20);
    assert!(a > 0 && b > 0, "records on both shards: {a} and {b}");
}

#[tokio::test]
async fn a_wrong_password_stops_the_server_at_startup() {
    let secure = secure_etcd().await;
    let wrong = secure.pki.dir.path().join("wrong-password");
    std::fs::write(&wrong, "not-the-password").unwrap();
    let mut flags: Vec<&str> = secure.flags.iter().map(String::as_str).collect();
    let last = flags.len() - 1;
    flags[last] = wrong.to_str().unwrap();
    let config = test_config(&secure.etcd, &flags).validate().expect("valid flags");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let run = idempotency_coordinator::shell::server::run(config, listener, std::future::pending());
    let error = tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("startup gives up, not hangs")
        .expect_err("a wrong etcd password must not serve");
    assert!(error.to_string().contains("authentication failed"), "{error}");
}

/// A pod rescheduled during an etcd outage must start, say it is alive and
/// not ready, and become ready once etcd is back: with a user, the etcd
/// client cannot connect (authenticate) until then.
#[tokio::test]
async fn with_a_user_the_server_starts_while_etcd_is_down_and_becomes_ready_when_it_returns() {
    let mut secure = secure_etcd().await;
    secure.etcd.stop();
    let flags: Vec<&str> = secure.flags.iter().map(String::as_str).collect();
    let server = Server::start(&secure.etcd, &flags).await;
    wait_for_health(&server.url(), "liveness", ServingStatus::Serving, Duration::from_secs(5)).await;
    assert_eq!(health(&server.url(), "readiness").await, Some(ServingStatus::NotServing));
    let mut client = server.client().await;
    let refused = client.begin(begin_request("outage", "cart", 5)).await;
    assert_status(refused, tonic::Code::Unavailable, "STORE_UNAVAILABLE");

    secure.etcd.restart().await;
    wait_for_health(&server.url(), "readiness", ServingStatus::Serving, Duration::from_secs(10)).await;
    let owner = acquired(begin(&mut client, begin_request("outage", "cart", 5)).await);
    client.complete(complete_request("outage", owner.fencing_token, "ok")).await.expect("complete once etcd is back");
}

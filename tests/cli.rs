//! The command-line client, run as a person would against a real server.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::pki::Pki;
use common::*;

async fn cli(server: &Server, args: &[&str]) -> (bool, String, String) {
    run(args, &server.url(), &[], "").await
}

/// Runs the binary with `args`, `--addr addr`, extra environment and `stdin`.
async fn run(args: &[&str], addr: &str, env: &[(&str, &str)], stdin: &str) -> (bool, String, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_idempotency-coordinator"));
    command.args(args).args(["--addr", addr]).envs(env.iter().copied());
    command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let stdin = stdin.to_owned();
    let output = tokio::task::spawn_blocking(move || {
        let mut child = command.spawn()?;
        child.stdin.take().expect("piped stdin").write_all(stdin.as_bytes())?;
        child.wait_with_output()
    })
    .await
    .unwrap()
    .expect("the CLI runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn field(stdout: &str, name: &str) -> String {
    stdout
        .lines()
        .find_map(|line| line.trim().strip_prefix(name).map(|rest| rest.trim().to_owned()))
        .unwrap_or_else(|| panic!("no {name} in {stdout}"))
}

#[tokio::test]
async fn every_rpc_can_be_driven_from_the_shell() {
    let (_etcd, server, _client) = start().await;
    let id = ["-n", "payments.create", "-k", "cli-1"];
    let payload = ["--json", "--payload", r#"{"amount":100}"#];

    let (ok, out, _) = cli(&server, &[&["begin"], &id[..], &payload[..], &["--owner", "shell"]].concat()).await;
    assert!(ok);
    assert!(out.starts_with("acquired"), "{out}");
    let token = field(&out, "fencing_token");

    let (ok, out, _) = cli(&server, &[&["begin"], &id[..], &payload[..]].concat()).await;
    assert!(ok && out.starts_with("in_progress") && field(&out, "owner") == "shell", "{out}");

    let (ok, out, _) = cli(&server, &[&["extend"], &id[..], &["--token", &token, "--lease-ttl", "10s"]].concat()).await;
    assert!(ok && out.starts_with("extended"), "{out}");

    let complete =
        [&["complete"], &id[..], &["--token", &token, "--response", "receipt-7", "--status-code", "201"]].concat();
    let (ok, out, _) = cli(&server, &complete).await;
    assert!(ok && field(&out, "state") == "STATE_COMPLETED", "{out}");

    let (ok, out, _) = cli(&server, &[&["begin"], &id[..], &payload[..]].concat()).await;
    assert!(ok && out.starts_with("completed") && field(&out, "response") == "receipt-7", "{out}");

    let (ok, out, _) = cli(&server, &[&["lookup"], &id[..]].concat()).await;
    assert!(ok && field(&out, "fencing_token") == token, "{out}");

    let (ok, out, _) = cli(&server, &["health", "--service", "liveness"]).await;
    assert!(ok && out.trim() == "SERVING", "{out}");

    let other = [&["begin"], &id[..], &["--json", "--payload", r#"{"amount":200}"#]].concat();
    let (ok, _, err) = cli(&server, &other).await;
    assert!(!ok && err.contains("FailedPrecondition IDEMPOTENCY_KEY_REUSED"), "{err}");

    let (ok, _, err) = cli(&server, &["begin", "-n", "bad/ns", "-k", "k", "--payload", "x", "--lease-ttl", "1s"]).await;
    assert!(!ok && err.contains("namespace:") && err.contains("lease_ttl:"), "{err}");

    let (ok, _, err) = cli(&server, &[&["fail"], &id[..], &["--token", "1", "--code", "x"]].concat()).await;
    assert!(!ok && err.contains("LEASE_LOST"), "{err}");

    // This server runs without --admin-tenants.
    let (ok, _, err) = cli(&server, &["records", "list", "-n", "payments.create"]).await;
    assert!(!ok && err.contains("Unimplemented") && err.contains("--admin-tenants"), "{err}");
}

#[tokio::test]
async fn the_shell_client_speaks_tls_with_a_certificate_or_a_token() {
    let pki = Pki::new("cli");
    let server_cert = pki.server("server");
    let client_cert = pki.client("client", Some("acme"), &[]);
    let token = "cli-token-0f1e2d3c4b5a69788796a5b4c3d2e1f0";
    let (ok, digest, _) = run(&["hash-token"], "http://unused", &[], &format!("{token}\n")).await;
    assert!(ok && digest.trim().len() == 64, "{digest}");
    let (ok, _, err) = run(&["hash-token"], "http://unused", &[], "short\n").await;
    assert!(!ok && err.contains("at least 22"), "{err}");
    let tokens = pki.dir.path().join("tokens");
    std::fs::write(&tokens, format!("acme {}", digest.trim())).unwrap();

    let path = |p: &std::path::Path| p.to_str().unwrap().to_owned();
    let (cert, key, ca, tokens) =
        (path(&server_cert.cert), path(&server_cert.key), path(&pki.ca_path()), path(&tokens));
    let health_listen = format!("127.0.0.1:{}", free_port());
    let flags = ["--tls-cert", &cert, "--tls-key", &key, "--tls-client-ca", &ca, "--tokens-file", &tokens];
    let (_etcd, server, _) = start_with(&[&flags[..], &["--health-listen", &health_listen]].concat()).await;
    let addr = format!("https://{}", server.addr);
    let id = ["-n", "payments.create", "-k", "cli-tls-1"];

    let with_token = [("IDEMPOTENCY_BEARER_TOKEN", token), ("IDEMPOTENCY_CA_CERT", ca.as_str())];
    let (ok, out, err) = run(&[&["begin"], &id[..], &["--payload", "x"]].concat(), &addr, &with_token, "").await;
    assert!(ok && out.starts_with("acquired"), "{out}{err}");

    let (client_cert, client_key) = (path(&client_cert.cert), path(&client_cert.key));
    let by_certificate = ["--ca-cert", &ca, "--client-cert", &client_cert, "--client-key", &client_key];
    let (ok, out, err) = run(&[&["lookup"], &id[..], &by_certificate[..]].concat(), &addr, &[], "").await;
    assert!(ok && out.contains("STATE_IN_PROGRESS"), "the same tenant by certificate: {out}{err}");

    let plaintext = format!("http://{}", server.addr);
    let (ok, _, err) = run(&[&["lookup"], &id[..]].concat(), &plaintext, &with_token, "").await;
    assert!(!ok && err.contains("need an https:// --addr"), "a token is never sent in plaintext: {err}");
    let (ok, _, err) = run(&[&["lookup"], &id[..], &["--ca-cert", &ca]].concat(), &addr, &[], "").await;
    assert!(!ok && err.contains("Unauthenticated"), "{err}");
    let (ok, _, err) =
        run(&[&["lookup", "--tenant", "globex"], &id[..], &by_certificate[..]].concat(), &addr, &[], "").await;
    assert!(!ok && err.contains("PermissionDenied"), "{err}");
}

/// `serve --print-config` reports what the server would run with, from flags
/// and environment alike, without reading the files it names or binding.
#[test]
fn print_config_reports_the_settings_without_reading_files() {
    let output = Command::new(env!("CARGO_BIN_EXE_idempotency-coordinator"))
        .args(["serve", "--print-config", "--listen", "127.0.0.1:7001"])
        .env_clear()
        .env("IDEMPOTENCY_TLS_CERT", "/nowhere/tls.crt")
        .env("IDEMPOTENCY_TLS_KEY", "/nowhere/tls.key")
        .env("IDEMPOTENCY_ETCD_MAX_TXN_OPS", "1024")
        .output()
        .expect("the binary runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let view: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(view["listen"], "127.0.0.1:7001");
    assert_eq!(view["health_listen"], "0.0.0.0:50052");
    assert_eq!(view["tls"]["cert"], "/nowhere/tls.crt");
    assert_eq!(view["tls"]["client_ca"], serde_json::Value::Null);
    assert_eq!(view["etcd"]["max_txn_ops"], 1024);
    assert_eq!(view["health"]["liveness"], serde_json::json!(["", "liveness"]));
    assert_eq!(view["health"]["readiness"], serde_json::json!(["readiness", "idempotency.v1.CoordinatorService"]));
}

/// A reader that stops reading (`records list --all | head -1`) ends the
/// client quietly with success; `println!` would panic on the closed pipe.
#[tokio::test]
async fn a_closed_stdout_ends_the_client_quietly() {
    let (_etcd, server, _client) = start().await;
    for args in
        [vec!["serve".to_owned(), "--print-config".into()], vec!["health".into(), "--addr".into(), server.url()]]
    {
        let (reader, writer) = std::io::pipe().expect("a pipe");
        drop(reader);
        let mut command = Command::new(env!("CARGO_BIN_EXE_idempotency-coordinator"));
        command.args(&args).stdout(writer);
        // Off the runtime: the server answering `health` runs on it.
        let output = tokio::task::spawn_blocking(move || command.output()).await.unwrap().expect("the binary runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success() && stderr.is_empty(), "{args:?}: {:?} {stderr}", output.status);
    }
}

#[tokio::test]
async fn fingerprint_and_a_reused_key_explain_themselves_in_the_shell() {
    let (_etcd, server, _client) = start().await;
    let json = r#"{ "b": 2, "a": "x" }"#;
    let (ok, out, _) = cli(&server, &["fingerprint", "--json", "--payload", json]).await;
    assert!(ok && out.starts_with("fingerprint"), "{out}");
    assert_eq!(field(&out, "hashed"), r#"{"a":"x","b":2}"#);
    assert_eq!(field(&out, "member \"b\""), "d4735e3a265e16eee03f59718b9b5d03019c07d8b6c51f90da3a666eec13ab35");

    let id = ["-n", "payments.create", "-k", "cli-explain"];
    let (ok, _, _) = cli(&server, &[&["begin"], &id[..], &["--json", "--payload", json]].concat()).await;
    assert!(ok);
    let other = r#"{"a":"x","b":3}"#;
    let (ok, _, err) = cli(&server, &[&["begin"], &id[..], &["--json", "--payload", other]].concat()).await;
    assert!(!ok && err.contains("IDEMPOTENCY_KEY_REUSED"), "{err}");
    assert!(err.contains(r#"differing members: ["b"]"#), "{err}");
}

/// `shards status` against a server that keeps one store: "not sharded",
/// exit 1 (neither 0, settle safe, nor 3, not yet), with --json as well.
#[tokio::test]
async fn shards_status_says_a_server_is_not_sharded() {
    let pki = Pki::new("cli-shards");
    let server_cert = pki.server("server");
    let token = "ops-token-0f1e2d3c4b5a69788796a5b4c3d2e1f0";
    let tokens = pki.dir.path().join("tokens");
    std::fs::write(&tokens, format!("ops {}", idempotency_coordinator::shell::auth::tokens::hash_token(token)))
        .unwrap();
    let path = |p: &std::path::Path| p.to_str().unwrap().to_owned();
    let (cert, key, ca, tokens) =
        (path(&server_cert.cert), path(&server_cert.key), path(&pki.ca_path()), path(&tokens));
    let health_listen = format!("127.0.0.1:{}", free_port());
    let flags = ["--tls-cert", &cert, "--tls-key", &key, "--tokens-file", &tokens, "--admin-tenants", "ops"];
    let (_etcd, server, _) = start_with(&[&flags[..], &["--health-listen", &health_listen]].concat()).await;
    for json in [false, true] {
        let mut command = Command::new(env!("CARGO_BIN_EXE_idempotency-coordinator"));
        command.args(["shards", "status", "--addr", &format!("https://{}", server.addr), "--ca-cert", &ca]);
        command.env("IDEMPOTENCY_BEARER_TOKEN", token).args(json.then_some("--json"));
        let output = tokio::task::spawn_blocking(move || command.output()).await.unwrap().expect("the CLI runs");
        let (out, err) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        eprintln!("shards status{} (exit {:?}):\n{out}{err}", if json { " --json" } else { "" }, output.status.code());
        assert_eq!(output.status.code(), Some(1), "{out}{err}");
        assert!(err.contains("not sharded"), "{err}");
        if json {
            let answer: serde_json::Value = serde_json::from_str(&out).expect("JSON");
            assert_eq!((&answer["sharded"], &answer["settle_safe"]), (&false.into(), &false.into()), "{out}");
        }
    }
}

//! The command-line client, run as a person would against a real server.

mod common;

use std::process::Command;

use common::*;

async fn cli(server: &Server, args: &[&str]) -> (bool, String, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_idempotency-coordinator"));
    command.args(args).args(["--addr", &server.url()]);
    let output = tokio::task::spawn_blocking(move || command.output()).await.unwrap().expect("the CLI runs");
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
}

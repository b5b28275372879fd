//! What `gateway` refuses at startup, and what its help shows, from the
//! binary (`gateway --check` binds nothing, so this needs no ports).
//! `GATEWAY_BIN` runs the same checks against another build.

use std::process::{Command, Output};

fn gateway(args: &[&str]) -> Output {
    let binary = std::env::var("GATEWAY_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_idempotency-coordinator").into());
    Command::new(binary).arg("gateway").args(args).output().expect("the binary runs")
}

/// `gateway --check` on a routes file of `routes`: its exit and stderr.
fn check(routes: &str) -> (bool, String) {
    let dir = tempfile::tempdir().expect("a temp dir");
    let path = dir.path().join("routes.toml");
    std::fs::write(&path, routes).expect("the routes file");
    let output = gateway(&["--routes", path.to_str().expect("UTF-8"), "--check"]);
    (output.status.success(), String::from_utf8_lossy(&output.stderr).into_owned())
}

fn route(name: &str, path: &str, extra: &str) -> String {
    format!(
        "[[route]]\nname = \"{name}\"\nmethods = [\"POST\"]\npath = \"{path}\"\nnamespace = \"payments\"\n{extra}\n"
    )
}

/// Issue 27, item 6: `--coordinator` was a hidden alias of `--addr`.
#[test]
fn gateway_help_shows_the_coordinator_flag() {
    let help = String::from_utf8_lossy(&gateway(&["--help"]).stdout).into_owned();
    // Listed as a flag, not only named in a description.
    assert!(help.contains("alias: --coordinator") || help.contains("aliases: --coordinator"), "{help}");
}

/// Issue 27, item 1: running a protected route without scoping its keys
/// by caller must be an explicit choice.
#[test]
fn a_route_without_an_identity_is_refused_naming_the_route_and_the_field() {
    let (ok, stderr) = check(&route("create-payment", "/payments", ""));
    assert!(!ok, "started without an identity");
    assert!(stderr.contains("route \"create-payment\"") && stderr.contains("identity"), "{stderr}");
    let (ok, stderr) = check(&route("create-payment", "/payments", "identity = \"none\""));
    assert!(ok, "an explicit none is allowed: {stderr}");
    // The namespace must leave room for the caller's 33-byte suffix within the coordinator's 128.
    let long = route("create-payment", "/payments", "identity = \"authorization\"")
        .replace("\"payments\"\n", &format!("\"{}\"\n", "n".repeat(96)));
    let (ok, stderr) = check(&long);
    assert!(!ok && stderr.contains("namespace") && stderr.contains("128"), "{stderr}");
}

/// Issue 27, item 6: the README said two routes that could match one
/// request are refused; `/payments/refunds` under `/payments/{id}` was taken.
#[test]
fn overlapping_routes_are_refused_naming_both() {
    let identity = "identity = \"authorization\"";
    let routes = route("capture", "/payments/{id}", identity) + &route("refunds", "/payments/refunds", identity);
    let (ok, stderr) = check(&routes);
    assert!(!ok, "overlapping routes started");
    assert!(stderr.contains("\"refunds\"") && stderr.contains("\"capture\""), "{stderr}");
}

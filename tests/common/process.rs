//! The coordinator binary as a process of its own, optionally with a wall
//! clock set off by libfaketime (Debian `faketime`): a replica on a host
//! whose clock is wrong. Shared by the wire tests and the fault suite.
#![allow(dead_code)] // each test binary uses a different part

use std::process::Command;
use std::time::Duration;

/// The command that runs `binary serve` on `port` against
/// `etcd_endpoints` with short timeouts, its wall clock `skew_secs` off the
/// machine's (0: the machine's clock), plus `extra` flags.
pub fn serve_command(binary: &str, port: u16, etcd_endpoints: &str, skew_secs: i64, extra: &[&str]) -> Command {
    let mut command = Command::new(binary);
    if skew_secs != 0 {
        // Preloaded into the coordinator itself (not through the `faketime`
        // wrapper, whose own process would be the one a test kills). Only the
        // wall clock: tokio's timers and the lease pool read the monotonic
        // clock, which a wrong wall clock leaves alone.
        command
            .env("LD_PRELOAD", libfaketime())
            .env("FAKETIME", format!("{skew_secs:+}s"))
            .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
    }
    command
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--etcd-endpoints", etcd_endpoints, "--etcd-request-timeout", "2s"])
        .args(["--etcd-connect-timeout", "300ms", "--metrics-listen", "127.0.0.1:0"])
        .args(extra);
    command
}

/// This build's coordinator, or `COORDINATOR_BIN`: the same tests against
/// another build (how they were shown to fail on the release before).
pub fn coordinator_binary() -> String {
    std::env::var("COORDINATOR_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_idempotency-coordinator").into())
}

/// libfaketime's multi-threaded library (Debian package `faketime`), or
/// `FAKETIME_LIB`.
fn libfaketime() -> String {
    if let Ok(path) = std::env::var("FAKETIME_LIB") {
        return path;
    }
    let candidates = ["x86_64-linux-gnu", "aarch64-linux-gnu", ".", "../local/lib"]
        .map(|dir| format!("/usr/lib/{dir}/faketime/libfaketimeMT.so.1"));
    let found = candidates.iter().find(|path| std::path::Path::new(path).exists());
    found.cloned().unwrap_or_else(|| {
        panic!("libfaketime is not installed: scripts/install-deps.sh installs it (Debian package faketime), or set FAKETIME_LIB")
    })
}

/// How long a skewed replica may take to start under libfaketime.
pub const START_WITHIN: Duration = Duration::from_secs(20);

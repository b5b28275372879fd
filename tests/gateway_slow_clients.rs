//! Issue 27, item 3: slow and hostile clients against the real gateway
//! binary, over loopback, bounded in count and time. Before, partial
//! headers, partial bodies and partial chunks were still open after 45 s,
//! and 100 connections each holding a 1 MiB − 1 byte body took the
//! gateway's RSS from 12.7 to 119 MB.
//!
//! The gateway runs with short timeouts (1 s for headers and between body
//! reads, 3 s for a whole body) and a 16 MiB buffer budget. Nothing here
//! needs a coordinator or a service: bodies are read before either is called.
//! `GATEWAY_BIN` runs the same checks against another build.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::free_port;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The budget the gateway runs with, and how far above its idle RSS the
/// attack may take it: the budget, and as much again for everything else
/// (per-connection buffers, allocator slack).
const BUDGET: usize = 16 * 1024 * 1024;
const RSS_ALLOWANCE_KB: u64 = 2 * (BUDGET as u64) / 1024;

const ATTACKERS: usize = 100;
const BODY: usize = 1024 * 1024;

struct GatewayProcess {
    child: Child,
    addr: String,
}

impl GatewayProcess {
    async fn start() -> GatewayProcess {
        let binary =
            std::env::var("GATEWAY_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_idempotency-coordinator").into());
        let help = Command::new(&binary).args(["gateway", "--help"]).output().expect("the binary runs");
        // A build from before issue 27 knows neither these flags nor `identity`.
        let identity = if String::from_utf8_lossy(&help.stdout).contains("--max-buffered-bytes") {
            "identity = \"none\"\n"
        } else {
            ""
        };
        let dir = tempfile::tempdir().expect("a temp dir");
        let routes = dir.path().join("routes.toml");
        let route = format!(
            "[[route]]\nname = \"payments\"\nmethods = [\"POST\"]\npath = \"/payments\"\nnamespace = \"payments\"\n\
             {identity}max_request_bytes = {BODY}\n"
        );
        std::fs::write(&routes, route).expect("the routes file");
        let (port, admin, nobody) = (free_port(), free_port(), free_port());
        let child = Command::new(&binary)
            .arg("gateway")
            .arg("--routes")
            .arg(&routes)
            .args(["--listen", &format!("127.0.0.1:{port}"), "--admin-listen", &format!("127.0.0.1:{admin}")])
            .args(["--upstream", &format!("http://127.0.0.1:{nobody}")])
            .args(["--coordinator", &format!("http://127.0.0.1:{nobody}")])
            .env("IDEMPOTENCY_GATEWAY_HEADER_READ_TIMEOUT", "1s")
            .env("IDEMPOTENCY_GATEWAY_BODY_IDLE_TIMEOUT", "1s")
            .env("IDEMPOTENCY_GATEWAY_BODY_READ_TIMEOUT", "3s")
            .env("IDEMPOTENCY_GATEWAY_MAX_BUFFERED_BYTES", BUDGET.to_string())
            .env("IDEMPOTENCY_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the gateway starts");
        let deadline = Instant::now() + Duration::from_secs(10);
        while reqwest::get(format!("http://127.0.0.1:{admin}/livez")).await.is_err() {
            assert!(Instant::now() < deadline, "the gateway did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        drop(dir); // read at startup
        GatewayProcess { child, addr: format!("127.0.0.1:{port}") }
    }

    /// The process's resident set, from /proc.
    fn rss_kb(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).expect("/proc status");
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("a VmRSS line");
        line.split_whitespace().nth(1).and_then(|kb| kb.parse().ok()).expect("kB")
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn head(length: usize) -> String {
    format!(
        "POST /payments HTTP/1.1\r\nhost: gw\r\nidempotency-key: \"k\"\r\ncontent-type: application/octet-stream\r\n\
         content-length: {length}\r\n\r\n"
    )
}

/// Sends `sent`, then waits for the gateway to close the connection; how
/// long that took and what it answered, or `None` if still open after `patience`.
async fn closed_after(addr: &str, sent: &[u8], patience: Duration) -> Option<(Duration, String)> {
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(sent).await.expect("write");
    let started = Instant::now();
    let mut answer = Vec::new();
    match tokio::time::timeout(patience, tcp.read_to_end(&mut answer)).await {
        Ok(_) => Some((started.elapsed(), String::from_utf8_lossy(&answer).into_owned())),
        Err(_) => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_off_and_held_bodies_stay_within_the_buffer_budget() {
    let gateway = GatewayProcess::start().await;
    let mut failures = Vec::new();

    // 100 connections, each sending a whole head and 1 MiB − 1 bytes of a
    // 1 MiB body, then nothing.
    let idle_kb = gateway.rss_kb();
    let attackers: Vec<_> = (0..ATTACKERS)
        .map(|_| {
            let addr = gateway.addr.clone();
            tokio::spawn(async move {
                let mut tcp = TcpStream::connect(&addr).await.expect("connect");
                let mut sent = head(BODY).into_bytes();
                sent.resize(sent.len() + BODY - 1, b'x');
                // Refused (503 and closed) or cut off later: either way the write may fail.
                let _ = tokio::time::timeout(Duration::from_secs(2), tcp.write_all(&sent)).await;
                tokio::time::sleep(Duration::from_secs(5)).await;
                drop(tcp);
            })
        })
        .collect();
    let mut peak_kb = idle_kb;
    let sampling = Instant::now();
    while sampling.elapsed() < Duration::from_secs(3) {
        peak_kb = peak_kb.max(gateway.rss_kb());
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    eprintln!(
        "RSS: {:.1} MB idle, {:.1} MB at the peak with {ATTACKERS} connections holding 1 MiB - 1 byte each",
        idle_kb as f64 / 1024.0,
        peak_kb as f64 / 1024.0
    );
    if peak_kb > idle_kb + RSS_ALLOWANCE_KB {
        failures.push(format!("RSS grew by {} kB, over the {RSS_ALLOWANCE_KB} kB allowance", peak_kb - idle_kb));
    }
    for attacker in attackers {
        attacker.await.expect("joined");
    }

    // Each slow form is closed within the timeouts (plus the watchdog's tick).
    let partial_chunk = b"POST /payments HTTP/1.1\r\nhost: gw\r\nidempotency-key: \"k\"\r\ntransfer-encoding: chunked\r\n\r\n64\r\n0123456789";
    let partial_body = [head(100).into_bytes(), b"0123456789".to_vec()].concat();
    let cases: [(&str, &[u8], Option<&str>); 5] = [
        ("nothing at all", b"", None),
        ("partial headers", b"POST /payments HTTP/1.1\r\nhost: gw\r\n", None),
        ("an HTTP/2 preface and no headers", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", None),
        ("a partial body", &partial_body, Some("request-body-timeout")),
        ("a partial chunk", partial_chunk, Some("request-body-timeout")),
    ];
    let checks = cases.iter().map(|(what, sent, answer)| {
        let addr = gateway.addr.clone();
        async move { (what, answer, closed_after(&addr, sent, Duration::from_secs(6)).await) }
    });
    for (what, expected, closed) in futures::future::join_all(checks).await {
        match closed {
            None => failures.push(format!("{what}: still open after 6 s")),
            Some((after, _)) if after > Duration::from_millis(2500) => {
                failures.push(format!("{what}: closed only after {after:?}"))
            }
            Some((_, answer)) if expected.is_some_and(|problem| !answer.contains(problem)) => {
                failures.push(format!("{what}: answered {answer:?}"))
            }
            Some((after, _)) => eprintln!("{what}: closed after {after:?}"),
        }
    }

    // A body trickled a byte at a time, each within the idle timeout, is cut off at the total.
    let mut tcp = TcpStream::connect(&gateway.addr).await.expect("connect");
    tcp.write_all(head(100).as_bytes()).await.expect("write");
    let started = Instant::now();
    let mut answer = vec![0; 4096];
    let trickled = loop {
        tokio::select! {
            read = tcp.read(&mut answer) => break Some((started.elapsed(), read)),
            () = tokio::time::sleep(Duration::from_millis(500)) => {
                if started.elapsed() > Duration::from_secs(6) || tcp.write_all(b"x").await.is_err() {
                    break None;
                }
            }
        }
    };
    match trickled {
        Some((after, Ok(n))) if (Duration::from_millis(2500)..Duration::from_millis(4500)).contains(&after) => {
            let text = String::from_utf8_lossy(&answer[..n]).into_owned();
            if !text.contains("request-body-timeout") {
                failures.push(format!("a trickled body: answered {text:?}"));
            }
        }
        other => failures.push(format!("a trickled body: {other:?}, not cut off at the 3 s total")),
    }

    assert!(failures.is_empty(), "{failures:#?}");
    // The gateway still serves: the connections it cut off were let go.
    let served = closed_after(
        &gateway.addr,
        b"GET /livez HTTP/1.1\r\nhost: gw\r\nconnection: close\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(served.is_some_and(|(_, answer)| answer.starts_with("HTTP/1.1 ")), "the gateway stopped answering");
}

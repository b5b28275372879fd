//! The dashboard and alert rules in deploy/monitoring name only metrics the
//! real server exports, with label values it really uses: every
//! `grpc_server_*` and `idempotency_*` name they mention, and every
//! `label="value"` they select on, is found in a live scrape after real calls.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::*;

/// A selector in a PromQL expression: a metric name and its `=` matchers.
#[derive(Debug)]
struct Selector {
    name: String,
    equal: Vec<(String, String)>,
}

/// Every selector of our metrics in `text` (a dashboard or a rule file).
/// Regex and negative matchers are left out; `pod` is added by Prometheus's
/// scrape, not by the server.
fn selectors(text: &str) -> Vec<Selector> {
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(at) = ["grpc_server_", "idempotency_"].iter().filter_map(|p| rest.find(p)).min() {
        // Skip a match inside a longer word (e.g. a recording rule's name).
        let preceded = rest[..at].chars().next_back().is_some_and(|c| is_name(c) || c == ':');
        let tail = &rest[at..];
        let end = tail.find(|c: char| !is_name(c)).unwrap_or(tail.len());
        let name = tail[..end].to_owned();
        rest = &tail[end..];
        if preceded {
            continue;
        }
        let mut equal = Vec::new();
        if let Some(inside) = rest.strip_prefix('{').and_then(|r| r.split_once('}')).map(|(inside, _)| inside) {
            for matcher in inside.split(',').map(str::trim).filter(|m| !m.is_empty()) {
                let Some((label, value)) = matcher.split_once('=') else { continue };
                if value.starts_with('~') || label.ends_with('!') || label.trim() == "pod" {
                    continue;
                }
                equal.push((label.trim().to_owned(), value.trim().trim_matches(['"', '\\']).to_owned()));
            }
        }
        found.push(Selector { name, equal });
    }
    found
}

/// The scraped series: name → the label sets it was exported with.
fn series(exposition: &str) -> BTreeMap<String, Vec<BTreeMap<String, String>>> {
    let mut all: BTreeMap<String, Vec<BTreeMap<String, String>>> = BTreeMap::new();
    for line in exposition.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
        let (name, labels) = match line.split_once('{') {
            Some((name, rest)) => (name, rest.split_once('}').map_or("", |(labels, _)| labels)),
            None => (line.split(' ').next().unwrap_or(line), ""),
        };
        let labels = labels
            .split(',')
            .filter_map(|pair| pair.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.trim_matches('"').to_owned()))
            .collect();
        all.entry(name.to_owned()).or_default().push(labels);
    }
    all
}

#[tokio::test]
async fn the_dashboard_and_the_alerts_name_only_what_the_server_exports() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let listen = format!("127.0.0.1:{port}");
    // On a one-shard map: a sharded store exports everything an unsharded
    // one does, and its shard gauges too.
    let etcd = Etcd::start().await;
    let dir = tempfile::tempdir().unwrap();
    let map = dir.path().join("shard-map.toml");
    std::fs::write(&map, format!("epoch = 1\nshards = [\"a\"]\n[shard.a]\nendpoints = [\"{}\"]\n", etcd.client_url))
        .unwrap();
    let server = Server::start(&etcd, &["--metrics-listen", &listen, "--shard-map", &map.display().to_string()]).await;
    let mut client = server.client().await;
    // One ordinary pair; everything else must be exported from the start.
    let owner = acquired(begin(&mut client, begin_request("monitored-1", "cart", 5)).await);
    client.complete(complete_request("monitored-1", owner.fencing_token, "ok")).await.unwrap();
    // Readiness is reported by the first health check.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let scraped = scrape_metrics(port).await;
    assert!(scraped.lines().any(|l| l == "idempotency_store_ready 1"), "ready, with etcd up:\n{scraped}");
    let exported = series(&scraped);

    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/monitoring");
    let mut checked = BTreeSet::new();
    for file in ["dashboard.json", "prometheusrule.yaml"] {
        let text = std::fs::read_to_string(root.join(file)).expect("the monitoring file exists");
        let found = selectors(&text);
        assert!(found.len() >= 8, "{file}: only {} selectors found", found.len());
        for selector in found {
            let sets = exported.get(&selector.name).unwrap_or_else(|| {
                panic!("{file} names {}, which the server does not export: {:?}", selector.name, exported.keys())
            });
            assert!(
                sets.iter().any(|labels| selector.equal.iter().all(|(k, v)| labels.get(k) == Some(v))),
                "{file}: no {} series has {:?}; exported: {sets:?}",
                selector.name,
                selector.equal
            );
            checked.insert(selector.name);
        }
    }
    for name in [
        "idempotency_takeovers_total",
        "idempotency_store_ready",
        "idempotency_etcd_errors_total",
        "idempotency_store_shard_ready",
        "idempotency_store_db_size_bytes",
    ] {
        assert!(checked.contains(name), "{name} is on no dashboard or alert");
    }
}

#[test]
fn selectors_are_read_as_promql_writes_them() {
    let found = selectors(
        r#"sum(rate(grpc_server_handled_total{grpc_service="a",grpc_code=~"X|Y"}[5m])) / idempotency:x:rate5m + idempotency_y{pod="p", le="0.25"}"#,
    );
    let names: Vec<_> = found.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["grpc_server_handled_total", "idempotency_y"]);
    assert_eq!(found[0].equal, [("grpc_service".to_owned(), "a".to_owned())]);
    assert_eq!(found[1].equal, [("le".to_owned(), "0.25".to_owned())]);
}

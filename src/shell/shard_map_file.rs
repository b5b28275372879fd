//! The shard-map file (`serve --shard-map`): the etcd clusters records are
//! sharded over, how to reach each (endpoints, TLS, credentials), and the
//! map that places records on them, with the map announced next or the one
//! before while the map changes. TOML; README, "Sharding over several etcd
//! clusters", shows one. Relative paths are read from the file's directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::core::limits::check_scope_name;
use crate::shell::etcd_files::{etcd_credentials, etcd_tls};
use crate::store::etcd::config::EtcdConfig;
use crate::store::sharded::shard_map::{Neighbour, Placement, ShardMap};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MapFile {
    epoch: u64,
    shards: Vec<String>,
    next: Option<PlacementEntry>,
    previous: Option<PlacementEntry>,
    shard: BTreeMap<String, ShardEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PlacementEntry {
    epoch: u64,
    shards: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ShardEntry {
    endpoints: Vec<String>,
    ca: Option<PathBuf>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    user: Option<String>,
    password_file: Option<PathBuf>,
}

/// The shard map and one etcd configuration per shard.
#[derive(Debug, Clone)]
pub struct ShardedEtcd {
    pub map: ShardMap,
    pub shards: Vec<(String, EtcdConfig)>,
}

/// Reads the file; each shard's configuration is `common` (prefix, timeouts,
/// batching) with the shard's own endpoints, TLS and credentials.
pub fn load(path: &Path, common: &EtcdConfig) -> Result<ShardedEtcd, String> {
    let fail = |e: String| format!("--shard-map {}: {e}", path.display());
    let text = std::fs::read_to_string(path).map_err(|e| fail(format!("cannot read it: {e}")))?;
    let file: MapFile = toml::from_str(&text).map_err(|e| fail(e.to_string()))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    parse(file, dir, common).map_err(fail)
}

fn parse(file: MapFile, dir: &Path, common: &EtcdConfig) -> Result<ShardedEtcd, String> {
    let placement = |entry: PlacementEntry| Placement { epoch: entry.epoch, shards: entry.shards };
    let neighbour = match (file.next, file.previous) {
        (Some(_), Some(_)) => return Err("a map has [next] or [previous], not both".into()),
        (Some(next), None) => Some(Neighbour::Next(placement(next))),
        (None, Some(previous)) => Some(Neighbour::Previous(placement(previous))),
        (None, None) => None,
    };
    let map = ShardMap { place: Placement { epoch: file.epoch, shards: file.shards }, neighbour };
    map.check()?;
    let placed = map.shard_names();
    if let Some(name) = placed.iter().find(|name| !file.shard.contains_key(**name)) {
        return Err(format!("shard {name:?} is placed on but has no [shard.{name}] table"));
    }
    let mut shards = Vec::new();
    for (name, entry) in file.shard {
        let field = |f: &str| format!("shard.{name}.{f}");
        check_scope_name(&name).map_err(|e| format!("[shard.{name}]: the name {e}"))?;
        if !placed.contains(name.as_str()) {
            return Err(format!("[shard.{name}] is in no placement (shards, next.shards or previous.shards)"));
        }
        let endpoints: Vec<String> = entry.endpoints.iter().map(|e| e.trim().to_owned()).collect();
        if endpoints.is_empty() || endpoints.iter().any(String::is_empty) {
            return Err(format!("{} must list the shard's etcd members", field("endpoints")));
        }
        let https = endpoints.iter().filter(|e| e.starts_with("https://")).count();
        if https != 0 && https != endpoints.len() {
            return Err(format!("{} must be all https:// or all http://", field("endpoints")));
        }
        if (https != 0) != entry.ca.is_some() {
            return Err(format!("{} is required with https:// endpoints, and only with them", field("ca")));
        }
        if entry.cert.is_some() != entry.key.is_some() {
            return Err(format!("{} and {} go together", field("cert"), field("key")));
        }
        if entry.user.is_some() != entry.password_file.is_some() {
            return Err(format!("{} and {} go together", field("user"), field("password_file")));
        }
        let at = |p: Option<PathBuf>| p.map(|p| dir.join(p));
        let (ca, cert, key, password_file) = (at(entry.ca), at(entry.cert), at(entry.key), at(entry.password_file));
        let tls = etcd_tls(ca.as_deref(), cert.as_deref().zip(key.as_deref()), field)?;
        let credentials = etcd_credentials(entry.user.as_deref().zip(password_file.as_deref()), field)?;
        shards.push((name.clone(), EtcdConfig { endpoints, tls, credentials, shard: name, ..common.clone() }));
    }
    Ok(ShardedEtcd { map, shards })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::etcd::config::Batching;
    use std::time::Duration;

    fn common() -> EtcdConfig {
        EtcdConfig {
            endpoints: vec![],
            prefix: "/idempotency/".into(),
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(5),
            tls: None,
            credentials: None,
            batching: Batching::default(),
            quota_bytes: 1 << 30,
            shard: "default".into(),
        }
    }

    fn parsed(text: &str) -> Result<ShardedEtcd, String> {
        parse(toml::from_str(text).map_err(|e| e.to_string())?, Path::new("."), &common())
    }

    const TWO: &str = "[shard.a]\nendpoints = [\"http://a:2379\"]\n[shard.b]\nendpoints = [\"http://b:2379\"]\n";

    #[test]
    fn a_map_with_its_previous_map_reads() {
        let sharded =
            parsed(&format!("epoch = 2\nshards = [\"a\", \"b\"]\n[previous]\nepoch = 1\nshards = [\"a\"]\n{TWO}"))
                .expect("valid");
        assert_eq!(sharded.map.place.shards, ["a", "b"]);
        assert_eq!(sharded.map.neighbour, Some(Neighbour::Previous(Placement { epoch: 1, shards: vec!["a".into()] })));
        assert_eq!(sharded.shards[1].1.endpoints, ["http://b:2379"]);
        assert_eq!((sharded.shards[1].1.prefix.as_str(), sharded.shards[1].1.shard.as_str()), ("/idempotency/", "b"));
    }

    /// The map `deploy/overlays/sharded` mounts is one the coordinator starts with.
    #[test]
    fn the_sharded_overlays_map_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/overlays/sharded/shard-map.toml");
        let sharded = load(&path, &common()).expect("the overlay's shard map loads");
        assert_eq!(sharded.map.place.shards, ["a", "b", "c"]);
        assert_eq!(sharded.shards[2].1.endpoints[0], "http://etcd-c-0.etcd-c:2379");
    }

    #[test]
    fn mistakes_name_the_field() {
        let cases = [
            (format!("epoch = 1\nshards = [\"a\", \"c\"]\n{TWO}"), "shard \"c\" is placed on but has no [shard.c]"),
            (format!("epoch = 1\nshards = [\"a\"]\n{TWO}"), "[shard.b] is in no placement"),
            (
                format!("epoch = 1\nshards = [\"a\", \"b\"]\n[next]\nepoch = 3\nshards = [\"a\"]\n{TWO}"),
                "epoch must be 2",
            ),
            (
                "epoch = 1\nshards = [\"a\"]\n[shard.a]\nendpoints = [\"https://a:2379\"]\n".into(),
                "shard.a.ca is required",
            ),
            ("epoch = 1\nshards = [\"a\"]\n[shard.a]\nendpoints = []\n".into(), "shard.a.endpoints must list"),
            (
                "epoch = 1\nshards = [\"a\"]\n[shard.a]\nendpoints = [\"http://a\"]\nuser = \"u\"\n".into(),
                "shard.a.user and",
            ),
            (
                "epoch = 1\nshards = [\"a\"]\n[shard.a]\nendpoints = [\"http://a\"]\nport = 1\n".into(),
                "unknown field `port`",
            ),
            (
                "epoch = 1\nshards = [\"a\"]\n[shard.a]\nendpoints = [\"https://a\"]\nca = \"/nonexistent/ca.pem\"\n"
                    .into(),
                "shard.a.ca: cannot read /nonexistent/ca.pem",
            ),
        ];
        for (text, expected) in cases {
            let error = parsed(&text).expect_err(expected);
            assert!(error.contains(expected), "{error:?} should contain {expected:?}");
        }
    }
}

//! The processes the fault suite breaks: a 3-member etcd cluster and
//! coordinator replicas, all on loopback, each restartable on the same ports
//! and data, and the network between them. Everything is killed when
//! dropped.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::fault_proxy::{FaultProxy, Network, socket_of};
use crate::process::serve_command;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub fn kill_9(child: &mut Option<Child>) {
    if let Some(mut c) = child.take() {
        let _ = c.kill(); // SIGKILL
        let _ = c.wait();
    }
}

struct Member {
    name: String,
    client_url: String,
    peer_url: String,
    child: Option<Child>,
}

pub struct EtcdCluster {
    dir: tempfile::TempDir,
    members: Vec<Member>,
}

impl EtcdCluster {
    pub async fn start() -> EtcdCluster {
        EtcdCluster::start_with(3).await
    }

    /// A cluster of `size` members (1: a shard of the sharded run).
    pub async fn start_with(size: usize) -> EtcdCluster {
        let members = (0..size)
            .map(|i| Member {
                name: format!("m{i}"),
                client_url: format!("http://127.0.0.1:{}", free_port()),
                peer_url: format!("http://127.0.0.1:{}", free_port()),
                child: None,
            })
            .collect();
        let mut cluster = EtcdCluster { dir: tempfile::tempdir().unwrap(), members };
        for i in 0..size {
            cluster.spawn(i);
        }
        cluster.wait_for_quorum(Duration::from_secs(20)).await;
        cluster
    }

    pub fn client_urls(&self) -> Vec<String> {
        self.members.iter().map(|m| m.client_url.clone()).collect()
    }

    /// Starts member `i` (again) with its own data directory.
    pub fn spawn(&mut self, i: usize) {
        let initial_cluster =
            self.members.iter().map(|m| format!("{}={}", m.name, m.peer_url)).collect::<Vec<_>>().join(",");
        let member = &self.members[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("{}.log", member.name)))
            .unwrap();
        let child = Command::new(std::env::var("ETCD_BIN").unwrap_or_else(|_| "etcd".into()))
            .arg(format!("--name={}", member.name))
            .arg(format!("--data-dir={}", self.dir.path().join(&member.name).display()))
            .arg(format!("--listen-client-urls={}", member.client_url))
            .arg(format!("--advertise-client-urls={}", member.client_url))
            .arg(format!("--listen-peer-urls={}", member.peer_url))
            .arg(format!("--initial-advertise-peer-urls={}", member.peer_url))
            .arg(format!("--initial-cluster={initial_cluster}"))
            .arg("--initial-cluster-token=faults")
            .arg("--heartbeat-interval=50")
            .arg("--election-timeout=500")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("etcd is installed");
        self.members[i].child = Some(child);
    }

    pub fn kill(&mut self, i: usize) {
        kill_9(&mut self.members[i].child);
    }

    pub fn is_running(&self, i: usize) -> bool {
        self.members[i].child.is_some()
    }

    /// The index of the current leader, asked of every running member.
    pub async fn leader(&self) -> Option<usize> {
        for member in self.members.iter().filter(|m| m.child.is_some()) {
            let ask = async {
                let mut client = etcd_client::Client::connect([&member.client_url], None).await.ok()?;
                let status = client.status().await.ok()?;
                Some(status.leader())
            };
            let Ok(Some(leader_id)) = tokio::time::timeout(Duration::from_millis(500), ask).await else { continue };
            for (i, m) in self.members.iter().enumerate().filter(|(_, m)| m.child.is_some()) {
                let id = async {
                    let mut client = etcd_client::Client::connect([&m.client_url], None).await.ok()?;
                    Some(client.status().await.ok()?.header()?.member_id())
                };
                if tokio::time::timeout(Duration::from_millis(500), id).await.ok().flatten() == Some(leader_id) {
                    return Some(i);
                }
            }
        }
        None
    }

    pub async fn wait_for_quorum(&self, within: Duration) {
        let started = Instant::now();
        let endpoints: Vec<String> = self.members.iter().map(|m| m.client_url.clone()).collect();
        loop {
            let probe = async {
                let mut client = etcd_client::Client::connect(&endpoints, None).await.ok()?;
                client.put("/faults/probe", "", None).await.ok()
            };
            if tokio::time::timeout(Duration::from_secs(1), probe).await.ok().flatten().is_some() {
                return;
            }
            assert!(
                started.elapsed() < within,
                "etcd has no quorum after {within:?}; logs in {}",
                self.dir.path().display()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}

/// One coordinator process, restartable on the same port, reaching each etcd
/// member through a fault proxy of its own, so that it alone can be cut off.
pub struct Replica {
    pub port: u16,
    proxies: Vec<FaultProxy>,
    /// Its wall clock's offset from the machine's, in seconds.
    skew_secs: i64,
    /// What the next (re)start runs: a rolling upgrade changes it.
    pub binary: String,
    /// Set in the sharded runs: the shard-map file it serves with.
    shard_map: Option<String>,
    /// In the sharded runs, each shard's name and endpoints: a (the
    /// 3-member cluster, through this replica's proxies), then b, c...
    shard_endpoints: Vec<(String, Vec<String>)>,
    child: Option<Child>,
}

impl Replica {
    /// A replica on `etcd`, and on `shards` too when there are any: then
    /// `etcd` is shard "a" of a shard map and `shards` are "b", "c"...,
    /// reached directly (the network faults cut only shard a off).
    /// `initial_map` (the map-change run) is the map's lines and the shards
    /// it names; otherwise every shard is placed, at epoch 1.
    pub async fn start(
        etcd: &EtcdCluster,
        shards: &[EtcdCluster],
        binary: &str,
        skew_secs: i64,
        initial_map: Option<(&str, &[&str])>,
    ) -> Replica {
        let mut proxies = Vec::new();
        for url in etcd.client_urls() {
            proxies.push(FaultProxy::start(socket_of(&url)).await);
        }
        let names = (0..=shards.len()).map(|i| ((b'a' + i as u8) as char).to_string());
        let endpoints = std::iter::once(proxies.iter().map(FaultProxy::url).collect::<Vec<_>>())
            .chain(shards.iter().map(EtcdCluster::client_urls));
        let shard_endpoints: Vec<(String, Vec<String>)> =
            if shards.is_empty() { Vec::new() } else { names.zip(endpoints).collect() };
        let shard_map = (!shards.is_empty())
            .then(|| etcd.dir.path().join(format!("shard-map-{}.toml", free_port())).display().to_string());
        let mut replica = Replica {
            port: free_port(),
            proxies,
            skew_secs,
            binary: binary.to_owned(),
            shard_map,
            shard_endpoints,
            child: None,
        };
        if !shards.is_empty() {
            let all: Vec<&str> = replica.shard_endpoints.iter().map(|(name, _)| name.as_str()).collect();
            let all_lines = format!("epoch = 1\nshards = {all:?}\n");
            let (lines, named) = initial_map.unwrap_or((&all_lines, &all));
            replica.write_map(lines, named);
        }
        replica.spawn();
        replica
    }

    /// Writes the replica's shard-map file: `lines` (epoch, shards and the
    /// neighbour map) and a table for each shard in `named`. It applies at
    /// the next (re)start, as a rollout does.
    pub fn write_map(&self, lines: &str, named: &[&str]) {
        let path = self.shard_map.as_ref().expect("a sharded run");
        let mut map = lines.to_owned();
        for (name, endpoints) in self.shard_endpoints.iter().filter(|(name, _)| named.contains(&name.as_str())) {
            map.push_str(&format!("\n[shard.{name}]\nendpoints = {endpoints:?}\n"));
        }
        std::fs::write(path, map).expect("write the shard map");
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn spawn(&mut self) {
        let endpoints = self.proxies.iter().map(FaultProxy::url).collect::<Vec<_>>().join(",");
        let mut extra = vec!["--log", "error"];
        if let Some(map) = &self.shard_map {
            extra.extend(["--shard-map", map.as_str()]);
        }
        let child = serve_command(&self.binary, self.port, &endpoints, self.skew_secs, &extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the coordinator binary starts");
        self.child = Some(child);
    }

    pub fn kill(&mut self) {
        kill_9(&mut self.child);
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// What the network between this replica and every etcd member does.
    pub fn network(&self, network: Network) {
        for proxy in &self.proxies {
            proxy.set(network);
        }
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill();
    }
}

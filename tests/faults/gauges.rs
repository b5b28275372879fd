//! What a long run must keep flat, sampled at intervals: each replica's RSS,
//! open file descriptors and threads (from /proc), and etcd's database size,
//! records, locks and leases. A soak fails when a process gauge keeps
//! growing or etcd holds more than the load can explain.

use std::time::Duration;

use crate::cluster::EtcdCluster;

#[derive(Debug, Clone, Default)]
pub struct Sample {
    pub at: Duration,
    /// Per replica: (RSS KiB, open fds, threads); None while it is down.
    pub replicas: Vec<Option<(u64, u64, u64)>>,
    /// etcd's database size, records, locks and leases; None while it has
    /// no quorum.
    pub etcd: Option<EtcdGauges>,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct EtcdGauges {
    pub db_bytes: i64,
    pub records: i64,
    pub locks: i64,
    pub leases: usize,
}

/// RSS (KiB), open file descriptors and threads of process `pid`.
pub fn process_gauges(pid: u32) -> Option<(u64, u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status.lines().find_map(|l| l.strip_prefix(name)).and_then(|v| v.split_whitespace().next()?.parse().ok())
    };
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64;
    Some((field("VmRSS:")?, fds, field("Threads:")?))
}

/// etcd's side: database size, and how many record keys, lock keys and
/// leases it holds under the coordinator's default prefix. A fresh client per
/// sample, on purpose: the faults kill and restart members under it, and one
/// connection every few seconds costs nothing the run measures.
pub async fn etcd_gauges(etcd: &EtcdCluster) -> Option<EtcdGauges> {
    let mut client = etcd_client::Client::connect(etcd.client_urls(), None).await.ok()?;
    let db = client.status().await.ok()?.db_size();
    let keys =
        client.get("/idempotency/", Some(etcd_client::GetOptions::new().with_prefix().with_keys_only())).await.ok()?;
    let records = keys.kvs().iter().filter(|kv| kv.key().ends_with(b"/record")).count() as i64;
    let locks = keys.kvs().iter().filter(|kv| kv.key().ends_with(b"/lock")).count() as i64;
    let leases = client.leases().await.ok()?.leases().len();
    Some(EtcdGauges { db_bytes: db, records, locks, leases })
}

pub fn print(samples: &[Sample]) {
    println!(
        "{:>6} {:>28} {:>28} {:>10} {:>8} {:>6} {:>7}",
        "t (s)", "replica 0 RSS KiB/fds/threads", "replica 1", "etcd db", "records", "locks", "leases"
    );
    let show = |r: &Option<(u64, u64, u64)>| {
        r.map(|(rss, fds, threads)| format!("{rss}/{fds}/{threads}")).unwrap_or("down".into())
    };
    for s in samples {
        let etcd = match s.etcd {
            Some(e) => format!("{:>10} {:>8} {:>6} {:>7}", e.db_bytes, e.records, e.locks, e.leases),
            None => format!("{:>10}", "no quorum"),
        };
        println!("{:>6} {:>28} {:>28} {etcd}", s.at.as_secs(), show(&s.replicas[0]), show(&s.replicas[1]));
    }
}

/// What grew without bound: a process gauge whose peak over the second half
/// of the run is well above its peak over the first half (after the first
/// quarter, which is warm-up), or etcd holding more than the load explains.
pub fn unbounded(samples: &[Sample], keys: usize, in_flight: usize) -> Vec<String> {
    let mut problems = Vec::new();
    let quarter = samples.len() / 4;
    let (first, second) = (&samples[quarter..samples.len() / 2], &samples[samples.len() / 2..]);
    if first.is_empty() || second.is_empty() {
        return vec![format!("only {} samples: too few to judge", samples.len())];
    }
    let names = ["RSS KiB", "open fds", "threads"];
    for replica in 0..samples[0].replicas.len() {
        for (i, name) in names.iter().enumerate() {
            let peak = |part: &[Sample]| {
                part.iter().filter_map(|s| s.replicas[replica]).map(|g| [g.0, g.1, g.2][i]).max().unwrap_or(0)
            };
            let (before, after) = (peak(first), peak(second));
            // RSS may grow while the replay cache fills (64 MiB at most).
            let allowed = if i == 0 { before + before / 4 + 16 * 1024 } else { before + before / 10 + 4 };
            if after > allowed {
                problems
                    .push(format!("replica {replica} {name}: peak {before} in the first half, {after} in the second"));
            }
        }
    }
    for (at, etcd) in samples.iter().filter_map(|s| Some((s.at, s.etcd?))) {
        if etcd.records > keys as i64 {
            problems.push(format!("{} records at {at:?} for {keys} keys", etcd.records));
        }
        if etcd.locks > in_flight as i64 {
            problems.push(format!("{} locks at {at:?}, more than {in_flight} attempts can be in flight", etcd.locks));
        }
    }
    problems
}

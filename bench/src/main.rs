//! `scripts/bench.sh`: starts what it needs on loopback, each in its own
//! process (etcd with fsync on, the coordinator binary, the do-nothing gRPC
//! server, Redis, PostgreSQL), drives each with the same N concurrent callers,
//! and prints throughput, latency percentiles and the CPU each process spent
//! per 1,000 operations for three scenarios. See BENCHMARKS.md.

mod drive;
mod http;
mod noop;
mod processes;
mod targets;
mod tls;
mod usage;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use drive::{Measured, Window, drive, next};
use processes::Process;
use rand::Rng;
use targets::{Begun, Target};
use tokio::time::Instant;

#[derive(Parser, Debug)]
#[command(about = "Benchmarks the coordinator against a do-nothing gRPC server, direct etcd, Redis and PostgreSQL")]
struct Args {
    /// Concurrent callers.
    #[arg(long, default_value_t = 256)]
    callers: usize,
    /// Measured seconds per scenario (after the warm-up).
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Warm-up seconds per scenario, not measured.
    #[arg(long, default_value_t = 2)]
    warmup: u64,
    /// Completed keys the replay scenario picks from.
    #[arg(long, default_value_t = 1000)]
    replay_keys: usize,
    /// Which targets to run: noop (a gRPC server with the same service and
    /// nothing behind it), coordinator, coordinator-tls (TLS and bearer-token
    /// authentication), coordinator-1-shard and coordinator-3-shards (the
    /// sharded store over one or three etcd clusters), coordinator-resharding
    /// (three shards, two in the previous map), http-upstream (an HTTP
    /// service that only answers) and gateway (the same service behind the
    /// HTTP gateway, on the coordinator on etcd), etcd, redis, postgres.
    #[arg(long, value_delimiter = ',', default_value = "noop,coordinator,coordinator-tls,etcd,redis,postgres")]
    targets: Vec<String>,
    /// Which scenarios to run.
    #[arg(long, value_delimiter = ',', default_value = "new keys,replays,hot-key mix")]
    scenarios: Vec<String>,
    /// gRPC connections from the callers to the coordinator.
    #[arg(long, default_value_t = 8)]
    connections: usize,
    /// Extra `serve` flags for the coordinator targets (repeatable), e.g.
    /// `--coordinator-flag=--log=debug`.
    #[arg(long, allow_hyphen_values = true)]
    coordinator_flag: Vec<String>,
    /// Extra etcd flags (repeatable), for every target on etcd, e.g.
    /// `--etcd-flag=--max-txn-ops=1024` (as deploy/etcd runs it).
    #[arg(long, allow_hyphen_values = true)]
    etcd_flag: Vec<String>,
    /// Run as the do-nothing gRPC server on this address (the bench starts
    /// itself this way for the `noop` target).
    #[arg(long, hide = true)]
    serve_noop: Option<SocketAddr>,
    /// Run as the do-nothing HTTP service on this address (for the
    /// `http-upstream` and `gateway` targets).
    #[arg(long, hide = true)]
    serve_upstream: Option<SocketAddr>,
}

/// The roles of the sharded targets' etcd clusters; a shard is named by
/// what follows `etcd-`.
const SHARD_ROLES: [&str; 3] = ["etcd-a", "etcd-b", "etcd-c"];

/// A target's client and the processes behind it, stopped when dropped.
struct Running {
    target: Arc<dyn Target>,
    /// (role, process): whose CPU and memory the report shows.
    processes: Vec<(&'static str, Process)>,
    _keep: Option<tls::Material>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(addr) = args.serve_noop {
        return noop::serve(addr).await;
    }
    if let Some(addr) = args.serve_upstream {
        return http::serve_upstream(addr).await;
    }
    println!("# {} callers, {} s measured after {} s warm-up per scenario", args.callers, args.seconds, args.warmup);
    println!(
        "# CPU: seconds of CPU (user + system, from /proc) per 1,000 operations, per process; the callers are this bench process"
    );
    println!();
    println!(
        "| target | scenario | ops/s | p50 ms | p99 ms | p99.9 ms | first step p50 / p99 / p99.9 ms | CPU s per 1,000 ops | server RSS MiB: start → every 10 s → end | errors |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for name in &args.targets {
        // Each target gets fresh servers.
        let running = start(name, &args).await?;
        for scenario in &args.scenarios {
            let (measured, cost) = run(scenario, &running, &args).await?;
            report(name, scenario, &measured, &cost);
        }
    }
    Ok(())
}

async fn start(name: &str, args: &Args) -> anyhow::Result<Running> {
    let coordinator = |addr: SocketAddr, tls: Option<&tls::Material>| {
        let scheme = if tls.is_some() { "https" } else { "http" };
        let url = format!("{scheme}://{addr}");
        let (tls, token) = (tls.map(|m| m.client()), tls.map(|_| tls::TOKEN));
        let connections = args.connections;
        async move { targets::Coordinator::connect(&url, connections, tls, token).await }
    };
    Ok(match name {
        "noop" => {
            let (server, addr) = processes::noop_server().await?;
            let target = coordinator(addr, None).await?;
            Running { target: Arc::new(target), processes: vec![("noop", server)], _keep: None }
        }
        "coordinator" | "coordinator-tls" => {
            let (etcd, url) = processes::etcd(&args.etcd_flag).await?;
            let material = if name == "coordinator-tls" { Some(tls::Material::new()?) } else { None };
            let mut flags = material.as_ref().map(|m| m.server_flags()).unwrap_or_default();
            flags.extend(args.coordinator_flag.iter().cloned());
            flags.extend(["--etcd-endpoints".to_owned(), url]);
            let (server, addr) = processes::coordinator(&flags).await?;
            let target = coordinator(addr, material.as_ref()).await?;
            Running {
                target: Arc::new(target),
                processes: vec![("coordinator", server), ("etcd", etcd)],
                _keep: material,
            }
        }
        "coordinator-1-shard" => sharded(1, None, args, coordinator).await?,
        "coordinator-3-shards" => sharded(3, None, args, coordinator).await?,
        // Half way through adding a third shard: epoch 2 over a, b, c with
        // epoch 1 over a, b as the previous map.
        "coordinator-resharding" => sharded(3, Some(2), args, coordinator).await?,
        "http-upstream" => {
            let (upstream, addr) = processes::upstream_server().await?;
            let target = http::HttpPayments::new(addr, false)?;
            Running { target: Arc::new(target), processes: vec![("upstream", upstream)], _keep: None }
        }
        "gateway" => {
            let (etcd, url) = processes::etcd(&args.etcd_flag).await?;
            let mut flags = args.coordinator_flag.clone();
            flags.extend(["--etcd-endpoints".to_owned(), url]);
            let (coordinator, coordinator_addr) = processes::coordinator(&flags).await?;
            let (upstream, upstream_addr) = processes::upstream_server().await?;
            let (gateway, addr) = processes::gateway(upstream_addr, coordinator_addr).await?;
            let target = http::HttpPayments::new(addr, true)?;
            let processes =
                vec![("gateway", gateway), ("upstream", upstream), ("coordinator", coordinator), ("etcd", etcd)];
            Running { target: Arc::new(target), processes, _keep: None }
        }
        "etcd" => {
            let (etcd, url) = processes::etcd(&args.etcd_flag).await?;
            let target = targets::DirectEtcd::connect(&url).await?;
            Running { target: Arc::new(target), processes: vec![("etcd", etcd)], _keep: None }
        }
        "redis" => {
            let (redis, url) = processes::redis().await?;
            let target = targets::Redis::connect(&url).await?;
            Running { target: Arc::new(target), processes: vec![("redis", redis)], _keep: None }
        }
        "postgres" => {
            let (postgres, config) = processes::postgres().await?;
            let connections = args.callers.clamp(1, 64);
            let target = targets::Postgres::connect(&config, connections).await?;
            Running { target: Arc::new(target), processes: vec![("postgres", postgres)], _keep: None }
        }
        other => anyhow::bail!("unknown target {other:?}"),
    })
}

/// The coordinator on the sharded store over `count` single-member etcd
/// clusters (`--shard-map`), placing by all of them; with `previous`, the
/// map before placed by the first `previous` of them.
async fn sharded<F, C>(count: usize, previous: Option<usize>, args: &Args, coordinator: F) -> anyhow::Result<Running>
where
    F: FnOnce(SocketAddr, Option<&tls::Material>) -> C,
    C: std::future::Future<Output = anyhow::Result<targets::Coordinator>>,
{
    let roles = &SHARD_ROLES[..count];
    let shard_names = |count: usize| roles[..count].iter().map(|role| &role[5..]).collect::<Vec<_>>();
    let mut map = match previous {
        None => format!("epoch = 1\nshards = {:?}\n", shard_names(count)),
        Some(before) => format!(
            "epoch = 2\nshards = {:?}\n[previous]\nepoch = 1\nshards = {:?}\n",
            shard_names(count),
            shard_names(before)
        ),
    };
    let mut processes = Vec::new();
    for role in roles {
        let (etcd, url) = processes::etcd(&args.etcd_flag).await?;
        map.push_str(&format!("[shard.{}]\nendpoints = [\"{url}\"]\n", &role[5..]));
        processes.push((*role, etcd));
    }
    // Read once, at startup.
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("shard-map.toml");
    std::fs::write(&path, map)?;
    let mut flags = vec!["--shard-map".to_owned(), path.display().to_string()];
    flags.extend(args.coordinator_flag.iter().cloned());
    let (server, addr) = processes::coordinator(&flags).await?;
    let target = coordinator(addr, None).await?;
    processes.insert(0, ("coordinator", server));
    Ok(Running { target: Arc::new(target), processes, _keep: None })
}

/// What each process spent during a scenario's measured window.
struct Cost {
    /// (role, CPU seconds) in the window, the callers first.
    cpu: Vec<(&'static str, f64)>,
    /// The first server's resident memory at the window's start, every
    /// [`RSS_EVERY`] and at its end.
    rss: Vec<u64>,
}

/// How often a server's resident memory is sampled in a window, so that a
/// long run shows whether it stays flat.
const RSS_EVERY: Duration = Duration::from_secs(10);

/// Samples every process's CPU at the window's start and end, and the
/// server's memory through it.
fn sample_during(window: Window, running: &Running) -> tokio::task::JoinHandle<Cost> {
    let mut pids = vec![("callers", std::process::id())];
    pids.extend(running.processes.iter().map(|(role, p)| (*role, p.pid())));
    tokio::spawn(async move {
        // The callers are this process without its children (the servers);
        // a server counts with its own children (PostgreSQL's backends).
        let sample = |pids: &[(&'static str, u32)]| {
            let callers = usage::own_cpu_seconds(pids[0].1);
            std::iter::once(callers)
                .chain(pids[1..].iter().map(|(_, pid)| usage::cpu_seconds(*pid)))
                .collect::<Vec<_>>()
        };
        let server = pids[1].1;
        tokio::time::sleep_until(window.from).await;
        let (before, mut rss) = (sample(&pids), vec![usage::rss_bytes(server)]);
        let mut next = window.from + RSS_EVERY;
        while next < window.to {
            tokio::time::sleep_until(next).await;
            rss.push(usage::rss_bytes(server));
            next += RSS_EVERY;
        }
        tokio::time::sleep_until(window.to).await;
        let after = sample(&pids);
        rss.push(usage::rss_bytes(server));
        let cpu = pids.iter().zip(before.iter().zip(after)).map(|((role, _), (b, a))| (*role, a - b)).collect();
        Cost { cpu, rss }
    })
}

async fn run(scenario: &str, running: &Running, args: &Args) -> anyhow::Result<(Measured, Cost)> {
    let target = running.target.clone();
    let (callers, warmup, measure) =
        (args.callers, Duration::from_secs(args.warmup), Duration::from_secs(args.seconds));
    let measured = match scenario {
        // A fresh key per call: claim it, then complete it.
        "new keys" => {
            let window = Window::after(warmup, measure);
            let cost = sample_during(window, running);
            let measured = drive(callers, window, move || {
                let target = target.clone();
                async move {
                    let key = format!("new-{}", next());
                    let started = Instant::now();
                    match target.begin(&key).await? {
                        Begun::Acquired(token) => {
                            let claimed = started.elapsed();
                            target.complete(&key, token).await?;
                            Ok(Some(claimed))
                        }
                        other => Err(format!("a fresh key was {other:?}")),
                    }
                }
            })
            .await;
            (measured, cost.await?)
        }
        // Retries of completed keys.
        "replays" => {
            let prefix = format!("done-{}-", next());
            for chunk in (0..args.replay_keys).collect::<Vec<_>>().chunks(64) {
                let setups: Vec<_> = chunk
                    .iter()
                    .map(|i| {
                        let (target, key) = (target.clone(), format!("{prefix}{i}"));
                        tokio::spawn(async move {
                            match target.begin(&key).await? {
                                Begun::Acquired(token) => target.complete(&key, token).await,
                                // Only the do-nothing server, which keeps nothing.
                                Begun::Replayed => Ok(()),
                                other => Err(format!("setting up {key}: {other:?}")),
                            }
                        })
                    })
                    .collect();
                for setup in setups {
                    setup.await?.map_err(anyhow::Error::msg)?;
                }
            }
            let keys = args.replay_keys;
            let window = Window::after(warmup, measure);
            let cost = sample_during(window, running);
            let measured = drive(callers, window, move || {
                let (target, prefix) = (target.clone(), prefix.clone());
                async move {
                    let key = format!("{prefix}{}", rand::rng().random_range(0..keys));
                    target.replay(&key).await.map(|()| None)
                }
            })
            .await;
            (measured, cost.await?)
        }
        // Many callers on few fresh keys at once: one owner each, the rest
        // told it is in progress or, once done, replayed.
        "hot-key mix" => {
            let epoch = Instant::now();
            let prefix = format!("hot-{}-", next());
            let window = Window::after(warmup, measure);
            let cost = sample_during(window, running);
            let measured = drive(callers, window, move || {
                let (target, prefix) = (target.clone(), prefix.clone());
                async move {
                    let round = epoch.elapsed().as_millis() / 100;
                    let key = format!("{prefix}{round}-{}", rand::rng().random_range(0..32));
                    let started = Instant::now();
                    let begun = target.begin(&key).await?;
                    let claimed = started.elapsed();
                    if let Begun::Acquired(token) = begun {
                        target.complete(&key, token).await?;
                    }
                    Ok(Some(claimed))
                }
            })
            .await;
            (measured, cost.await?)
        }
        other => anyhow::bail!("unknown scenario {other:?}"),
    };
    Ok(measured)
}

fn ms(micros: u64) -> String {
    format!("{:.2}", micros as f64 / 1000.0)
}

fn report(target: &str, scenario: &str, m: &Measured, cost: &Cost) {
    let percentiles = |h: &hdrhistogram::Histogram<u64>| {
        (ms(h.value_at_quantile(0.5)), ms(h.value_at_quantile(0.99)), ms(h.value_at_quantile(0.999)))
    };
    let (p50, p99, p999) = percentiles(&m.total);
    let first = if m.first_step.is_empty() {
        "-".to_owned()
    } else {
        let (a, b, c) = percentiles(&m.first_step);
        format!("{a} / {b} / {c}")
    };
    let errors = match &m.first_error {
        Some(e) => format!("{} (first: {})", m.errors, e.chars().take(80).collect::<String>()),
        None => m.errors.to_string(),
    };
    let per_thousand = |seconds: f64| if m.ops == 0 { f64::NAN } else { seconds * 1000.0 / m.ops as f64 };
    let cpu: Vec<String> =
        cost.cpu.iter().map(|(role, seconds)| format!("{role} {:.3}", per_thousand(*seconds))).collect();
    let rss: Vec<String> = cost.rss.iter().map(|bytes| format!("{:.1}", *bytes as f64 / (1024.0 * 1024.0))).collect();
    println!(
        "| {target} | {scenario} | {:.0} | {p50} | {p99} | {p999} | {first} | {} | {} | {errors} |",
        m.ops as f64 / m.seconds,
        cpu.join(" · "),
        rss.join(" → "),
    );
}

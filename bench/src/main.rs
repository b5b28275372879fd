//! `cargo run --release -p bench`: starts what it needs on loopback (etcd with
//! fsync on, the coordinator in-process, Redis, PostgreSQL), drives each with
//! the same N concurrent callers, and prints throughput and latency
//! percentiles for three scenarios. See BENCHMARKS.md.

mod drive;
mod processes;
mod targets;
mod tls;

use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use drive::{Measured, drive, next};
use rand::Rng;
use targets::{Begun, Target};
use tokio::time::Instant;

#[derive(Parser, Debug)]
#[command(about = "Benchmarks the coordinator against direct etcd, Redis and PostgreSQL")]
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
    /// Which targets to run: coordinator, coordinator-tls (TLS and bearer-token authentication), etcd, redis, postgres.
    #[arg(long, value_delimiter = ',', default_value = "coordinator,coordinator-tls,etcd,redis,postgres")]
    targets: Vec<String>,
    /// gRPC connections from the callers to the coordinator.
    #[arg(long, default_value_t = 8)]
    connections: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    println!("# {} callers, {} s measured after {} s warm-up per scenario", args.callers, args.seconds, args.warmup);
    println!();
    println!("| target | scenario | ops/s | p50 ms | p99 ms | p99.9 ms | first step p50 / p99 / p99.9 ms | errors |");
    println!("|---|---|---|---|---|---|---|---|");
    for name in &args.targets {
        // Each target gets fresh servers; they are stopped when dropped.
        let (target, _servers): (Arc<dyn Target>, Vec<Box<dyn std::any::Any>>) = match name.as_str() {
            "coordinator" => {
                let (etcd, url) = processes::etcd().await?;
                let addr = start_coordinator(&url, &[]).await?;
                let target =
                    targets::Coordinator::connect(&format!("http://{addr}"), args.connections, None, None).await?;
                (Arc::new(target), vec![Box::new(etcd)])
            }
            "coordinator-tls" => {
                let (etcd, url) = processes::etcd().await?;
                let material = tls::Material::new()?;
                let addr = start_coordinator(&url, &material.server_flags()).await?;
                let url = format!("https://{addr}");
                let target =
                    targets::Coordinator::connect(&url, args.connections, Some(material.client()), Some(tls::TOKEN))
                        .await?;
                (Arc::new(target), vec![Box::new(etcd), Box::new(material)])
            }
            "etcd" => {
                let (etcd, url) = processes::etcd().await?;
                (Arc::new(targets::DirectEtcd::connect(&url).await?), vec![Box::new(etcd)])
            }
            "redis" => {
                let (redis, url) = processes::redis().await?;
                (Arc::new(targets::Redis::connect(&url).await?), vec![Box::new(redis)])
            }
            "postgres" => {
                let (postgres, config) = processes::postgres().await?;
                let connections = args.callers.clamp(1, 64);
                (Arc::new(targets::Postgres::connect(&config, connections).await?), vec![Box::new(postgres)])
            }
            other => anyhow::bail!("unknown target {other:?}"),
        };
        for scenario in ["new keys", "replays", "hot-key mix"] {
            let measured = run(scenario, target.clone(), &args).await?;
            report(name, scenario, &measured);
        }
    }
    Ok(())
}

/// The coordinator on port 0 of loopback, in this process, with `extra` flags.
async fn start_coordinator(etcd_url: &str, extra: &[String]) -> anyhow::Result<std::net::SocketAddr> {
    #[derive(Parser)]
    struct Serve {
        #[command(flatten)]
        args: idempotency_coordinator::shell::config::ServeArgs,
    }
    let flags = ["bench", "--etcd-endpoints", etcd_url, "--max-in-flight", "100000", "--metrics-listen", "127.0.0.1:0"];
    let config = Serve::parse_from(flags.into_iter().chain(extra.iter().map(String::as_str)))
        .args
        .validate()
        .map_err(anyhow::Error::msg)?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(idempotency_coordinator::shell::server::run(config, listener, std::future::pending()));
    Ok(addr)
}

async fn run(scenario: &str, target: Arc<dyn Target>, args: &Args) -> anyhow::Result<Measured> {
    let (callers, warmup, measure) =
        (args.callers, Duration::from_secs(args.warmup), Duration::from_secs(args.seconds));
    Ok(match scenario {
        // A fresh key per call: claim it, then complete it.
        "new keys" => {
            drive(callers, warmup, measure, move || {
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
            .await
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
            drive(callers, warmup, measure, move || {
                let (target, prefix) = (target.clone(), prefix.clone());
                async move {
                    let key = format!("{prefix}{}", rand::rng().random_range(0..keys));
                    target.replay(&key).await.map(|()| None)
                }
            })
            .await
        }
        // Many callers on few fresh keys at once: one owner each, the rest
        // told it is in progress or, once done, replayed.
        _ => {
            let epoch = Instant::now();
            let prefix = format!("hot-{}-", next());
            drive(callers, warmup, measure, move || {
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
            .await
        }
    })
}

fn ms(micros: u64) -> String {
    format!("{:.2}", micros as f64 / 1000.0)
}

fn report(target: &str, scenario: &str, m: &Measured) {
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
    println!(
        "| {target} | {scenario} | {:.0} | {p50} | {p99} | {p999} | {first} | {errors} |",
        m.ops as f64 / m.seconds
    );
}

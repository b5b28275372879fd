//! The servers a benchmark run starts on loopback, each its own process with
//! a fresh data directory, stopped when dropped: etcd (fsync on), the
//! coordinator and its HTTP gateway (the release binary), the do-nothing gRPC
//! server and HTTP service, Redis, PostgreSQL.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

pub struct Process {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Process {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Process {
    /// Asks it to stop (SIGTERM: a coordinator under callgrind then writes
    /// its counts) and kills it if it has not within 30 s.
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let give_up = std::time::Instant::now() + Duration::from_secs(30);
        while std::time::Instant::now() < give_up {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn wait_for_port(port: u16, what: &str) -> Result<()> {
    // Up to a minute: a coordinator under valgrind starts slowly.
    for _ in 0..1200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("{what} did not start listening on port {port}")
}

/// A single-member etcd with default durability (every commit fsynced),
/// with `extra` flags.
pub async fn etcd(extra: &[String]) -> Result<(Process, String)> {
    let dir = tempfile::tempdir()?;
    let (client, peer) = (free_port(), free_port());
    let child = Command::new(std::env::var("ETCD_BIN").unwrap_or_else(|_| "etcd".into()))
        .arg(format!("--data-dir={}", dir.path().join("data").display()))
        .arg(format!("--listen-client-urls=http://127.0.0.1:{client}"))
        .arg(format!("--advertise-client-urls=http://127.0.0.1:{client}"))
        .arg(format!("--listen-peer-urls=http://127.0.0.1:{peer}"))
        .arg(format!("--initial-advertise-peer-urls=http://127.0.0.1:{peer}"))
        .arg(format!("--initial-cluster=default=http://127.0.0.1:{peer}"))
        .args(extra)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("etcd.log"))?)
        .spawn()
        .context("starting etcd (scripts/install-deps.sh installs it)")?;
    let url = format!("http://127.0.0.1:{client}");
    let process = Process { child, _dir: dir };
    wait_for_port(client, "etcd").await?;
    // Serving only once it has elected itself leader.
    for _ in 0..100 {
        if let Ok(mut c) = etcd_client::Client::connect([&url], None).await
            && c.put("/bench/ready", "", None).await.is_ok()
        {
            return Ok((process, url));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("etcd never became ready")
}

/// The coordinator binary: `COORDINATOR_BIN`, or `idempotency-coordinator`
/// beside this bench's own binary (`scripts/bench.sh` builds both).
fn coordinator_bin() -> Result<PathBuf> {
    if let Ok(path) = std::env::var("COORDINATOR_BIN") {
        return Ok(path.into());
    }
    let bench = std::env::current_exe()?;
    let path = bench.with_file_name("idempotency-coordinator");
    if !path.exists() {
        bail!("{} is missing: build it with `cargo build --release --bin idempotency-coordinator`", path.display());
    }
    Ok(path)
}

/// `idempotency-coordinator serve` on free loopback ports with `flags`,
/// which say where its store is; its log goes to a file in its directory,
/// at the level it ships with.
pub async fn coordinator(flags: &[String]) -> Result<(Process, SocketAddr)> {
    let dir = tempfile::tempdir()?;
    let port = free_port();
    let child = Command::new(coordinator_bin()?)
        .arg("serve")
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--metrics-listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--health-listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--max-in-flight", "100000"])
        .args(flags)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("coordinator.log"))?)
        .spawn()
        .context("starting the coordinator")?;
    let process = Process { child, _dir: dir };
    wait_for_port(port, "the coordinator").await?;
    Ok((process, SocketAddr::from(([127, 0, 0, 1], port))))
}

/// This bench binary again, as the do-nothing gRPC server.
pub async fn noop_server() -> Result<(Process, SocketAddr)> {
    // NOOP_BIN: a wrapper that runs this binary (callgrind.sh counts its
    // instructions that way).
    let program = match std::env::var_os("NOOP_BIN") {
        Some(wrapper) => PathBuf::from(wrapper),
        None => std::env::current_exe()?,
    };
    this_bench_as(program, "--serve-noop", "the do-nothing server").await
}

/// This bench binary again, as the do-nothing HTTP payments service.
pub async fn upstream_server() -> Result<(Process, SocketAddr)> {
    this_bench_as(std::env::current_exe()?, "--serve-upstream", "the HTTP service").await
}

async fn this_bench_as(program: PathBuf, flag: &str, what: &str) -> Result<(Process, SocketAddr)> {
    let dir = tempfile::tempdir()?;
    let port = free_port();
    let child = Command::new(program)
        .args([flag, &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {what}"))?;
    let process = Process { child, _dir: dir };
    wait_for_port(port, what).await?;
    Ok((process, SocketAddr::from(([127, 0, 0, 1], port))))
}

/// `idempotency-coordinator gateway` on free loopback ports, protecting
/// `POST /payments` of `upstream` with the coordinator at `coordinator`.
pub async fn gateway(upstream: SocketAddr, coordinator: SocketAddr) -> Result<(Process, SocketAddr)> {
    let dir = tempfile::tempdir()?;
    let routes = dir.path().join("routes.toml");
    std::fs::write(
        &routes,
        "[[route]]\nname = \"create-payment\"\nmethods = [\"POST\"]\npath = \"/payments\"\nnamespace = \"payments.create\"\nidentity = \"authorization\"\n",
    )?;
    let port = free_port();
    let child = Command::new(coordinator_bin()?)
        .arg("gateway")
        .arg("--routes")
        .arg(&routes)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--admin-listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--upstream", &format!("http://{upstream}")])
        .args(["--coordinator", &format!("http://{coordinator}")])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("gateway.log"))?)
        .spawn()
        .context("starting the gateway")?;
    let process = Process { child, _dir: dir };
    wait_for_port(port, "the gateway").await?;
    Ok((process, SocketAddr::from(([127, 0, 0, 1], port))))
}

/// Redis with an append-only file synced every second (its usual durable
/// setting; `always` would fsync every write).
pub async fn redis() -> Result<(Process, String)> {
    let dir = tempfile::tempdir()?;
    let port = free_port();
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", ""])
        .args(["--appendonly", "yes", "--appendfsync", "everysec"])
        .arg("--dir")
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting redis-server (apt-get install redis-server)")?;
    let process = Process { child, _dir: dir };
    wait_for_port(port, "redis").await?;
    Ok((process, format!("redis://127.0.0.1:{port}/")))
}

fn postgres_bin() -> Result<PathBuf> {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .context("PostgreSQL is not installed (apt-get install postgresql)")?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|bin| bin.join("postgres").exists())
        .collect();
    versions.sort();
    versions.pop().context("no PostgreSQL server binaries under /usr/lib/postgresql")
}

/// As root, PostgreSQL must run as its own user.
fn as_postgres_user(program: &Path) -> Command {
    let is_root = Command::new("id").arg("-u").output().map(|o| o.stdout.starts_with(b"0")).unwrap_or(false);
    if is_root {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

/// A PostgreSQL cluster with default durability (synchronous_commit on, fsync on).
pub async fn postgres() -> Result<(Process, String)> {
    let bin = postgres_bin()?;
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    std::fs::create_dir(&data)?;
    let _ = Command::new("chown").args(["-R", "postgres:postgres"]).arg(dir.path()).status();
    let init = as_postgres_user(&bin.join("initdb"))
        .args(["--auth=trust", "--username=postgres", "-D"])
        .arg(&data)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?;
    if !init.success() {
        bail!("initdb failed");
    }
    let port = free_port();
    let child = as_postgres_user(&bin.join("postgres"))
        .arg("-D")
        .arg(&data)
        .args(["-p", &port.to_string(), "-c", "listen_addresses=127.0.0.1", "-c", "max_connections=300"])
        .arg("-k")
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let process = Process { child, _dir: dir };
    wait_for_port(port, "postgres").await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    Ok((process, format!("host=127.0.0.1 port={port} user=postgres")))
}

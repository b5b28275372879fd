//! A TCP proxy on loopback that stands between coordinator replicas and an
//! etcd member and breaks the network on command: pass traffic, delay it,
//! drop it silently, or reset every connection.
//!
//! "Drop" holds every byte, in both directions and on connections made
//! meanwhile, as a network that loses packets does: nothing is refused and
//! nothing arrives, so a client notices only by its own timeouts. On healing
//! the held bytes flow again, as TCP's retransmissions would deliver them.
#![allow(dead_code)] // each test binary uses a different part

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Network {
    Pass,
    /// Every chunk, in each direction, arrives this much later.
    Delay(Duration),
    /// Nothing arrives, and nothing is refused.
    Drop,
    /// Every connection is reset, and new ones are reset at once.
    Reset,
}

pub struct FaultProxy {
    pub addr: SocketAddr,
    network: watch::Sender<Network>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// A proxy on a free loopback port in front of `upstream`.
    pub async fn start(upstream: SocketAddr) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind a loopback port");
        let addr = listener.local_addr().expect("local addr");
        let (network, watching) = watch::channel(Network::Pass);
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(relay(client, upstream, watching.clone()));
            }
        });
        FaultProxy { addr, network, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn set(&self, network: Network) {
        self.network.send_replace(network);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.set(Network::Reset);
        self.task.abort();
    }
}

/// The socket address of an `http://host:port` URL.
pub fn socket_of(url: &str) -> SocketAddr {
    url.trim_start_matches("http://").parse().expect("an http://ip:port URL")
}

async fn relay(client: TcpStream, upstream: SocketAddr, mut network: watch::Receiver<Network>) {
    // A connection made while the network drops waits, unanswered.
    if network.wait_for(|n| *n != Network::Drop).await.map(|n| *n == Network::Reset).unwrap_or(true) {
        return reset(&client);
    }
    let Ok(server) = TcpStream::connect(upstream).await else { return reset(&client) };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let (up, down) = tokio::join!(
        pump(&mut client_read, &mut server_write, network.clone()),
        pump(&mut server_read, &mut client_write, network),
    );
    if up.is_err() || down.is_err() {
        reset(client_read.as_ref());
        reset(server_read.as_ref());
    }
}

/// Makes the close a TCP reset rather than an orderly close.
// Deprecated because a positive linger blocks the dropping thread; a zero
// linger never waits, it resets.
#[allow(deprecated)]
fn reset(stream: &TcpStream) {
    let _ = stream.set_linger(Some(Duration::ZERO));
}

struct Reset;

/// Copies one direction until it closes, as the network allows; `Err` when
/// the network resets.
async fn pump(
    from: &mut OwnedReadHalf,
    to: &mut OwnedWriteHalf,
    mut network: watch::Receiver<Network>,
) -> Result<(), Reset> {
    let mut buffer = vec![0; 64 * 1024];
    loop {
        let read = tokio::select! {
            read = from.read(&mut buffer) => read,
            _ = network.wait_for(|n| *n == Network::Reset) => return Err(Reset),
        };
        let Ok(n @ 1..) = read else {
            let _ = to.shutdown().await;
            return Ok(());
        };
        loop {
            let now = *network.borrow_and_update();
            match now {
                Network::Pass => break,
                Network::Delay(delay) => {
                    tokio::time::sleep(delay).await;
                    break;
                }
                Network::Drop => {
                    if network.changed().await.is_err() {
                        return Err(Reset);
                    }
                }
                Network::Reset => return Err(Reset),
            }
        }
        if to.write_all(&buffer[..n]).await.is_err() {
            return Ok(());
        }
    }
}

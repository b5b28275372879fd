//! TCP_NODELAY on the connections the coordinator and the gateway accept.
//!
//! With Nagle's algorithm on, a reply that goes out in two writes (a gRPC
//! reply's trailers after its message) holds the second until the peer ACKs
//! the first, and a peer with nothing to send delays that ACK by up to 40 ms.
//! Under light load every Complete paid it: 48 ms per request through the
//! gateway, 4-5 ms without (BENCHMARKS.md, "HTTP gateway").

use tokio::net::TcpStream;
use tracing::warn;

pub fn without_nagle(tcp: &TcpStream) {
    if let Err(error) = tcp.set_nodelay(true) {
        warn!(%error, "cannot set TCP_NODELAY on a connection");
    }
}

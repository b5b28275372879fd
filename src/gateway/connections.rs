//! The client connections the proxy accepts, within [`ClientLimits`]
//! (issue 27, item 3): at most `max_connections` at once (more wait in the
//! listen backlog); HTTP/1 heads and HTTP/2 header lists of at most
//! `max_header_bytes`; HTTP/2 flow-control windows at the protocol's
//! 64 KiB default and at most `http2_max_streams` streams, so one
//! connection cannot make the gateway hold more unread data; and a
//! watchdog per connection that closes it
//!
//! - when no request has been in flight on it for `header_read_timeout`
//!   (a client that opened it and sends nothing, or headers a byte at a
//!   time, on either protocol; an idle keep-alive connection), and
//! - when its answer has waited for the client to take any of it for
//!   `body_idle_timeout` (a client that does not read).
//!
//! Request bodies get their own timeouts ([`TimedBody`]).

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use http::Request;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::gateway::body_timeouts::TimedBody;
use crate::gateway::config::ClientLimits;
use crate::gateway::proxy::{self, Gateway};
use crate::shell::nodelay::without_nagle;

/// The HTTP/2 flow-control windows: the protocol's initial 65,535 bytes, so
/// a connection holds at most that much of its clients' unread bodies.
const HTTP2_WINDOW: u32 = 65_535;

/// Serves `gateway` on `listener` until `draining` is cancelled, then stops
/// accepting and returns once every open connection has finished its
/// requests (the caller bounds that with the grace period).
pub async fn serve(listener: TcpListener, gateway: Arc<Gateway>, limits: ClientLimits, draining: CancellationToken) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(limits.http2_max_streams)
        .initial_stream_window_size(HTTP2_WINDOW)
        .initial_connection_window_size(HTTP2_WINDOW)
        .max_send_buf_size(HTTP2_WINDOW as usize);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
            () = draining.cancelled() => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // Out of file descriptors, most likely: pause instead of spinning.
                    warn!(%error, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = draining.cancelled() => break,
        };
        without_nagle(&stream);
        let activity = Arc::new(Activity::new());
        let io = TokioIo::new(Watched { stream, activity: activity.clone() });
        let service = {
            let (gateway, activity, limits) = (gateway.clone(), activity.clone(), limits.clone());
            hyper::service::service_fn(move |request: Request<Incoming>| {
                let in_flight = InFlight::start(activity.clone());
                let gateway = gateway.clone();
                let (idle, total) = (limits.body_idle_timeout, limits.body_read_timeout);
                async move {
                    let request = request.map(|body| Body::new(TimedBody::new(Body::new(body), idle, total)));
                    let response = proxy::handle(gateway, request).await;
                    Ok::<_, Infallible>(response.map(|body| CountedBody { body, _in_flight: in_flight }))
                }
            })
        };
        let connection = graceful.watch(builder.serve_connection(io, service).into_owned());
        let limits = limits.clone();
        tokio::spawn(async move {
            let _slot = slot;
            tokio::select! {
                served = connection => if let Err(error) = served {
                    debug!(%error, "client connection ended with an error");
                },
                why = watchdog(&activity, &limits) => debug!(why, "closed a client connection"),
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// What the watchdog sees of one connection.
struct Activity {
    in_flight: AtomicUsize,
    /// When the last request in flight ended, or the connection opened.
    idle_since: Mutex<Instant>,
    /// Since when a write has waited for the client to take bytes.
    write_blocked_since: Mutex<Option<Instant>>,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            in_flight: AtomicUsize::new(0),
            idle_since: Mutex::new(Instant::now()),
            write_blocked_since: Mutex::new(None),
        }
    }
}

/// Resolves, saying why, when the connection is to be closed.
async fn watchdog(activity: &Activity, limits: &ClientLimits) -> &'static str {
    let tick = (limits.header_read_timeout.min(limits.body_idle_timeout) / 4)
        .clamp(Duration::from_millis(20), Duration::from_secs(1));
    let mut ticks = tokio::time::interval(tick);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let now = Instant::now();
        // The lock's holders do not await while holding it.
        let idle_since = *activity.idle_since.lock().expect("not poisoned");
        if activity.in_flight.load(Ordering::Acquire) == 0 && now - idle_since >= limits.header_read_timeout {
            return "no request within the header read timeout";
        }
        let blocked = *activity.write_blocked_since.lock().expect("not poisoned");
        if blocked.is_some_and(|since| now - since >= limits.body_idle_timeout) {
            return "the client took none of its answer within the body idle timeout";
        }
    }
}

/// One request in flight on a connection, from its head to the end of its answer.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn start(activity: Arc<Activity>) -> InFlight {
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(activity)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        *self.0.idle_since.lock().expect("not poisoned") = Instant::now();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// An answer's body that keeps its request counted in flight until it is sent or dropped.
struct CountedBody {
    body: Body,
    _in_flight: InFlight,
}

impl http_body::Body for CountedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The client's TCP stream, noting when writes wait for the client.
struct Watched {
    stream: TcpStream,
    activity: Arc<Activity>,
}

impl Watched {
    fn note<T>(&self, written: &Poll<std::io::Result<T>>) {
        let mut blocked = self.activity.write_blocked_since.lock().expect("not poisoned");
        match written {
            Poll::Pending => {
                blocked.get_or_insert_with(Instant::now);
            }
            Poll::Ready(_) => *blocked = None,
        }
    }
}

impl AsyncRead for Watched {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Watched {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let written = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.note(&written);
        written
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let written = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.note(&written);
        written
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

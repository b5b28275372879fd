//! The signals that start a graceful drain.

use tokio::signal::unix::{SignalKind, signal};

/// Resolves on the first SIGTERM (Kubernetes) or SIGINT (Ctrl-C).
pub async fn signal_received() -> std::io::Result<&'static str> {
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(tokio::select! {
        _ = terminate.recv() => "SIGTERM",
        _ = interrupt.recv() => "SIGINT",
    })
}

//! Values loaded from files that are replaced while the process runs:
//! certificates renewed by cert-manager, token files rotated by an operator,
//! both usually Kubernetes Secrets that the kubelet swaps in place.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use tracing::{info, warn};

/// A value that a [`watch`] task may replace; readers take a snapshot.
#[derive(Debug)]
pub struct Reloadable<T> {
    current: RwLock<Arc<T>>,
}

impl<T> Reloadable<T> {
    pub fn new(value: T) -> Self {
        Self { current: RwLock::new(Arc::new(value)) }
    }

    pub fn get(&self) -> Arc<T> {
        // A panic while holding the lock cannot leave a half-written Arc.
        self.current.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    fn set(&self, value: T) {
        *self.current.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(value);
    }
}

/// What identifies a file's version: its modification time and size (through
/// symlinks, which is how Kubernetes swaps a mounted Secret).
fn stamps(paths: &[PathBuf]) -> Vec<Option<(SystemTime, u64)>> {
    paths.iter().map(|path| std::fs::metadata(path).ok().and_then(|m| Some((m.modified().ok()?, m.len())))).collect()
}

/// Every `interval`, if any of `paths` changed, loads the value anew and swaps
/// it in. A failed load (a file half-written, or the key written before its
/// certificate) keeps the old value and warns; the next change tries again.
/// Runs until the task is dropped.
pub async fn watch<T>(
    target: Arc<Reloadable<T>>,
    paths: Vec<PathBuf>,
    interval: Duration,
    what: &'static str,
    load: impl Fn() -> Result<T, String>,
) {
    let mut seen = stamps(&paths);
    loop {
        tokio::time::sleep(interval).await;
        let now = stamps(&paths);
        if now == seen {
            continue;
        }
        seen = now;
        match load() {
            Ok(value) => {
                target.set(value);
                info!(what, "reloaded after its files changed");
            }
            Err(error) => warn!(what, %error, "files changed but cannot be loaded; keeping the previous version"),
        }
    }
}

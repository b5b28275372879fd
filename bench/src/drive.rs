//! The load loop: N callers each run one operation after another for a fixed
//! time; latencies after the warm-up go into per-caller histograms, merged at
//! the end.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::time::Instant;

/// What one scenario measured.
pub struct Measured {
    pub ops: u64,
    pub errors: u64,
    pub seconds: f64,
    /// Latency of the whole operation, microseconds.
    pub total: Histogram<u64>,
    /// Latency of its first step (Begin / claim), microseconds.
    pub first_step: Histogram<u64>,
    pub first_error: Option<String>,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000, 3).expect("valid histogram bounds")
}

/// Unique numbers for fresh keys across all callers.
pub static SEQUENCE: AtomicU64 = AtomicU64::new(0);

pub fn next() -> u64 {
    SEQUENCE.fetch_add(1, Ordering::Relaxed)
}

/// When a scenario measures: after its warm-up, until its end.
#[derive(Clone, Copy)]
pub struct Window {
    pub from: Instant,
    pub to: Instant,
}

impl Window {
    pub fn after(warmup: Duration, measure: Duration) -> Self {
        let from = Instant::now() + warmup;
        Self { from, to: from + measure }
    }
}

/// Runs `op` from `callers` concurrent loops until the window ends, counting
/// what starts inside it. `op` returns the latency of its first step, if it
/// has one worth reporting.
pub async fn drive<F, Fut>(callers: usize, window: Window, op: F) -> Measured
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Option<Duration>, String>> + Send,
{
    let op = Arc::new(op);
    let (measure_from, end) = (window.from, window.to);
    let loops: Vec<_> = (0..callers)
        .map(|_| {
            let op = op.clone();
            tokio::spawn(async move {
                let (mut total, mut first_step) = (histogram(), histogram());
                let (mut ops, mut errors, mut first_error) = (0u64, 0u64, None);
                loop {
                    let started = Instant::now();
                    if started >= end {
                        break;
                    }
                    let outcome = op().await;
                    if started < measure_from {
                        continue;
                    }
                    match outcome {
                        Ok(step) => {
                            ops += 1;
                            total.saturating_record(started.elapsed().as_micros() as u64);
                            if let Some(step) = step {
                                first_step.saturating_record(step.as_micros() as u64);
                            }
                        }
                        Err(e) => {
                            errors += 1;
                            first_error.get_or_insert(e);
                        }
                    }
                }
                (total, first_step, ops, errors, first_error)
            })
        })
        .collect();
    let mut measured = Measured {
        ops: 0,
        errors: 0,
        seconds: (end - measure_from).as_secs_f64(),
        total: histogram(),
        first_step: histogram(),
        first_error: None,
    };
    for each in loops {
        let (total, first_step, ops, errors, first_error) = each.await.expect("a caller loop");
        measured.total.add(total).expect("same bounds");
        measured.first_step.add(first_step).expect("same bounds");
        measured.ops += ops;
        measured.errors += errors;
        if measured.first_error.is_none() {
            measured.first_error = first_error;
        }
    }
    measured
}

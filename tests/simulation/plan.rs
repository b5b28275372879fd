//! What one seed makes happen: a plan of timed actions, drawn up front from
//! one seeded RNG, so that a failing plan can be shrunk by dropping actions
//! and replayed from its seed and the list of actions it kept.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Clusters the shard maps are drawn from.
pub const CLUSTERS: [&str; 3] = ["a", "b", "c"];
/// Replicas of the coordinator, each with its own caches and clock.
pub const REPLICAS: usize = 3;
/// Keys callers use (one tenant, one namespace): few, so that they collide.
pub const KEYS: usize = 4;
/// How long one run lasts in simulated time, before the quiet end.
pub const DURATION_MS: u64 = 150_000;

/// Which scenarios a run may draw. Each `false` in [`Knobs::passing`] is a
/// finding of the review that is not fixed yet (issues 25 and 26); the
/// tests in `findings.rs` show that the simulation finds each one when its
/// knob is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Knobs {
    /// Begins retried with the request_id of an attempt in progress (issue 26, 1).
    pub request_id_retries: bool,
    /// Links whose watches and forget feed go silent without breaking (issue 26, 3).
    pub silent_watches: bool,
    /// Map changes that remove a shard or add a removed one back (issue 25, 3).
    pub removals: bool,
    /// A replica left a whole step behind while the next rollout starts (issue 25, 4).
    pub laggards: bool,
    /// Settle when the old README's waiting rule said, without asking
    /// `shards status` (issue 25, 2).
    pub settle_by_rule: bool,
    /// Clusters whose revisions overlap, as clusters started together do
    /// (issue 25, 1); otherwise each starts a million revisions apart.
    pub overlapping_revisions: bool,
}

impl Knobs {
    /// Every scenario with an operator who settles when `shards status`
    /// says so (with `settle_by_rule` the replicas refuse to settle instead,
    /// which makes records unavailable rather than lost: its own test).
    pub const fn passing() -> Self {
        Knobs {
            request_id_retries: true,
            silent_watches: true,
            removals: true,
            laggards: true,
            settle_by_rule: false,
            overlapping_revisions: true,
        }
    }

    /// Every scenario the simulation knows.
    pub const fn all() -> Self {
        Knobs {
            request_id_retries: true,
            silent_watches: true,
            removals: true,
            laggards: true,
            settle_by_rule: true,
            overlapping_revisions: true,
        }
    }

    /// The names [`Knobs::parse`] reads back.
    pub fn names(self) -> String {
        let on = [
            (self.request_id_retries, "request-id-retries"),
            (self.silent_watches, "silent-watches"),
            (self.removals, "removals"),
            (self.laggards, "laggards"),
            (self.settle_by_rule, "settle-by-rule"),
            (self.overlapping_revisions, "overlapping-revisions"),
        ];
        let names: Vec<&str> = on.iter().filter(|(on, _)| *on).map(|(_, name)| *name).collect();
        if names.is_empty() { "passing".into() } else { names.join(",") }
    }

    /// Knobs by name, comma-separated (`all`, `passing`, or knob names).
    pub fn parse(names: &str) -> Result<Self, String> {
        let mut knobs = Knobs::passing();
        for name in names.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            match name {
                "all" => knobs = Knobs::all(),
                "passing" => knobs = Knobs::passing(),
                "request-id-retries" => knobs.request_id_retries = true,
                "silent-watches" => knobs.silent_watches = true,
                "removals" => knobs.removals = true,
                "laggards" => knobs.laggards = true,
                "settle-by-rule" => knobs.settle_by_rule = true,
                "overlapping-revisions" => knobs.overlapping_revisions = true,
                other => return Err(format!("unknown knob {other:?}")),
            }
        }
        Ok(knobs)
    }
}

/// A caller's intent: one key, one request (payload 0 or 1: the same key
/// with another payload is key reuse), one request_id for its retries.
#[derive(Debug, Clone, Copy)]
pub struct Intent {
    pub key: usize,
    pub payload: u8,
    /// The lease its retries ask for: a retry is the same call again.
    pub ttl_s: u64,
}

/// One step of a shard-map change, as every replica rolls it out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MapStep {
    Settled { epoch: u64, shards: Vec<&'static str> },
    Announce { epoch: u64, shards: Vec<&'static str>, next: Vec<&'static str> },
    Switch { epoch: u64, shards: Vec<&'static str>, previous: Vec<&'static str> },
}

#[derive(Debug, Clone)]
pub enum Action {
    Begin {
        intent: usize,
        replica: usize,
        ttl_s: u64,
        wait_ms: u64,
        retry: bool,
    },
    /// The owner of the intent's latest attempt performs the side effect
    /// (a fenced ledger write), then completes.
    Complete {
        intent: usize,
        replica: usize,
        retention_s: u64,
    },
    Fail {
        intent: usize,
        replica: usize,
        retryable: bool,
        retention_s: u64,
    },
    Extend {
        intent: usize,
        replica: usize,
        ttl_s: u64,
    },
    Lookup {
        key: usize,
        replica: usize,
    },
    Forget {
        key: usize,
        replica: usize,
    },
    /// The replica restarts (its caches lost) on the same map.
    Restart {
        replica: usize,
    },
    /// The replica's wall clock is set this far from the true time.
    Clock {
        replica: usize,
        offset_ms: i64,
    },
    WatchLag {
        replica: usize,
        cluster: usize,
        lag_ms: u64,
    },
    Silence {
        replica: usize,
        cluster: usize,
        silent: bool,
    },
    BreakFeed {
        replica: usize,
        cluster: usize,
    },
    ClusterDown {
        cluster: usize,
        down: bool,
    },
    Flaky {
        cluster: usize,
        flaky: bool,
    },
    /// The replica restarts on this step of a map change.
    Rollout {
        replica: usize,
        step: MapStep,
    },
    /// Settle may start once nothing is left where the settled map won't
    /// look: the operator's check; the rollout waits for it.
    AwaitSafeSettle {
        settled: Vec<&'static str>,
    },
}

#[derive(Debug, Clone)]
pub struct Step {
    pub at_ms: u64,
    /// Steps of one group (a map change) are kept or dropped together when shrinking.
    pub group: usize,
    pub action: Action,
}

pub struct Plan {
    pub intents: Vec<Intent>,
    pub steps: Vec<Step>,
    pub initial: MapStep,
    pub knobs: Knobs,
}

pub fn generate(seed: u64, knobs: Knobs) -> Plan {
    let mut rng = StdRng::seed_from_u64(seed);
    let intents: Vec<Intent> = (0..24)
        .map(|_| Intent {
            key: rng.random_range(0..KEYS),
            payload: u8::from(rng.random_bool(0.2)),
            ttl_s: rng.random_range(2..=8),
        })
        .collect();
    let mut steps = Vec::new();
    let mut group = 0;
    let push = |steps: &mut Vec<Step>, at_ms: u64, group: usize, action: Action| {
        steps.push(Step { at_ms, group, action });
    };
    // Callers.
    let mut at = 0;
    while at < DURATION_MS {
        at += rng.random_range(50..900);
        group += 1;
        let intent = rng.random_range(0..intents.len());
        let replica = rng.random_range(0..REPLICAS);
        let action = match rng.random_range(0..100) {
            0..=34 => Action::Begin {
                intent,
                replica,
                ttl_s: rng.random_range(2..=8),
                wait_ms: [0, 0, 0, 1_000, 4_000][rng.random_range(0..5)],
                retry: knobs.request_id_retries && rng.random_bool(0.4),
            },
            35..=56 => Action::Complete { intent, replica, retention_s: rng.random_range(1..=20) },
            57..=62 => {
                Action::Fail { intent, replica, retryable: rng.random_bool(0.6), retention_s: rng.random_range(1..=20) }
            }
            // Heartbeats: an owner extends by the TTL it works with.
            63..=72 => Action::Extend { intent, replica, ttl_s: intents[intent].ttl_s },
            73..=82 => Action::Lookup { key: intents[intent].key, replica },
            83..=89 => Action::Forget { key: intents[intent].key, replica },
            _ => continue,
        };
        push(&mut steps, at, group, action);
    }
    // Faults, each undone a while later.
    for _ in 0..rng.random_range(4..14) {
        let at = rng.random_range(0..DURATION_MS);
        let lasts = rng.random_range(200..20_000);
        let (replica, cluster) = (rng.random_range(0..REPLICAS), rng.random_range(0..CLUSTERS.len()));
        group += 1;
        match rng.random_range(0..7) {
            0 => push(&mut steps, at, group, Action::Restart { replica }),
            1 => {
                let max = crate::world::MAX_SKEW_MS;
                let offset_ms = rng.random_range(-max..max);
                push(&mut steps, at, group, Action::Clock { replica, offset_ms });
                // Stepped back or jumping on: NTP correcting it later.
                push(&mut steps, at + lasts, group, Action::Clock { replica, offset_ms: rng.random_range(-500..500) });
            }
            2 => {
                push(&mut steps, at, group, Action::WatchLag { replica, cluster, lag_ms: rng.random_range(10..3_000) });
                push(&mut steps, at + lasts, group, Action::WatchLag { replica, cluster, lag_ms: 0 });
            }
            3 if knobs.silent_watches => {
                push(&mut steps, at, group, Action::Silence { replica, cluster, silent: true });
                push(&mut steps, at + lasts, group, Action::Silence { replica, cluster, silent: false });
            }
            3 | 4 => push(&mut steps, at, group, Action::BreakFeed { replica, cluster }),
            5 => {
                push(&mut steps, at, group, Action::ClusterDown { cluster, down: true });
                push(&mut steps, at + lasts.min(8_000), group, Action::ClusterDown { cluster, down: false });
            }
            _ => {
                push(&mut steps, at, group, Action::Flaky { cluster, flaky: true });
                push(&mut steps, at + lasts, group, Action::Flaky { cluster, flaky: false });
            }
        }
    }
    let initial_shards = if rng.random_bool(0.5) { vec!["a"] } else { vec!["a", "b"] };
    let initial = MapStep::Settled { epoch: 1, shards: initial_shards.clone() };
    group += 1;
    map_changes(&mut rng, knobs, initial_shards, group, &mut steps);
    steps.sort_by_key(|s| s.at_ms);
    Plan { intents, steps, initial, knobs }
}

/// Up to three map changes, each rolled out replica by replica in three
/// steps: one group, since a change must not start before the last settled.
fn map_changes(rng: &mut StdRng, knobs: Knobs, mut shards: Vec<&'static str>, group: usize, steps: &mut Vec<Step>) {
    let mut at = rng.random_range(2_000..20_000);
    for epoch in 1..=3 {
        let absent: Vec<&'static str> = CLUSTERS.iter().copied().filter(|c| !shards.contains(c)).collect();
        let remove = knobs.removals && shards.len() > 1 && (absent.is_empty() || rng.random_bool(0.5));
        let next: Vec<&'static str> = if remove {
            let gone = shards[rng.random_range(0..shards.len())];
            shards.iter().copied().filter(|s| *s != gone).collect()
        } else if let Some(added) = absent.first() {
            shards.iter().copied().chain([*added]).collect()
        } else {
            return;
        };
        let rollout = |step: &MapStep, at: &mut u64, rng: &mut StdRng, steps: &mut Vec<Step>| {
            let mut order: Vec<usize> = (0..REPLICAS).collect();
            order.rotate_left(rng.random_range(0..REPLICAS));
            for replica in order {
                *at += rng.random_range(100..3_000);
                steps.push(Step { at_ms: *at, group, action: Action::Rollout { replica, step: step.clone() } });
            }
        };
        let announce = MapStep::Announce { epoch, shards: shards.clone(), next: next.clone() };
        let switch = MapStep::Switch { epoch: epoch + 1, shards: next.clone(), previous: shards.clone() };
        let settled = MapStep::Settled { epoch: epoch + 1, shards: next.clone() };
        // A laggard: one replica stays on the settled old map while the others switch.
        let laggard = knobs.laggards && rng.random_bool(0.5);
        if laggard {
            let late = rng.random_range(0..REPLICAS);
            let mut t = at;
            for replica in (0..REPLICAS).filter(|r| *r != late) {
                t += rng.random_range(100..1_500);
                steps.push(Step { at_ms: t, group, action: Action::Rollout { replica, step: announce.clone() } });
            }
            for replica in (0..REPLICAS).filter(|r| *r != late) {
                t += rng.random_range(100..1_500);
                steps.push(Step { at_ms: t, group, action: Action::Rollout { replica, step: switch.clone() } });
            }
            t += rng.random_range(1_000..8_000);
            steps.push(Step { at_ms: t, group, action: Action::Rollout { replica: late, step: switch.clone() } });
            at = t;
        } else {
            rollout(&announce, &mut at, rng, steps);
            at += rng.random_range(500..5_000);
            rollout(&switch, &mut at, rng, steps);
        }
        if knobs.settle_by_rule {
            // README: --max-retention plus --max-lease-ttl after the switch finished.
            at += crate::world::MAX_RETENTION_MS + crate::world::MAX_LEASE_TTL_MS + rng.random_range(0..3_000);
        } else {
            at += rng.random_range(500..5_000);
            steps.push(Step { at_ms: at, group, action: Action::AwaitSafeSettle { settled: next.clone() } });
        }
        rollout(&settled, &mut at, rng, steps);
        shards = next;
        at += rng.random_range(2_000..15_000);
        if at > DURATION_MS {
            return;
        }
    }
}

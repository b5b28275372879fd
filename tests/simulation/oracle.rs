//! The oracle: what callers were told, checked as each answer arrives
//! against what DESIGN.md promises, using only what a caller could know
//! (when it sent a call, when the answer came, what it said) and a fenced
//! ledger standing in for the resource the owners write to.
//!
//! Owners time their lease from when they sent the Begin (or Extend) that
//! gave it, for the TTL they asked for (README: callers time work from the
//! TTL, not by comparing `lease_expires_at` with their own clock).

use std::collections::BTreeSet;

use crate::plan::{Intent, KEYS};
use crate::world::{DEFAULT_RETENTION_MS, MAX_SKEW_MS};

/// How long after a ForgetRecord any replica may still replay the forgotten
/// result. The bound every replica must keep, feed cut or not.
pub const FORGOTTEN_REPLAY_BOUND_MS: u64 = 5_000;

#[derive(Debug, Clone)]
pub enum Answer {
    Acquired {
        token: u64,
        attempt: u32,
        recovered_from: Option<u32>,
        ttl_ms: u64,
        request_id: String,
    },
    /// A completed or failed record's result, as `i{intent}/p{payload}/t{token}`.
    Replayed(String),
    Busy,
    KeyReused,
    NotFound,
    Error,
}

struct Owner {
    intent: usize,
    token: u64,
    attempt: u32,
    ttl_ms: u64,
    sent_ms: u64,
    /// The soonest its record may have been written: a retry handed back an
    /// attempt that an earlier call with its request_id, whose answer was
    /// lost, may have created.
    created_ms: u64,
    answered_ms: u64,
    /// Until when the owner may act, as it was told, and when it sent the
    /// call that told it.
    live_until_ms: u64,
    granted_ms: u64,
    /// When the earliest acknowledged Complete or Fail of this attempt was sent.
    finished_sent_ms: Option<u64>,
    finishes_in_flight: u32,
    /// A finish whose outcome is unknown (the store failed mid-call).
    maybe_finished: bool,
    /// Attempts acquired while this owner was live, when its finish was still
    /// in flight: (answered at, token). Resolved when the finish answers.
    taken_over_at: Vec<(u64, u64)>,
    /// When the result of each Complete or final Fail sent would go.
    kept_until: Vec<u64>,
}

/// A result the coordinator acknowledged storing (Complete, or a final Fail).
struct Kept {
    token: u64,
    result: String,
    sent_ms: u64,
    acked_ms: u64,
    /// The soonest its retention may end: a repeated finish is answered
    /// with the record as the first one (perhaps unacknowledged) wrote it.
    until_ms: u64,
}

struct Begun {
    payload: u8,
    sent_ms: u64,
    answered_ms: Option<u64>,
    /// The retrying intent whose request_id it carried, if it was a retry.
    retry_of: Option<usize>,
    /// Answered with an error: it may have written an attempt all the same.
    ambiguous: bool,
}

struct Forget {
    sent_ms: u64,
    answered_ms: Option<u64>,
    /// The token of the record it deleted, when acknowledged.
    deleted: Option<u64>,
}

#[derive(Default)]
struct KeyModel {
    owners: Vec<Owner>,
    kept: Vec<Kept>,
    begun: Vec<Begun>,
    forgets: Vec<Forget>,
    ledger_high: u64,
}

impl KeyModel {
    /// Whether a forget may have run between `from` and `to`.
    fn forget_between(&self, from: u64, to: u64) -> bool {
        self.forgets.iter().any(|f| f.sent_ms <= to && f.answered_ms.is_none_or(|a| a >= from))
    }

    /// The results that must still be there at `sent..answered`: acknowledged
    /// before the call was sent, within retention, and not possibly forgotten.
    fn must_hold(&self, sent: u64, answered: u64) -> Option<&Kept> {
        self.kept
            .iter()
            .rev()
            .find(|k| k.acked_ms <= sent && answered < k.until_ms && !self.forget_between(k.sent_ms, answered))
    }

    /// Checks a result read back (a replay or a Lookup).
    fn check_replay(&self, result: &str, sent: u64, answered: u64) -> Result<(), String> {
        let token = parse(result).map(|(_, _, token)| token);
        if let Some(forget) = self.forgets.iter().find(|f| f.deleted.is_some() && f.deleted == token)
            && let Some(acked) = forget.answered_ms
            && acked + FORGOTTEN_REPLAY_BOUND_MS <= sent
        {
            return Err(format!(
                "replayed {result}, forgotten at {acked} ms, {} ms after the forget (bound {FORGOTTEN_REPLAY_BOUND_MS} ms)",
                sent - acked
            ));
        }
        if let Some(kept) = self.must_hold(sent, answered)
            && kept.result != result
        {
            return Err(format!("replayed {result} but {} was acknowledged at {} ms", kept.result, kept.acked_ms));
        }
        Ok(())
    }
}

pub struct Oracle {
    pub intents: Vec<Intent>,
    keys: Vec<KeyModel>,
    /// Begins in flight: step index -> (key, position in `begun`).
    begins: std::collections::BTreeMap<usize, (usize, usize)>,
    pub violations: Vec<String>,
}

fn parse(result: &str) -> Option<(usize, u8, u64)> {
    let mut parts = result.split('/');
    let intent = parts.next()?.strip_prefix('i')?.parse().ok()?;
    let payload = parts.next()?.strip_prefix('p')?.parse().ok()?;
    let token = parts.next()?.strip_prefix('t')?.parse().ok()?;
    Some((intent, payload, token))
}

impl Oracle {
    pub fn new(intents: Vec<Intent>) -> Self {
        Self {
            intents,
            keys: (0..KEYS).map(|_| KeyModel::default()).collect(),
            begins: Default::default(),
            violations: Vec::new(),
        }
    }

    pub fn begin_sent(&mut self, key: usize, payload: u8, sent_ms: u64, index: usize, retry_of: Option<usize>) {
        let model = &mut self.keys[key];
        model.begun.push(Begun { payload, sent_ms, answered_ms: None, retry_of, ambiguous: false });
        self.begins.insert(index, (key, model.begun.len() - 1));
    }

    pub fn begin_answered(
        &mut self,
        intent: usize,
        index: usize,
        sent: u64,
        now: u64,
        answer: Answer,
    ) -> Result<(), String> {
        if let Some((key, at)) = self.begins.remove(&index) {
            let begun = &mut self.keys[key].begun[at];
            begun.answered_ms = Some(now);
            begun.ambiguous = matches!(answer, Answer::Error);
        }
        let Intent { key, payload, .. } = self.intents[intent];
        let model = &mut self.keys[key];
        match answer {
            Answer::Acquired { token, attempt, recovered_from, ttl_ms, request_id } => {
                if let Some(must) = model.must_hold(sent, now) {
                    return Err(format!(
                        "k{key}: acquired (token {token}, attempt {attempt}) while {} acknowledged at {} ms is kept until {} ms",
                        must.result, must.acked_ms, must.until_ms
                    ));
                }
                let live = |o: &Owner| o.token != token && o.live_until_ms > now && o.finished_sent_ms.is_none();
                if let Some(owner) = model.owners.iter_mut().find(|o| o.token == token) {
                    // The same attempt handed back to a retry of its Begin.
                    if owner.intent != intent || owner.attempt != attempt {
                        return Err(format!(
                            "k{key}: token {token} handed to i{} (attempt {}) and to i{intent} (attempt {attempt}, request_id {request_id})",
                            owner.intent, owner.attempt
                        ));
                    }
                    // Its lease is now the retry's TTL from the retry, as after an
                    // Extend; unless the attempt has finished (the answer came late).
                    if sent >= owner.granted_ms && owner.finished_sent_ms.is_none() {
                        (owner.granted_ms, owner.live_until_ms) = (sent, sent + ttl_ms);
                    }
                    if let Some(other) = model.owners.iter().find(|o| live(o) && o.token > token) {
                        return Err(format!(
                            "k{key}: token {token} handed back to i{intent} while i{} holds token {} until {} ms",
                            other.intent, other.token, other.live_until_ms
                        ));
                    }
                    return Ok(());
                }
                if let Some(highest) = model.owners.iter().filter(|o| o.answered_ms <= sent).map(|o| o.token).max()
                    && token <= highest
                {
                    return Err(format!(
                        "k{key}: token {token} handed out after token {highest}: fencing tokens must increase"
                    ));
                }
                for owner in model.owners.iter_mut().filter(|o| live(o)) {
                    if owner.finishes_in_flight > 0 || owner.maybe_finished {
                        owner.taken_over_at.push((now, token));
                    } else {
                        return Err(format!(
                            "k{key}: two owners: i{intent} acquired token {token} (attempt {attempt}) while i{} holds token {} (attempt {}) until {} ms",
                            owner.intent, owner.token, owner.attempt, owner.live_until_ms
                        ));
                    }
                }
                // A takeover of an unfinished attempt says what it recovered.
                if let Some(previous) = model.owners.iter().filter(|o| o.answered_ms <= sent).max_by_key(|o| o.token) {
                    let finished = model.kept.iter().any(|k| k.token == previous.token)
                        || previous.maybe_finished
                        || previous.finishes_in_flight > 0
                        || model.forget_between(previous.sent_ms, now);
                    let may_have_expired = now >= previous.created_ms + previous.ttl_ms + DEFAULT_RETENTION_MS;
                    let recovered = recovered_from.is_some_and(|p| p >= previous.attempt) && attempt > previous.attempt;
                    if !(finished || may_have_expired || recovered) {
                        return Err(format!(
                            "k{key}: token {token} attempt {attempt} recovered from {recovered_from:?}, but attempt {} (token {}) was unfinished",
                            previous.attempt, previous.token
                        ));
                    }
                }
                let created_ms = model
                    .begun
                    .iter()
                    .filter(|b| b.retry_of == Some(intent) && (b.ambiguous || b.answered_ms.is_none()))
                    .map(|b| b.sent_ms)
                    .fold(sent, u64::min);
                model.owners.push(Owner {
                    intent,
                    token,
                    attempt,
                    ttl_ms,
                    sent_ms: sent,
                    created_ms,
                    answered_ms: now,
                    live_until_ms: sent + ttl_ms,
                    granted_ms: sent,
                    finished_sent_ms: None,
                    finishes_in_flight: 0,
                    maybe_finished: false,
                    taken_over_at: Vec::new(),
                    kept_until: Vec::new(),
                });
                Ok(())
            }
            Answer::Replayed(result) => {
                if let Some((_, replayed_payload, _)) = parse(&result)
                    && replayed_payload != payload
                {
                    return Err(format!("k{key}: a Begin with payload {payload} was answered with {result}"));
                }
                model.check_replay(&result, sent, now)
            }
            Answer::KeyReused => {
                let since = model
                    .forgets
                    .iter()
                    .filter(|f| {
                        f.deleted.is_some() && f.answered_ms.is_some_and(|a| a + FORGOTTEN_REPLAY_BOUND_MS <= sent)
                    })
                    .map(|f| f.sent_ms)
                    .max()
                    .unwrap_or(0);
                let other = model
                    .begun
                    .iter()
                    .any(|b| b.payload != payload && b.sent_ms < now && b.answered_ms.is_none_or(|a| a >= since));
                if !other {
                    return Err(format!(
                        "k{key}: payload {payload} answered 'key reused' though no other payload was sent since the forget at {since} ms"
                    ));
                }
                if let Some(kept) = model.must_hold(sent, now)
                    && parse(&kept.result).is_some_and(|(_, p, _)| p == payload)
                {
                    return Err(format!("k{key}: 'key reused' for the payload of {} kept", kept.result));
                }
                Ok(())
            }
            Answer::Busy => match model.must_hold(sent, now) {
                Some(kept) if parse(&kept.result).is_some_and(|(_, p, _)| p == payload) => Err(format!(
                    "k{key}: 'in progress' though {} was acknowledged at {} ms",
                    kept.result, kept.acked_ms
                )),
                _ => Ok(()),
            },
            Answer::NotFound | Answer::Error => Ok(()),
        }
    }

    /// The owner's side effect, written to a ledger that refuses a token lower than one it has seen.
    pub fn ledger_write(&mut self, key: usize, token: u64) -> bool {
        let model = &mut self.keys[key];
        if token < model.ledger_high {
            return false;
        }
        model.ledger_high = token;
        true
    }

    /// A Complete or Fail sent; `kept_until` when the result it would keep would go.
    pub fn finish_sent(&mut self, key: usize, token: u64, kept_until: Option<u64>) {
        if let Some(owner) = self.keys[key].owners.iter_mut().find(|o| o.token == token) {
            owner.finishes_in_flight += 1;
            owner.kept_until.extend(kept_until);
        }
    }

    /// A Complete or Fail answered: `kept` is the result it stores (and
    /// whether the ledger took its side effect), `refused` that it certainly
    /// did not happen.
    #[allow(clippy::too_many_arguments)]
    pub fn finished(
        &mut self,
        key: usize,
        token: u64,
        sent: u64,
        now: u64,
        acknowledged: bool,
        kept: Option<(String, bool)>,
        refused: bool,
    ) -> Result<(), String> {
        let model = &mut self.keys[key];
        let Some(owner) = model.owners.iter_mut().find(|o| o.token == token) else { return Ok(()) };
        owner.finishes_in_flight = owner.finishes_in_flight.saturating_sub(1);
        if acknowledged {
            owner.finished_sent_ms = Some(owner.finished_sent_ms.map_or(sent, |s| s.min(sent)));
            let late = owner.taken_over_at.iter().find(|(at, _)| *at < sent).copied();
            owner.taken_over_at.clear();
            if let Some((at, other)) = late {
                return Err(format!(
                    "k{key}: token {token} finished (sent at {sent} ms) after token {other} took over at {at} ms"
                ));
            }
            let until_ms = owner.kept_until.iter().copied().min().unwrap_or(u64::MAX);
            let Some((result, performed)) = kept else { return Ok(()) };
            // A repeat is answered with the record as it is: its retention
            // still runs from the first.
            if model.kept.iter().any(|k| k.token == token) {
                return Ok(());
            }
            if !performed {
                return Err(format!(
                    "k{key}: Complete with token {token} acknowledged, but the fenced ledger refused its side effect (it has seen token {})",
                    model.ledger_high
                ));
            }
            if let Some(earlier) = model.must_hold(sent, now)
                && earlier.token != token
            {
                return Err(format!(
                    "k{key}: {result} acknowledged while {} (acknowledged at {} ms) is kept",
                    earlier.result, earlier.acked_ms
                ));
            }
            model.kept.push(Kept { token, result, sent_ms: sent, acked_ms: now, until_ms });
        } else if refused {
            if owner.finishes_in_flight == 0
                && !owner.maybe_finished
                && let Some((at, other)) = owner.taken_over_at.first().copied()
            {
                return Err(format!(
                    "k{key}: two owners: token {other} acquired at {at} ms while token {token}'s owner was live until {} ms and not finished",
                    owner.live_until_ms
                ));
            }
        } else {
            owner.maybe_finished = true;
            owner.taken_over_at.clear();
        }
        Ok(())
    }

    /// A Complete or Fail sent at `sent` was refused with LEASE_LOST. That
    /// is right only if another attempt may have begun since, or the record
    /// may be gone: otherwise the late owner's word is the truth (DESIGN.md,
    /// Complete), whatever moved the record meanwhile.
    pub fn lease_lost(&self, key: usize, token: u64, sent: u64) -> Result<(), String> {
        let model = &self.keys[key];
        let Some(owner) = model.owners.iter().find(|o| o.token == token) else { return Ok(()) };
        let finished = owner.finished_sent_ms.is_some() || owner.maybe_finished || owner.finishes_in_flight > 0;
        let taken_over = model.owners.iter().any(|o| o.token > token)
            || model
                .begun
                .iter()
                .any(|b| (b.ambiguous || b.answered_ms.is_none()) && b.answered_ms.is_none_or(|a| a >= owner.sent_ms));
        let gone = model.forget_between(owner.sent_ms, sent)
            || sent + MAX_SKEW_MS as u64 >= owner.created_ms + DEFAULT_RETENTION_MS;
        if finished || taken_over || gone {
            return Ok(());
        }
        Err(format!(
            "k{key}: the late finish of token {token} (attempt {}, sent at {sent} ms) was refused as lease lost, though no other attempt began",
            owner.attempt
        ))
    }

    /// An Extend sent at `sent_ms` moved the lease to `until_ms` (earlier,
    /// too, if it asked for a shorter TTL than was left).
    pub fn extended(&mut self, key: usize, token: u64, sent_ms: u64, until_ms: u64) {
        if let Some(owner) = self.keys[key].owners.iter_mut().find(|o| o.token == token)
            && sent_ms >= owner.granted_ms
        {
            (owner.granted_ms, owner.live_until_ms) = (sent_ms, until_ms);
        }
    }

    /// An Extend whose outcome is unknown may have moved the lease earlier:
    /// a careful owner assumes the sooner end.
    pub fn extend_unknown(&mut self, key: usize, token: u64, until_ms: u64) {
        if let Some(owner) = self.keys[key].owners.iter_mut().find(|o| o.token == token) {
            owner.live_until_ms = owner.live_until_ms.min(until_ms);
        }
    }

    pub fn looked_up(&mut self, key: usize, sent: u64, now: u64, seen: Answer) -> Result<(), String> {
        let model = &self.keys[key];
        match seen {
            Answer::Replayed(result) => model.check_replay(&result, sent, now),
            Answer::Busy | Answer::NotFound => match model.must_hold(sent, now) {
                Some(kept) => Err(format!(
                    "k{key}: Lookup saw {seen:?} though {} was acknowledged at {} ms",
                    kept.result, kept.acked_ms
                )),
                None => Ok(()),
            },
            _ => Ok(()),
        }
    }

    pub fn forget_sent(&mut self, key: usize, sent_ms: u64) {
        self.keys[key].forgets.push(Forget { sent_ms, answered_ms: None, deleted: None });
    }

    pub fn forgotten(&mut self, key: usize, sent_ms: u64, token: Option<u64>, now: u64) {
        if let Some(forget) =
            self.keys[key].forgets.iter_mut().find(|f| f.sent_ms == sent_ms && f.answered_ms.is_none())
        {
            forget.answered_ms = Some(now);
            forget.deleted = token;
        }
    }

    /// Tokens the ledger refused, for the trace.
    pub fn summary(&self) -> BTreeSet<String> {
        self.keys.iter().enumerate().map(|(k, m)| format!("k{k}: ledger at token {}", m.ledger_high)).collect()
    }
}

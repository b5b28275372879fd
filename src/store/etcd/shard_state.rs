//! What a sharded store keeps in each etcd cluster besides records: the
//! shard's map state (one key, compared by every write a sharded store
//! makes), and a scan of every record of the cluster, whatever its tenant
//! and namespace, to find records left where a new shard map won't look.

use etcd_client::{Client, Compare, CompareOp, GetOptions, Txn, TxnOp};
use std::time::Duration;

use tokio::time::{Instant, timeout_at};

use crate::core::error::Error;
use crate::core::record::{RecordId, Versioned};
use crate::core::store::{Scan, ShardState};
use crate::store::etcd::format::decode_record;
use crate::store::etcd::keys;

/// Where the shard state lives. No tenant encodes to a component that
/// starts `%s`: the encoder writes `%` only before two upper-case hex digits.
pub fn state_key(prefix: &str) -> String {
    format!("{prefix}{STATE_KEY}")
}

const STATE_KEY: &str = "%shard-state";

fn unavailable(e: impl std::fmt::Display) -> Error {
    Error::StoreUnavailable(e.to_string())
}

fn late(_: tokio::time::error::Elapsed) -> Error {
    unavailable("etcd did not answer in time")
}

pub fn encode(state: &ShardState) -> String {
    serde_json::json!({
        "step": state.step,
        "generation": state.generation,
        "settle_checked": state.settle_checked,
        "placements": state.placements,
    })
    .to_string()
}

pub fn decode(key: &str, value: &[u8]) -> Result<ShardState, Error> {
    #[derive(serde::Deserialize)]
    struct Stored {
        step: u64,
        generation: u64,
        settle_checked: bool,
        #[serde(default)]
        placements: Vec<(u64, String)>,
    }
    let stored: Stored = serde_json::from_slice(value)
        .map_err(|e| Error::Internal(format!("the shard state at {key:?} cannot be read: {e}")))?;
    Ok(ShardState {
        step: stored.step,
        generation: stored.generation,
        settle_checked: stored.settle_checked,
        placements: stored.placements,
    })
}

pub async fn read(client: &Client, prefix: &str, deadline: Instant) -> Result<Option<Versioned<ShardState>>, Error> {
    let key = state_key(prefix);
    let answer = timeout_at(deadline, client.kv_client().get(key.as_str(), None)).await.map_err(late)?;
    let answer = answer.map_err(unavailable)?;
    answer
        .kvs()
        .first()
        .map(|kv| Ok(Versioned { value: decode(&key, kv.value())?, revision: kv.mod_revision() }))
        .transpose()
}

pub async fn put(
    client: &Client,
    prefix: &str,
    expected: i64,
    state: ShardState,
    deadline: Instant,
) -> Result<bool, Error> {
    let key = state_key(prefix);
    let txn = Txn::new()
        .when([Compare::mod_revision(key.as_str(), CompareOp::Equal, expected)])
        .and_then([TxnOp::put(key.as_str(), encode(&state), None)]);
    let answer = timeout_at(deadline, client.kv_client().txn(txn)).await.map_err(late)?;
    Ok(answer.map_err(unavailable)?.succeeded())
}

/// How much longer etcd keeps `key`, if it is still as written at
/// `revision`: the time to live of its lease, which etcd measures.
pub async fn lease_left(
    client: &Client,
    key: &str,
    revision: i64,
    deadline: Instant,
) -> Result<Option<Duration>, Error> {
    let answer = timeout_at(deadline, client.kv_client().get(key, None)).await.map_err(late)?;
    let Some(kv) = answer.map_err(unavailable)?.kvs().first().filter(|kv| kv.mod_revision() == revision).cloned()
    else {
        return Ok(None);
    };
    if kv.lease() == 0 {
        return Err(Error::Internal(format!("the record at {key} has no lease")));
    }
    let ttl = timeout_at(deadline, client.lease_client().time_to_live(kv.lease(), None)).await.map_err(late)?;
    // -1: the lease ran out between the two reads.
    Ok(u64::try_from(ttl.map_err(unavailable)?.ttl()).ok().map(Duration::from_secs))
}

/// Records and lone locks in key order, `limit` ids at most. The token is
/// the key the next page starts at.
pub async fn scan(client: &Client, prefix: &str, after: &str, limit: usize, deadline: Instant) -> Result<Scan, Error> {
    let start = if after.is_empty() { prefix.to_owned() } else { after.to_owned() };
    // An id has at most two keys: enough for `limit` ids and one more.
    let options = GetOptions::new().with_range(keys::range_end(prefix)).with_limit(2 * limit as i64 + 2);
    let answer = timeout_at(deadline, client.kv_client().get(start, Some(options))).await.map_err(late)?;
    let answer = answer.map_err(unavailable)?;
    let mut scan = Scan::default();
    let (mut scopes, mut last_key) = (Vec::<String>::new(), None);
    for kv in answer.kvs() {
        last_key = Some(kv.key().to_vec());
        // Tombstones and the shard state; a tenant may start with `%` too
        // (`:` is encoded `%3A`), but never `%f` or `%s`.
        let Some(rest) = kv.key_str().ok().and_then(|k| k.strip_prefix(prefix)) else { continue };
        if rest == STATE_KEY || rest.starts_with(keys::FORGOTTEN_COMPONENT) {
            continue;
        }
        let parts: Vec<&str> = rest.split('/').collect();
        let [tenant, namespace, key, part] = parts[..] else { continue };
        let scope = format!("{prefix}{tenant}/{namespace}/{key}/");
        if scopes.last() != Some(&scope) {
            if scan.entries.len() == limit {
                scan.next = Some(scope);
                return Ok(scan);
            }
            let id = RecordId {
                tenant: keys::decode_component(tenant),
                namespace: keys::decode_component(namespace),
                key: keys::decode_component(key),
            };
            scan.entries.push((id, None));
            scopes.push(scope);
        }
        if part == "record"
            && let Some(entry) = scan.entries.last_mut()
        {
            entry.1 = Some(decode_record(kv.key(), kv.value(), kv.mod_revision())?);
        }
    }
    if answer.more() {
        // The last id's keys may go on in the next page: it starts there.
        scan.next = match (scan.entries.len() > 1, scopes.pop()) {
            (true, Some(scope)) => {
                scan.entries.pop();
                Some(scope)
            }
            // Nothing but tombstones, or one id: go on after the last key.
            _ => last_key.map(|mut key| {
                key.push(0);
                String::from_utf8_lossy(&key).into_owned()
            }),
        };
    }
    Ok(scan)
}

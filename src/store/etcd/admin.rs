//! The operators' calls on etcd: a namespace's records a page at a time (a
//! range read), forgetting a finished record (a delete guarded by its
//! revision and the lock's absence, with a tombstone beside it), and the
//! feed of tombstones every replica follows to drop its cached replays.

use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp, EventType, GetOptions, PutOptions, Txn, TxnOp, WatchOptions};
use tokio::sync::mpsc;
use tokio::time::{Instant, timeout_at};
use tokio_stream::wrappers::ReceiverStream;
use tracing::warn;

use crate::core::error::Error;
use crate::core::record::RecordId;
use crate::core::store::{FEED_ALIVE_EVERY, FeedEvent, Forgotten, Listing, Page};
use crate::store::etcd::format::{decode_lock, decode_record};
use crate::store::etcd::keys::{self, RecordKeys};

/// How long a tombstone stays: far longer than a watch takes to deliver it,
/// and a replica whose watch broke drops every replay anyway.
const TOMBSTONE_TTL: i64 = 60;

/// How soon a replica's broken feed is watched again.
const REWATCH_AFTER: Duration = Duration::from_secs(1);

fn unavailable(e: impl std::fmt::Display) -> Error {
    Error::StoreUnavailable(e.to_string())
}

/// Records of a namespace in key order. The token is the last record's
/// encoded key component; the next page starts after all of that record's
/// keys (`…/{component}/lock`, `…/{component}/record` sort before `…/{component}/~`).
pub async fn list(client: &Client, prefix: &str, page: &Page, deadline: Instant) -> Result<Listing, Error> {
    let (scope, limit) = (keys::namespace_scope(prefix, &page.tenant, &page.namespace), page.limit);
    let start = if page.after.is_empty() { scope.clone() } else { format!("{scope}{}/~", page.after) };
    // A record has at most two keys: enough for `limit` records and one more.
    let options = GetOptions::new().with_range(keys::range_end(&scope)).with_limit(2 * limit as i64 + 2);
    let answer = timeout_at(deadline, client.kv_client().get(start, Some(options)))
        .await
        .map_err(|_| unavailable("etcd did not answer the listing in time"))?
        .map_err(unavailable)?;
    let (mut records, mut last, mut lock) = (Vec::new(), None::<String>, None);
    for kv in answer.kvs() {
        let Some((component, part)) = kv.key_str().ok().and_then(|k| k.strip_prefix(&scope)?.split_once('/')) else {
            continue;
        };
        match part {
            // A record's lock sorts before it.
            "lock" => lock = Some((component.to_owned(), decode_lock(kv.key(), kv.value(), kv.mod_revision())?)),
            "record" => {
                if records.len() == limit {
                    return Ok(Listing { records, next: last });
                }
                let record = decode_record(kv.key(), kv.value(), kv.mod_revision())?;
                let own_lock = lock.take().filter(|(c, _)| c == component).map(|(_, l)| l);
                records.push((keys::decode_component(component), record, own_lock));
                last = Some(component.to_owned());
            }
            _ => {}
        }
    }
    Ok(Listing { records, next: if answer.more() { last } else { None } })
}

/// Deletes the record if it is unchanged since `record_revision` and has no
/// lock, and puts a short-lived tombstone for the other replicas' feeds.
pub async fn forget(
    client: &Client,
    prefix: &str,
    id: &RecordId,
    record_revision: i64,
    deadline: Instant,
) -> Result<Option<i64>, Error> {
    let keys = RecordKeys::new(prefix, id);
    let late = |_| unavailable("etcd did not answer in time");
    let lease = timeout_at(deadline, client.lease_client().grant(TOMBSTONE_TTL, None))
        .await
        .map_err(late)?
        .map_err(unavailable)?;
    let txn = Txn::new()
        .when([
            Compare::mod_revision(keys.record.as_str(), CompareOp::Equal, record_revision),
            Compare::version(keys.lock.as_str(), CompareOp::Equal, 0),
        ])
        .and_then([
            TxnOp::delete(keys.record.as_str(), None),
            TxnOp::put(keys::forgotten_key(prefix, id), "", Some(PutOptions::new().with_lease(lease.id()))),
        ]);
    let answer = timeout_at(deadline, client.kv_client().txn(txn)).await.map_err(late)?.map_err(unavailable)?;
    Ok(answer.succeeded().then(|| answer.header().map(|h| h.revision()).unwrap_or_default()))
}

/// Every tombstone put from now on, for as long as the feed is held;
/// `Restarted` each time the watch (re)starts, since tombstones may have been
/// missed. Every [`FEED_ALIVE_EVERY`], one at a time, the feed makes a
/// linearizable read (which only a member with a leader and a quorum
/// answers) and then asks for a progress notification on the watch; when
/// that comes it says `Alive` as of when it asked. So a watch whose
/// connection died silently, a member cut off from its leader and a link
/// that delivers seconds late all fall silent instead of looking fresh.
pub fn forgotten(client: impl Fn() -> Option<Client> + Send + 'static, prefix: String) -> Forgotten {
    let (sender, receiver) = mpsc::channel(256);
    let send = move |event| {
        let sender = sender.clone();
        async move { sender.send((0, event)).await.is_ok() }
    };
    tokio::spawn(async move {
        let scope = keys::forgotten_scope(&prefix);
        loop {
            let Some(client) = client() else {
                tokio::time::sleep(REWATCH_AFTER).await;
                continue;
            };
            match client.watch_client().watch(scope.as_str(), Some(WatchOptions::new().with_prefix())).await {
                Ok(stream) => {
                    if !send(FeedEvent::Restarted).await {
                        return;
                    }
                    let (mut requests, mut responses) = stream.split();
                    let mut ask = tokio::time::interval(FEED_ALIVE_EVERY);
                    // When the progress request in flight was made, if one is.
                    let mut asked: Option<Instant> = None;
                    loop {
                        tokio::select! {
                            // One request at a time; one never answered is asked again.
                            _ = ask.tick(), if asked.is_none_or(|at| at.elapsed() > 5 * FEED_ALIVE_EVERY) => {
                                let at = Instant::now();
                                let mut kv = client.kv_client();
                                let read = tokio::time::timeout(FEED_ALIVE_EVERY, kv.get(scope.as_str(), None));
                                if !matches!(read.await, Ok(Ok(_))) {
                                    continue;
                                }
                                if requests.request_progress().await.is_err() {
                                    break;
                                }
                                asked = Some(at);
                            }
                            response = responses.message() => {
                                let Ok(Some(response)) = response else { break };
                                if response.canceled() {
                                    break;
                                }
                                // A progress notification: no events, not the creation.
                                let progress = response.events().is_empty() && !response.created();
                                if let Some(at) = asked.take_if(|_| progress)
                                    && !send(FeedEvent::Alive(at)).await
                                {
                                    return;
                                }
                                for event in response.events().iter().filter(|e| e.event_type() == EventType::Put) {
                                    let Some(id) = event.kv().and_then(|kv| keys::forgotten_id(&prefix, kv.key())) else {
                                        continue;
                                    };
                                    if !send(FeedEvent::Forgotten(id)).await {
                                        return;
                                    }
                                }
                            }
                        }
                    }
                    warn!("the watch on forgotten records ended; watching again");
                }
                Err(error) => warn!(%error, "cannot watch forgotten records; trying again"),
            }
            tokio::time::sleep(REWATCH_AFTER).await;
        }
    });
    Forgotten { sources: 1, events: Box::pin(ReceiverStream::new(receiver)) }
}

//! The HTTP gateway end to end, real parts only: a charging service on a
//! loopback port, the coordinator on a real etcd, the gateway between them,
//! and a real HTTP client (reqwest). Every test ends by checking that each
//! key caused at most one charge, and exactly one where the client was told
//! the payment happened.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use common::charging_service::ChargingService;
use common::gateway_harness::{Answer, CALLER, Gateway, Setup, plaintext, send};
use common::pki::Pki;
use common::{Etcd, Server, free_port};
use idempotency_coordinator::cli::ClientArgs;
use idempotency_coordinator::gateway::identity::IdentitySource;
use idempotency_coordinator::proto::v1::{
    self,
    coordinator_service_client::CoordinatorServiceClient,
    coordinator_service_server::{CoordinatorService, CoordinatorServiceServer},
};
use idempotency_coordinator::shell::auth::tokens::hash_token;
use reqwest::StatusCode;

const ROUTES: &str = r#"
[[route]]
name = "payments"
methods = ["POST"]
path = "/payments"
identity = "authorization"
namespace = "payments.create"
lease_ttl = "2s"
upstream_timeout = "10s"
ignore_fields = ["/sent_at"]
retryable_4xx = [429]
max_request_bytes = 4096
max_stored_response_bytes = 8192

[[route]]
name = "payments-waiting"
methods = ["POST"]
path = "/waiting/payments"
identity = "authorization"
namespace = "payments.waiting"
lease_ttl = "2s"
wait = "10s"

[[route]]
name = "payments-fail-open"
methods = ["POST"]
path = "/open/payments"
identity = "authorization"
namespace = "payments.open"
fail_open = true

[[route]]
name = "payments-key-optional"
methods = ["POST"]
path = "/optional/payments"
identity = "authorization"
namespace = "payments.optional"
key = "optional"

[[route]]
name = "payments-handed-back"
methods = ["POST"]
path = "/handed-back/payments"
identity = "authorization"
namespace = "payments.handback"
lease_ttl = "4s"
wait = "10s"

[[route]]
name = "payments-impatient"
methods = ["POST"]
path = "/impatient/payments"
identity = "authorization"
namespace = "payments.impatient"
lease_ttl = "2s"
upstream_timeout = "1s"
"#;

#[tokio::test]
async fn a_double_submit_charges_once_and_replays_the_created_answer_byte_for_byte() {
    let setup = Setup::start(ROUTES).await;
    let first = send(setup.pay("/payments", "double-1", r#"{"amount":1000,"sent_at":"09:00"}"#)).await;
    assert_eq!(first.status, StatusCode::CREATED, "{:?}", first.body);
    assert!(!first.replayed());
    assert_eq!(first.header("cache-control"), Some("no-store"));
    assert!(first.header("x-served-at").is_some(), "the first answer is the service's own, every header");

    // The same request, re-sent with a changed volatile field the route ignores.
    let second = send(setup.pay("/payments", "double-1", r#"{ "sent_at": "09:01", "amount": 1000 }"#)).await;
    assert_eq!(second.status, StatusCode::CREATED);
    assert!(second.replayed(), "a replay says it is one");
    assert_eq!(second.header("cache-control"), Some("no-store"));
    for name in ["location", "etag", "content-type"] {
        assert_eq!(second.header(name), first.header(name), "{name} is replayed");
    }
    assert_eq!(second.body, first.body, "the body is replayed byte for byte");
    assert_eq!(second.header("x-served-at"), None, "headers not named for replay are not stored");

    assert_eq!(setup.charges("double-1"), 1);
    assert_eq!(setup.service.ledger.requests(), 1, "a replay never reaches the service");
    let tokens = setup.service.ledger.tokens("\"double-1\"");
    assert!(tokens[0].is_some_and(|t| t > 0), "the service got the fencing token: {tokens:?}");
}

/// Issue 27, 2: unmatched paths and optional routes without a key passed the
/// client's own fencing token upstream (18446744073709551615 seen), pushing a
/// ledger's highest token beyond every real one.
#[tokio::test]
async fn a_client_never_sets_the_fencing_token_the_service_sees() {
    let setup = Setup::start(ROUTES).await;
    let spoofed = "18446744073709551615";
    let unrouted = setup.pay("/unrouted/payments", "spoof-1", "{}").header("idempotency-fencing-token", spoofed);
    assert_eq!(send(unrouted).await.status, StatusCode::CREATED);
    let unkeyed = setup
        .http
        .post(setup.gateway.url("/optional/payments"))
        .header("content-type", "application/json")
        .header("idempotency-fencing-token", spoofed)
        .body("{}");
    assert_eq!(send(unkeyed).await.status, StatusCode::CREATED);
    let protected = setup
        .pay("/payments", "spoof-2", "{}")
        .header("idempotency-fencing-token", spoofed)
        .header("idempotency-recovered", "true")
        // Servers in the CGI tradition read `_` as `-`.
        .header("idempotency_fencing_token", spoofed)
        .header("Idempotency_Recovered", "true");
    assert_eq!(send(protected).await.status, StatusCode::CREATED);
    let recovered = (setup.service.ledger.seen().iter())
        .filter(|(_, h)| h.keys().any(|name| name.as_str().replace('_', "-") == "idempotency-recovered"))
        .count();
    assert_eq!(recovered, 0, "a client never says an attempt is recovered");
    let underscored =
        setup.service.ledger.seen().iter().filter(|(_, h)| h.contains_key("idempotency_fencing_token")).count();
    assert_eq!(underscored, 0, "a client never sets the token under an underscored name");
    assert_eq!(setup.service.ledger.tokens("\"spoof-1\""), vec![None], "an unmatched path passed the client's token");
    assert_eq!(setup.service.ledger.tokens(""), vec![None], "an unkeyed request passed the client's token");
    let tokens = setup.service.ledger.tokens("\"spoof-2\"");
    assert!(tokens.len() == 1 && tokens[0].is_some_and(|t| t.to_string() != spoofed), "{tokens:?}");
}

#[tokio::test]
async fn http2_clients_get_the_same_protection() {
    let setup = Setup::start(ROUTES).await;
    let h2 = reqwest::Client::builder().http2_prior_knowledge().build().expect("an h2c client");
    let pay = || {
        h2.post(setup.gateway.url("/payments"))
            .header("idempotency-key", "\"h2-1\"")
            .header("authorization", CALLER)
            .header("content-type", "application/json")
            .body(r#"{"amount":5}"#)
    };
    let first = Answer::of(pay().send().await.expect("an answer")).await;
    let second = Answer::of(pay().send().await.expect("an answer")).await;
    assert_eq!((first.status, first.replayed()), (StatusCode::CREATED, false));
    assert_eq!((second.status, second.replayed()), (StatusCode::CREATED, true));
    assert_eq!(second.body, first.body);
    assert_eq!(setup.charges("h2-1"), 1);
}

#[tokio::test]
async fn a_retry_after_a_client_timeout_waits_for_the_first_attempt_instead_of_charging_again() {
    let setup = Setup::start(ROUTES).await;
    let slow = setup
        .pay("/payments", "timeout-1", r#"{"amount":700}"#)
        .header("x-test-delay-ms", "1500")
        .timeout(Duration::from_millis(300));
    assert!(slow.send().await.expect_err("the client gives up").is_timeout());

    // The service is still working on it: the retry is told so, not run.
    let busy = send(setup.pay("/payments", "timeout-1", r#"{"amount":700}"#)).await;
    assert_eq!(busy.status, StatusCode::CONFLICT);
    assert_eq!(busy.problem_type(), "urn:idempotency-gateway:request-in-progress");
    let retry_after: u64 = busy.header("retry-after").expect("Retry-After").parse().expect("seconds");
    assert!((1..=5).contains(&retry_after), "{retry_after}");

    // The first attempt finishes although its client hung up; the next retry replays it.
    let deadline = Instant::now() + Duration::from_secs(10);
    let done = loop {
        let answer = send(setup.pay("/payments", "timeout-1", r#"{"amount":700}"#)).await;
        if answer.status != StatusCode::CONFLICT || Instant::now() > deadline {
            break answer;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!((done.status, done.replayed()), (StatusCode::CREATED, true));
    assert_eq!(setup.charges("timeout-1"), 1);
}

#[tokio::test]
async fn a_route_that_waits_holds_the_retry_until_the_first_request_finishes() {
    let setup = Setup::start(ROUTES).await;
    let first = tokio::spawn(
        setup.pay("/waiting/payments", "wait-1", r#"{"amount":1}"#).header("x-test-delay-ms", "1000").send(),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let held = send(setup.pay("/waiting/payments", "wait-1", r#"{"amount":1}"#)).await;
    let first = Answer::of(first.await.expect("joined").expect("an answer")).await;
    assert_eq!((first.status, first.replayed()), (StatusCode::CREATED, false));
    assert_eq!((held.status, held.replayed()), (StatusCode::CREATED, true), "{:?}", held.body);
    assert_eq!(held.body, first.body);
    assert_eq!(setup.charges("wait-1"), 1);
}

#[tokio::test]
async fn concurrent_retries_charge_once() {
    let setup = Setup::start(ROUTES).await;
    let attempts: Vec<_> = (0..8)
        .map(|_| {
            tokio::spawn(setup.pay("/payments", "burst-1", r#"{"amount":42}"#).header("x-test-delay-ms", "500").send())
        })
        .collect();
    let mut statuses = Vec::new();
    for attempt in attempts {
        let answer = Answer::of(attempt.await.expect("joined").expect("an answer")).await;
        statuses.push((answer.status, answer.replayed()));
    }
    let executed = statuses.iter().filter(|s| **s == (StatusCode::CREATED, false)).count();
    assert_eq!(executed, 1, "{statuses:?}");
    assert!(
        statuses.iter().all(|s| *s == (StatusCode::CREATED, false)
            || *s == (StatusCode::CREATED, true)
            || s.0 == StatusCode::CONFLICT),
        "{statuses:?}"
    );
    assert_eq!(setup.charges("burst-1"), 1);
    assert_eq!(setup.service.ledger.requests(), 1);
}

#[tokio::test]
async fn a_key_reused_with_another_body_is_refused_and_never_forwarded() {
    let setup = Setup::start(ROUTES).await;
    let first = send(setup.pay("/payments", "cart-1", r#"{"cart":["book"]}"#)).await;
    assert_eq!(first.status, StatusCode::CREATED);
    let reused = send(setup.pay("/payments", "cart-1", r#"{"cart":["book","lamp"]}"#)).await;
    assert_eq!(reused.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(reused.problem_type(), "urn:idempotency-gateway:idempotency-key-reused");
    assert_eq!(reused.header("cache-control"), Some("no-store"));
    // Another path is another request too.
    let elsewhere = send(setup.pay("/payments?currency=eur", "cart-1", r#"{"cart":["book"]}"#)).await;
    assert_eq!(elsewhere.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(setup.service.ledger.requests(), 1);
    assert_eq!(setup.charges("cart-1"), 1);
}

/// Issue 26: two account ids that a double cannot tell apart fingerprinted
/// alike, so the second request was answered with the first one's charge.
#[tokio::test]
async fn a_json_number_a_double_cannot_hold_is_400_naming_it_and_never_forwarded() {
    let setup = Setup::start(ROUTES).await;
    for body in [r#"{"account_id":1234567890123456789}"#, r#"{"account_id":1234567890123456788}"#] {
        let refused = send(setup.pay("/payments", "account-1", body)).await;
        assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{body}: {:?}", refused.body);
        assert_eq!(refused.problem_type(), "urn:idempotency-gateway:json-number-inexact");
        let document: serde_json::Value = serde_json::from_slice(&refused.body).expect("problem+json");
        assert_eq!(document["pointer"], "/account_id");
        assert!(document["detail"].as_str().expect("a detail").contains("send it as a string"), "{document}");
    }
    assert_eq!(setup.service.ledger.requests(), 0);
    // The same id as a string is an ordinary request.
    let as_string = send(setup.pay("/payments", "account-1", r#"{"account_id":"1234567890123456789"}"#)).await;
    assert_eq!(as_string.status, StatusCode::CREATED);
}

#[tokio::test]
async fn an_upstream_500_releases_the_key_so_the_retry_runs() {
    let setup = Setup::start(ROUTES).await;
    let failed = send(setup.pay("/payments", "flaky-1", r#"{"amount":3}"#).header("x-test-status", "500")).await;
    assert_eq!(failed.status, StatusCode::INTERNAL_SERVER_ERROR, "the service's own answer is passed on");
    assert_eq!(failed.header("content-type"), Some("application/json"));
    assert_eq!(failed.header("cache-control"), Some("no-store"));
    let retried = send(setup.pay("/payments", "flaky-1", r#"{"amount":3}"#)).await;
    assert_eq!((retried.status, retried.replayed()), (StatusCode::CREATED, false));
    assert_eq!(setup.charges("flaky-1"), 1);
    assert_eq!(setup.service.ledger.requests(), 2);
}

#[tokio::test]
async fn a_final_4xx_is_stored_and_a_retryable_one_is_not() {
    let setup = Setup::start(ROUTES).await;
    let declined = send(setup.pay("/payments", "declined-1", "{}").header("x-test-status", "402")).await;
    assert_eq!(declined.status, StatusCode::PAYMENT_REQUIRED);
    let again = send(setup.pay("/payments", "declined-1", "{}")).await;
    assert_eq!((again.status, again.replayed()), (StatusCode::PAYMENT_REQUIRED, true), "a final 4xx is the answer");
    assert_eq!(again.body, declined.body);

    let limited = send(setup.pay("/payments", "limited-1", "{}").header("x-test-status", "429")).await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    let retried = send(setup.pay("/payments", "limited-1", "{}")).await;
    assert_eq!((retried.status, retried.replayed()), (StatusCode::CREATED, false), "429 is configured as retryable");
    assert_eq!(setup.charges("declined-1"), 0);
    assert_eq!(setup.charges("limited-1"), 1);
}

/// Retries `request` while it is answered 409 in-progress, for up to `within`.
async fn retry_while_in_progress(request: impl Fn() -> reqwest::RequestBuilder, within: Duration) -> Answer {
    let deadline = Instant::now() + within;
    loop {
        let answer = send(request()).await;
        if answer.status != StatusCode::CONFLICT || Instant::now() > deadline {
            return answer;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Issue 27, items 2 and 4: a request that may have reached the service
/// (it was sent, and the connection broke before a status line) does not
/// release its key at once, so a retry cannot run beside it; once the lease
/// lapses, the retry runs as a recovered attempt and the service is told so.
#[tokio::test]
async fn a_service_killed_mid_request_holds_the_key_until_its_lease_lapses_then_the_retry_is_marked_recovered() {
    let mut setup = Setup::start(ROUTES).await;
    let doomed =
        tokio::spawn(setup.pay("/payments", "crash-1", r#"{"amount":9}"#).header("x-test-delay-ms", "2000").send());
    tokio::time::sleep(Duration::from_millis(400)).await;
    setup.service.kill();
    let doomed = Answer::of(doomed.await.expect("joined").expect("an answer")).await;
    assert_eq!(doomed.status, StatusCode::BAD_GATEWAY);
    assert_eq!(doomed.problem_type(), "urn:idempotency-gateway:upstream-unreachable");
    assert_eq!(doomed.header("retry-after"), Some("2"), "the lease's time");

    setup.service.restart().await;
    let pay = || setup.pay("/payments", "crash-1", r#"{"amount":9}"#);
    let held = send(pay()).await;
    assert_eq!(held.status, StatusCode::CONFLICT, "released at once: {:?}", held.body);
    let retried = retry_while_in_progress(pay, Duration::from_secs(10)).await;
    assert_eq!((retried.status, retried.replayed()), (StatusCode::CREATED, false), "{:?}", retried.body);
    let tokens = setup.service.ledger.tokens("\"crash-1\"");
    assert_eq!(tokens.len(), 1, "the killed attempt charged nothing, the retry once");
    let (_, headers) = setup.service.ledger.seen().pop().expect("the retry reached the service");
    assert_eq!(headers.get("idempotency-recovered").map(|v| v.as_bytes()), Some(&b"true"[..]));
    let again = send(pay()).await;
    assert!(again.replayed());
}

/// Issue 27, item 4: the service answered 201, sent 10 of 100 body bytes
/// and broke off (or stalled); the gateway released the key, and the
/// retry charged again with a new token.
#[tokio::test]
async fn an_answer_that_breaks_off_after_its_status_line_is_never_run_again() {
    let setup = Setup::start(ROUTES).await;
    for (path, key, how) in [
        ("/payments", "broken-1", "x-test-break-after-status"),
        ("/impatient/payments", "stalled-1", "x-test-stall-after-status"),
    ] {
        let broken = send(setup.pay(path, key, "{}").header(how, "1")).await;
        assert_eq!(broken.status, StatusCode::BAD_GATEWAY, "{how}");
        assert_eq!(broken.problem_type(), "urn:idempotency-gateway:upstream-response-incomplete");
        assert!(broken.text().contains("201"), "{}", broken.text());
        let retry = send(setup.pay(path, key, "{}")).await;
        assert_eq!(retry.status, StatusCode::CONFLICT, "{how}: {:?}", retry.body);
        assert_eq!(retry.problem_type(), "urn:idempotency-gateway:response-not-replayable");
        assert!(retry.text().contains("201"), "the original status is named: {}", retry.text());
        assert_eq!(setup.charges(key), 1, "{how}");
    }
    setup.assert_no_key_charged_twice();
}

/// Issue 27, item 6: these statuses say the request was not processed; a
/// 401 used to be replayed to the retry that came with fresh credentials.
#[tokio::test]
async fn statuses_that_say_not_processed_release_the_key_by_default() {
    let setup = Setup::start(ROUTES).await;
    for status in [401, 403, 407, 408, 425, 429, 503] {
        let key = format!("refused-{status}");
        let refused =
            send(setup.pay("/waiting/payments", &key, "{}").header("x-test-status", status.to_string())).await;
        assert_eq!(refused.status.as_u16(), status);
        let retried = send(setup.pay("/waiting/payments", &key, "{}")).await;
        assert_eq!((retried.status, retried.replayed()), (StatusCode::CREATED, false), "after {status}");
        assert_eq!(setup.charges(&key), 1);
    }
}

/// Issue 27, item 6: two non-JSON bodies with the same bytes and different
/// Content-Types fingerprinted alike, so the second was a replay.
#[tokio::test]
async fn the_same_bytes_under_another_content_type_are_another_request() {
    let setup = Setup::start(ROUTES).await;
    let csv = send(setup.pay("/payments", "typed-1", "amount,1").header("content-type", "text/csv")).await;
    assert_eq!(csv.status, StatusCode::CREATED);
    let plain = send(setup.pay("/payments", "typed-1", "amount,1").header("content-type", "text/plain")).await;
    assert_eq!(plain.status, StatusCode::UNPROCESSABLE_ENTITY, "{:?}", plain.body);
    assert_eq!(setup.charges("typed-1"), 1);
}

/// Issue 27, item 6: over HTTP/2 the service saw the gateway's upstream
/// address as Host and several `cookie` fields; no message said it passed a proxy.
#[tokio::test]
async fn the_service_sees_the_clients_host_one_cookie_field_and_a_via_for_each_version() {
    let setup = Setup::start(ROUTES).await;
    let h2 = reqwest::Client::builder().http2_prior_knowledge().build().expect("an h2c client");
    let over_h2 = h2
        .get(setup.gateway.url("/reads/1"))
        .header("cookie", "session=abc")
        .header("cookie", "theme=dark")
        .send()
        .await
        .expect("an answer");
    assert_eq!(over_h2.status(), StatusCode::OK);
    assert_eq!(over_h2.headers().get("via").map(|v| v.as_bytes()), Some(&b"1.1 idempotency-gateway"[..]));
    let over_h1 = send(setup.http.get(setup.gateway.url("/reads/2")).header("via", "1.1 edge-proxy")).await;
    assert_eq!(over_h1.status, StatusCode::OK);
    let seen = setup.service.ledger.seen();
    let header = |i: usize, name: &str| -> Vec<String> {
        seen[i].1.get_all(name).iter().map(|v| v.to_str().expect("text").to_owned()).collect()
    };
    assert_eq!(header(0, "host"), [setup.gateway.addr.to_string()], "HTTP/2 :authority is the Host");
    assert_eq!(header(0, "cookie"), ["session=abc; theme=dark"]);
    assert_eq!(header(0, "via"), ["2 idempotency-gateway"]);
    assert_eq!(header(1, "host"), [setup.gateway.addr.to_string()]);
    assert_eq!(header(1, "via"), ["1.1 edge-proxy, 1.1 idempotency-gateway"]);
}

/// Issue 27, item 4: no status line in time means the request may be
/// running: the key is held until the lease lapses, not released at once.
#[tokio::test]
async fn an_upstream_that_does_not_answer_in_time_gets_a_504_and_the_key_is_held_until_its_lease_lapses() {
    let setup = Setup::start(ROUTES).await;
    let late = send(setup.pay("/impatient/payments", "late-1", "{}").header("x-test-delay-ms", "3000")).await;
    assert_eq!(late.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(late.problem_type(), "urn:idempotency-gateway:upstream-timeout");
    assert_eq!(late.header("retry-after"), Some("2"));
    let pay = || setup.pay("/impatient/payments", "late-1", "{}");
    let held = send(pay()).await;
    assert_eq!(held.status, StatusCode::CONFLICT, "released at once: {:?}", held.body);
    let retried = retry_while_in_progress(pay, Duration::from_secs(10)).await;
    assert_eq!((retried.status, retried.replayed()), (StatusCode::CREATED, false));
    // The first call's service work was cut off by the gateway dropping the connection.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    setup.assert_no_key_charged_twice();
}

#[tokio::test]
async fn heartbeats_keep_a_slow_request_owned_past_its_lease() {
    let setup = Setup::start(ROUTES).await;
    // The route's lease is 2 s; the service takes 5 s.
    let slow =
        tokio::spawn(setup.pay("/payments", "slow-1", r#"{"amount":8}"#).header("x-test-delay-ms", "5000").send());
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let retry = send(setup.pay("/payments", "slow-1", r#"{"amount":8}"#)).await;
    assert_eq!(retry.status, StatusCode::CONFLICT, "the lease was extended, so no takeover: {:?}", retry.body);
    let slow = Answer::of(slow.await.expect("joined").expect("an answer")).await;
    assert_eq!((slow.status, slow.replayed()), (StatusCode::CREATED, false));
    assert_eq!(setup.charges("slow-1"), 1);
}

/// Issue 26 item 2: the gateway's Begin is answered, the answer lost, and
/// the same request (the same request_id) sent again by a hop in between
/// (a mesh retrying UNAVAILABLE) when only a quarter of the 4 s lease and
/// 0.2 s are left: the gateway is handed its own attempt back with the
/// original `lease_expires_at`. Its first Extend used to come a third of the
/// TTL after the answer, past that deadline.
#[tokio::test]
async fn a_handed_back_attempt_is_extended_before_its_lease_runs_out() {
    let etcd = Etcd::start().await;
    let coordinator = Server::start(&etcd, &[]).await;
    let service = ChargingService::start().await;
    let hop = LosesFirstBeginAnswer::start(&coordinator).await;
    let gateway = Gateway::start(&service.url(), &hop.url(), ROUTES).await;
    let http = reqwest::Client::new();
    let pay = || {
        http.post(gateway.url("/handed-back/payments"))
            .header("idempotency-key", "\"handed-back-1\"")
            .header("authorization", CALLER)
            .header("content-type", "application/json")
            .body(r#"{"amount":7}"#)
    };
    // The service works until well past the point where etcd frees a lock
    // nobody extended (2 s of slack, 0.5 s revocation).
    let first = tokio::spawn(pay().header("x-test-delay-ms", "4500").send());
    let deadline = hop.deadline().await;
    tokio::time::sleep_until(at_wall(deadline - Duration::from_millis(150))).await;
    let mut caller = http::HeaderMap::new();
    caller.insert("authorization", CALLER.parse().expect("a header value"));
    let namespace = IdentitySource::Authorization.scoped_namespace("payments.handback", &caller).expect("scoped");
    let lookup = v1::LookupRequest { namespace, key: "handed-back-1".into(), ..Default::default() };
    let record =
        coordinator.client().await.lookup(lookup).await.expect("a lookup").into_inner().record.expect("a record");
    let seen = SystemTime::try_from(record.lease_expires_at.expect("in progress")).expect("a time");
    let rival = send(pay()).await; // the route waits for the first
    let first = Answer::of(first.await.expect("joined").expect("an answer")).await;
    assert!(seen > deadline, "not extended 150 ms before the handed-back lease ran out: {seen:?} <= {deadline:?}");
    assert_eq!((first.status, first.replayed()), (StatusCode::CREATED, false));
    assert_eq!((rival.status, rival.replayed()), (StatusCode::CREATED, true), "{:?}", rival.body);
    assert_eq!(service.ledger.charges("\"handed-back-1\""), 1);
}

/// The tokio instant at which the wall clock will say `wall`.
fn at_wall(wall: SystemTime) -> tokio::time::Instant {
    let now = SystemTime::now();
    tokio::time::Instant::now() + wall.duration_since(now).unwrap_or_default()
}

/// A gRPC hop in front of the coordinator whose first Begin is answered but
/// the answer lost; it sends the same request again when only a quarter of
/// the lease and 0.2 s are left, and passes that answer on. Everything else
/// passes straight through.
struct LosesFirstBeginAnswer {
    addr: SocketAddr,
    deadline: Arc<tokio::sync::Mutex<Option<SystemTime>>>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Clone)]
struct LossyHop {
    coordinator: CoordinatorServiceClient<tonic::transport::Channel>,
    deadline: Arc<tokio::sync::Mutex<Option<SystemTime>>>,
}

impl LosesFirstBeginAnswer {
    async fn start(coordinator: &Server) -> LosesFirstBeginAnswer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind port 0");
        let addr = listener.local_addr().expect("local addr");
        let deadline = Arc::new(tokio::sync::Mutex::new(None));
        let hop = LossyHop { coordinator: coordinator.client().await, deadline: deadline.clone() };
        let task = tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(CoordinatorServiceServer::new(hop))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
                .await
                .expect("the hop serves");
        });
        LosesFirstBeginAnswer { addr, deadline, task }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The deadline of the lease handed back, once the first Begin is answered.
    async fn deadline(&self) -> SystemTime {
        loop {
            if let Some(deadline) = *self.deadline.lock().await {
                return deadline;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for LosesFirstBeginAnswer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type Answered<T> = Result<tonic::Response<T>, tonic::Status>;

#[tonic::async_trait]
impl CoordinatorService for LossyHop {
    async fn begin(&self, request: tonic::Request<v1::BeginRequest>) -> Answered<v1::BeginResponse> {
        let request = request.into_inner();
        let mut deadline = self.deadline.lock().await;
        if deadline.is_none() {
            let lost = self.coordinator.clone().begin(request.clone()).await?.into_inner();
            let Some(v1::begin_response::Outcome::Acquired(acquired)) = lost.outcome else {
                panic!("the first Begin did not acquire: {lost:?}")
            };
            let at = SystemTime::try_from(acquired.lease_expires_at.expect("a deadline")).expect("a time");
            *deadline = Some(at);
            drop(deadline);
            let ttl = request.lease_ttl.as_ref().map(|ttl| ttl.seconds as u64).expect("a TTL");
            let left = Duration::from_millis(ttl * 250 + 200);
            tokio::time::sleep_until(at_wall(at - left)).await;
        }
        self.coordinator.clone().begin(request).await
    }

    async fn complete(&self, request: tonic::Request<v1::CompleteRequest>) -> Answered<v1::CompleteResponse> {
        self.coordinator.clone().complete(request.into_inner()).await
    }

    async fn fail(&self, request: tonic::Request<v1::FailRequest>) -> Answered<v1::FailResponse> {
        self.coordinator.clone().fail(request.into_inner()).await
    }

    async fn extend(&self, request: tonic::Request<v1::ExtendRequest>) -> Answered<v1::ExtendResponse> {
        self.coordinator.clone().extend(request.into_inner()).await
    }

    async fn lookup(&self, request: tonic::Request<v1::LookupRequest>) -> Answered<v1::LookupResponse> {
        self.coordinator.clone().lookup(request.into_inner()).await
    }

    async fn fingerprint(&self, request: tonic::Request<v1::FingerprintRequest>) -> Answered<v1::FingerprintResponse> {
        self.coordinator.clone().fingerprint(request.into_inner()).await
    }
}

#[tokio::test]
async fn missing_or_malformed_keys_are_400_naming_the_header() {
    let setup = Setup::start(ROUTES).await;
    let missing = send(setup.http.post(setup.gateway.url("/payments")).body("{}")).await;
    assert_eq!(missing.status, StatusCode::BAD_REQUEST);
    assert_eq!(missing.problem_type(), "urn:idempotency-gateway:idempotency-key-missing");
    let document: serde_json::Value = serde_json::from_slice(&missing.body).expect("json");
    assert_eq!(document["header"], "Idempotency-Key");

    // Issue 27, item 6: a blank key reached the coordinator, which refused it: 500 and an ERROR line.
    for bad in ["unquoted-uuid", "\"\"", "42", "\" \"", "\"   \""] {
        let malformed = send(
            setup
                .http
                .post(setup.gateway.url("/payments"))
                .header("idempotency-key", bad)
                .header("authorization", CALLER)
                .body("{}"),
        )
        .await;
        assert_eq!(malformed.status, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(malformed.problem_type(), "urn:idempotency-gateway:idempotency-key-malformed");
        assert!(String::from_utf8_lossy(&malformed.body).contains("Idempotency-Key"));
    }
    assert_eq!(setup.service.ledger.requests(), 0);

    // Where the key is optional, a request without one is the client's choice.
    let unkeyed = send(setup.http.post(setup.gateway.url("/optional/payments")).body("{}")).await;
    assert_eq!(unkeyed.status, StatusCode::CREATED);
    // And a path no route names passes through untouched.
    let read = send(setup.http.get(setup.gateway.url("/payments/1"))).await;
    assert_eq!(read.status, StatusCode::OK);
    assert_eq!(read.header("cache-control"), None);
}

#[tokio::test]
async fn oversized_requests_are_413_before_anything_begins() {
    let setup = Setup::start(ROUTES).await;
    let big = format!("{{\"note\":\"{}\"}}", "x".repeat(5000));
    let declared = send(setup.pay("/payments", "big-1", &big)).await;
    assert_eq!(declared.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(declared.problem_type(), "urn:idempotency-gateway:request-body-too-large");
    assert!(String::from_utf8_lossy(&declared.body).contains("4096"), "the limit is named");

    // Chunked, with no Content-Length to refuse early.
    let chunks = futures_chunks(big.into_bytes());
    let streamed = send(
        setup
            .http
            .post(setup.gateway.url("/payments"))
            .header("idempotency-key", "\"big-2\"")
            .header("authorization", CALLER)
            .body(reqwest::Body::wrap_stream(chunks)),
    )
    .await;
    assert_eq!(streamed.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(setup.service.ledger.requests(), 0);

    // Nothing was begun: the same key with a small body is a new request.
    let small = send(setup.pay("/payments", "big-1", "{}")).await;
    assert_eq!((small.status, small.replayed()), (StatusCode::CREATED, false));
}

fn futures_chunks(data: Vec<u8>) -> impl tokio_stream::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = data.chunks(1000).map(|c| Ok(c.to_vec())).collect();
    tokio_stream::iter(chunks)
}

#[tokio::test]
async fn an_answer_too_large_to_store_still_reaches_the_client_and_a_retry_is_told_why() {
    let setup = Setup::start(ROUTES).await;
    let large = send(setup.pay("/payments", "report-1", "{}").header("x-test-response-bytes", "20000")).await;
    assert_eq!((large.status, large.replayed()), (StatusCode::CREATED, false));
    assert!(large.body.len() > 20000, "the whole answer, {} bytes", large.body.len());
    let serde_json::Value::Object(_) = serde_json::from_slice(&large.body).expect("complete JSON") else {
        panic!("not an object")
    };

    let retry = send(setup.pay("/payments", "report-1", "{}")).await;
    assert_eq!(retry.status, StatusCode::CONFLICT);
    assert_eq!(retry.problem_type(), "urn:idempotency-gateway:response-not-replayable");
    let detail = String::from_utf8_lossy(&retry.body).into_owned();
    assert!(detail.contains("201") && detail.contains("8192"), "{detail}");
    assert_eq!(setup.charges("report-1"), 1);
}

#[tokio::test]
async fn with_the_coordinator_down_nothing_is_forwarded_unless_the_route_fails_open() {
    let service = ChargingService::start().await;
    // Nothing listens on this port.
    let gateway = Gateway::start(&service.url(), &format!("http://127.0.0.1:{}", free_port()), ROUTES).await;
    let http = reqwest::Client::new();
    let refused = send(
        http.post(gateway.url("/payments"))
            .header("idempotency-key", "\"down-1\"")
            .header("authorization", CALLER)
            .body(r#"{"amount":1}"#),
    )
    .await;
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(refused.problem_type(), "urn:idempotency-gateway:coordinator-unavailable");
    assert!(refused.header("retry-after").is_some());
    assert_eq!(service.ledger.requests(), 0, "fail closed: nothing forwarded");

    let forwarded = send(
        http.post(gateway.url("/open/payments"))
            .header("idempotency-key", "\"down-2\"")
            .header("authorization", CALLER)
            .body("{}"),
    )
    .await;
    assert_eq!(forwarded.status, StatusCode::CREATED, "this route fails open");
    assert_eq!(service.ledger.requests(), 1);

    let metrics = http
        .get(format!("http://{}/metrics", gateway.admin))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    for line in [
        "idempotency_gateway_requests_total{outcome=\"coordinator_unavailable\"} 1",
        "idempotency_gateway_requests_total{outcome=\"fail_open\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }
}

#[tokio::test]
async fn health_endpoints_and_metrics_answer_for_the_kubelet() {
    let setup = Setup::start(ROUTES).await;
    let admin = setup.gateway.admin;
    for path in ["/livez", "/readyz"] {
        let answer = send(setup.http.get(format!("http://{admin}{path}"))).await;
        assert_eq!(answer.status, StatusCode::OK, "{path}");
    }
    send(setup.pay("/payments", "metrics-1", "{}")).await;
    send(setup.pay("/payments", "metrics-1", "{}")).await;
    let metrics = send(setup.http.get(format!("http://{admin}/metrics"))).await;
    let text = String::from_utf8_lossy(&metrics.body);
    // Other tests in this binary share the process-wide recorder, so counts are at least, not exactly.
    for outcome in ["executed", "replayed"] {
        let prefix = format!("idempotency_gateway_requests_total{{outcome=\"{outcome}\"}} ");
        let count: u64 = text
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("{prefix} in\n{text}"))
            .parse()
            .expect("a count");
        assert!(count >= 1, "{outcome}: {count}");
    }
    assert!(text.contains("idempotency_gateway_upstream_duration_seconds_bucket{class=\"2xx\""), "{text}");
}

#[tokio::test]
async fn the_gateway_calls_an_authenticating_coordinator_over_tls_with_its_bearer_token() {
    const TOKEN: &str = "gateway-token-0123456789abcdef";
    let pki = Pki::new("gateway");
    let server_cert = pki.server("server");
    let tokens = pki.dir.path().join("tokens");
    std::fs::write(&tokens, format!("payments-team {}\n", hash_token(TOKEN))).expect("tokens file");
    let path = |p: &std::path::Path| p.to_str().expect("a UTF-8 path").to_owned();
    let etcd = Etcd::start().await;
    let coordinator = Server::start(
        &etcd,
        &[
            "--tls-cert",
            &path(&server_cert.cert),
            "--tls-key",
            &path(&server_cert.key),
            "--tokens-file",
            &path(&tokens),
            "--health-listen",
            &format!("127.0.0.1:{}", free_port()),
        ],
    )
    .await;
    let service = ChargingService::start().await;
    let over_tls = |token: &str| ClientArgs {
        addr: format!("https://{}", coordinator.addr),
        ca_cert: Some(pki.ca_path()),
        bearer_token: Some(token.to_owned()),
        ..plaintext("")
    };
    let http = reqwest::Client::new();
    let pay = |gateway: &Gateway, key: &str| {
        http.post(gateway.url("/payments"))
            .header("idempotency-key", format!("\"{key}\""))
            .header("content-type", "application/json")
            .header("authorization", CALLER)
            .body(r#"{"amount":10}"#)
    };

    let gateway = Gateway::start_with(&service.url(), over_tls(TOKEN), ROUTES).await;
    let first = send(pay(&gateway, "tls-1")).await;
    let second = send(pay(&gateway, "tls-1")).await;
    assert_eq!((first.status, first.replayed()), (StatusCode::CREATED, false), "{:?}", first.body);
    assert_eq!((second.status, second.replayed()), (StatusCode::CREATED, true));
    assert_eq!(service.ledger.charges("\"tls-1\""), 1);

    // A gateway with a token the coordinator does not know forwards nothing.
    let misconfigured = Gateway::start_with(&service.url(), over_tls("a-token-nobody-was-ever-given"), ROUTES).await;
    let refused = send(pay(&misconfigured, "tls-2")).await;
    assert_eq!(refused.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(refused.problem_type(), "urn:idempotency-gateway:gateway-misconfigured");
    assert_eq!(service.ledger.requests(), 1);
}

#[tokio::test]
async fn on_shutdown_readiness_fails_first_and_in_flight_requests_finish_and_are_stored() {
    let mut setup = Setup::start(ROUTES).await;
    let in_flight =
        tokio::spawn(setup.pay("/payments", "drain-1", r#"{"amount":4}"#).header("x-test-delay-ms", "1500").send());
    tokio::time::sleep(Duration::from_millis(300)).await;
    setup.gateway.begin_shutdown();
    let readyz = format!("http://{}/readyz", setup.gateway.admin);
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let answer = setup.http.get(&readyz).send().await.expect("the admin port outlives the drain");
        if answer.status() == StatusCode::SERVICE_UNAVAILABLE {
            break;
        }
        assert!(Instant::now() < deadline, "/readyz still answers {}", answer.status());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let finished = Answer::of(in_flight.await.expect("joined").expect("the in-flight request is answered")).await;
    assert_eq!((finished.status, finished.replayed()), (StatusCode::CREATED, false));
    tokio::time::timeout(Duration::from_secs(5), &mut setup.gateway.task)
        .await
        .expect("the gateway stops once its requests are done")
        .expect("and exits cleanly");
    // Its answer was stored before the gateway stopped: a new gateway replays it.
    let service_url = setup.service.url();
    let coordinator_url = setup.coordinator.as_ref().expect("a coordinator").url();
    let next = Gateway::start(&service_url, &coordinator_url, ROUTES).await;
    let retry = send(
        setup
            .http
            .post(next.url("/payments"))
            .header("idempotency-key", "\"drain-1\"")
            .header("authorization", CALLER)
            .header("content-type", "application/json")
            .body(r#"{"amount":4}"#),
    )
    .await;
    assert_eq!((retry.status, retry.replayed()), (StatusCode::CREATED, true));
    assert_eq!(setup.charges("drain-1"), 1);
}

//! Issue 27, item 1: a protected route scopes its records by the caller's
//! identity, so one caller's key never replays another caller's answer,
//! and a caller never learns whether another caller used a key. Before,
//! the record was (tenant, namespace, key): B, sending A's key and body
//! with no Authorization at all, got A's 201 replayed, and with another
//! body a 422 that told B the key existed.

mod common;

use common::gateway_harness::{Answer, Setup, send};
use reqwest::StatusCode;

const ROUTES: &str = r#"
[[route]]
name = "payments"
methods = ["POST"]
path = "/payments"
namespace = "payments.create"
identity = "authorization"

[[route]]
name = "orders"
methods = ["POST"]
path = "/orders"
namespace = "orders.create"
identity = "header:X-Authenticated-User"

[[route]]
name = "shared"
methods = ["POST"]
path = "/shared"
namespace = "shared.create"
identity = "none"
"#;

fn post(setup: &Setup, path: &str, key: &str, body: &str, identity: Option<(&str, &str)>) -> reqwest::RequestBuilder {
    let request = setup
        .http
        .post(setup.gateway.url(path))
        .header("idempotency-key", format!("\"{key}\""))
        .header("content-type", "application/json")
        .body(body.to_owned());
    match identity {
        Some((name, value)) => request.header(name, value),
        None => request,
    }
}

fn executed(answer: &Answer) -> bool {
    answer.status == StatusCode::CREATED && !answer.replayed()
}

#[tokio::test]
async fn another_caller_with_the_same_key_gets_its_own_record_never_the_first_callers_answer() {
    let setup = Setup::start(ROUTES).await;
    for (path, header) in [("/payments", "authorization"), ("/orders", "x-authenticated-user")] {
        let alice = Some((header, "Bearer alice"));
        let bob = Some((header, "Bearer bob"));
        let first = send(post(&setup, path, "k-1", r#"{"amount":10}"#, alice)).await;
        assert!(executed(&first), "{path}: {:?}", first.body);

        // No identity at all: refused before anything is begun or forwarded.
        let anonymous = send(post(&setup, path, "k-1", r#"{"amount":10}"#, None)).await;
        assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED, "{path}");
        assert_eq!(anonymous.problem_type(), "urn:idempotency-gateway:identity-missing");
        assert_eq!(anonymous.header("cache-control"), Some("no-store"));
        let document = anonymous.problem();
        assert!(document["detail"].as_str().expect("a detail").to_lowercase().contains(header), "{document}");
        let empty = send(post(&setup, path, "k-1", r#"{"amount":10}"#, Some((header, "")))).await;
        assert_eq!(empty.status, StatusCode::UNAUTHORIZED, "{path}: an empty value is no identity");

        // Another caller, the same key and body: a fresh record that runs.
        let same_body = send(post(&setup, path, "k-1", r#"{"amount":10}"#, bob)).await;
        assert!(executed(&same_body), "{path}: bob got {} replayed={}", same_body.status, same_body.replayed());
        assert_ne!(same_body.body, first.body, "{path}: bob never gets alice's answer");
        // Another caller with another body: it runs too, never 422, so
        // the key's existence and the differing members stay hidden.
        let carol = Some((header, "Bearer carol"));
        let other_body = send(post(&setup, path, "k-1", r#"{"amount":99}"#, carol)).await;
        assert!(executed(&other_body), "{path}: carol got {}", other_body.status);

        // Each caller's own retry replays its own answer.
        let alice_again = send(post(&setup, path, "k-1", r#"{"amount":10}"#, alice)).await;
        assert!(alice_again.replayed(), "{path}");
        assert_eq!(alice_again.body, first.body);
        let bob_again = send(post(&setup, path, "k-1", r#"{"amount":10}"#, bob)).await;
        assert_eq!(bob_again.body, same_body.body, "{path}");
    }
    // Three callers, one charge each; no request without an identity reached the service.
    assert_eq!(setup.charges("k-1"), 6);
    assert_eq!(setup.service.ledger.requests(), 6);
}

/// A claimed key: B's unauthenticated attempt used to be stored, and A's
/// real request got B's answer replayed.
#[tokio::test]
async fn a_key_cannot_be_claimed_first_by_another_caller() {
    let setup = Setup::start(ROUTES).await;
    let mallory = Some(("authorization", "Bearer mallory"));
    let claimed = send(post(&setup, "/payments", "claim-1", "{}", mallory).header("x-test-status", "402")).await;
    assert_eq!(claimed.status, StatusCode::PAYMENT_REQUIRED);
    let alice = send(post(&setup, "/payments", "claim-1", "{}", Some(("authorization", "Bearer alice")))).await;
    assert!(executed(&alice), "alice got {} replayed={}", alice.status, alice.replayed());
}

#[tokio::test]
async fn identity_none_shares_the_routes_keys_between_callers_as_configured() {
    let setup = Setup::start(ROUTES).await;
    let first = send(post(&setup, "/shared", "s-1", "{}", Some(("authorization", "Bearer alice")))).await;
    assert!(executed(&first));
    let other = send(post(&setup, "/shared", "s-1", "{}", None)).await;
    assert!(other.replayed(), "identity = \"none\" scopes nothing");
    assert_eq!(other.body, first.body);
}

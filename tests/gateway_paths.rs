//! Issue 27, item 2: `POST //payments`, `/payments/`, `/%70ayments` and
//! `/payments;x` skipped a `key = "required"` route while services that
//! merge slashes, ignore a trailing slash, percent-decode before routing or
//! drop `;` parameters served them as `/payments`. Now each is either
//! matched to the route (one trailing slash, ASCII case) or refused with
//! 400 `path-ambiguous` before anything is forwarded. Raw HTTP/1.1 over
//! TCP, since HTTP client libraries normalize such paths themselves.

mod common;

use common::gateway_harness::{CALLER, Setup};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ROUTES: &str = r#"
[[route]]
name = "payments"
methods = ["POST"]
path = "/payments"
namespace = "payments.create"
identity = "authorization"
"#;

/// Sends `request` as it is over one connection; the status and the answer.
async fn send(setup: &Setup, request: &str) -> (u16, String) {
    let mut tcp = tokio::net::TcpStream::connect(setup.gateway.addr).await.expect("connect");
    tcp.write_all(request.as_bytes()).await.expect("write");
    let mut answer = String::new();
    tcp.read_to_string(&mut answer).await.expect("read");
    let status = answer.get(9..12).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("a status line: {answer:?}"));
    (status, answer)
}

/// Sends `POST <path>` with `headers` and an empty JSON body.
async fn post(setup: &Setup, path: &str, headers: &str) -> (u16, String) {
    let request = format!(
        "POST {path} HTTP/1.1\r\nhost: payments.test\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\
         connection: close\r\n{headers}\r\n{{}}"
    );
    send(setup, &request).await
}

#[tokio::test]
async fn forms_a_service_may_read_as_the_route_are_refused_before_anything_is_forwarded() {
    let setup = Setup::start(ROUTES).await;
    for path in
        ["//payments", "/%70ayments", "/payments;x", "/payments//", "/x/../payments", "/./payments", "/payments%2F"]
    {
        let (status, answer) = post(&setup, path, "").await;
        assert_eq!(status, 400, "{path}: {answer}");
        assert!(answer.contains("urn:idempotency-gateway:path-ambiguous"), "{path}: {answer}");
    }
    // On every path, protected or not.
    let (status, _) = post(&setup, "/reports//daily", "").await;
    assert_eq!(status, 400);
    assert_eq!(setup.service.ledger.requests(), 0, "nothing reached the service");
}

#[tokio::test]
async fn a_trailing_slash_or_another_case_is_the_same_route() {
    let setup = Setup::start(ROUTES).await;
    for path in ["/payments/", "/PAYMENTS", "/Payments/"] {
        let (status, answer) = post(&setup, path, "").await;
        assert_eq!(status, 400, "{path}: {answer}");
        assert!(answer.contains("idempotency-key-missing"), "{path} is protected: {answer}");
    }
    let keyed = format!("idempotency-key: \"slash-1\"\r\nauthorization: {CALLER}\r\n");
    let (first, answer) = post(&setup, "/payments/", &keyed).await;
    assert_eq!(first, 201, "{answer}");
    let (again, answer) = post(&setup, "/payments/", &keyed).await;
    assert_eq!(again, 201);
    assert!(answer.contains("idempotent-replayed: true"), "{answer}");
    assert_eq!(setup.charges("slash-1"), 1);
    // The service gets the path as sent.
    assert_eq!(setup.service.ledger.seen()[0].0, "/payments/");
}

/// Sends `request_line` with a host and no body.
async fn raw(setup: &Setup, request_line: &str) -> (u16, String) {
    send(setup, &format!("{request_line}\r\nhost: payments.test\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"))
        .await
}

/// Review of issue 27: authority-form targets and CONNECT got 502
/// `upstream-unreachable`, and `POST *` was forwarded as `*`. They name no
/// path a route could protect: 400 before anything is forwarded. `OPTIONS *`
/// still goes through.
#[tokio::test]
async fn a_target_that_is_not_a_path_is_refused_before_anything_is_forwarded() {
    let setup = Setup::start(ROUTES).await;
    for line in ["POST payments HTTP/1.1", "CONNECT payments.test:443 HTTP/1.1", "POST * HTTP/1.1"] {
        let (status, answer) = raw(&setup, line).await;
        assert_eq!(status, 400, "{line}: {answer}");
        assert!(answer.contains("urn:idempotency-gateway:request-target-unsupported"), "{line}: {answer}");
    }
    assert_eq!(setup.service.ledger.requests(), 0, "nothing reached the service");
    let (_, answer) = raw(&setup, "OPTIONS * HTTP/1.1").await;
    assert!(!answer.contains("request-target-unsupported"), "{answer}");
}

/// Review of issue 27: over HTTP/2 a request whose `host` field names
/// another host than its `:authority` reached the service with `host`; RFC
/// 9113 §8.3.1 makes it malformed. Now 400.
#[tokio::test]
async fn an_http2_request_naming_two_hosts_is_refused() {
    let setup = Setup::start(ROUTES).await;
    let h2 = reqwest::Client::builder().http2_prior_knowledge().build().expect("an h2c client");
    let answer = h2
        .post(setup.gateway.url("/payments"))
        .header("host", "elsewhere.test")
        .header("idempotency-key", "\"two-hosts\"")
        .header("authorization", CALLER)
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .expect("an answer");
    assert_eq!(answer.status(), 400);
    let body = answer.text().await.expect("a body");
    assert!(body.contains("request-target-unsupported"), "{body}");
    assert_eq!(setup.service.ledger.requests(), 0, "nothing reached the service");
}

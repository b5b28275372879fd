//! TLS and tenant authentication (DESIGN.md, "Identity of a record"): with
//! authentication on, the tenant comes from the caller's client certificate
//! or bearer token; naming another tenant is PERMISSION_DENIED and calling
//! without credentials UNAUTHENTICATED. Certificates are made here, per run.

mod common;

use common::pki::{Leaf, Pki};
use common::*;
use idempotency_coordinator::proto::v1::{self, begin_response::Outcome};
use idempotency_coordinator::shell::auth::tokens::hash_token;
use tonic::Code;
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};

const ACME_TOKEN: &str = "acme-7d1f0c9b2e4a48f6a1c3d5e7f9b0a2c4";
const GLOBEX_TOKEN: &str = "globex-5a8e3c1f7b9d4e2a6c0f8b1d3e5a7c9f";
const URI_PREFIX: &str = "spiffe://test.example/tenant/";

struct Setup {
    _etcd: Etcd,
    server: Server,
    pki: Pki,
    /// Trusted client certificates naming their tenant by URI SAN (acme's CN
    /// says otherwise), and one that names none under the prefix but has the
    /// CN "acme": with a prefix configured, a CN never picks a tenant.
    acme: Leaf,
    globex: Leaf,
    cn_only: Leaf,
    health_port: u16,
}

async fn setup() -> Setup {
    let pki = Pki::new("coordinator");
    let server_cert = pki.server("server");
    let acme = pki.client("acme", Some("not-the-tenant"), &["spiffe://test.example/tenant/acme"]);
    let globex = pki.client("globex", None, &["spiffe://test.example/tenant/globex"]);
    let cn_only = pki.client("cn-only", Some("acme"), &["spiffe://elsewhere.example/tenant/acme"]);
    let tokens = pki.dir.path().join("tokens");
    std::fs::write(
        &tokens,
        format!("# test tokens\nacme {}\nglobex {}\n", hash_token(ACME_TOKEN), hash_token(GLOBEX_TOKEN)),
    )
    .unwrap();
    let health_port = free_port();
    let health_listen = format!("127.0.0.1:{health_port}");
    let paths = [&server_cert.cert, &server_cert.key, &pki.ca_path(), &tokens].map(|p| p.to_str().unwrap().to_owned());
    let etcd = Etcd::start().await;
    let server = Server::start(
        &etcd,
        &[
            "--tls-cert",
            &paths[0],
            "--tls-key",
            &paths[1],
            "--tls-client-ca",
            &paths[2],
            "--tokens-file",
            &paths[3],
            "--tenant-uri-prefix",
            URI_PREFIX,
            "--health-listen",
            &health_listen,
        ],
    )
    .await;
    Setup { _etcd: etcd, server, pki, acme, globex, cn_only, health_port }
}

impl Setup {
    fn tls(&self, client: Option<&Leaf>) -> ClientTlsConfig {
        let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(self.pki.ca_pem()));
        match client {
            Some(leaf) => tls.identity(Identity::from_pem(leaf.cert_pem(), leaf.key_pem())),
            None => tls,
        }
    }

    /// A client presenting `certificate` and sending `authorization` (a header value).
    async fn client(&self, certificate: Option<&Leaf>, authorization: Option<&str>) -> AuthClient {
        let channel = self.server.tls_channel(self.tls(certificate)).await.expect("TLS handshake");
        let header = authorization.map(|value| MetadataValue::try_from(value).unwrap());
        let add_token: TokenInterceptor = Box::new(move |mut request: tonic::Request<()>| {
            if let Some(header) = &header {
                request.metadata_mut().insert("authorization", header.clone());
            }
            Ok(request)
        });
        v1::coordinator_service_client::CoordinatorServiceClient::with_interceptor(channel, add_token)
    }
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

type TokenInterceptor = Box<dyn FnMut(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> + Send>;
type AuthClient =
    v1::coordinator_service_client::CoordinatorServiceClient<InterceptedService<Channel, TokenInterceptor>>;

fn in_tenant<T>(mut request: T, tenant: &str, set: impl FnOnce(&mut T) -> &mut String) -> T {
    *set(&mut request) = tenant.to_owned();
    request
}

#[tokio::test]
async fn tenants_come_from_certificates_and_tokens() {
    let setup = setup().await;
    let key = "order-4711";

    // acme by its certificate's URI SAN: an empty tenant becomes "acme".
    let mut acme = setup.client(Some(&setup.acme), None).await;
    let owner = match acme.begin(begin_request(key, "cart-a", 5)).await.unwrap().into_inner().outcome.unwrap() {
        Outcome::Acquired(a) => a,
        other => panic!("expected acquired, got {other:?}"),
    };
    acme.complete(complete_request(key, owner.fencing_token, "charged")).await.unwrap();
    let record = acme.lookup(in_tenant(lookup_request(key), "acme", |r| &mut r.tenant)).await.unwrap().into_inner();
    assert_eq!(record.record.unwrap().state, v1::State::Completed as i32, "naming your own tenant is fine");

    // acme by bearer token, no certificate: the same tenant, so the same record.
    let mut acme_by_token = setup.client(None, Some(&bearer(ACME_TOKEN))).await;
    let replay = acme_by_token.begin(begin_request(key, "cart-a", 5)).await.unwrap().into_inner().outcome.unwrap();
    assert!(matches!(replay, Outcome::Completed(_)), "got {replay:?}");

    // globex (another certificate) has its own record under the same key...
    let mut globex = setup.client(Some(&setup.globex), None).await;
    assert_eq!(globex.lookup(lookup_request(key)).await.unwrap_err().code(), Code::NotFound);
    let fresh = globex.begin(begin_request(key, "cart-g", 5)).await.unwrap().into_inner().outcome.unwrap();
    assert!(matches!(fresh, Outcome::Acquired(ref a) if a.attempt == 1), "got {fresh:?}");

    // ...and may not name acme's, on any RPC.
    let denied = [
        globex.begin(in_tenant(begin_request(key, "cart-a", 5), "acme", |r| &mut r.tenant)).await.map(|_| ()),
        globex.lookup(in_tenant(lookup_request(key), "acme", |r| &mut r.tenant)).await.map(|_| ()),
        globex
            .complete(in_tenant(complete_request(key, owner.fencing_token, "x"), "acme", |r| &mut r.tenant))
            .await
            .map(|_| ()),
        globex
            .fail(in_tenant(fail_request(key, owner.fencing_token, "E", true), "acme", |r| &mut r.tenant))
            .await
            .map(|_| ()),
        globex
            .extend(in_tenant(extend_request(key, owner.fencing_token, 5), "acme", |r| &mut r.tenant))
            .await
            .map(|_| ()),
    ];
    for result in denied {
        let status = result.expect_err("another tenant's record");
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
        assert!(status.message().contains("\"acme\""), "{status:?}");
    }
    let mut globex_by_token = setup.client(None, Some(&bearer(GLOBEX_TOKEN))).await;
    let denied = globex_by_token.lookup(in_tenant(lookup_request(key), "acme", |r| &mut r.tenant)).await;
    assert_eq!(denied.unwrap_err().code(), Code::PermissionDenied);
    // acme's record is untouched by all of that.
    let record = acme.lookup(lookup_request(key)).await.unwrap().into_inner().record.unwrap();
    assert_eq!((record.state, record.attempt), (v1::State::Completed as i32, 1));
}

#[tokio::test]
async fn missing_or_bad_credentials_are_unauthenticated() {
    let setup = setup().await;
    let cases: [(&str, Option<&Leaf>, Option<String>, &str); 5] = [
        ("no credentials", None, None, "credentials required"),
        ("a CN but no URI SAN under the prefix", Some(&setup.cn_only), None, "no URI SAN starting with"),
        ("unknown token", None, Some(bearer("not-a-token-anyone-was-given")), "unknown bearer token"),
        ("certificate and token disagree", Some(&setup.acme), Some(bearer(GLOBEX_TOKEN)), "disagree"),
        ("another scheme", None, Some(format!("Basic {ACME_TOKEN}")), "must be \"Bearer <token>\""),
    ];
    for (case, certificate, token, message) in cases {
        let mut client = setup.client(certificate, token.as_deref()).await;
        for status in [
            client.begin(begin_request("k", "p", 5)).await.unwrap_err(),
            client.lookup(lookup_request("k")).await.unwrap_err(),
        ] {
            assert_eq!(status.code(), Code::Unauthenticated, "{case}: {status:?}");
            assert!(status.message().contains(message), "{case}: {status:?}");
        }
    }
    // A certificate from a CA the server does not trust fails the handshake,
    // and plaintext is not spoken on the TLS port: neither reaches the service.
    let stranger = Pki::new("stranger");
    let impostor = stranger.client("impostor", Some("acme"), &[]);
    let untrusted = setup.server.tls_channel(setup.tls(Some(&impostor))).await;
    let plaintext = Channel::from_shared(setup.server.url()).unwrap().connect().await;
    for (case, channel) in [("untrusted certificate", untrusted), ("plaintext", plaintext)] {
        let Ok(channel) = channel else { continue }; // refused while connecting
        let status = v1::coordinator_service_client::CoordinatorServiceClient::new(channel)
            .lookup(lookup_request("k"))
            .await
            .expect_err(case);
        assert!(
            matches!(status.code(), Code::Unavailable | Code::Unknown | Code::Internal | Code::Cancelled),
            "{case}: {status:?}"
        );
    }
}

#[tokio::test]
async fn health_answers_on_the_plaintext_port_without_credentials() {
    let setup = setup().await;
    // The server binds the health port once it has set up its etcd client.
    let plain_url = format!("http://127.0.0.1:{}", setup.health_port);
    wait_for_health(&plain_url, "readiness", ServingStatus::Serving, std::time::Duration::from_secs(5)).await;
    for service in ["", "liveness", "idempotency.v1.CoordinatorService"] {
        assert_eq!(health(&plain_url, service).await, Some(ServingStatus::Serving), "{service:?}");
    }
    // Only health is there: the coordinator is reachable over TLS alone.
    let channel = Channel::from_shared(plain_url).unwrap().connect().await.unwrap();
    let status = v1::coordinator_service_client::CoordinatorServiceClient::new(channel)
        .lookup(lookup_request("k"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented, "{status:?}");
    // Health over TLS needs no client credentials either.
    let channel = setup.server.tls_channel(setup.tls(None)).await.unwrap();
    HealthClient::new(channel).check(HealthCheckRequest { service: "liveness".into() }).await.expect("TLS health");
}

#[tokio::test]
async fn unusable_tls_material_is_refused_at_startup_naming_the_flag() {
    let etcd = Etcd::start().await;
    let pki = Pki::new("broken");
    let server_cert = pki.server("server");
    let other = pki.server("other");
    let path = |p: &std::path::Path| p.to_str().unwrap().to_owned();
    let (cert, key, ca) = (path(&server_cert.cert), path(&server_cert.key), path(&pki.ca_path()));
    let cases = [
        (["--tls-cert", &cert, "--tls-key", &ca], "--tls-key"),
        (["--tls-cert", &key, "--tls-key", &key], "--tls-cert"),
        (["--tls-cert", &cert, "--tls-key", &path(&other.key)], "--tls-key does not fit --tls-cert"),
    ];
    for (flags, expected) in cases {
        let error = test_config(&etcd, &flags).validate().expect_err("unusable TLS material");
        assert!(error.starts_with(expected), "{flags:?}: {error}");
    }
}

#[tokio::test]
async fn silent_connections_hold_up_no_other_handshake_and_shutdown_completes() {
    let setup = setup().await;
    // Connected but never starting TLS: handshakes run apart, so these wait
    // out their own timeout without blocking the caller below.
    let mut silent = Vec::new();
    for _ in 0..3 {
        silent.push(tokio::net::TcpStream::connect(setup.server.addr).await.unwrap());
    }
    let call = async {
        let mut client = setup.client(None, Some(&bearer(ACME_TOKEN))).await;
        client.lookup(lookup_request("k")).await.unwrap_err().code()
    };
    let code = tokio::time::timeout(std::time::Duration::from_secs(3), call).await.expect("not held up");
    assert_eq!(code, Code::NotFound);
    let stopped = tokio::time::timeout(std::time::Duration::from_secs(10), setup.server.shutdown()).await;
    assert!(stopped.is_ok(), "a TLS server drains and stops with silent connections open");
    drop(silent);
}

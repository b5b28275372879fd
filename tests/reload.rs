//! Renewed certificates and rotated tokens take effect without a restart:
//! files are replaced the way the kubelet updates a mounted Secret (write
//! aside, then rename), and a broken replacement keeps the previous version.

mod common;

use std::path::Path;
use std::time::Duration;

use common::pki::Pki;
use common::*;
use idempotency_coordinator::proto::v1::coordinator_service_client::CoordinatorServiceClient;
use idempotency_coordinator::shell::auth::tokens::hash_token;
use tonic::Code;
use tonic::metadata::MetadataValue;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};

const OLD_TOKEN: &str = "old-token-3c5e7a9b1d2f4a6c8e0b2d4f6a8c0e1f";
const NEW_TOKEN: &str = "new-token-9e7c5a3b1f2d4e6a8c0b2d4f6e8a0c1b";

fn replace(path: &Path, contents: impl AsRef<[u8]>) {
    let aside = path.with_extension("new");
    std::fs::write(&aside, contents).unwrap();
    std::fs::rename(&aside, path).unwrap();
}

/// A TLS server on `pki`'s certificate with `tokens`, checking files every 100 ms.
async fn start(pki: &Pki, tokens: &str) -> (Etcd, Server, std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let leaf = pki.server("server");
    let tokens_file = pki.dir.path().join("tokens");
    std::fs::write(&tokens_file, tokens).unwrap();
    let etcd = Etcd::start().await;
    let health = format!("127.0.0.1:{}", free_port());
    let paths = [&leaf.cert, &leaf.key, &tokens_file].map(|p| p.to_str().unwrap().to_owned());
    let flags = ["--tls-cert", &paths[0], "--tls-key", &paths[1], "--tokens-file", &paths[2]];
    let server =
        Server::start(&etcd, &[&flags[..], &["--reload-interval", "100ms", "--health-listen", &health]].concat()).await;
    (etcd, server, leaf.cert, leaf.key, tokens_file)
}

async fn channel(server: &Server, ca: &Pki) -> Result<Channel, tonic::transport::Error> {
    server.tls_channel(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca.ca_pem()))).await
}

/// The code of a Lookup with `token` over `channel`: NotFound means the call
/// got through (the key was never written).
async fn lookup(channel: Channel, token: &str) -> Code {
    let header = MetadataValue::try_from(format!("Bearer {token}")).unwrap();
    let mut client = CoordinatorServiceClient::with_interceptor(channel, move |mut request: tonic::Request<()>| {
        request.metadata_mut().insert("authorization", header.clone());
        Ok(request)
    });
    client.lookup(lookup_request("never-written")).await.map(|_| Code::Ok).unwrap_or_else(|status| status.code())
}

async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    for _ in 0..50 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what} did not happen within 5 s");
}

#[tokio::test]
async fn rotated_tokens_apply_without_a_restart() {
    let pki = Pki::new("tokens");
    let (_etcd, server, _, _, tokens) = start(&pki, &format!("acme {}\n", hash_token(OLD_TOKEN))).await;
    let tls = channel(&server, &pki).await.expect("TLS");
    assert_eq!(lookup(tls.clone(), OLD_TOKEN).await, Code::NotFound);
    assert_eq!(lookup(tls.clone(), NEW_TOKEN).await, Code::Unauthenticated);

    replace(&tokens, format!("# rotated\nacme {}\n", hash_token(NEW_TOKEN)));
    eventually("the new token working", async || lookup(tls.clone(), NEW_TOKEN).await == Code::NotFound).await;
    assert_eq!(lookup(tls.clone(), OLD_TOKEN).await, Code::Unauthenticated, "the removed token is refused");

    replace(&tokens, "acme this-is-a-token-not-a-hash\n");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(lookup(tls, NEW_TOKEN).await, Code::NotFound, "a broken file keeps the previous tokens");
}

#[tokio::test]
async fn a_renewed_certificate_serves_new_connections_without_a_restart() {
    let old_ca = Pki::new("old");
    let tokens = format!("acme {}\n", hash_token(OLD_TOKEN));
    let (_etcd, server, cert, key, _) = start(&old_ca, &tokens).await;
    let established = channel(&server, &old_ca).await.expect("TLS with the first certificate");
    assert_eq!(lookup(established.clone(), OLD_TOKEN).await, Code::NotFound);

    // Renewed by another CA, so a client can tell which certificate it got.
    let new_ca = Pki::new("new");
    let renewed = new_ca.server("renewed");
    replace(&key, renewed.key_pem());
    replace(&cert, renewed.cert_pem());
    eventually("a connection with the renewed certificate", async || match channel(&server, &new_ca).await {
        Ok(fresh) => lookup(fresh, OLD_TOKEN).await == Code::NotFound,
        Err(_) => false,
    })
    .await;
    let stale = match channel(&server, &old_ca).await {
        Ok(fresh) => lookup(fresh, OLD_TOKEN).await,
        Err(_) => Code::Unavailable,
    };
    assert_ne!(stale, Code::NotFound, "new connections no longer get the old certificate");
    assert_eq!(lookup(established.clone(), OLD_TOKEN).await, Code::NotFound, "established connections carry on");

    replace(&cert, "not a certificate");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let fresh = channel(&server, &new_ca).await.expect("a broken file keeps the renewed certificate");
    assert_eq!(lookup(fresh, OLD_TOKEN).await, Code::NotFound);
}

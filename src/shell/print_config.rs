//! `serve --print-config`: the settings this process would serve with, as
//! JSON, so that tools check deployment manifests against the server itself
//! (`scripts/check_probes.py` runs it with a rendered ConfigMap as its
//! environment). Reads no file and binds nothing: the certificate and token
//! files of a manifest exist only in the pod.

use std::path::PathBuf;

use serde_json::{Value, json};

use crate::shell::config::ServeArgs;
use crate::shell::health::{LIVENESS_NAMES, READINESS_NAMES};

pub fn effective(args: &ServeArgs) -> Value {
    let path = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string());
    json!({
        "listen": args.listen.to_string(),
        "metrics_listen": args.metrics_listen.to_string(),
        // Serves health on its own only when TLS is on.
        "health_listen": args.health_listen.to_string(),
        "tls": {
            "cert": path(&args.tls_cert),
            "key": path(&args.tls_key),
            "client_ca": path(&args.tls_client_ca),
        },
        "tokens_file": path(&args.tokens_file),
        "store": format!("{:?}", args.store).to_lowercase(),
        "etcd": {
            "endpoints": args.etcd_endpoints,
            "shard_map": path(&args.shard_map),
            "prefix": args.etcd_prefix,
            "max_txn_ops": args.etcd_max_txn_ops,
            "batches_in_flight": args.etcd_batches_in_flight,
        },
        // The gRPC health service names: liveness never depends on etcd,
        // readiness does (DESIGN.md, Health and lifecycle).
        "health": { "liveness": LIVENESS_NAMES, "readiness": READINESS_NAMES },
    })
}

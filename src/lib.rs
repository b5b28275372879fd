pub mod canonical_json;
pub mod fingerprint;
pub mod proto;

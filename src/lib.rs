pub mod canonical_json;
pub mod config;
pub mod coordinator;
pub mod error;
pub mod fingerprint;
pub mod proto;
pub mod request;
pub mod store;

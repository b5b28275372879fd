//! The bounds of DESIGN.md that every request is held to, and the rules for
//! tenant and namespace names.

use std::time::Duration;

/// The shortest lease TTL: etcd's minimum with default election settings is
/// 2 s (shorter grants are silently raised), and DESIGN.md promises it.
pub const MIN_LEASE_TTL: Duration = Duration::from_secs(2);

/// Tenant used when authentication is off and the request names none.
pub const DEFAULT_TENANT: &str = "default";

/// Longest tenant or namespace name.
pub const MAX_SCOPE_BYTES: usize = 128;

/// The configured bounds every request is validated against.
#[derive(Debug, Clone)]
pub struct Limits {
    pub default_lease_ttl: Duration,
    pub max_lease_ttl: Duration,
    pub max_wait: Duration,
    pub default_retention: Duration,
    pub max_retention: Duration,
    pub max_payload_bytes: usize,
    pub max_result_bytes: usize,
}

/// Why `name` is not a valid tenant or namespace, if it is not. The allowed
/// characters include no separator, so a name can never reach into another
/// scope of the storage layout.
pub fn check_scope_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_SCOPE_BYTES {
        return Err(format!("must be 1..{MAX_SCOPE_BYTES} bytes (got {})", name.len()));
    }
    match name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':'))) {
        Some(c) => Err(format!("may contain only A-Z a-z 0-9 . _ - : (found {c:?})")),
        None => Ok(()),
    }
}

//! Where a record lives in etcd.
//!
//! `{prefix}{tenant}/{namespace}/{key}/record` holds the durable record and
//! `{prefix}{tenant}/{namespace}/{key}/lock` the ownership lock. Each component
//! is percent-encoded with everything but `A-Z a-z 0-9 - . _` escaped, so no
//! component contains `/` and no byte of a key or namespace can reach into
//! another scope; the encoding is injective, so distinct ids never share keys.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use crate::core::record::RecordId;

const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_');

/// The etcd keys of one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordKeys {
    /// Every key of this record starts with this; a watch on it sees them all.
    pub scope: String,
    pub record: String,
    pub lock: String,
}

impl RecordKeys {
    pub fn new(prefix: &str, id: &RecordId) -> Self {
        let scope = format!(
            "{prefix}{}/{}/{}/",
            utf8_percent_encode(&id.tenant, COMPONENT),
            utf8_percent_encode(&id.namespace, COMPONENT),
            utf8_percent_encode(&id.key, COMPONENT),
        );
        Self { record: format!("{scope}record"), lock: format!("{scope}lock"), scope }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(tenant: &str, namespace: &str, key: &str) -> RecordKeys {
        let id = RecordId { tenant: tenant.into(), namespace: namespace.into(), key: key.into() };
        RecordKeys::new("/idem/", &id)
    }

    #[test]
    fn plain_ids_stay_readable() {
        let k = keys("default", "payments.create", "order-1");
        assert_eq!(k.record, "/idem/default/payments.create/order-1/record");
        assert_eq!(k.lock, "/idem/default/payments.create/order-1/lock");
    }

    #[test]
    fn separators_in_keys_cannot_escape_their_scope() {
        let sneaky = keys("default", "ns", "x/record");
        assert_eq!(sneaky.record, "/idem/default/ns/x%2Frecord/record");
        // A key that spells another scope's path stays inside its own.
        let traversal = keys("default", "ns", "../../other/ns/k");
        assert!(traversal.record.starts_with("/idem/default/ns/"));
        assert_eq!(traversal.scope.matches('/').count(), 5);
    }

    #[test]
    fn distinct_ids_never_share_a_prefix() {
        let ids = [
            ("t", "ns", "a"),
            ("t", "ns", "a/"),
            ("t", "ns", "a%2F"),
            ("t", "ns/a", "b"),
            ("t/ns", "a", "b"),
            ("t", "ns", "a b"),
        ];
        let scopes: Vec<String> = ids.iter().map(|(t, n, k)| keys(t, n, k).scope).collect();
        for (i, a) in scopes.iter().enumerate() {
            for (j, b) in scopes.iter().enumerate() {
                if i != j {
                    assert!(!a.starts_with(b.as_str()), "{a} is inside {b}");
                }
            }
        }
    }
}

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
        let mut scope = String::with_capacity(prefix.len() + id.tenant.len() + id.namespace.len() + id.key.len() + 3);
        scope.push_str(prefix);
        for component in [&id.tenant, &id.namespace, &id.key] {
            push_encoded(&mut scope, component);
            scope.push('/');
        }
        let with_suffix = |suffix: &str| {
            let mut key = String::with_capacity(scope.len() + suffix.len());
            key.push_str(&scope);
            key.push_str(suffix);
            key
        };
        Self { record: with_suffix("record"), lock: with_suffix("lock"), scope }
    }
}

/// Appends `component` percent-encoded. Most components (UUIDs, dotted
/// namespaces) need no escape and are copied as they are: this runs for
/// every store call.
fn push_encoded(out: &mut String, component: &str) {
    if component.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_')) {
        out.push_str(component);
    } else {
        out.extend(utf8_percent_encode(component, COMPONENT));
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
    fn the_fast_path_encodes_as_the_encoder_does() {
        for component in ["order-1", "payments.create", "a_b", "x/record", "a b", "€", "%2F", "", "A-z.0_9~"] {
            let mut fast = String::new();
            push_encoded(&mut fast, component);
            assert_eq!(fast, utf8_percent_encode(component, COMPONENT).to_string(), "{component:?}");
        }
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

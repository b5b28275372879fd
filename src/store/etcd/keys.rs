//! Where a record lives in etcd.
//!
//! `{prefix}{tenant}/{namespace}/{key}/record` holds the durable record and
//! `{prefix}{tenant}/{namespace}/{key}/lock` the ownership lock. Each component
//! is percent-encoded with everything but `A-Z a-z 0-9 - . _` escaped, so no
//! component contains `/` and no byte of a key or namespace can reach into
//! another scope; the encoding is injective, so distinct ids never share keys.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};

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

/// Where every record of one namespace lives: `{prefix}{tenant}/{namespace}/`.
pub fn namespace_scope(prefix: &str, tenant: &str, namespace: &str) -> String {
    let mut scope = prefix.to_owned();
    for component in [tenant, namespace] {
        push_encoded(&mut scope, component);
        scope.push('/');
    }
    scope
}

/// Where forget's tombstones live. No tenant encodes to a component that
/// starts `%f`: the encoder writes `%` only before two upper-case hex digits.
pub fn forgotten_scope(prefix: &str) -> String {
    format!("{prefix}{FORGOTTEN_COMPONENT}")
}

/// The first component of every tombstone's key.
pub const FORGOTTEN_COMPONENT: &str = "%forgotten/";

/// The tombstone that tells every replica `id` was forgotten.
pub fn forgotten_key(prefix: &str, id: &RecordId) -> String {
    let mut key = forgotten_scope(prefix);
    for (i, component) in [&id.tenant, &id.namespace, &id.key].into_iter().enumerate() {
        if i > 0 {
            key.push('/');
        }
        push_encoded(&mut key, component);
    }
    key
}

/// The id a tombstone key names.
pub fn forgotten_id(prefix: &str, key: &[u8]) -> Option<RecordId> {
    let rest = std::str::from_utf8(key).ok()?.strip_prefix(&forgotten_scope(prefix))?;
    let mut parts = rest.split('/').map(decode_component);
    let id = RecordId { tenant: parts.next()?, namespace: parts.next()?, key: parts.next()? };
    parts.next().is_none().then_some(id)
}

/// A component back from its encoded form.
pub fn decode_component(encoded: &str) -> String {
    percent_decode_str(encoded).decode_utf8_lossy().into_owned()
}

/// The first key after every key that starts with `scope`.
pub fn range_end(scope: &str) -> Vec<u8> {
    let mut end = scope.as_bytes().to_vec();
    // Scopes end in '/', so the last byte can always be raised.
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    end
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

    #[test]
    fn tombstones_name_their_record_and_sit_apart_from_every_tenant() {
        let id = RecordId { tenant: "t:1".into(), namespace: "ns".into(), key: "order/7 %fo".into() };
        let key = forgotten_key("/idem/", &id);
        assert_eq!(forgotten_id("/idem/", key.as_bytes()), Some(id.clone()));
        assert!(!RecordKeys::new("/idem/", &id).scope.starts_with(&forgotten_scope("/idem/")));
        let percent_tenant = RecordId { tenant: "%forgotten".into(), ..id };
        assert!(!RecordKeys::new("/idem/", &percent_tenant).scope.starts_with(&forgotten_scope("/idem/")));
        assert_eq!(decode_component("order%2F7%20%25fo"), "order/7 %fo");
    }
}

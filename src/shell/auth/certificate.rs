//! The tenant a verified client certificate names: with a configured prefix,
//! the rest of a URI SAN after it (SPIFFE style, e.g. prefix
//! `spiffe://example.org/tenant/` and SAN `spiffe://example.org/tenant/acme`)
//! and nothing else — SPIRE and cert-manager's csi-driver let workloads
//! influence the subject CN, so it must not pick a tenant there; without a
//! prefix, the subject CN. The TLS layer has already checked the chain
//! against `--tls-client-ca`; this only reads the name.

use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

pub fn tenant(der: &[u8], uri_prefix: Option<&str>) -> Result<String, String> {
    let (_, certificate) =
        X509Certificate::from_der(der).map_err(|e| format!("cannot read the client certificate: {e}"))?;
    if let Some(prefix) = uri_prefix {
        let san = certificate
            .subject_alternative_name()
            .map_err(|e| format!("cannot read the client certificate's subject alternative names: {e}"))?;
        let mut named: Vec<&str> = san
            .iter()
            .flat_map(|extension| extension.value.general_names.iter())
            .filter_map(|name| match name {
                GeneralName::URI(uri) => uri.strip_prefix(prefix),
                _ => None,
            })
            .collect();
        named.dedup();
        return match named.as_slice() {
            [] => Err(format!("the client certificate has no URI SAN starting with {prefix:?}")),
            [tenant] => Ok((*tenant).to_owned()),
            _ => Err(format!("the client certificate names several tenants under {prefix:?}: {named:?}")),
        };
    }
    let common_name = certificate.subject().iter_common_name().next();
    common_name
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_owned)
        .ok_or_else(|| "the client certificate has no subject CN".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DnType, KeyPair, SanType};

    fn certificate(common_name: Option<&str>, uris: &[&str]) -> Vec<u8> {
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        if let Some(cn) = common_name {
            params.distinguished_name.push(DnType::CommonName, cn);
        }
        params.subject_alt_names = uris.iter().map(|u| SanType::URI(u.to_string().try_into().unwrap())).collect();
        let key = KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    const PREFIX: Option<&str> = Some("spiffe://example.org/tenant/");

    #[test]
    fn uri_san_under_the_prefix_wins_over_the_common_name() {
        let der = certificate(Some("ignored"), &["spiffe://other.org/tenant/evil", "spiffe://example.org/tenant/acme"]);
        assert_eq!(tenant(&der, PREFIX).unwrap(), "acme");
        assert_eq!(tenant(&der, None).unwrap(), "ignored", "without a prefix only the CN counts");
    }

    #[test]
    fn with_a_prefix_the_common_name_never_names_the_tenant() {
        let der = certificate(Some("globex"), &["spiffe://other.org/tenant/evil"]);
        assert!(tenant(&der, PREFIX).unwrap_err().contains("no URI SAN starting with"));
        assert_eq!(tenant(&der, None).unwrap(), "globex", "without a prefix the CN does");
    }

    #[test]
    fn no_name_or_two_names_is_an_error() {
        assert!(tenant(&certificate(None, &[]), PREFIX).unwrap_err().contains("no URI SAN"));
        assert!(tenant(&certificate(None, &[]), None).unwrap_err().contains("no subject CN"));
        let two = certificate(Some("x"), &["spiffe://example.org/tenant/a", "spiffe://example.org/tenant/b"]);
        assert!(tenant(&two, PREFIX).unwrap_err().contains("several tenants"));
        assert!(tenant(b"not der", None).unwrap_err().contains("cannot read"));
    }
}

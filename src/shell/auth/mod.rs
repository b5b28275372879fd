//! Who is calling. With authentication on (a `--tls-client-ca` or a
//! `--tokens-file`), every coordinator call must carry a verified identity —
//! a client certificate or a bearer token — and that identity is the one
//! tenant the call may touch (DESIGN.md, "Identity of a record"). With it off,
//! calls pass untouched and name their tenant in the request.

pub mod certificate;
pub mod tokens;

use std::sync::Arc;

use tonic::metadata::MetadataMap;
use tonic::service::Interceptor;
use tonic::{Request, Status};

use crate::core::error::Error;
use crate::core::limits::check_scope_name;
use crate::grpc::tenant::Caller;
pub use tokens::{TokenTable, TokensFile};

/// How callers prove who they are.
#[derive(Debug, Clone, Default)]
pub struct AuthConfig {
    /// Client certificates (verified by TLS against `--tls-client-ca`) name tenants.
    pub client_certificates: bool,
    /// See [`certificate::tenant`].
    pub tenant_uri_prefix: Option<String>,
    pub tokens: Option<TokensFile>,
}

impl AuthConfig {
    pub fn is_on(&self) -> bool {
        self.client_certificates || self.tokens.is_some()
    }
}

/// The tonic interceptor in front of the coordinator service.
#[derive(Clone)]
pub struct Authenticator {
    config: Option<Arc<AuthConfig>>,
}

impl Authenticator {
    pub fn new(config: AuthConfig) -> Self {
        Self { config: config.is_on().then(|| Arc::new(config)) }
    }
}

impl Interceptor for Authenticator {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let Some(config) = &self.config else { return Ok(request) };
        let chain = request.peer_certs();
        let leaf = chain.as_ref().and_then(|chain| chain.first()).map(|der| der.as_ref());
        let caller = identify(config, request.metadata(), leaf).map_err(|why| {
            tracing::info!(reason = %why, "call refused: unauthenticated");
            Error::Unauthenticated(why)
        })?;
        request.extensions_mut().insert(caller);
        Ok(request)
    }
}

/// The caller's identity from its leaf certificate and `authorization`
/// header. Credentials that are present must all be valid and agree.
fn identify(config: &AuthConfig, metadata: &MetadataMap, certificate: Option<&[u8]>) -> Result<Caller, String> {
    let from_token = match metadata.get("authorization") {
        None => None,
        Some(value) => {
            let tokens = config.tokens.as_ref().ok_or("bearer tokens are not accepted here (no --tokens-file)")?;
            let tokens = tokens.current.get();
            // The scheme name is case-insensitive (RFC 9110, 11.1).
            let token = value
                .to_str()
                .ok()
                .and_then(|v| v.split_once(' '))
                .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
                .map(|(_, token)| token)
                .ok_or("the authorization header must be \"Bearer <token>\"")?;
            Some(tokens.tenant_of(token.trim()).ok_or("unknown bearer token")?.to_owned())
        }
    };
    let from_certificate = match certificate {
        Some(der) if config.client_certificates => {
            let tenant = certificate::tenant(der, config.tenant_uri_prefix.as_deref())?;
            check_scope_name(&tenant)
                .map_err(|why| format!("the client certificate names tenant {tenant:?}, which {why}"))?;
            Some(tenant)
        }
        _ => None,
    };
    match (from_certificate, from_token) {
        (Some(a), Some(b)) if a != b => {
            Err(format!("the client certificate (tenant {a:?}) and the bearer token (tenant {b:?}) disagree"))
        }
        (Some(tenant), _) | (None, Some(tenant)) => Ok(Caller { tenant }),
        (None, None) => Err(match (config.client_certificates, config.tokens.is_some()) {
            (true, true) => "credentials required: a client certificate or an authorization: Bearer token",
            (true, false) => "credentials required: a client certificate",
            _ => "credentials required: an authorization: Bearer token",
        }
        .to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(client_certificates: bool, tokens: &[(&str, &str)]) -> AuthConfig {
        let file: String = tokens.iter().map(|(t, token)| format!("{t} {}\n", tokens::hash_token(token))).collect();
        AuthConfig {
            client_certificates,
            tenant_uri_prefix: None,
            tokens: (!tokens.is_empty()).then(|| TokensFile {
                path: "tokens".into(),
                current: Arc::new(crate::shell::reload::Reloadable::new(TokenTable::parse(&file, |_| Ok(())).unwrap())),
            }),
        }
    }

    fn bearer(token: &str) -> MetadataMap {
        let mut metadata = MetadataMap::new();
        metadata.insert("authorization", format!("Bearer {token}").parse().unwrap());
        metadata
    }

    #[test]
    fn tokens_name_tenants_and_anything_else_is_refused() {
        let config = config(false, &[("acme", "acme-secret")]);
        assert_eq!(identify(&config, &bearer("acme-secret"), None).unwrap().tenant, "acme");
        let mut lowercase = MetadataMap::new();
        lowercase.insert("authorization", "bearer acme-secret".parse().unwrap());
        assert_eq!(identify(&config, &lowercase, None).unwrap().tenant, "acme", "the scheme is case-insensitive");
        assert_eq!(identify(&config, &bearer("wrong"), None).unwrap_err(), "unknown bearer token");
        assert!(identify(&config, &MetadataMap::new(), None).unwrap_err().starts_with("credentials required"));
        let mut basic = MetadataMap::new();
        basic.insert("authorization", "Basic YWJj".parse().unwrap());
        assert!(identify(&config, &basic, None).unwrap_err().contains("Bearer <token>"));
    }

    #[test]
    fn a_token_is_refused_where_tokens_are_not_configured() {
        let config = config(true, &[]);
        assert!(identify(&config, &bearer("anything"), None).unwrap_err().contains("no --tokens-file"));
    }
}

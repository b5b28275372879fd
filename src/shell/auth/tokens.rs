//! Bearer tokens from a tokens file. The file holds SHA-256 digests, never
//! tokens, so a leaked file or backup grants nothing:
//!
//! ```text
//! # tenant   sha256 of the token, hex (idempotency-coordinator hash-token)
//! acme       9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
//! ```
//!
//! A tenant may have several lines (rotation: add the new token, roll the
//! callers, remove the old one). Plain SHA-256 fits because tokens are random
//! secrets of 128 bits or more, not passwords: nothing is left to brute-force.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::shell::reload::Reloadable;

/// A tokens file and the table last loaded from it.
#[derive(Debug, Clone)]
pub struct TokensFile {
    pub path: PathBuf,
    pub current: Arc<Reloadable<TokenTable>>,
}

impl TokensFile {
    pub fn load(path: PathBuf) -> Result<Self, String> {
        let table = TokenTable::load(&path)?;
        Ok(Self { path, current: Arc::new(Reloadable::new(table)) })
    }
}

/// Hashes of accepted tokens and the tenant each one authenticates.
#[derive(Debug, Clone, Default)]
pub struct TokenTable {
    tenants: HashMap<[u8; 32], String>,
}

/// Tokens shorter than this are refused by `hash-token`: a bearer token must
/// be a random secret (16 bytes of entropy as 32 hex or 22 base64 characters).
pub const MIN_TOKEN_CHARS: usize = 22;

/// The digest a tokens file lists for `token`, as lowercase hex.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

impl TokenTable {
    /// Parses a tokens file; `check_tenant` vets each tenant name. Errors name
    /// the line.
    pub fn parse(text: &str, check_tenant: impl Fn(&str) -> Result<(), String>) -> Result<Self, String> {
        let mut table = TokenTable::default();
        for (index, line) in text.lines().enumerate() {
            let line_no = index + 1;
            let line = line.split('#').next().unwrap_or_default().trim();
            if line.is_empty() {
                continue;
            }
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [tenant, digest] = fields.as_slice() else {
                return Err(format!("line {line_no}: expected \"<tenant> <sha256 hex>\""));
            };
            check_tenant(tenant).map_err(|why| format!("line {line_no}: tenant {why}"))?;
            let mut hash = [0u8; 32];
            hex::decode_to_slice(digest, &mut hash)
                .map_err(|_| format!("line {line_no}: the digest must be 64 hex digits (a SHA-256), not a token"))?;
            if let Some(other) = table.tenants.insert(hash, (*tenant).to_owned()) {
                return Err(format!("line {line_no}: this token hash is already listed for tenant {other:?}"));
            }
        }
        Ok(table)
    }

    /// Reads a tokens file; errors name the flag, the file and the line.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("--tokens-file: cannot read {} as UTF-8 text: {e}", path.display()))?;
        let table = Self::parse(&text, crate::core::limits::check_scope_name)
            .map_err(|why| format!("--tokens-file: {}: {why}", path.display()))?;
        if table.is_empty() {
            return Err(format!("--tokens-file: {} lists no tokens", path.display()));
        }
        Ok(table)
    }

    /// The tenant `token` authenticates, if it is listed.
    pub fn tenant_of(&self, token: &str) -> Option<&str> {
        let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        self.tenants.get(&hash).map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.tenants.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tenants.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn any_tenant(_: &str) -> Result<(), String> {
        Ok(())
    }

    #[test]
    fn listed_tokens_name_their_tenant() {
        let file = format!(
            "# comment\n\nacme {}  # trailing comment\nacme {}\nglobex {}\n",
            hash_token("acme-old-token"),
            hash_token("acme-new-token"),
            hash_token("globex-token")
        );
        let table = TokenTable::parse(&file, any_tenant).expect("valid file");
        assert_eq!(table.len(), 3);
        assert_eq!(table.tenant_of("acme-old-token"), Some("acme"));
        assert_eq!(table.tenant_of("acme-new-token"), Some("acme"));
        assert_eq!(table.tenant_of("globex-token"), Some("globex"));
        assert_eq!(table.tenant_of("unknown"), None);
        assert_eq!(table.tenant_of(&hash_token("globex-token")), None, "the hash itself is not a token");
    }

    #[test]
    fn files_are_checked_when_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tokens");
        std::fs::write(&file, "# nothing yet\n").unwrap();
        assert!(TokenTable::load(&file).unwrap_err().ends_with("lists no tokens"));
        std::fs::write(&file, format!("acme/x {}\n", hash_token("t"))).unwrap();
        assert!(TokenTable::load(&file).unwrap_err().contains("line 1: tenant may contain only"));
        std::fs::write(&file, format!("acme {}\n", hash_token("t"))).unwrap();
        assert_eq!(TokenTable::load(&file).unwrap().tenant_of("t"), Some("acme"));
        assert!(TokenTable::load(&dir.path().join("absent")).unwrap_err().starts_with("--tokens-file: cannot read"));
    }

    #[test]
    fn bad_lines_are_named() {
        let error = |text: &str| TokenTable::parse(text, any_tenant).unwrap_err();
        assert!(error("acme\n").starts_with("line 1:"));
        assert!(error("\nacme plaintext-token\n").starts_with("line 2: the digest"));
        let twice = format!("a {0}\nb {0}\n", hash_token("t"));
        assert!(error(&twice).contains("already listed for tenant \"a\""));
        let refused = TokenTable::parse(&format!("a/b {}", hash_token("t")), |_| Err("is bad".into())).unwrap_err();
        assert_eq!(refused, "line 1: tenant is bad");
    }
}

//! The etcd client's files: TLS material and a user's password, read once at
//! startup for the --etcd-* flags and for each shard of a shard-map file.

use std::path::Path;

use crate::store::etcd::config::{EtcdTls, Secret};

/// The etcd client's TLS: the CA that signs etcd's certificates, and the
/// client certificate and key when etcd asks for one.
pub fn etcd_tls(ca: Option<&Path>, client: Option<(&Path, &Path)>) -> Result<Option<EtcdTls>, String> {
    let Some(ca) = ca else { return Ok(None) };
    let client = match client {
        Some((cert, key)) => Some((read("etcd-cert", cert)?, Secret::new(read("etcd-key", key)?))),
        None => None,
    };
    Ok(Some(EtcdTls { ca: read("etcd-ca", ca)?, client }))
}

/// An etcd user and the password in its file.
pub fn etcd_credentials(user: Option<(&str, &Path)>) -> Result<Option<(String, Secret)>, String> {
    let Some((user, file)) = user else { return Ok(None) };
    let mut password = read("etcd-password-file", file)?;
    // Files written by editors and `echo` end in a newline that is not part of the password.
    while password.last().is_some_and(|b| matches!(b, b'\n' | b'\r')) {
        password.pop();
    }
    std::str::from_utf8(&password).map_err(|_| format!("{} must hold UTF-8 text", file.display()))?;
    Ok(Some((user.to_owned(), Secret::new(password))))
}

fn read(flag: &str, path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("--{flag}: cannot read {}: {e}", path.display()))
}

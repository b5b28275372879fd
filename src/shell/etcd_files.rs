//! The etcd client's files: TLS material and a user's password, read once at
//! startup for the --etcd-* flags and for each shard of a shard-map file.
//! `named` turns a setting (`ca`, `cert`, `key`, `password_file`) into the
//! name errors give it: a flag, or a field of the shard-map file.

use std::path::Path;

use crate::store::etcd::config::{EtcdTls, Secret};

/// The etcd client's TLS: the CA that signs etcd's certificates, and the
/// client certificate and key when etcd asks for one.
pub fn etcd_tls(
    ca: Option<&Path>,
    client: Option<(&Path, &Path)>,
    named: impl Fn(&str) -> String,
) -> Result<Option<EtcdTls>, String> {
    let Some(ca) = ca else { return Ok(None) };
    let client = match client {
        Some((cert, key)) => Some((read(&named("cert"), cert)?, Secret::new(read(&named("key"), key)?))),
        None => None,
    };
    Ok(Some(EtcdTls { ca: read(&named("ca"), ca)?, client }))
}

/// An etcd user and the password in its file.
pub fn etcd_credentials(
    user: Option<(&str, &Path)>,
    named: impl Fn(&str) -> String,
) -> Result<Option<(String, Secret)>, String> {
    let Some((user, file)) = user else { return Ok(None) };
    let name = named("password_file");
    let mut password = read(&name, file)?;
    // Files written by editors and `echo` end in a newline that is not part of the password.
    while password.last().is_some_and(|b| matches!(b, b'\n' | b'\r')) {
        password.pop();
    }
    std::str::from_utf8(&password).map_err(|_| format!("{name} must hold UTF-8 text"))?;
    Ok(Some((user.to_owned(), Secret::new(password))))
}

/// The name of a setting as an `--etcd-*` flag.
pub fn flag(setting: &str) -> String {
    format!("--etcd-{}", setting.replace('_', "-"))
}

fn read(name: &str, path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{name}: cannot read {}: {e}", path.display()))
}

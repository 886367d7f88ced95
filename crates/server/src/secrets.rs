//! Files that hold the server's secrets: the region's ed25519 signing key
//! and the health authority's admin token. Created on first start with
//! mode 0600; never logged.

use anyhow::{bail, Context, Result};
use greenlight_protocol::ed25519_dalek::SigningKey;
use rand::RngCore;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Reads `path`, or creates it with `make()` and mode 0600 if it is missing.
/// Refuses a file others can read.
fn load_or_create(path: &Path, make: impl FnOnce() -> Vec<u8>) -> Result<(Vec<u8>, bool)> {
    match std::fs::read(path) {
        Ok(bytes) => {
            let mode = std::fs::metadata(path)?.permissions().mode();
            if mode & 0o077 != 0 {
                bail!(
                    "{} is readable by others (mode {:o}); run chmod 600 on it",
                    path.display(),
                    mode & 0o777
                );
            }
            Ok((bytes, false))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let bytes = make();
            let tmp = path.with_extension("tmp");
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .with_context(|| format!("cannot create {}", tmp.display()))?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)
                .with_context(|| format!("cannot create {}", path.display()))?;
            Ok((bytes, true))
        }
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// The region's signing key from `data_dir/signing.key` (32 raw bytes,
/// hex-encoded), generated on first start. The bool says whether it is new.
pub fn signing_key(data_dir: &Path) -> Result<(SigningKey, bool)> {
    let path = data_dir.join("signing.key");
    let (text, created) = load_or_create(&path, || {
        let mut seed = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut seed);
        hex::encode(seed).into_bytes()
    })?;
    let seed: [u8; 32] = hex::decode(String::from_utf8_lossy(&text).trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .with_context(|| format!("{} does not hold a 32-byte hex key", path.display()))?;
    Ok((SigningKey::from_bytes(&seed), created))
}

/// The admin token from `data_dir/admin.token`, generated on first start.
pub fn admin_token(data_dir: &Path) -> Result<(String, bool)> {
    let path = data_dir.join("admin.token");
    let (text, created) = load_or_create(&path, || {
        let mut raw = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut raw);
        hex::encode(raw).into_bytes()
    })?;
    let token = String::from_utf8(text)
        .context("admin.token is not text")?
        .trim()
        .to_owned();
    if token.len() < 16 {
        bail!(
            "{} holds a token shorter than 16 characters",
            path.display()
        );
    }
    Ok((token, created))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_created_private_and_reloaded() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (k1, new1) = signing_key(dir.path()).expect("created");
        let (k2, new2) = signing_key(dir.path()).expect("reloaded");
        assert!(new1 && !new2);
        assert_eq!(k1.to_bytes(), k2.to_bytes());
        let mode = std::fs::metadata(dir.path().join("signing.key"))
            .expect("exists")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::set_permissions(
            dir.path().join("signing.key"),
            std::fs::Permissions::from_mode(0o644),
        )
        .expect("chmod");
        assert!(signing_key(dir.path()).is_err());
    }
}

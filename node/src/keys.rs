//! Validator and development keys.
//!
//! A key file holds one line: the 32-byte ed25519 secret in hex. It is
//! written with mode 0600 and refused if it is readable by others.

use std::io::Write;
use std::path::Path;

use anyhow::{bail, Context};
use ed25519_dalek::SigningKey;
use velox_exec::AccountId;

/// Generates a key and writes it to `path` (refusing to overwrite).
pub fn keygen(path: &Path) -> anyhow::Result<SigningKey> {
    if path.exists() {
        bail!(
            "{} exists; refusing to overwrite a key (remove it first if you mean to)",
            path.display()
        );
    }
    let key = SigningKey::generate(&mut rand::rngs::OsRng);
    write_key(path, &key)?;
    Ok(key)
}

pub fn write_key(path: &Path, key: &SigningKey) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating key file {}", path.display()))?;
    writeln!(f, "{}", hex::encode(key.to_bytes()))?;
    Ok(())
}

pub fn read_key(path: &Path) -> anyhow::Result<SigningKey> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).with_context(|| {
        format!(
            "key_file {}: cannot read (create one with `velox keygen --out {}`)",
            path.display(),
            path.display()
        )
    })?;
    if meta.permissions().mode() & 0o077 != 0 {
        bail!(
            "key_file {}: readable by group or others; fix: chmod 600 {}",
            path.display(),
            path.display()
        );
    }
    let text = std::fs::read_to_string(path)?;
    let mut secret = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut secret)
        .with_context(|| format!("key_file {}: expected 64 hex characters", path.display()))?;
    Ok(SigningKey::from_bytes(&secret))
}

pub fn account_of(key: &SigningKey) -> AccountId {
    AccountId(key.verifying_key().to_bytes())
}

/// The `i`th development key of `seed`: blake3("velox-dev-key" ‖ seed ‖ i).
/// The genesis funds these and the load generator signs with them.
pub fn dev_key(seed: &str, i: u32) -> SigningKey {
    let mut h = blake3::Hasher::new();
    h.update(b"velox-dev-key");
    h.update(seed.as_bytes());
    h.update(&i.to_le_bytes());
    SigningKey::from_bytes(h.finalize().as_bytes())
}

/// PKCS#8 DER of a key, for TLS certificates.
pub fn pkcs8_der(key: &SigningKey) -> anyhow::Result<Vec<u8>> {
    use ed25519_dalek::pkcs8::EncodePrivateKey;
    Ok(key
        .to_pkcs8_der()
        .context("encoding key as PKCS#8")?
        .as_bytes()
        .to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keygen_roundtrip_and_refusals() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        let k = keygen(&p).unwrap();
        assert_eq!(read_key(&p).unwrap().to_bytes(), k.to_bytes());
        assert!(keygen(&p).is_err());
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(read_key(&p).unwrap_err().to_string().contains("chmod 600"));
        assert_ne!(dev_key("a", 0).to_bytes(), dev_key("a", 1).to_bytes());
        assert_eq!(dev_key("a", 7).to_bytes(), dev_key("a", 7).to_bytes());
    }
}

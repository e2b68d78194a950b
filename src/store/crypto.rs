//! The key that seals stored credentials: loading or creating the `[secrets] key_file`, and
//! XChaCha20-Poly1305 sealing with associated data that binds each blob to its row.
//!
//! Blob layout: one version byte ([`BLOB_VERSION`]), a random 24-byte nonce, then the
//! ciphertext with its 16-byte tag.

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::{RngCore, TryRngCore};

use super::StoreError;

/// Length of the key file's contents: a raw 256-bit key.
pub const KEY_LEN: usize = 32;
/// The first byte of every sealed blob; a new scheme would take the next number.
pub const BLOB_VERSION: u8 = 1;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;

/// Seals and opens secrets at rest. Cheap to clone; `Debug` never shows the key.
#[derive(Clone)]
pub struct Cipher {
    /// The AEAD keyed with the 32-byte key from the key file; the only place the key lives.
    aead: XChaCha20Poly1305,
}

impl fmt::Debug for Cipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Cipher { key: <redacted> }")
    }
}

impl Cipher {
    /// A cipher with a given key (tests, or keys kept elsewhere).
    pub fn from_key(key: [u8; KEY_LEN]) -> Cipher {
        Cipher {
            aead: XChaCha20Poly1305::new(&key.into()),
        }
    }

    /// Reads the 32-byte key at `path`, or creates it (mode 0600, from OS randomness) if the
    /// file does not exist. A file of another length is refused; a key file that group or
    /// others may read is used, with a warning.
    ///
    /// Creation is atomic: the key is written and synced under a temporary name and then
    /// hard-linked into place, so two processes starting at once agree on one key and no
    /// one ever reads a half-written file.
    pub fn load_or_create(path: &Path) -> Result<Cipher, StoreError> {
        match read_key(path) {
            Ok(key) => return Ok(Cipher::from_key(key)),
            Err(KeyRead::Missing) => {}
            Err(KeyRead::Failed(e)) => return Err(e),
        }
        match create_key(path) {
            Ok(key) => {
                tracing::info!(path = %path.display(), "created a new credentials key file");
                Ok(Cipher::from_key(key))
            }
            // Another process created it first: use theirs.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => match read_key(path) {
                Ok(key) => Ok(Cipher::from_key(key)),
                Err(KeyRead::Missing) => Err(key_error(path, "vanished while being created")),
                Err(KeyRead::Failed(e)) => Err(e),
            },
            Err(e) => Err(key_error(path, &format!("cannot create: {e}"))),
        }
    }

    /// Seals `plaintext`, binding it to `aad` (which must be given again to open it).
    pub fn encrypt(&self, plaintext: &[u8], aad: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let mut blob = Vec::with_capacity(1 + NONCE_LEN + plaintext.len() + TAG_LEN);
        blob.push(BLOB_VERSION);
        blob.extend_from_slice(&nonce);
        match self.aead.encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad,
            },
        ) {
            Ok(sealed) => blob.extend_from_slice(&sealed),
            // Only reachable for plaintexts over 256 GiB. The truncated blob (no tag) can
            // never open, so the failure surfaces as `StoreError::Crypto` on read.
            Err(_) => tracing::error!(len = plaintext.len(), "plaintext too large to seal"),
        }
        blob
    }

    /// Opens a blob made by [`Cipher::encrypt`] with the same key and `aad`.
    pub fn decrypt(&self, blob: &[u8], aad: &[u8]) -> Result<Vec<u8>, StoreError> {
        let Some((&version, rest)) = blob.split_first() else {
            return Err(StoreError::Crypto);
        };
        if version != BLOB_VERSION || rest.len() < NONCE_LEN + TAG_LEN {
            return Err(StoreError::Crypto);
        }
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        self.aead
            .decrypt(XNonce::from_slice(nonce), Payload { msg: sealed, aad })
            .map_err(|_| StoreError::Crypto)
    }
}

enum KeyRead {
    Missing,
    Failed(StoreError),
}

fn key_error(path: &Path, what: &str) -> StoreError {
    StoreError::Key(format!("{}: {what}", path.display()))
}

fn read_key(path: &Path) -> Result<[u8; KEY_LEN], KeyRead> {
    let file = match OpenOptions::new().read(true).open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(KeyRead::Missing),
        Err(e) => {
            return Err(KeyRead::Failed(key_error(
                path,
                &format!("cannot open: {e}"),
            )));
        }
    };
    let failed = |what: String| KeyRead::Failed(key_error(path, &what));
    let meta = file
        .metadata()
        .map_err(|e| failed(format!("cannot stat: {e}")))?;
    if !meta.is_file() {
        return Err(failed("not a regular file".to_owned()));
    }
    let mode = meta.permissions().mode();
    if mode & 0o077 != 0 {
        tracing::warn!(
            path = %path.display(),
            mode = format_args!("{:o}", mode & 0o777),
            "the credentials key file is readable by group or others; chmod 600 it"
        );
    }
    let mut bytes = Vec::with_capacity(KEY_LEN + 1);
    file.take(KEY_LEN as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| failed(format!("cannot read: {e}")))?;
    <[u8; KEY_LEN]>::try_from(bytes.as_slice()).map_err(|_| {
        failed(format!(
            "holds {}{} bytes, a key is exactly {KEY_LEN}",
            bytes.len(),
            if bytes.len() > KEY_LEN { "+" } else { "" }
        ))
    })
}

/// Writes a fresh key under a temporary name, then links it to `path`; fails with
/// `AlreadyExists` if `path` appeared meanwhile.
fn create_key(path: &Path) -> io::Result<[u8; KEY_LEN]> {
    let mut key = [0u8; KEY_LEN];
    rand::rngs::OsRng
        .try_fill_bytes(&mut key)
        .map_err(|e| io::Error::other(format!("no OS randomness: {e}")))?;

    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(format!(
        ".tmp-{}-{:016x}",
        std::process::id(),
        rand::rng().next_u64()
    ));
    let tmp = Path::new(&tmp_name);

    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(tmp)?;
        file.write_all(&key)?;
        file.sync_all()?;
        fs::hard_link(tmp, path)
    })();
    // Best effort: the temporary name is never read, whether or not linking worked.
    let _ = fs::remove_file(tmp);
    result?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && let Ok(dir) = fs::File::open(dir)
    {
        let _ = dir.sync_all();
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_aad_binding() {
        let c = Cipher::from_key([9; KEY_LEN]);
        let blob = c.encrypt(b"secret", b"row-1");
        assert_eq!(blob[0], BLOB_VERSION);
        assert_eq!(blob.len(), 1 + NONCE_LEN + 6 + TAG_LEN);
        assert_eq!(c.decrypt(&blob, b"row-1").expect("opens"), b"secret");
        assert!(c.decrypt(&blob, b"row-2").is_err());
        let other = Cipher::from_key([8; KEY_LEN]);
        assert!(other.decrypt(&blob, b"row-1").is_err());
        let mut tampered = blob.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert!(c.decrypt(&tampered, b"row-1").is_err());
        assert!(c.decrypt(&[], b"row-1").is_err());
        assert!(c.decrypt(&blob[..10], b"row-1").is_err());
        // Fresh nonce every time.
        assert_ne!(c.encrypt(b"secret", b"row-1"), blob);
    }
}

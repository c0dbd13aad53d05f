//! Sealing of provider keys with AES-256-GCM under the master key.
//!
//! Each seal uses a fresh random 96-bit nonce and binds the ciphertext to the row it
//! belongs to (associated data = entry id), so a sealed key copied to another row does
//! not open. The key version is stored beside the ciphertext so the master key can be
//! rotated: rows sealed under an older version are opened with that version's key.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use rand::RngCore;

use crate::Secret;

pub const NONCE_LEN: usize = 12;

#[derive(Clone)]
pub struct MasterKey {
    version: i32,
    cipher: Aes256Gcm,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MasterKey(v{}, ***)", self.version)
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MasterKeyError {
    #[error("must be base64")]
    NotBase64,
    #[error("must decode to exactly 32 bytes, got {0}")]
    WrongLength(usize),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SealError {
    #[error("sealed with key version {0}, which this process does not hold")]
    UnknownVersion(i32),
    #[error("sealed key does not open (wrong master key or tampered row)")]
    Open,
    #[error("sealing failed")]
    Seal,
}

/// What the database holds for one provider key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    pub ciphertext: Vec<u8>,
    pub nonce: Vec<u8>,
    pub version: i32,
}

impl MasterKey {
    /// Parses the base64 form of `PERPETUO_MASTER_KEY` (standard or URL-safe alphabet).
    pub fn from_base64(raw: &str) -> Result<Self, MasterKeyError> {
        let raw = raw.trim();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(raw)
            .or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(raw))
            .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(raw))
            .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(raw))
            .map_err(|_| MasterKeyError::NotBase64)?;
        Self::from_bytes(1, &bytes)
    }

    pub fn from_bytes(version: i32, bytes: &[u8]) -> Result<Self, MasterKeyError> {
        let cipher = Aes256Gcm::new_from_slice(bytes)
            .map_err(|_| MasterKeyError::WrongLength(bytes.len()))?;
        Ok(Self { version, cipher })
    }

    /// A fresh random key in base64, for generated development configuration.
    pub fn generate_base64() -> String {
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    pub fn version(&self) -> i32 {
        self.version
    }

    pub fn seal(&self, plaintext: &str, row_id: &[u8]) -> Result<Sealed, SealError> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let ciphertext = self
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext.as_bytes(),
                    aad: row_id,
                },
            )
            .map_err(|_| SealError::Seal)?;
        Ok(Sealed {
            ciphertext,
            nonce: nonce.to_vec(),
            version: self.version,
        })
    }

    pub fn open(&self, sealed: &Sealed, row_id: &[u8]) -> Result<Secret<String>, SealError> {
        if sealed.version != self.version {
            return Err(SealError::UnknownVersion(sealed.version));
        }
        if sealed.nonce.len() != NONCE_LEN {
            return Err(SealError::Open);
        }
        let plain = self
            .cipher
            .decrypt(
                Nonce::from_slice(&sealed.nonce),
                Payload {
                    msg: &sealed.ciphertext,
                    aad: row_id,
                },
            )
            .map_err(|_| SealError::Open)?;
        String::from_utf8(plain)
            .map(Secret::new)
            .map_err(|_| SealError::Open)
    }
}

/// The last four characters of a key, for display.
pub fn last4(key: &str) -> String {
    let chars: Vec<char> = key.chars().collect();
    chars[chars.len().saturating_sub(4)..].iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_with_fresh_nonces() {
        let k = MasterKey::from_base64(&MasterKey::generate_base64()).unwrap();
        let a = k.seal("sk-provider-secret", b"row-1").unwrap();
        let b = k.seal("sk-provider-secret", b"row-1").unwrap();
        assert_ne!(a.nonce, b.nonce);
        assert_ne!(a.ciphertext, b.ciphertext);
        assert!(!a.ciphertext.windows(6).any(|w| w == b"sk-pro"));
        assert_eq!(k.open(&a, b"row-1").unwrap().expose(), "sk-provider-secret");
    }

    #[test]
    fn refuses_other_rows_other_keys_and_tampering() {
        let k = MasterKey::from_base64(&MasterKey::generate_base64()).unwrap();
        let other = MasterKey::from_base64(&MasterKey::generate_base64()).unwrap();
        let mut s = k.seal("secret", b"row-1").unwrap();
        assert_eq!(k.open(&s, b"row-2"), Err(SealError::Open));
        assert_eq!(other.open(&s, b"row-1"), Err(SealError::Open));
        s.ciphertext[0] ^= 1;
        assert_eq!(k.open(&s, b"row-1"), Err(SealError::Open));
        s.version = 2;
        assert_eq!(k.open(&s, b"row-1"), Err(SealError::UnknownVersion(2)));
    }

    #[test]
    fn master_key_must_be_32_bytes_of_base64() {
        assert_eq!(
            MasterKey::from_base64("not base64!").unwrap_err(),
            MasterKeyError::NotBase64
        );
        assert_eq!(
            MasterKey::from_base64("AAAA").unwrap_err(),
            MasterKeyError::WrongLength(3)
        );
        assert_eq!(last4("sk-abcdef"), "cdef");
        assert_eq!(last4("ab"), "ab");
    }
}

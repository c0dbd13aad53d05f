//! Perpetuo API keys: `pp-` + 43 base64url characters (256 bits from the OS CSPRNG).
//! Only the SHA-256 of a key is stored; lookups go through a unique index on it.

use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::Secret;

pub const KEY_PREFIX: &str = "pp-";
const RANDOM_BYTES: usize = 32;
const DISPLAY_LEN: usize = 11;

/// SHA-256 of an API key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyHash(pub [u8; 32]);

impl std::fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyHash({})", &self.to_hex()[..8])
    }
}

impl KeyHash {
    pub fn of(key: &str) -> Self {
        Self(Sha256::digest(key.as_bytes()).into())
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn from_hex(s: &str) -> Option<Self> {
        let bytes = hex::decode(s).ok()?;
        bytes.try_into().ok().map(Self)
    }

    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        <[u8; 32]>::try_from(bytes).ok().map(Self)
    }

    /// Constant-time comparison, for checking a row found by index against the request.
    pub fn ct_eq(&self, other: &KeyHash) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

/// A freshly generated key: the plaintext is shown once, then only the hash is kept.
#[derive(Debug)]
pub struct NewApiKey {
    pub plaintext: Secret<String>,
    pub prefix: String,
    pub hash: KeyHash,
}

pub fn generate() -> NewApiKey {
    let mut bytes = [0u8; RANDOM_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let key = format!(
        "{KEY_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    );
    NewApiKey {
        prefix: key[..DISPLAY_LEN].to_string(),
        hash: KeyHash::of(&key),
        plaintext: Secret::new(key),
    }
}

/// Whether a bearer token has our key's shape; anything else is refused without a lookup.
pub fn looks_like_key(token: &str) -> bool {
    token.len() == KEY_PREFIX.len() + 43
        && token.starts_with(KEY_PREFIX)
        && token[KEY_PREFIX.len()..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_unique_prefixed_and_hashed() {
        let a = generate();
        let b = generate();
        assert_ne!(a.plaintext.expose(), b.plaintext.expose());
        assert!(looks_like_key(a.plaintext.expose()));
        assert!(a.plaintext.expose().starts_with(&a.prefix));
        assert_eq!(a.hash, KeyHash::of(a.plaintext.expose()));
        assert!(a.hash.ct_eq(&KeyHash::of(a.plaintext.expose())));
        assert!(!a.hash.ct_eq(&b.hash));
        assert_eq!(KeyHash::from_hex(&a.hash.to_hex()), Some(a.hash));
        assert!(!looks_like_key("pp-short"));
        assert!(!looks_like_key(
            "sk-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
        ));
    }
}

//! Single-use tokens sent by email (invitations, email verification, password reset):
//! 256 random bits, shown once, stored only as their SHA-256.

use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::Secret;

/// A freshly generated token: the plaintext goes into a link, the hash into the database.
#[derive(Debug)]
pub struct OneTimeToken {
    pub plaintext: Secret<String>,
    pub hash: [u8; 32],
}

/// A new token whose plaintext starts with `prefix` (which says what it is for).
pub fn generate(prefix: &str) -> OneTimeToken {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let plaintext = format!(
        "{prefix}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    );
    OneTimeToken {
        hash: hash(&plaintext),
        plaintext: Secret::new(plaintext),
    }
}

pub fn hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_distinct_and_hash_to_their_stored_form() {
        let a = generate("ppi-");
        let b = generate("ppi-");
        assert!(a.plaintext.expose().starts_with("ppi-"));
        assert_ne!(a.plaintext.expose(), b.plaintext.expose());
        assert_eq!(hash(a.plaintext.expose()), a.hash);
        assert_ne!(a.hash, b.hash);
    }
}

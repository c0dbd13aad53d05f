//! Sealing of provider keys with AES-256-GCM under the master key.
//!
//! Each seal uses a fresh random 96-bit nonce and binds the ciphertext to where the key
//! may be sent: the associated data names the entry id, its workspace, its provider kind
//! and its base URL ([`KeyBinding`]), so a sealed key copied to another row, or a row whose
//! kind or base URL was changed behind the admin API's back, does not open. Rows sealed
//! before that binding existed carry `aad_version` 1 (entry id only); they still open and
//! are re-sealed under the current binding by the admin API. The key version is stored
//! beside the ciphertext.
//!
//! Rotating the master key: while `PERPETUO_MASTER_KEY_PREVIOUS` holds the old key, a
//! [`MasterKey`] carries it too and [`MasterKey::open`] accepts rows sealed under either
//! (AES-GCM authenticates, so a row that opens under a key was sealed under it); new seals
//! always use the current key. `perpetuo-admin rotate-master-key` re-seals every row still
//! under the previous key, after which the previous key can be dropped.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use rand::RngCore;

use uuid::Uuid;

use crate::provider::ProviderKind;
use crate::Secret;

pub const NONCE_LEN: usize = 12;

/// Associated data of the first format: the entry id alone.
pub const AAD_ENTRY_ID: i16 = 1;
/// Associated data of the current format: entry id, workspace, kind and base URL.
pub const AAD_BOUND: i16 = 2;
/// What new seals use.
pub const AAD_CURRENT: i16 = AAD_BOUND;

/// Where a provider key belongs and may be sent; it is the associated data of its seal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyBinding<'a> {
    pub entry_id: Uuid,
    pub workspace_id: Uuid,
    pub kind: ProviderKind,
    /// The stored base URL; `None` means the kind's public endpoint.
    pub base_url: Option<&'a str>,
}

impl KeyBinding<'_> {
    /// The associated data of format `version`. Every variable-length part is
    /// length-prefixed, so two different bindings never give the same bytes.
    pub fn aad(&self, version: i16) -> Result<Vec<u8>, SealError> {
        match version {
            AAD_ENTRY_ID => Ok(self.entry_id.as_bytes().to_vec()),
            AAD_BOUND => {
                let kind = self.kind.as_str().as_bytes();
                let url = self.base_url.unwrap_or("").as_bytes();
                let mut out = Vec::with_capacity(48 + kind.len() + url.len());
                out.extend_from_slice(b"perpetuo-provider-key/2");
                out.extend_from_slice(self.entry_id.as_bytes());
                out.extend_from_slice(self.workspace_id.as_bytes());
                for part in [kind, url] {
                    out.extend_from_slice(&(part.len() as u64).to_be_bytes());
                    out.extend_from_slice(part);
                }
                out.push(u8::from(self.base_url.is_some()));
                Ok(out)
            }
            other => Err(SealError::UnknownAad(other)),
        }
    }
}

#[derive(Clone)]
pub struct MasterKey {
    version: i32,
    cipher: Aes256Gcm,
    /// The key being rotated away from: it still opens, it never seals.
    previous: Option<Aes256Gcm>,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.previous {
            Some(_) => write!(f, "MasterKey(v{}, ***, previous ***)", self.version),
            None => write!(f, "MasterKey(v{}, ***)", self.version),
        }
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
    #[error("sealed with associated-data format {0}, which this process does not know")]
    UnknownAad(i16),
}

/// What the database holds for one provider key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    pub ciphertext: Vec<u8>,
    pub nonce: Vec<u8>,
    pub version: i32,
    /// Format of the associated data the key was sealed with ([`AAD_ENTRY_ID`], [`AAD_BOUND`]).
    pub aad_version: i16,
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
        Ok(Self {
            version,
            cipher,
            previous: None,
        })
    }

    /// This key, also opening (never sealing) what `previous` sealed: the state of a
    /// master-key rotation.
    pub fn with_previous(mut self, previous: &MasterKey) -> Self {
        self.previous = Some(previous.cipher.clone());
        self
    }

    /// The master keys as both binaries read them: this key, with `previous` (the
    /// `PERPETUO_MASTER_KEY_PREVIOUS` of a rotation under way) when it is set.
    pub fn with_optional_previous(&self, previous: Option<&MasterKey>) -> Self {
        match previous {
            Some(previous) => self.clone().with_previous(previous),
            None => self.clone(),
        }
    }

    /// Whether a previous key is held (a rotation is under way).
    pub fn has_previous(&self) -> bool {
        self.previous.is_some()
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

    /// Seals a provider key for the entry `binding` describes, under the current format.
    pub fn seal(&self, plaintext: &str, binding: &KeyBinding<'_>) -> Result<Sealed, SealError> {
        self.seal_as(plaintext, binding, AAD_CURRENT)
    }

    /// Opens a provider key sealed for `binding`, by the format the row records, under
    /// the current key or, during a rotation, the previous one.
    pub fn open(
        &self,
        sealed: &Sealed,
        binding: &KeyBinding<'_>,
    ) -> Result<Secret<String>, SealError> {
        let aad = binding.aad(sealed.aad_version)?;
        match (self.open_raw(&self.cipher, sealed, &aad), &self.previous) {
            (Err(SealError::Open), Some(previous)) => self.open_raw(previous, sealed, &aad),
            (result, _) => result,
        }
    }

    /// Opens under the current key only: what a finished rotation leaves.
    pub fn open_current(
        &self,
        sealed: &Sealed,
        binding: &KeyBinding<'_>,
    ) -> Result<Secret<String>, SealError> {
        self.open_raw(&self.cipher, sealed, &binding.aad(sealed.aad_version)?)
    }

    /// Seals under an explicit associated-data format; tests use it to write old rows.
    pub fn seal_as(
        &self,
        plaintext: &str,
        binding: &KeyBinding<'_>,
        aad_version: i16,
    ) -> Result<Sealed, SealError> {
        let aad = binding.aad(aad_version)?;
        let mut sealed = self.seal_raw(plaintext, &aad)?;
        sealed.aad_version = aad_version;
        Ok(sealed)
    }

    fn seal_raw(&self, plaintext: &str, aad: &[u8]) -> Result<Sealed, SealError> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let ciphertext = self
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext.as_bytes(),
                    aad,
                },
            )
            .map_err(|_| SealError::Seal)?;
        Ok(Sealed {
            ciphertext,
            nonce: nonce.to_vec(),
            version: self.version,
            aad_version: AAD_CURRENT,
        })
    }

    fn open_raw(
        &self,
        cipher: &Aes256Gcm,
        sealed: &Sealed,
        aad: &[u8],
    ) -> Result<Secret<String>, SealError> {
        if sealed.version != self.version {
            return Err(SealError::UnknownVersion(sealed.version));
        }
        if sealed.nonce.len() != NONCE_LEN {
            return Err(SealError::Open);
        }
        let plain = cipher
            .decrypt(
                Nonce::from_slice(&sealed.nonce),
                Payload {
                    msg: &sealed.ciphertext,
                    aad,
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

    fn binding(url: Option<&str>) -> KeyBinding<'_> {
        KeyBinding {
            entry_id: Uuid::from_u128(1),
            workspace_id: Uuid::from_u128(2),
            kind: ProviderKind::OpenaiCompatible,
            base_url: url,
        }
    }

    #[test]
    fn seal_open_round_trip_with_fresh_nonces() {
        let k = MasterKey::from_base64(&MasterKey::generate_base64()).unwrap();
        let b1 = binding(Some("https://api.example.com/v1"));
        let a = k.seal("sk-provider-secret", &b1).unwrap();
        let b = k.seal("sk-provider-secret", &b1).unwrap();
        assert_eq!(a.aad_version, AAD_CURRENT);
        assert_ne!(a.nonce, b.nonce);
        assert_ne!(a.ciphertext, b.ciphertext);
        assert!(!a.ciphertext.windows(6).any(|w| w == b"sk-pro"));
        assert_eq!(k.open(&a, &b1).unwrap().expose(), "sk-provider-secret");
    }

    #[test]
    fn refuses_other_rows_other_keys_and_tampering() {
        let k = MasterKey::from_base64(&MasterKey::generate_base64()).unwrap();
        let other = MasterKey::from_base64(&MasterKey::generate_base64()).unwrap();
        let b1 = binding(None);
        let mut s = k.seal("secret", &b1).unwrap();
        let row2 = KeyBinding {
            entry_id: Uuid::from_u128(3),
            ..b1
        };
        assert_eq!(k.open(&s, &row2), Err(SealError::Open));
        assert_eq!(other.open(&s, &b1), Err(SealError::Open));
        s.ciphertext[0] ^= 1;
        assert_eq!(k.open(&s, &b1), Err(SealError::Open));
        s.version = 2;
        assert_eq!(k.open(&s, &b1), Err(SealError::UnknownVersion(2)));
    }

    #[test]
    fn bound_to_workspace_kind_and_base_url() {
        let k = MasterKey::from_base64(&MasterKey::generate_base64()).unwrap();
        let home = binding(Some("https://api.example.com/v1"));
        let s = k.seal("secret", &home).unwrap();
        for moved in [
            KeyBinding {
                base_url: Some("https://attacker.example/v1"),
                ..home
            },
            KeyBinding {
                base_url: None,
                ..home
            },
            KeyBinding {
                kind: ProviderKind::Openai,
                ..home
            },
            KeyBinding {
                workspace_id: Uuid::from_u128(9),
                ..home
            },
        ] {
            assert_eq!(k.open(&s, &moved), Err(SealError::Open), "{moved:?}");
        }
        assert_eq!(k.open(&s, &home).unwrap().expose(), "secret");
    }

    #[test]
    fn old_format_opens_by_entry_id_only() {
        let k = MasterKey::from_base64(&MasterKey::generate_base64()).unwrap();
        let home = binding(Some("https://api.example.com/v1"));
        let s = k.seal_as("secret", &home, AAD_ENTRY_ID).unwrap();
        assert_eq!(s.aad_version, AAD_ENTRY_ID);
        // The first format bound nothing but the id, which is why rows are re-sealed.
        let elsewhere = KeyBinding {
            base_url: None,
            ..home
        };
        assert_eq!(k.open(&s, &elsewhere).unwrap().expose(), "secret");
        let mut unknown = s.clone();
        unknown.aad_version = 7;
        assert_eq!(k.open(&unknown, &home), Err(SealError::UnknownAad(7)));
    }

    #[test]
    fn during_a_rotation_both_keys_open_and_only_the_new_one_seals() {
        let old = MasterKey::from_base64(&MasterKey::generate_base64()).unwrap();
        let new = MasterKey::from_base64(&MasterKey::generate_base64()).unwrap();
        let both = new.clone().with_previous(&old);
        assert!(both.has_previous() && !new.has_previous());
        assert!(format!("{both:?}").contains("previous ***"));
        let b = binding(None);
        let under_old = old.seal("old-secret", &b).unwrap();
        let under_both = both.seal("new-secret", &b).unwrap();
        assert_eq!(both.open(&under_old, &b).unwrap().expose(), "old-secret");
        assert_eq!(both.open_current(&under_old, &b), Err(SealError::Open));
        assert_eq!(both.open(&under_both, &b).unwrap().expose(), "new-secret");
        // What both seal is under the new key alone.
        assert_eq!(new.open(&under_both, &b).unwrap().expose(), "new-secret");
        assert_eq!(old.open(&under_both, &b), Err(SealError::Open));
        // A third key opens nothing, with or without a previous key.
        let stranger = MasterKey::from_base64(&MasterKey::generate_base64()).unwrap();
        assert_eq!(
            both.open(&stranger.seal("x", &b).unwrap(), &b),
            Err(SealError::Open)
        );
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

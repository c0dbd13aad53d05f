//! Password hashing with argon2id (OWASP parameters: 19 MiB, 2 passes, 1 lane), run on the
//! blocking pool. Unknown emails are verified against a dummy hash so that the response
//! time does not reveal which accounts exist.
//!
//! Every hash and verification goes through a [`Hasher`], which admits at most a fixed
//! number at a time: each one holds 19 MiB, so a flood of logins cannot allocate more
//! than `permits × 19 MiB`. A caller that cannot get a permit within a short wait is
//! refused with [`PasswordError::Busy`] instead of queueing without bound.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use argon2::password_hash::{
    rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString,
};
use argon2::{Algorithm, Argon2, Params, Version};
use tokio::sync::Semaphore;

pub const MIN_LEN: usize = 8;
pub const MAX_LEN: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("hashing failed")]
    Hash,
    #[error("hashing task failed")]
    Join,
    #[error("too many password hashes in progress")]
    Busy,
}

fn argon2() -> Result<Argon2<'static>, PasswordError> {
    let params = Params::new(19 * 1024, 2, 1, None).map_err(|_| PasswordError::Hash)?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

fn hash_blocking(password: &str) -> Result<String, PasswordError> {
    let salt = SaltString::generate(&mut OsRng);
    argon2()?
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|_| PasswordError::Hash)
}

fn verify_blocking(password: &str, phc: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(phc) else {
        return false;
    };
    match argon2() {
        Ok(h) => h.verify_password(password.as_bytes(), &parsed).is_ok(),
        Err(_) => false,
    }
}

fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| hash_blocking("perpetuo-dummy-password").unwrap_or_default())
}

/// Runs argon2id on the blocking pool, at most `permits` at a time.
#[derive(Debug, Clone)]
pub struct Hasher {
    permits: Arc<Semaphore>,
    wait: Duration,
    runs: Arc<AtomicU64>,
}

impl Hasher {
    /// `permits` hashes at once (at least one); a caller waits at most `wait` for a turn.
    pub fn new(permits: usize, wait: Duration) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(permits.max(1))),
            wait,
            runs: Arc::new(AtomicU64::new(0)),
        }
    }

    /// How many hashes and verifications this hasher (and its clones) has started: what
    /// shows that a request was answered without any argon2id work.
    pub fn runs(&self) -> u64 {
        self.runs.load(Ordering::Relaxed)
    }

    /// Computes the dummy hash now, so the first unknown-email login is not slower than
    /// the others.
    pub async fn warm_up(&self) -> Result<(), PasswordError> {
        self.run(|| {
            dummy_hash();
        })
        .await
    }

    pub async fn hash(&self, password: String) -> Result<String, PasswordError> {
        self.run(move || hash_blocking(&password)).await?
    }

    /// Verifies against `phc`, or against a dummy hash when the account does not exist.
    pub async fn verify(
        &self,
        password: String,
        phc: Option<String>,
    ) -> Result<bool, PasswordError> {
        self.run(move || match phc {
            Some(phc) => verify_blocking(&password, &phc),
            None => {
                let _ = verify_blocking(&password, dummy_hash());
                false
            }
        })
        .await
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, PasswordError> {
        let permit = tokio::time::timeout(self.wait, self.permits.clone().acquire_owned())
            .await
            .map_err(|_| PasswordError::Busy)?
            .map_err(|_| PasswordError::Busy)?;
        self.runs.fetch_add(1, Ordering::Relaxed);
        // The permit moves into the blocking task: if the caller goes away, the memory is
        // still held until the hash finishes, and so is the permit.
        tokio::task::spawn_blocking(move || {
            let out = work();
            drop(permit);
            out
        })
        .await
        .map_err(|_| PasswordError::Join)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hash_and_verify() {
        let h = Hasher::new(2, Duration::from_secs(5));
        let phc = h.hash("correct horse".into()).await.unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert!(h
            .verify("correct horse".into(), Some(phc.clone()))
            .await
            .unwrap());
        assert!(!h.verify("wrong horse".into(), Some(phc)).await.unwrap());
        assert!(!h.verify("anything".into(), None).await.unwrap());
        assert_eq!(h.clone().runs(), 4);
    }

    #[tokio::test]
    async fn a_full_hasher_refuses_after_its_wait() {
        let h = Hasher::new(1, Duration::from_millis(10));
        let held = h.permits.clone().acquire_owned().await.unwrap();
        assert!(matches!(
            h.hash("correct horse".into()).await,
            Err(PasswordError::Busy)
        ));
        drop(held);
        assert!(h.hash("correct horse".into()).await.is_ok());
    }
}

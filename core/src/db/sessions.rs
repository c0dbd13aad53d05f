//! `admin_sessions` and `admin_refresh_tokens`: admin login sessions and their rotating
//! refresh tokens. A refresh token is 256 random bits, shown once and stored only as its
//! SHA-256; each use replaces it, and presenting a used one again revokes the session.

use base64::Engine;
use deadpool_postgres::GenericClient;
use rand::RngCore;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::{DbError, Sql};
use crate::Secret;

pub const REFRESH_PREFIX: &str = "ppr-";

/// A freshly generated refresh token: the plaintext goes to the client, the hash to us.
#[derive(Debug)]
pub struct NewRefreshToken {
    pub plaintext: Secret<String>,
    pub hash: [u8; 32],
}

pub fn new_refresh_token() -> NewRefreshToken {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let plaintext = format!(
        "{REFRESH_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    );
    NewRefreshToken {
        hash: refresh_token_hash(&plaintext),
        plaintext: Secret::new(plaintext),
    }
}

pub fn refresh_token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Starts a session for `user` holding `refresh`, valid for `ttl_seconds`; returns its id.
/// The user's sessions that have expired are deleted on the way, so they do not pile up.
pub async fn create(
    db: &impl GenericClient,
    user: Uuid,
    refresh: &[u8; 32],
    ttl_seconds: i64,
) -> Result<Uuid, DbError> {
    db.traced_execute(
        "DELETE FROM admin_sessions WHERE user_id = $1 AND expires_at <= now()",
        &[&user],
    )
    .await?;
    let id = super::new_id();
    db.traced_execute(
        "INSERT INTO admin_sessions (id, user_id, expires_at)
         VALUES ($1, $2, now() + $3::bigint * interval '1 second')",
        &[&id, &user, &ttl_seconds],
    )
    .await?;
    db.traced_execute(
        "INSERT INTO admin_refresh_tokens (token_hash, session_id) VALUES ($1, $2)",
        &[&refresh.as_slice(), &id],
    )
    .await?;
    Ok(id)
}

/// Whether `session` belongs to `user` and is neither revoked nor expired. One primary-key
/// lookup, made on every authenticated request.
pub async fn is_active(
    db: &impl GenericClient,
    session: Uuid,
    user: Uuid,
) -> Result<bool, DbError> {
    let row = db
        .traced_query_opt(
            "SELECT 1 FROM admin_sessions
             WHERE id = $1 AND user_id = $2 AND revoked_at IS NULL AND expires_at > now()",
            &[&session, &user],
        )
        .await?;
    Ok(row.is_some())
}

/// What presenting a refresh token led to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rotation {
    /// The token was live: it is now used, `next` replaces it, and the session's expiry
    /// moves to `ttl_seconds` from now.
    Rotated { session: Uuid, user: Uuid },
    /// The token had been used before: its session is revoked.
    Reused,
    /// Unknown token, or its session is revoked or expired.
    Invalid,
}

/// Exchanges the refresh token hashed as `presented` for `next`. Run it in a transaction:
/// the row lock taken by the first use makes a concurrent second use see it as used.
pub async fn rotate(
    db: &impl GenericClient,
    presented: &[u8; 32],
    next: &[u8; 32],
    ttl_seconds: i64,
) -> Result<Rotation, DbError> {
    let used = db
        .traced_query_opt(
            "UPDATE admin_refresh_tokens t SET used_at = now()
             FROM admin_sessions s
             WHERE t.token_hash = $1 AND t.used_at IS NULL AND s.id = t.session_id
             RETURNING s.id, s.user_id, (s.revoked_at IS NULL AND s.expires_at > now()) AS active",
            &[&presented.as_slice()],
        )
        .await?;
    if let Some(row) = used {
        if !row.get::<_, bool>("active") {
            return Ok(Rotation::Invalid);
        }
        let session: Uuid = row.get("id");
        db.traced_execute(
            "INSERT INTO admin_refresh_tokens (token_hash, session_id) VALUES ($1, $2)",
            &[&next.as_slice(), &session],
        )
        .await?;
        db.traced_execute(
            "UPDATE admin_sessions SET expires_at = now() + $2::bigint * interval '1 second'
             WHERE id = $1",
            &[&session, &ttl_seconds],
        )
        .await?;
        return Ok(Rotation::Rotated {
            session,
            user: row.get("user_id"),
        });
    }
    let revoked = db
        .traced_execute(
            "UPDATE admin_sessions SET revoked_at = coalesce(revoked_at, now())
             WHERE id = (SELECT session_id FROM admin_refresh_tokens WHERE token_hash = $1)",
            &[&presented.as_slice()],
        )
        .await?;
    Ok(if revoked > 0 {
        Rotation::Reused
    } else {
        Rotation::Invalid
    })
}

/// Ends one session of `user` (logout). Returns whether it was live.
pub async fn revoke(db: &impl GenericClient, session: Uuid, user: Uuid) -> Result<bool, DbError> {
    let n = db
        .traced_execute(
            "UPDATE admin_sessions SET revoked_at = now()
             WHERE id = $1 AND user_id = $2 AND revoked_at IS NULL",
            &[&session, &user],
        )
        .await?;
    Ok(n > 0)
}

/// Ends every session of `user` (password change). Returns how many were live.
pub async fn revoke_all(db: &impl GenericClient, user: Uuid) -> Result<u64, DbError> {
    Ok(db
        .traced_execute(
            "UPDATE admin_sessions SET revoked_at = now()
             WHERE user_id = $1 AND revoked_at IS NULL",
            &[&user],
        )
        .await?)
}

//! Admin access tokens: short-lived HS256 JWTs with `sub` (user id), `sid` (the session
//! they belong to), `iss`, `aud`, `iat` and `exp`. Only HS256 with our issuer and audience
//! is accepted, so `alg: none`, public-key algorithms and tokens minted for another
//! service are refused. The session is checked against the database on every request
//! (`extract::AuthUser`), so logging out or changing the password ends a token early.

use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub const ISSUER: &str = "perpetuo-admin";
pub const AUDIENCE: &str = "perpetuo-admin-api";

#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    pub sub: Uuid,
    pub sid: Uuid,
    pub iss: String,
    pub aud: String,
    pub iat: i64,
    pub exp: i64,
}

#[derive(Clone)]
pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    ttl_seconds: i64,
}

#[derive(Debug, thiserror::Error)]
#[error("token is invalid or expired")]
pub struct InvalidToken;

impl JwtKeys {
    pub fn new(secret: &[u8], ttl_seconds: u64) -> Self {
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            ttl_seconds: i64::try_from(ttl_seconds).unwrap_or(i64::MAX / 2),
        }
    }

    pub fn issue(&self, user: Uuid, session: Uuid) -> Result<String, jsonwebtoken::errors::Error> {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let claims = Claims {
            sub: user,
            sid: session,
            iss: ISSUER.to_string(),
            aud: AUDIENCE.to_string(),
            iat: now,
            exp: now.saturating_add(self.ttl_seconds),
        };
        encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
    }

    pub fn verify(&self, token: &str) -> Result<Claims, InvalidToken> {
        let mut v = Validation::new(Algorithm::HS256);
        v.leeway = 0;
        v.set_required_spec_claims(&["exp", "sub", "iss", "aud"]);
        v.set_issuer(&[ISSUER]);
        v.set_audience(&[AUDIENCE]);
        decode::<Claims>(token, &self.decoding, &v)
            .map(|d| d.claims)
            .map_err(|_| InvalidToken)
    }
}

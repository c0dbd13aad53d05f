//! Parsers for the configuration values both binaries read from the environment; each
//! error says what is wrong so the binary can name the variable with it.

use crate::crypto::MasterKey;
use crate::forwarded::TrustedProxies;
use crate::upstream::UpstreamPolicy;
use crate::Secret;

/// `PERPETUO_MASTER_KEY`: 32 bytes, base64.
pub fn master_key(s: &str) -> Result<MasterKey, String> {
    MasterKey::from_base64(s).map_err(|e| e.to_string())
}

/// `ALLOWED_PRIVATE_UPSTREAMS`: comma-separated CIDRs.
pub fn upstream_policy(s: &str) -> Result<UpstreamPolicy, String> {
    s.parse()
        .map_err(|e: crate::upstream::PolicyParseError| e.to_string())
}

/// `TRUSTED_PROXIES`: comma-separated CIDRs or addresses; empty trusts nobody.
pub fn trusted_proxies(s: &str) -> Result<TrustedProxies, String> {
    s.parse()
        .map_err(|e: crate::forwarded::TrustedProxiesError| e.to_string())
}

/// `DATABASE_URL`: a PostgreSQL URL or key=value connection string, kept secret. Its
/// `sslmode` and `sslrootcert` are checked here (see `db::tls`), so a typo or a missing
/// root file stops the binary at start with the variable named.
pub fn database_url(s: &str) -> Result<Secret<String>, String> {
    if s.starts_with("postgres://") || s.starts_with("postgresql://") || s.starts_with("host=") {
        crate::db::tls::parse(s).map_err(|e| e.to_string())?;
        Ok(Secret::new(s.to_string()))
    } else {
        Err("must be a postgres:// URL".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_url_errors_name_the_problem_not_the_secret() {
        assert!(database_url("postgres://u:pw@db.example/app?sslmode=require").is_ok());
        let err = database_url("postgres://u:hunter2@db.example/app?sslmode=always").unwrap_err();
        assert!(err.contains("sslmode"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
        let err = database_url(
            "postgres://u:hunter2@db.example/app?sslmode=verify-full&sslrootcert=/none.pem",
        )
        .unwrap_err();
        assert!(err.contains("sslrootcert"), "{err}");
        assert!(database_url("mysql://db.example/app").is_err());
    }
}

//! Parsers for the configuration values both binaries read from the environment; each
//! error says what is wrong so the binary can name the variable with it.

use crate::crypto::MasterKey;
use crate::db::StatementTimeout;
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

/// How long one statement of a server's database connections may run, ms; 0: no limit
/// is set (the server's own applies). Read by both binaries.
pub const DB_STATEMENT_TIMEOUT_MS: &str = "DB_STATEMENT_TIMEOUT_MS";

/// `DB_STATEMENT_TIMEOUT_MS`: whole milliseconds, 0 to one day.
pub fn statement_timeout(s: &str) -> Result<StatementTimeout, String> {
    match s.trim().parse::<u64>() {
        Ok(ms) if ms <= StatementTimeout::MAX_MILLIS => Ok(StatementTimeout::from_millis(ms)),
        _ => Err(format!(
            "must be a whole number of milliseconds from 0 (no limit) to {}",
            StatementTimeout::MAX_MILLIS
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statement_timeouts_are_bounded_milliseconds() {
        assert_eq!(
            statement_timeout("10000"),
            Ok(StatementTimeout::DEFAULT),
            "the default is 10 s"
        );
        assert_eq!(statement_timeout("0"), Ok(StatementTimeout::SERVER_DEFAULT));
        assert_eq!(
            statement_timeout(" 200 ").map(StatementTimeout::get),
            Ok(Some(std::time::Duration::from_millis(200)))
        );
        for bad in ["", "-1", "1.5", "10s", "86400001", "99999999999999999999"] {
            assert!(statement_timeout(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(StatementTimeout::DEFAULT.to_string(), "10000");
    }

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

//! Configuration from the environment (and `.env`), parsed once by clap; an error names
//! the variable and what is wrong with it.

use std::net::SocketAddr;
use std::path::PathBuf;

use perpetuo_core::config;
use perpetuo_core::crypto::MasterKey;
use perpetuo_core::db::StatementTimeout;
use perpetuo_core::forwarded::{TrustedProxies, TRUSTED_PROXIES};
use perpetuo_core::telemetry::TelemetrySettings;
use perpetuo_core::upstream::UpstreamPolicy;
use perpetuo_core::Secret;

#[derive(Debug, clap::Parser)]
#[command(name = "perpetuo-admin", about = "Perpetuo admin API and dashboard")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub config: Config,
}

/// `create-user`'s arguments (the command is in `commands`; its command line is here,
/// with the others).
#[derive(Debug, Clone, clap::Args)]
pub struct CreateUserArgs {
    /// Email address of the new user.
    #[arg(long)]
    pub email: String,
    /// Read the password from standard input (one line; the final newline is not part of
    /// it).
    #[arg(long, required = true)]
    pub password_stdin: bool,
}

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Serve the admin API and the dashboard (the default when no command is given).
    Serve,
    /// Apply pending database migrations, re-seal provider keys sealed under an older
    /// format (needs PERPETUO_MASTER_KEY), and exit.
    Migrate,
    /// Create a user and their personal workspace, as signup does, with the password read
    /// from standard input; prints the user id and the workspace id.
    CreateUser(CreateUserArgs),
    /// Re-seal every provider key under PERPETUO_MASTER_KEY, opening those still sealed
    /// under PERPETUO_MASTER_KEY_PREVIOUS, in one transaction.
    RotateMasterKey,
    /// Check the configuration as `serve` would, and that the database is reachable and
    /// migrated; list every problem found and exit non-zero if there is one.
    CheckConfig,
}

fn parse_jwt_secret(s: &str) -> Result<Secret<String>, String> {
    if s.len() < 32 {
        return Err("must be at least 32 characters".into());
    }
    Ok(Secret::new(s.to_string()))
}

fn parse_hash_concurrency(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if (1..=256).contains(&n) => Ok(n),
        _ => Err("must be a whole number from 1 to 256".into()),
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// PostgreSQL URL.
    #[arg(long, env = "DATABASE_URL", value_parser = config::database_url, hide_env_values = true)]
    pub database_url: Secret<String>,
    /// HS256 secret for admin tokens (at least 32 characters).
    #[arg(long, env = "JWT_SECRET", value_parser = parse_jwt_secret, hide_env_values = true)]
    pub jwt_secret: Secret<String>,
    /// 32-byte key (base64) sealing provider keys.
    #[arg(long, env = "PERPETUO_MASTER_KEY", value_parser = config::master_key, hide_env_values = true)]
    pub master_key: MasterKey,
    /// The master key being rotated away from: provider keys sealed under it still open
    /// until `rotate-master-key` has re-sealed them. Unset outside a rotation.
    #[arg(long, env = "PERPETUO_MASTER_KEY_PREVIOUS", value_parser = config::master_key, hide_env_values = true)]
    pub master_key_previous: Option<MasterKey>,
    /// Address of the admin API and dashboard.
    #[arg(long, env = "ADMIN_ADDR", default_value = "127.0.0.1:3000")]
    pub admin_addr: SocketAddr,
    /// Address of the gateway, used to build its public URL when none is given.
    #[arg(long, env = "GATEWAY_ADDR", default_value = "127.0.0.1:8000")]
    pub gateway_addr: SocketAddr,
    /// Public base URL of the gateway shown in the dashboard's quickstart.
    #[arg(long, env = "GATEWAY_PUBLIC_URL")]
    pub gateway_public_url: Option<String>,
    /// Where the dashboard links a request's trace: an `http(s)://` URL with `{trace_id}`
    /// in it, e.g. `http://tempo.example/explore?traceId={trace_id}` (unset or empty: no link).
    #[arg(long, env = "TRACE_URL_TEMPLATE", value_parser = parse_trace_url_template)]
    pub trace_url_template: Option<String>,
    /// CIDRs where provider base URLs may point although private or loopback.
    #[arg(long, env = "ALLOWED_PRIVATE_UPSTREAMS", default_value = "", value_parser = config::upstream_policy)]
    pub allowed_private_upstreams: UpstreamPolicy,
    /// Load balancers and proxies in front of the admin API (comma-separated CIDRs or
    /// addresses): for requests from them the client address is read from
    /// `X-Forwarded-For`. Empty trusts nobody: the TCP peer is the client.
    #[arg(long, env = TRUSTED_PROXIES, default_value = "", value_parser = config::trusted_proxies)]
    pub trusted_proxies: TrustedProxies,
    /// Origins allowed by CORS (comma-separated); empty disables CORS.
    #[arg(long, env = "CORS_ALLOWED_ORIGINS", default_value = "")]
    pub cors_allowed_origins: String,
    /// Folder of the built dashboard.
    #[arg(long, env = "DASHBOARD_DIR", default_value = "dashboard/dist")]
    pub dashboard_dir: PathBuf,
    /// Lifetime of admin access tokens, in seconds.
    #[arg(long, env = "JWT_TTL_SECONDS", default_value_t = 3600)]
    pub jwt_ttl_seconds: u64,
    /// Maximum database connections.
    #[arg(long, env = "ADMIN_DB_POOL_SIZE", default_value_t = 16)]
    pub db_pool_size: usize,
    /// Longest one statement of the server's database connections may run before
    /// PostgreSQL cancels it, ms (0: no limit is set). Migrations at start and the
    /// operator commands run without it; the purge of deleted workspaces has its own.
    #[arg(long, env = config::DB_STATEMENT_TIMEOUT_MS, default_value_t = StatementTimeout::DEFAULT,
          value_parser = config::statement_timeout)]
    pub db_statement_timeout: StatementTimeout,
    #[command(flatten)]
    pub auth: AuthSettings,
    #[command(flatten)]
    pub teams: crate::teams::TeamSettings,
    #[command(flatten)]
    pub tracing: TelemetrySettings,
}

pub const DEFAULT_REFRESH_TTL_SECONDS: u64 = 30 * 24 * 3600;
pub const DEFAULT_RATE_PER_IP: u32 = 20;
pub const DEFAULT_RATE_PER_ACCOUNT: u32 = 5;
pub const DEFAULT_HASH_CONCURRENCY: usize = 4;
pub const DEFAULT_HASH_WAIT_MS: u64 = 1000;

/// Sessions, credential throttling and password hashing.
#[derive(Debug, Clone, clap::Args)]
pub struct AuthSettings {
    /// Whether anyone may sign up through `POST /auth/signup` (false: accounts are made
    /// with `perpetuo-admin create-user`).
    #[arg(long, env = "SIGNUP_ENABLED", default_value_t = true, action = clap::ArgAction::Set,
          value_parser = clap::builder::BoolishValueParser::new())]
    pub signup_enabled: bool,
    /// Lifetime of a refresh token (and idle lifetime of a session), in seconds; each
    /// refresh starts it again.
    #[arg(long, env = "REFRESH_TTL_SECONDS", default_value_t = DEFAULT_REFRESH_TTL_SECONDS)]
    pub refresh_ttl_seconds: u64,
    /// Login, signup and password-change attempts per client IP per minute (0: no limit).
    #[arg(long, env = "AUTH_RATE_PER_IP", default_value_t = DEFAULT_RATE_PER_IP)]
    pub rate_per_ip: u32,
    /// Failed attempts per account (email) per minute before it is refused (0: no limit).
    #[arg(long, env = "AUTH_RATE_PER_ACCOUNT", default_value_t = DEFAULT_RATE_PER_ACCOUNT)]
    pub rate_per_account: u32,
    /// Password hashes computed at once (each holds 19 MiB).
    #[arg(long, env = "PASSWORD_HASH_CONCURRENCY", default_value_t = DEFAULT_HASH_CONCURRENCY,
          value_parser = parse_hash_concurrency)]
    pub hash_concurrency: usize,
    /// How long a request waits for a hashing slot before it is answered 503, in ms.
    #[arg(long, env = "PASSWORD_HASH_WAIT_MS", default_value_t = DEFAULT_HASH_WAIT_MS)]
    pub hash_wait_ms: u64,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            signup_enabled: true,
            refresh_ttl_seconds: DEFAULT_REFRESH_TTL_SECONDS,
            rate_per_ip: DEFAULT_RATE_PER_IP,
            rate_per_account: DEFAULT_RATE_PER_ACCOUNT,
            hash_concurrency: DEFAULT_HASH_CONCURRENCY,
            hash_wait_ms: DEFAULT_HASH_WAIT_MS,
        }
    }
}

impl Config {
    /// The master key, holding the previous one too during a rotation.
    pub fn master_keys(&self) -> MasterKey {
        self.master_key
            .with_optional_previous(self.master_key_previous.as_ref())
    }

    /// Base URL of the dashboard in emailed links.
    pub fn public_url(&self) -> String {
        self.teams
            .admin_public_url
            .clone()
            .filter(|u| !u.trim().is_empty())
            .unwrap_or_else(|| format!("http://{}", self.admin_addr))
            .trim_end_matches('/')
            .to_string()
    }

    pub fn gateway_url(&self) -> String {
        self.gateway_public_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", self.gateway_addr))
            .trim_end_matches('/')
            .to_string()
    }
}

/// A trace link template: an `http(s)://` URL naming `{trace_id}`.
fn parse_trace_url_template(v: &str) -> Result<String, String> {
    let v = v.trim();
    if v.is_empty() {
        // Compose passes an unset variable as an empty one: no link, like unset.
        return Ok(String::new());
    }
    if !v.contains("{trace_id}") {
        return Err("must contain {trace_id}, where the request's trace id goes".into());
    }
    let probe = v.replace("{trace_id}", "0af7651916cd43dd8448eb211c80319c");
    match url::Url::parse(&probe) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && v.len() <= 2048 => Ok(v.to_string()),
        _ => Err("must be an http:// or https:// URL of at most 2048 characters".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trace_link_template_names_the_trace_id_in_an_http_url() {
        let ok = "https://tempo.example/explore?traceId={trace_id}";
        assert_eq!(parse_trace_url_template(ok).as_deref(), Ok(ok));
        assert!(parse_trace_url_template("https://tempo.example/").is_err());
        assert!(parse_trace_url_template("javascript:alert({trace_id})").is_err());
        assert!(parse_trace_url_template("{trace_id}").is_err());
        assert_eq!(parse_trace_url_template("  ").as_deref(), Ok(""));
    }
}

//! Settings of teams and accounts (email, verification, the links' base URL, how long a
//! deleted workspace's data is kept, how many invitations may be sent) and the purge that drops that data once it is due.

use std::time::Duration;

use perpetuo_core::db::{self, Pool};
use perpetuo_core::Secret;
use time::OffsetDateTime;

pub const DEFAULT_MAIL_FROM: &str = "Perpetuo <perpetuo@localhost>";
pub const DEFAULT_DELETED_RETENTION_DAYS: u32 = 30;
pub const DEFAULT_RESEND_COOLDOWN_SECONDS: u64 = 60;
pub const DEFAULT_INVITATIONS_PER_INVITER: u32 = 20;
pub const DEFAULT_INVITATIONS_PER_WORKSPACE: u32 = 50;

/// Whether accounts must verify their email before creating API keys or providers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verification {
    /// Required when SMTP is configured, off otherwise.
    Auto,
    Required,
    Off,
}

#[derive(Debug, Clone, clap::Args)]
pub struct TeamSettings {
    /// SMTP server for invitations, verification and password-reset emails:
    /// `smtp://host:25` (plain), `smtp://user:pass@host:587?tls=required` (STARTTLS) or
    /// `smtps://user:pass@host:465`. Unset or empty: links are written to this process's
    /// log.
    #[arg(long, env = "SMTP_URL", value_parser = parse_smtp_url, hide_env_values = true)]
    pub smtp_url: Option<Secret<String>>,
    /// Sender of those emails, e.g. `Perpetuo <perpetuo@example.com>` (empty: the default).
    #[arg(long, env = "MAIL_FROM", default_value = DEFAULT_MAIL_FROM, value_parser = parse_mailbox)]
    pub mail_from: String,
    /// `auto` (required when SMTP_URL is set; also when empty), `required` or `off`.
    #[arg(long, env = "EMAIL_VERIFICATION", default_value = "auto", value_parser = parse_verification)]
    pub email_verification: Verification,
    /// Base URL of the dashboard used in emailed links (default: http://ADMIN_ADDR).
    #[arg(long, env = "ADMIN_PUBLIC_URL")]
    pub admin_public_url: Option<String>,
    /// Days a deleted workspace's logs, usage counters and audit entries are kept.
    #[arg(long, env = "DELETED_WORKSPACE_RETENTION_DAYS", default_value_t = DEFAULT_DELETED_RETENTION_DAYS)]
    pub deleted_workspace_retention_days: u32,
    /// Seconds before another verification email may be asked for.
    #[arg(long, env = "VERIFICATION_RESEND_COOLDOWN_SECONDS", default_value_t = DEFAULT_RESEND_COOLDOWN_SECONDS)]
    pub verification_resend_cooldown_seconds: u64,
    /// Invitations one account may send per hour, across workspaces (0: no limit).
    #[arg(long, env = "INVITATION_RATE_PER_INVITER", default_value_t = DEFAULT_INVITATIONS_PER_INVITER)]
    pub invitation_rate_per_inviter: u32,
    /// Invitations sent from one workspace per hour (0: no limit).
    #[arg(long, env = "INVITATION_RATE_PER_WORKSPACE", default_value_t = DEFAULT_INVITATIONS_PER_WORKSPACE)]
    pub invitation_rate_per_workspace: u32,
}

impl Default for TeamSettings {
    fn default() -> Self {
        Self {
            smtp_url: None,
            mail_from: DEFAULT_MAIL_FROM.into(),
            email_verification: Verification::Auto,
            admin_public_url: None,
            deleted_workspace_retention_days: DEFAULT_DELETED_RETENTION_DAYS,
            verification_resend_cooldown_seconds: DEFAULT_RESEND_COOLDOWN_SECONDS,
            invitation_rate_per_inviter: DEFAULT_INVITATIONS_PER_INVITER,
            invitation_rate_per_workspace: DEFAULT_INVITATIONS_PER_WORKSPACE,
        }
    }
}

impl TeamSettings {
    /// The SMTP URL, if one is set (an empty value counts as unset, as compose passes it).
    pub fn smtp_url(&self) -> Option<&str> {
        self.smtp_url
            .as_ref()
            .map(|u| u.expose().as_str())
            .filter(|u| !u.is_empty())
    }

    pub fn verification_required(&self) -> bool {
        match self.email_verification {
            Verification::Auto => self.smtp_url().is_some(),
            Verification::Required => true,
            Verification::Off => false,
        }
    }
}

fn parse_smtp_url(s: &str) -> Result<Secret<String>, String> {
    if s.trim().is_empty() {
        return Ok(Secret::new(String::new()));
    }
    let url = url::Url::parse(s).map_err(|_| "must be an smtp:// or smtps:// URL".to_string())?;
    if !matches!(url.scheme(), "smtp" | "smtps") || url.host_str().is_none() {
        return Err("must be an smtp:// or smtps:// URL with a host".into());
    }
    Ok(Secret::new(s.to_string()))
}

fn parse_verification(s: &str) -> Result<Verification, String> {
    match s.trim() {
        "" | "auto" => Ok(Verification::Auto),
        "required" => Ok(Verification::Required),
        "off" => Ok(Verification::Off),
        _ => Err("must be auto, required or off".into()),
    }
}

fn parse_mailbox(s: &str) -> Result<String, String> {
    if s.trim().is_empty() {
        return Ok(DEFAULT_MAIL_FROM.to_string());
    }
    s.parse::<lettre::message::Mailbox>()
        .map(|_| s.to_string())
        .map_err(|_| "must be an address such as `Perpetuo <perpetuo@example.com>`".into())
}

/// How often the purge looks for deleted workspaces whose data is due.
const PURGE_EVERY: Duration = Duration::from_secs(3600);
const PURGE_RETRY: Duration = Duration::from_secs(60);
/// Workspaces purged per statement batch.
const PURGE_BATCH: i64 = 100;

/// One purge: every deleted workspace past the retention, in batches.
pub async fn purge_once(
    pool: &Pool,
    retention_days: u32,
) -> Result<db::workspaces::Purged, db::DbError> {
    let cutoff = OffsetDateTime::now_utc() - time::Duration::days(i64::from(retention_days));
    let mut total = db::workspaces::Purged::default();
    loop {
        let mut client = pool.get().await?;
        let tx = client.transaction().await?;
        let done = db::workspaces::purge_deleted(&tx, cutoff, PURGE_BATCH).await?;
        tx.commit().await?;
        total.workspaces += done.workspaces;
        total.log_rows += done.log_rows;
        total.counter_rows += done.counter_rows;
        total.audit_rows += done.audit_rows;
        if done.workspaces < PURGE_BATCH as u64 {
            return Ok(total);
        }
    }
}

/// Runs [`purge_once`] at start and every hour, for as long as the server runs.
pub async fn purge_loop(pool: Pool, retention_days: u32) {
    loop {
        let wait =
            match db::with_timeout(Duration::from_secs(300), purge_once(&pool, retention_days))
                .await
            {
                Ok(p) => {
                    if p.workspaces > 0 {
                        tracing::info!(
                            workspaces = p.workspaces,
                            log_rows = p.log_rows,
                            counter_rows = p.counter_rows,
                            audit_rows = p.audit_rows,
                            "deleted workspaces purged"
                        );
                    }
                    PURGE_EVERY
                }
                Err(e) => {
                    tracing::warn!(error = %e, "purge of deleted workspaces failed; retrying");
                    PURGE_RETRY
                }
            };
        tokio::time::sleep(wait).await;
    }
}

//! `check-config`: every variable `serve` reads, checked one by one with the same parsers,
//! then what `serve` needs of the outside world: the database reachable, migrated, and
//! every provider key of every entry's pool opening under the master key. Values are never
//! printed: a problem names the variable and what is wrong with it.

use std::ffi::OsString;
use std::time::Duration;

use clap::CommandFactory;
use perpetuo_core::config;
use perpetuo_core::crypto::MasterKey;
use perpetuo_core::db;
use perpetuo_core::telemetry;

use crate::config::Cli;

/// How long the database has to answer each step.
const DB_DEADLINE: Duration = Duration::from_secs(10);
/// Keys named in one problem at most.
const NAMED_KEYS: usize = 5;

/// What the check found.
#[derive(Debug, Default)]
pub struct Report {
    /// Each makes `serve` fail or misbehave; the command exits non-zero when any is found.
    pub problems: Vec<String>,
    /// Worth knowing, not fatal.
    pub warnings: Vec<String>,
    /// What was checked and found in order.
    pub notes: Vec<String>,
}

/// Checks the environment (and `.env`, already loaded by `main`).
pub async fn check() -> Report {
    let mut report = Report::default();
    check_variables(&mut report);
    if let Err(e) = perpetuo_core::logging::Format::from_env() {
        report.problems.push(e);
    }

    // Read when tracing starts, not by the argument parser (whose error would quote it).
    if let Some(raw) = env(telemetry::OTEL_EXPORTER_OTLP_HEADERS) {
        let parsed = raw
            .to_str()
            .ok_or_else(|| "is not valid UTF-8".to_string())
            .and_then(telemetry::parse_headers);
        if let Err(why) = parsed {
            report
                .problems
                .push(format!("{}: {why}", telemetry::OTEL_EXPORTER_OTLP_HEADERS));
        }
    }
    if let Some(raw) = env("CORS_ALLOWED_ORIGINS") {
        if let Err(e) = crate::startup::cors(&raw.to_string_lossy()) {
            report.problems.push(e.to_string());
        }
    }
    let dashboard = env("DASHBOARD_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| "dashboard/dist".into());
    if !dashboard.join("index.html").is_file() {
        report.warnings.push(format!(
            "DASHBOARD_DIR: no index.html in {}; the dashboard will not be served",
            dashboard.display()
        ));
    }

    let master = parsed("PERPETUO_MASTER_KEY", config::master_key);
    let previous = parsed("PERPETUO_MASTER_KEY_PREVIOUS", config::master_key);
    let keys = master.map(|m| m.with_optional_previous(previous.as_ref()));
    match parsed("DATABASE_URL", config::database_url) {
        Some(url) => check_database(&mut report, url.expose(), keys.as_ref()).await,
        None => report
            .warnings
            .push("database not checked: DATABASE_URL is missing or invalid".into()),
    }
    report
}

fn env(name: &str) -> Option<OsString> {
    std::env::var_os(name)
}

/// The variable parsed with `parser`, when it is set and valid (its problems are reported
/// by `check_variables`).
fn parsed<T>(name: &str, parser: fn(&str) -> Result<T, String>) -> Option<T> {
    let raw = env(name)?;
    parser(raw.to_str()?).ok()
}

/// Every argument of `serve` that reads a variable: missing when required, and run
/// through its own value parser otherwise.
fn check_variables(report: &mut Report) {
    let cmd = Cli::command();
    for arg in cmd.get_arguments() {
        let Some(var) = arg.get_env() else { continue };
        let name = var.to_string_lossy();
        if std::env::var_os(var).is_none() {
            if arg.is_required_set() {
                report.problems.push(format!("{name}: is not set"));
            }
            continue;
        }
        // The argument alone, parsed from the environment as `serve` parses it.
        let single = clap::Command::new("perpetuo-admin")
            .no_binary_name(true)
            .arg(arg.clone().required(false));
        if let Err(e) = single.try_get_matches_from(std::iter::empty::<OsString>()) {
            // Some parsers name their variable already.
            let why = reason(&e);
            let why = why.strip_prefix(&format!("{name}: ")).unwrap_or(&why);
            report.problems.push(format!("{name}: {why}"));
        }
    }
}

/// What the parser said, without the value clap's own message quotes.
fn reason(e: &clap::Error) -> String {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if let Some(source) = std::error::Error::source(e) {
        return source.to_string();
    }
    let mut why = match e.kind() {
        ErrorKind::InvalidUtf8 => "is not valid UTF-8".to_string(),
        _ => "is not a valid value".to_string(),
    };
    if let Some(ContextValue::Strings(valid)) = e.get(ContextKind::ValidValue) {
        why.push_str(&format!(" (expected one of: {})", valid.join(", ")));
    }
    why
}

async fn check_database(report: &mut Report, url: &str, keys: Option<&MasterKey>) {
    let pool = match db::pool(url, 1) {
        Ok(p) => p,
        Err(e) => {
            report.problems.push(format!("DATABASE_URL: {e}"));
            return;
        }
    };
    if let Err(e) = db::with_timeout(DB_DEADLINE, db::ping(&pool)).await {
        report
            .problems
            .push(format!("database: not reachable: {e}"));
        return;
    }
    report.notes.push("database reachable".into());
    match db::with_timeout(DB_DEADLINE, db::migrate::pending(&pool)).await {
        Ok(pending) if pending.is_empty() => report.notes.push("database migrated".into()),
        Ok(pending) => {
            report.problems.push(format!(
                "database: {} migration{} not applied ({}); run `perpetuo-admin migrate`",
                pending.len(),
                if pending.len() == 1 { "" } else { "s" },
                pending.join(", ")
            ));
            return;
        }
        Err(e) => {
            report
                .problems
                .push(format!("database: cannot read its migrations: {e}"));
            return;
        }
    }
    let Some(keys) = keys else { return };
    let pools = match db::with_timeout(DB_DEADLINE, async {
        let client = pool.get().await?;
        db::entry_keys::all(&client).await
    })
    .await
    {
        Ok(pools) => pools,
        Err(e) => {
            report
                .problems
                .push(format!("database: cannot read provider keys: {e}"));
            return;
        }
    };
    let mut closed = Vec::new();
    let mut under_previous = 0;
    for bound in &pools {
        let binding = bound.binding();
        if keys.open_current(&bound.key.sealed, &binding).is_ok() {
            continue;
        }
        match keys.open(&bound.key.sealed, &binding) {
            Ok(_) => under_previous += 1,
            // Named by entry and label, never by value.
            Err(_) => closed.push(format!(
                "`{}` of entry {}",
                bound.key.label, bound.key.entry_id
            )),
        }
    }
    if !closed.is_empty() {
        let more = closed.len().saturating_sub(NAMED_KEYS);
        closed.truncate(NAMED_KEYS);
        report.problems.push(format!(
            "PERPETUO_MASTER_KEY: {} of {} provider keys do not open with it{} ({}{}); \
             the gateway skips them",
            closed.len() + more,
            pools.len(),
            if keys.has_previous() {
                " nor with PERPETUO_MASTER_KEY_PREVIOUS"
            } else {
                ""
            },
            closed.join(", "),
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            }
        ));
    } else {
        report
            .notes
            .push(format!("{} provider keys open", pools.len()));
    }
    if under_previous > 0 {
        report.warnings.push(format!(
            "{under_previous} provider keys are still sealed under PERPETUO_MASTER_KEY_PREVIOUS; \
             run `perpetuo-admin rotate-master-key`"
        ));
    } else if keys.has_previous() && closed.is_empty() {
        report.warnings.push(
            "PERPETUO_MASTER_KEY_PREVIOUS is set but no provider key needs it any more; \
             unset it"
                .into(),
        );
    }
}

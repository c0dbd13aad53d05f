//! Operator commands of `perpetuo-admin` besides `serve` and `migrate`: `create-user`,
//! `rotate-master-key` and `check-config`. Each prints its result for a person (never a
//! secret) and says by its exit status whether it succeeded.

mod check_config;
mod create_user;
mod rotate;

use std::ffi::OsString;
use std::process::ExitCode;

pub use crate::config::CreateUserArgs;
pub use check_config::check;
pub use create_user::create_user;
pub use rotate::rotate_master_key;

/// The name `check-config` answers to.
pub const CHECK_CONFIG: &str = "check-config";

/// Whether the command line asks for `check-config`. It is recognised before the rest of
/// the configuration is parsed, because parsing stops at the first bad variable and the
/// check must list them all.
pub fn is_check_config(args: &[OsString]) -> bool {
    args.get(1).is_some_and(|a| a == CHECK_CONFIG)
}

/// Runs `check-config`: prints every problem (or a summary when there is none).
pub async fn run_check_config(args: &[OsString]) -> ExitCode {
    use clap::Parser;
    // Only `--help` is accepted here; the configuration comes from the environment.
    #[derive(clap::Parser)]
    #[command(
        name = "perpetuo-admin check-config",
        about = "Check the configuration as `serve` would, and that the database is reachable \
                 and migrated; list every problem found and exit non-zero if there is one"
    )]
    struct Args {}
    Args::parse_from(args.iter().skip(1));
    let report = check().await;
    for note in &report.notes {
        println!("ok: {note}");
    }
    for warning in &report.warnings {
        println!("warning: {warning}");
    }
    if report.problems.is_empty() {
        println!("configuration OK");
        return ExitCode::SUCCESS;
    }
    eprintln!(
        "configuration has {} problem{}:",
        report.problems.len(),
        if report.problems.len() == 1 { "" } else { "s" }
    );
    for problem in &report.problems {
        eprintln!("  - {problem}");
    }
    ExitCode::FAILURE
}

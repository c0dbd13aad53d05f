//! `perpetuo-admin`: the admin API and dashboard server. `main` only wires: read config,
//! connect, migrate, serve.

use clap::Parser;
use perpetuo_admin::config::{Cli, Command};
use perpetuo_admin::startup::Application;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let _ = dotenvy::dotenv();
    if let Err(e) = perpetuo_core::logging::init() {
        eprintln!("{e}");
        return std::process::ExitCode::FAILURE;
    }
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Migrate) => perpetuo_admin::startup::migrate_only(&cli.config).await,
        None => match Application::build(cli.config).await {
            Ok(app) => {
                tracing::info!(addr = %app.local_addr(), "admin API listening");
                app.run_until_stopped().await
            }
            Err(e) => Err(e),
        },
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            std::process::ExitCode::FAILURE
        }
    }
}

//! `perpetuo-admin`: the admin API and dashboard server, and the operator commands. `main`
//! only wires: read config, then serve or run the command asked for.

use std::process::ExitCode;

use clap::Parser;
use perpetuo_admin::commands;
use perpetuo_admin::config::{Cli, Command};
use perpetuo_admin::startup::Application;

#[tokio::main]
async fn main() -> ExitCode {
    let _ = dotenvy::dotenv();
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if commands::is_check_config(&args) {
        return commands::run_check_config(&args).await;
    }
    if let Err(e) = perpetuo_core::logging::init() {
        eprintln!("{e}");
        return ExitCode::FAILURE;
    }
    let cli = Cli::parse_from(&args);
    let config = cli.config;
    let result = match cli.command {
        Some(Command::CheckConfig) => return commands::run_check_config(&args[..1]).await,
        Some(Command::Migrate) => perpetuo_admin::startup::migrate_only(&config)
            .await
            .map_err(|e| e.to_string()),
        Some(Command::CreateUser(args)) => {
            match commands::create_user(&config, &args, std::io::stdin().lock()).await {
                Ok(created) => {
                    println!("user_id={}", created.user_id);
                    println!("workspace_id={}", created.workspace_id);
                    Ok(())
                }
                Err(e) => return command_failed(format_args!("create-user: {e}")),
            }
        }
        Some(Command::RotateMasterKey) => match commands::rotate_master_key(&config).await {
            Ok(done) => {
                println!(
                    "provider keys re-sealed under PERPETUO_MASTER_KEY: {} (already under it: {})",
                    done.resealed, done.already_current
                );
                Ok(())
            }
            Err(e) => return command_failed(format_args!("rotate-master-key: {e}")),
        },
        Some(Command::Serve) | None => match Application::build(config).await {
            Ok(app) => {
                tracing::info!(addr = %app.local_addr(), "admin API listening");
                app.run_until_stopped().await.map_err(|e| e.to_string())
            }
            Err(e) => Err(e.to_string()),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// An operator command's failure goes to standard error, for the person who ran it.
fn command_failed(message: std::fmt::Arguments<'_>) -> ExitCode {
    eprintln!("{message}");
    ExitCode::FAILURE
}

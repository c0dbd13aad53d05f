//! `perpetuo-gateway`: reads its configuration and runs the gateway (`startup`).

use clap::Parser;
use perpetuo_gateway::config::Config;
use perpetuo_gateway::{metrics, startup};

// mimalloc: fewer allocator costs per request than glibc malloc (see bench/README.md).
// `--features system-alloc` leaves it out, for heap profilers that hook malloc.
#[cfg(not(feature = "system-alloc"))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let _ = dotenvy::dotenv();
    if let Err(e) = perpetuo_core::logging::init() {
        eprintln!("{e}");
        return std::process::ExitCode::FAILURE;
    }
    let config = Config::parse();
    metrics::init();
    match startup::run(config) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            std::process::ExitCode::FAILURE
        }
    }
}

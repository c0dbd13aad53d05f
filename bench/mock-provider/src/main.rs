//! `mock-provider` binary: serves the mock LLM provider on a fixed address for load tests
//! and end-to-end tests, until SIGINT or SIGTERM.

use std::future::Future;
use std::io::Write as _;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use mock_provider::{MockConfig, MockProvider};

/// Mock LLM provider speaking OpenAI's, Anthropic's and Gemini's wire formats.
#[derive(Debug, Parser)]
#[command(name = "mock-provider", version)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9000")]
    addr: SocketAddr,
    /// Delay between SSE events, in milliseconds.
    #[arg(long, default_value_t = 5)]
    chunk_delay_ms: u64,
    /// Write SSE bytes in awkward fragments (same bytes, odd boundaries).
    #[arg(long)]
    fragment: bool,
    /// How long the `stall` behaviours wait, in seconds.
    #[arg(long, default_value_t = 60)]
    stall_secs: u64,
    /// Into how many pieces a text answer is streamed (also its completion tokens).
    #[arg(long, default_value_t = mock_provider::openai::CONTENT_PIECES,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=10_000))]
    pieces: usize,
    /// The text of a normal answer (split into `--pieces` pieces).
    #[arg(long, default_value = mock_provider::DEFAULT_CONTENT)]
    content: String,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    // A load test holds one socket per open stream: take the whole hard limit on open
    // files, not the usual soft 1024.
    if let Err(err) = rlimit::increase_nofile_limit(u64::MAX) {
        eprintln!("mock-provider: cannot raise the open-files limit: {err}");
    }
    // Listen for signals before announcing the address, so that a signal sent right
    // after the announcement stops the server cleanly.
    let shutdown = match shutdown_signal() {
        Ok(shutdown) => shutdown,
        Err(err) => {
            eprintln!("mock-provider: cannot listen for signals: {err}");
            return ExitCode::FAILURE;
        }
    };
    let config = MockConfig {
        chunk_delay: Duration::from_millis(args.chunk_delay_ms),
        fragment: args.fragment,
        bind: args.addr,
        stall: Duration::from_secs(args.stall_secs),
        pieces: args.pieces,
        content: args.content,
        ..MockConfig::default()
    };
    let mock = match MockProvider::start(config).await {
        Ok(mock) => mock,
        Err(err) => {
            eprintln!("mock-provider: cannot listen on {}: {err}", args.addr);
            return ExitCode::FAILURE;
        }
    };
    let mut stdout = std::io::stdout();
    let _ = writeln!(stdout, "listening on {}", mock.addr());
    let _ = stdout.flush();
    mock.serve_until(shutdown).await;
    ExitCode::SUCCESS
}

/// Resolves on SIGINT or SIGTERM; the handlers are installed when this returns.
#[cfg(unix)]
fn shutdown_signal() -> std::io::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
    })
}

/// Resolves on Ctrl-C.
#[cfg(not(unix))]
fn shutdown_signal() -> std::io::Result<impl Future<Output = ()>> {
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}

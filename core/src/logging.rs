//! Process logging for both binaries: `RUST_LOG` filters (default `info`), and
//! `LOG_FORMAT=json` writes one JSON object per line, with the fields of the enclosing
//! spans (the gateway's request span carries the request id) on every line. Lines go to
//! standard output, coloured only when it is a terminal and `NO_COLOR` is unset, so a log
//! redirected to a file or a pipe holds no escape codes.

use std::ffi::OsStr;
use std::io::IsTerminal;

/// The environment variable that chooses the format: `text` (default) or `json`.
pub const LOG_FORMAT: &str = "LOG_FORMAT";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

impl Format {
    /// Reads `LOG_FORMAT`; an unknown value is an error naming the variable.
    pub fn from_env() -> Result<Self, String> {
        match std::env::var(LOG_FORMAT).as_deref() {
            Err(_) | Ok("") | Ok("text") => Ok(Format::Text),
            Ok("json") => Ok(Format::Json),
            Ok(other) => Err(format!("{LOG_FORMAT}: `{other}` is not `text` or `json`")),
        }
    }
}

/// The variable that turns colour off whatever the output is (<https://no-color.org>).
pub const NO_COLOR: &str = "NO_COLOR";

/// Whether log lines carry ANSI colour codes: only on a terminal, and not when
/// `NO_COLOR` holds a value.
pub fn colour(terminal: bool, no_color: Option<&OsStr>) -> bool {
    terminal && no_color.is_none_or(OsStr::is_empty)
}

/// Installs the global subscriber. Returns the format's error without installing one.
pub fn init() -> Result<(), String> {
    let format = Format::from_env()?;
    let filter = tracing_subscriber::EnvFilter::try_from_env("RUST_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = colour(
        std::io::stdout().is_terminal(),
        std::env::var_os(NO_COLOR).as_deref(),
    );
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stdout)
        .with_ansi(ansi);
    match format {
        Format::Text => builder.init(),
        Format::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(colour(true, None));
        assert!(colour(true, Some(OsStr::new(""))));
        assert!(!colour(true, Some(OsStr::new("1"))));
        assert!(!colour(false, None));
        assert!(!colour(false, Some(OsStr::new(""))));
    }
}

//! Process logging for both binaries: `RUST_LOG` filters (default `info`), and
//! `LOG_FORMAT=json` writes one JSON object per line, with the fields of the enclosing
//! spans (the gateway's request span carries the request id) on every line.

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

/// Installs the global subscriber. Returns the format's error without installing one.
pub fn init() -> Result<(), String> {
    let format = Format::from_env()?;
    let filter = tracing_subscriber::EnvFilter::try_from_env("RUST_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
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

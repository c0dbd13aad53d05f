//! `stream-load`: N concurrent streamed completions against a loopback address, with
//! per-stream TTFB/TTFT percentiles and completed/failed/stalled counts.
//!
//! ```sh
//! stream-load --url http://127.0.0.1:8000/v1/chat/completions -H 'authorization: Bearer KEY' \
//!     --concurrency 1000 --streams 2000 [--duration 10] [--json]
//! ```

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use hyper::header::{HeaderName, HeaderValue};
use hyper::Uri;
use stream_load::load::{self, Limit, Plan};
use stream_load::watch::Dialect;

/// An OpenAI chat completion that streams and asks for its usage.
const DEFAULT_BODY: &str = r#"{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Write one short sentence about benchmarks."}]}"#;

/// Streaming load client: keeps N streamed completions in flight and times each one.
#[derive(Debug, Parser)]
#[command(name = "stream-load", version)]
struct Args {
    /// The endpoint, on a loopback address (`http://127.0.0.1:PORT/PATH`).
    #[arg(long)]
    url: String,
    /// Wire format of the streamed answer.
    #[arg(long, value_enum, default_value_t = Dialect::Openai)]
    dialect: Dialect,
    /// Request body (JSON). Default: a streamed OpenAI chat completion asking for usage.
    #[arg(long, conflicts_with = "body_file")]
    body: Option<String>,
    /// Read the request body from this file.
    #[arg(long)]
    body_file: Option<PathBuf>,
    /// Extra request header, `name: value` (repeatable).
    #[arg(short = 'H', long = "header")]
    headers: Vec<String>,
    /// Streams kept in flight.
    #[arg(short, long, default_value_t = 100)]
    concurrency: usize,
    /// Streams in all (default: one burst of `--concurrency`).
    #[arg(short = 'n', long, conflicts_with = "duration")]
    streams: Option<usize>,
    /// Keep streams in flight for this many seconds instead of a count.
    #[arg(short, long)]
    duration: Option<f64>,
    /// Start the workers evenly over this many milliseconds (0: all at once).
    #[arg(long, default_value_t = 0)]
    ramp_ms: u64,
    /// A stream that receives no byte for this long counts as stalled.
    #[arg(long, default_value_t = 10_000)]
    stall_ms: u64,
    /// Longest a whole stream may take.
    #[arg(long, default_value_t = 120_000)]
    timeout_ms: u64,
    /// Open a new connection for every stream (default: one kept-alive connection per worker).
    #[arg(long)]
    fresh_connections: bool,
    /// Runtime worker threads (the benchmark pins the client to one core).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Print the summary as one JSON line on stdout (the human report goes to stderr).
    #[arg(long)]
    json: bool,
    /// Exit with status 2 unless every stream completed.
    #[arg(long)]
    require_all: bool,
}

fn fail(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("stream-load: {message}");
    ExitCode::FAILURE
}

/// The loopback address, `host` header and path of `url`.
fn target(url: &str) -> Result<(SocketAddr, String, String), String> {
    let uri: Uri = url.parse().map_err(|e| format!("--url {url}: {e}"))?;
    if uri.scheme_str() != Some("http") {
        return Err(format!("--url {url}: only http:// is supported"));
    }
    let host = uri.host().ok_or_else(|| format!("--url {url}: no host"))?;
    let ip: IpAddr = match host.trim_start_matches('[').trim_end_matches(']') {
        "localhost" => IpAddr::V4(Ipv4Addr::LOCALHOST),
        other => other
            .parse()
            .map_err(|_| format!("--url {url}: the host must be a loopback IP address"))?,
    };
    if !ip.is_loopback() {
        return Err(format!(
            "--url {url}: load is only sent to loopback addresses"
        ));
    }
    let port = uri.port_u16().unwrap_or(80);
    let authority = uri.authority().map_or(host.to_owned(), |a| a.to_string());
    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
    Ok((SocketAddr::new(ip, port), authority, path))
}

fn header(text: &str) -> Result<(HeaderName, HeaderValue), String> {
    let (name, value) = text
        .split_once(':')
        .ok_or_else(|| format!("--header {text:?}: expected `name: value`"))?;
    let name = HeaderName::try_from(name.trim()).map_err(|e| format!("--header {name:?}: {e}"))?;
    let value = HeaderValue::try_from(value.trim()).map_err(|e| format!("--header value: {e}"))?;
    Ok((name, value))
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.concurrency == 0 {
        return fail("--concurrency must be at least 1");
    }
    // One socket per stream: take the whole hard limit on open files.
    if let Err(err) = rlimit::increase_nofile_limit(u64::MAX) {
        eprintln!("stream-load: cannot raise the open-files limit: {err}");
    }
    let (addr, host, path) = match target(&args.url) {
        Ok(t) => t,
        Err(e) => return fail(e),
    };
    let headers = match args
        .headers
        .iter()
        .map(|h| header(h))
        .collect::<Result<Vec<_>, _>>()
    {
        Ok(h) => h,
        Err(e) => return fail(e),
    };
    let body = match (&args.body, &args.body_file) {
        (Some(body), _) => Bytes::from(body.clone()),
        (None, Some(path)) => match std::fs::read(path) {
            Ok(bytes) => Bytes::from(bytes),
            Err(e) => return fail(format!("--body-file {}: {e}", path.display())),
        },
        (None, None) => Bytes::from_static(DEFAULT_BODY.as_bytes()),
    };
    let limit = match (args.duration, args.streams) {
        (Some(secs), _) if secs.is_finite() && secs > 0.0 => {
            Limit::Duration(Duration::from_secs_f64(secs))
        }
        (Some(_), _) => return fail("--duration must be a positive number of seconds"),
        (None, Some(n)) => Limit::Count(n),
        (None, None) => Limit::Count(args.concurrency),
    };
    let plan = Plan {
        addr,
        host,
        path,
        headers,
        body,
        dialect: args.dialect,
        concurrency: args.concurrency,
        limit,
        ramp: Duration::from_millis(args.ramp_ms),
        stall: Duration::from_millis(args.stall_ms),
        timeout: Duration::from_millis(args.timeout_ms),
        fresh_connections: args.fresh_connections,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(format!("cannot start the runtime: {e}")),
    };
    let summary = runtime.block_on(load::run(plan));
    if args.json {
        eprint!("{}", summary.report());
        match serde_json::to_string(&summary) {
            Ok(line) => println!("{line}"),
            Err(e) => return fail(e),
        }
    } else {
        print!("{}", summary.report());
    }
    if args.require_all && (summary.completed != summary.streams || summary.streams == 0) {
        return ExitCode::from(2);
    }
    ExitCode::SUCCESS
}

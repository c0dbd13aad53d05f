//! `bare-pingora`: a reverse proxy to one upstream built the way the gateway is built — one
//! Pingora proxy service, the gateway's server settings file, a pooled keep-alive
//! upstream `Connector` driven from `request_filter`, mimalloc — and nothing else: no
//! auth, no parsing, no routing, no logging, no metrics. Run beside the gateway by
//! `bench/run.sh`, the gap between the two is the cost of the gateway's own work.
//!
//! `--mode peer` takes Pingora's native path instead (`ProxyHttp::upstream_peer`, the
//! proxy state machine with its own pool), to show what the `request_filter` design
//! costs or saves against it. `--mode answer` calls no upstream: it reads each request
//! and answers it with the bytes of `--answer-file` — the least any answer from memory
//! (a cache hit) costs on Pingora.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use clap::{Parser, ValueEnum};
use pingora::connectors::http::Connector;
use pingora::connectors::ConnectorOptions;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::protocols::http::client::HttpSession;
use pingora::proxy::{ProxyHttp, Session};
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server};
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorType, Result};

// The gateway's allocator, so that the allocator is not part of the gap.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// How requests reach the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// The gateway's design: read the body in `request_filter`, send it over a pooled
    /// connection from a `Connector`, stream the answer back, answer from the filter.
    Filter,
    /// Pingora's own proxy path: `upstream_peer` names the upstream, Pingora does the rest.
    Peer,
    /// No upstream: read the request, answer with `--answer-file` (JSON) from the filter.
    Answer,
}

/// A bare Pingora reverse proxy to one HTTP/1.1 upstream.
#[derive(Debug, Parser)]
#[command(name = "bare-pingora", version)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8100")]
    listen: SocketAddr,
    /// The upstream every request goes to (plain HTTP/1.1); not used by `--mode answer`.
    #[arg(long)]
    upstream: Option<SocketAddr>,
    /// Pingora server settings (YAML), e.g. the gateway's `bench/scripts/gateway.yaml`.
    #[arg(long)]
    conf: Option<PathBuf>,
    /// How requests reach the upstream.
    #[arg(long, value_enum, default_value_t = Mode::Filter)]
    mode: Mode,
    /// Largest request body accepted, in bytes (the gateway's default limit).
    #[arg(long, default_value_t = 10 * 1024 * 1024)]
    max_body_bytes: usize,
    /// The JSON answer `--mode answer` gives to every request.
    #[arg(long, required_if_eq("mode", "answer"))]
    answer_file: Option<PathBuf>,
}

struct Bare {
    mode: Mode,
    upstream: SocketAddr,
    answer: Bytes,
    peer: HttpPeer,
    connector: Connector,
    max_body_bytes: usize,
}

fn fail(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("bare-pingora: {message}");
    ExitCode::FAILURE
}

fn main() -> ExitCode {
    let args = Args::parse();
    // A proxied stream holds two sockets: take the whole hard limit on open files.
    if let Err(err) = rlimit::increase_nofile_limit(u64::MAX) {
        eprintln!("bare-pingora: cannot raise the open-files limit: {err}");
    }
    let yaml = match &args.conf {
        Some(path) => match std::fs::read_to_string(path) {
            Ok(yaml) => yaml,
            Err(err) => return fail(format!("cannot read {}: {err}", path.display())),
        },
        None => "---\nversion: 1\nthreads: 1\n".to_owned(),
    };
    let conf = match ServerConf::from_yaml(&yaml) {
        Ok(conf) => conf,
        Err(err) => return fail(format!("server settings are invalid: {err}")),
    };
    let answer = match &args.answer_file {
        Some(path) => match std::fs::read(path) {
            Ok(bytes) => Bytes::from(bytes),
            Err(err) => return fail(format!("cannot read {}: {err}", path.display())),
        },
        None => Bytes::new(),
    };
    let upstream = match (args.upstream, args.mode) {
        (Some(upstream), _) => upstream,
        // No upstream is called: the unused peer names the discard port.
        (None, Mode::Answer) => SocketAddr::from(([127, 0, 0, 1], 9)),
        (None, _) => return fail("--upstream is needed (except with --mode answer)"),
    };
    let mut peer = HttpPeer::new(upstream, false, String::new());
    // The gateway's upstream settings for a plain-HTTP provider.
    peer.options.connection_timeout = Some(Duration::from_secs(5));
    peer.options.total_connection_timeout = Some(Duration::from_secs(5));
    peer.options.read_timeout = Some(Duration::from_secs(60));
    peer.options.write_timeout = Some(Duration::from_secs(60));
    peer.options.idle_timeout = Some(Duration::from_secs(60));
    let bare = Bare {
        mode: args.mode,
        upstream,
        answer,
        peer,
        connector: Connector::new(Some(ConnectorOptions::from_server_conf(&conf))),
        max_body_bytes: args.max_body_bytes,
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut proxy = pingora::proxy::http_proxy_service(&server.configuration, bare);
    proxy.add_tcp(&args.listen.to_string());
    server.add_service(proxy);
    println!("listening on {}", args.listen);
    server.run(RunArgs::default());
    ExitCode::SUCCESS
}

fn error(kind: ErrorType, why: &'static str) -> Box<Error> {
    Error::explain(kind, why)
}

impl Bare {
    /// Reads the whole request body, refusing more than the limit.
    async fn read_body(&self, session: &mut Session) -> Result<Bytes> {
        let declared = session
            .req_header()
            .headers
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(0);
        let mut body = BytesMut::with_capacity(declared.min(self.max_body_bytes));
        while let Some(chunk) = session.read_request_body().await? {
            if body.len() + chunk.len() > self.max_body_bytes {
                return Err(error(
                    ErrorType::InvalidHTTPHeader,
                    "request body too large",
                ));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body.freeze())
    }

    /// The upstream request: the client's method, path and content type, with the body's
    /// length (the gateway builds its upstream header the same way).
    fn upstream_header(&self, session: &Session, body: &Bytes) -> Result<RequestHeader> {
        let req = session.req_header();
        let path = req.uri.path_and_query().map_or("/", |p| p.as_str());
        let mut header = RequestHeader::build(req.method.clone(), path.as_bytes(), Some(4))?;
        header.insert_header("host", self.upstream.to_string())?;
        header.insert_header("content-length", body.len().to_string())?;
        if let Some(ct) = req.headers.get("content-type") {
            header.insert_header("content-type", ct.clone())?;
        }
        Ok(header)
    }

    /// Reads the request and answers it from memory, as a cache hit would at the least.
    async fn answer(&self, session: &mut Session) -> Result<()> {
        self.read_body(session).await?;
        let mut header = ResponseHeader::build_no_case(200, Some(2))?;
        header.insert_header("content-type", "application/json")?;
        header.insert_header("content-length", self.answer.len().to_string())?;
        session
            .write_response_header(Box::new(header), false)
            .await?;
        session
            .write_response_body(Some(self.answer.clone()), true)
            .await
    }

    /// Sends the request over a pooled connection and streams the answer back, chunk by
    /// chunk; a client that leaves drops the upstream connection at once.
    async fn forward(&self, session: &mut Session) -> Result<()> {
        let body = self.read_body(session).await?;
        let header = self.upstream_header(session, &body)?;
        let (mut up, _reused) = self.connector.get_http_session(&self.peer).await?;
        // The answer read 16 KiB at a time, as the gateway reads it (its upstream.rs).
        if let HttpSession::H1(h1) = &mut up {
            h1.set_body_buffer_size(16 * 1024);
        }
        up.write_request_header(Box::new(header)).await?;
        up.write_request_body(body, true).await?;
        up.finish_request_body().await?;
        up.read_response_header().await?;
        let Some(upstream) = up.response_header() else {
            return Err(error(ErrorType::InvalidHTTPHeader, "no response header"));
        };
        let mut answer: ResponseHeader = upstream.clone();
        answer.remove_header("connection");
        answer.remove_header("keep-alive");
        session
            .write_response_header(Box::new(answer), false)
            .await?;
        loop {
            let chunk = tokio::select! {
                chunk = up.read_response_body() => chunk?,
                gone = session.read_body_or_idle(true) => {
                    gone?;
                    return Err(error(ErrorType::ConnectionClosed, "client left"));
                }
            };
            match chunk {
                Some(chunk) => session.write_response_body(Some(chunk), false).await?,
                None => {
                    session.write_response_body(None, true).await?;
                    break;
                }
            }
        }
        let idle = self.peer.options.idle_timeout;
        self.connector
            .release_http_session(up, &self.peer, idle)
            .await;
        Ok(())
    }
}

#[async_trait]
impl ProxyHttp for Bare {
    type CTX = ();

    fn new_ctx(&self) -> Self::CTX {}

    async fn request_filter(&self, session: &mut Session, _ctx: &mut ()) -> Result<bool> {
        match self.mode {
            Mode::Peer => Ok(false),
            Mode::Filter => self.forward(session).await.map(|()| true),
            Mode::Answer => self.answer(session).await.map(|()| true),
        }
    }

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(self.peer.clone()))
    }
}

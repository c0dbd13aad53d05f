//! Trace export over OTLP, configured by the standard `OTEL_*` variables: off unless
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set. Finished spans wait in a bounded queue and leave
//! in batches from a thread of their own, each export bounded by
//! `OTEL_EXPORTER_OTLP_TIMEOUT`: a collector that is down, slow or silent costs a request
//! nothing, and the spans it could not take are dropped and counted (the `dropped`
//! callback of [`start`]). OTLP over HTTP (protobuf) always; over gRPC only in a build
//! with the `otlp-grpc` feature.

use std::collections::HashMap;
use std::fmt;
use std::sync::mpsc::{self, SyncSender};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{SpanExporter, WithExportConfig};
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{
    Sampler as SdkSampler, SdkTracer, SdkTracerProvider, Span, SpanData, SpanExporter as _,
    SpanProcessor,
};
use opentelemetry_sdk::Resource;

use crate::Secret;

/// The collector's base URL (`/v1/traces` is added for HTTP); unset: no tracing.
pub const OTEL_EXPORTER_OTLP_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
/// `http/protobuf` (default) or `grpc` (a build with the `otlp-grpc` feature).
pub const OTEL_EXPORTER_OTLP_PROTOCOL: &str = "OTEL_EXPORTER_OTLP_PROTOCOL";
/// Headers sent with every export (`key=value,key2=value2`), often a credential: secret.
pub const OTEL_EXPORTER_OTLP_HEADERS: &str = "OTEL_EXPORTER_OTLP_HEADERS";
/// Longest one export may take, ms.
pub const OTEL_EXPORTER_OTLP_TIMEOUT: &str = "OTEL_EXPORTER_OTLP_TIMEOUT";
/// The `service.name` of every span.
pub const OTEL_SERVICE_NAME: &str = "OTEL_SERVICE_NAME";
/// Which traces are kept.
pub const OTEL_TRACES_SAMPLER: &str = "OTEL_TRACES_SAMPLER";
/// The ratio of the `traceidratio` samplers.
pub const OTEL_TRACES_SAMPLER_ARG: &str = "OTEL_TRACES_SAMPLER_ARG";
/// Finished spans held for export at most; past it they are dropped and counted.
pub const OTEL_BSP_MAX_QUEUE_SIZE: &str = "OTEL_BSP_MAX_QUEUE_SIZE";
/// Longest a finished span waits before its batch leaves, ms.
pub const OTEL_BSP_SCHEDULE_DELAY: &str = "OTEL_BSP_SCHEDULE_DELAY";
/// Spans sent in one export at most.
pub const OTEL_BSP_MAX_EXPORT_BATCH_SIZE: &str = "OTEL_BSP_MAX_EXPORT_BATCH_SIZE";

/// Longest export timeout accepted, ms: an export never holds the queue longer.
const MAX_EXPORT_TIMEOUT_MS: u64 = 60_000;

/// How spans reach the collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    #[default]
    HttpProtobuf,
    Grpc,
}

/// `OTEL_EXPORTER_OTLP_PROTOCOL`: `http/protobuf`, or `grpc` in a build that has it.
pub fn protocol(s: &str) -> Result<Protocol, String> {
    match s.trim() {
        "" | "http/protobuf" => Ok(Protocol::HttpProtobuf),
        "grpc" if cfg!(feature = "otlp-grpc") => Ok(Protocol::Grpc),
        "grpc" => Err("grpc needs a build with the otlp-grpc feature; use http/protobuf".into()),
        other => Err(format!("`{other}` is not http/protobuf or grpc")),
    }
}

/// The headers of `OTEL_EXPORTER_OTLP_HEADERS`, percent-decoded values.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Headers(pub Vec<(String, String)>);

impl fmt::Debug for Headers {
    /// The header names only: values are often credentials.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|(k, _)| k))
            .finish()
    }
}

/// `OTEL_EXPORTER_OTLP_HEADERS`, kept secret as it is: its pairs are read when tracing
/// starts ([`parse_headers`]), so that no parse error (whose message would quote the value)
/// can print it.
pub fn headers(s: &str) -> Result<Secret<String>, String> {
    Ok(Secret::new(s.to_string()))
}

/// `key=value` pairs separated by commas, values percent-decoded; an error never repeats
/// a value.
pub fn parse_headers(s: &str) -> Result<Headers, String> {
    let mut out = Vec::new();
    for (at, pair) in s.split(',').enumerate() {
        if pair.trim().is_empty() {
            continue;
        }
        let Some((k, v)) = pair.split_once('=') else {
            return Err(format!("pair {} is not key=value", at + 1));
        };
        let key = k.trim();
        let value = percent_encoding::percent_decode_str(v.trim()).decode_utf8_lossy();
        if key.is_empty()
            || http::HeaderName::from_bytes(key.as_bytes()).is_err()
            || http::HeaderValue::from_str(&value).is_err()
        {
            return Err(format!("pair {} is not a valid header", at + 1));
        }
        out.push((key.to_string(), value.into_owned()));
    }
    Ok(Headers(out))
}

/// `OTEL_TRACES_SAMPLER`'s values (`OTEL_TRACES_SAMPLER_ARG` gives the ratio).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SamplerKind {
    AlwaysOn,
    AlwaysOff,
    TraceIdRatio,
    #[default]
    ParentBasedAlwaysOn,
    ParentBasedAlwaysOff,
    ParentBasedTraceIdRatio,
}

/// `OTEL_TRACES_SAMPLER`: one of the specification's built-in samplers.
pub fn sampler(s: &str) -> Result<SamplerKind, String> {
    Ok(match s.trim() {
        "always_on" => SamplerKind::AlwaysOn,
        "always_off" => SamplerKind::AlwaysOff,
        "traceidratio" => SamplerKind::TraceIdRatio,
        "" | "parentbased_always_on" => SamplerKind::ParentBasedAlwaysOn,
        "parentbased_always_off" => SamplerKind::ParentBasedAlwaysOff,
        "parentbased_traceidratio" => SamplerKind::ParentBasedTraceIdRatio,
        _ => {
            return Err(
                "is not always_on, always_off, traceidratio, parentbased_always_on, \
                 parentbased_always_off or parentbased_traceidratio"
                    .into(),
            )
        }
    })
}

/// `OTEL_TRACES_SAMPLER_ARG`: a ratio from 0 to 1 (empty: 1).
pub fn ratio(s: &str) -> Result<f64, String> {
    match unset_as(s, "1.0").parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        _ => Err("must be a ratio from 0 to 1".into()),
    }
}

/// `OTEL_EXPORTER_OTLP_TIMEOUT`: whole milliseconds, 1 to 60000 (empty: 10000).
pub fn export_timeout(s: &str) -> Result<Duration, String> {
    match unset_as(s, "10000").parse::<u64>() {
        Ok(ms) if (1..=MAX_EXPORT_TIMEOUT_MS).contains(&ms) => Ok(Duration::from_millis(ms)),
        _ => Err(format!(
            "must be a whole number of milliseconds from 1 to {MAX_EXPORT_TIMEOUT_MS}"
        )),
    }
}

/// `OTEL_BSP_SCHEDULE_DELAY`: whole milliseconds (empty: 5000).
pub fn schedule_delay(s: &str) -> Result<Duration, String> {
    match unset_as(s, "5000").parse::<u64>() {
        Ok(ms) if (1..=MAX_EXPORT_TIMEOUT_MS).contains(&ms) => Ok(Duration::from_millis(ms)),
        _ => Err(format!(
            "must be a whole number of milliseconds from 1 to {MAX_EXPORT_TIMEOUT_MS}"
        )),
    }
}

/// What an empty variable reads as: its default, the specification asking that an empty
/// `OTEL_*` variable be treated as unset (as compose passes one that is unset).
fn unset_as<'a>(s: &'a str, default: &'a str) -> &'a str {
    match s.trim() {
        "" => default,
        set => set,
    }
}

/// `OTEL_BSP_MAX_QUEUE_SIZE`: 1 to 1,000,000 spans (empty: 2048).
pub fn queue_size(s: &str) -> Result<usize, String> {
    match unset_as(s, "2048").parse::<usize>() {
        Ok(n) if (1..=1_000_000).contains(&n) => Ok(n),
        _ => Err("must be a whole number of spans from 1 to 1000000".into()),
    }
}

/// `OTEL_BSP_MAX_EXPORT_BATCH_SIZE`: 1 to 100,000 spans (empty: 512).
pub fn batch_size(s: &str) -> Result<usize, String> {
    match unset_as(s, "512").parse::<usize>() {
        Ok(n) if (1..=100_000).contains(&n) => Ok(n),
        _ => Err("must be a whole number of spans from 1 to 100000".into()),
    }
}

/// The collector's base URL, or none: tracing off.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Endpoint(Option<url::Url>);

impl Endpoint {
    pub fn url(&self) -> Option<&url::Url> {
        self.0.as_ref()
    }
}

/// `OTEL_EXPORTER_OTLP_ENDPOINT`: an `http://` or `https://` URL; empty: none.
pub fn endpoint(s: &str) -> Result<Endpoint, String> {
    if s.trim().is_empty() {
        return Ok(Endpoint(None));
    }
    match url::Url::parse(s.trim()) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {
            Ok(Endpoint(Some(u)))
        }
        _ => Err("must be an http:// or https:// URL".into()),
    }
}

/// Tracing's settings, the specification's variables.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Tracing (OpenTelemetry)")]
pub struct TelemetrySettings {
    /// The OTLP collector's base URL (`/v1/traces` is added for HTTP); unset or empty: no
    /// tracing. (Every `OTEL_*` variable set empty reads as unset.)
    #[arg(long, env = OTEL_EXPORTER_OTLP_ENDPOINT, default_value = "", hide_default_value = true, value_parser = endpoint)]
    pub otel_exporter_otlp_endpoint: Endpoint,
    /// `http/protobuf`, or `grpc` in a build with the `otlp-grpc` feature.
    #[arg(long, env = OTEL_EXPORTER_OTLP_PROTOCOL, default_value = "http/protobuf", value_parser = protocol)]
    pub otel_exporter_otlp_protocol: Protocol,
    /// Headers sent with every export, `key=value` pairs separated by commas.
    #[arg(long, env = OTEL_EXPORTER_OTLP_HEADERS, value_parser = headers, hide_env_values = true)]
    pub otel_exporter_otlp_headers: Option<Secret<String>>,
    /// Longest one export may take, ms; the spans of an export that fails or takes
    /// longer are dropped and counted.
    #[arg(long, env = OTEL_EXPORTER_OTLP_TIMEOUT, default_value = "10000", value_parser = export_timeout)]
    pub otel_exporter_otlp_timeout: Duration,
    /// The spans' `service.name` (the binary's name when unset).
    #[arg(long, env = OTEL_SERVICE_NAME)]
    pub otel_service_name: Option<String>,
    /// Which traces are kept: always_on, always_off, traceidratio, parentbased_always_on,
    /// parentbased_always_off, parentbased_traceidratio.
    #[arg(long, env = OTEL_TRACES_SAMPLER, default_value = "parentbased_always_on", value_parser = sampler)]
    pub otel_traces_sampler: SamplerKind,
    /// The ratio of the traceidratio samplers, 0 to 1.
    #[arg(long, env = OTEL_TRACES_SAMPLER_ARG, default_value = "1.0", value_parser = ratio)]
    pub otel_traces_sampler_arg: f64,
    /// Finished spans held for export at most; past it they are dropped and counted.
    #[arg(long, env = OTEL_BSP_MAX_QUEUE_SIZE, default_value_t = 2048,
          value_parser = queue_size)]
    pub otel_bsp_max_queue_size: usize,
    /// Longest a finished span waits before its batch leaves, ms.
    #[arg(long, env = OTEL_BSP_SCHEDULE_DELAY, default_value = "5000", value_parser = schedule_delay)]
    pub otel_bsp_schedule_delay: Duration,
    /// Spans sent in one export at most.
    #[arg(long, env = OTEL_BSP_MAX_EXPORT_BATCH_SIZE, default_value_t = 512,
          value_parser = batch_size)]
    pub otel_bsp_max_export_batch_size: usize,
}

/// Tracing off, every other setting at its default (as with no variable set).
impl Default for TelemetrySettings {
    fn default() -> Self {
        Self {
            otel_exporter_otlp_endpoint: Endpoint::default(),
            otel_exporter_otlp_protocol: Protocol::HttpProtobuf,
            otel_exporter_otlp_headers: None,
            otel_exporter_otlp_timeout: Duration::from_millis(10_000),
            otel_service_name: None,
            otel_traces_sampler: SamplerKind::ParentBasedAlwaysOn,
            otel_traces_sampler_arg: 1.0,
            otel_bsp_max_queue_size: 2048,
            otel_bsp_schedule_delay: Duration::from_millis(5000),
            otel_bsp_max_export_batch_size: 512,
        }
    }
}

impl TelemetrySettings {
    /// The sampler the variables name.
    fn sampler(&self) -> SdkSampler {
        let ratio = self.otel_traces_sampler_arg;
        let parent = |root: SdkSampler| SdkSampler::ParentBased(Box::new(root));
        match self.otel_traces_sampler {
            SamplerKind::AlwaysOn => SdkSampler::AlwaysOn,
            SamplerKind::AlwaysOff => SdkSampler::AlwaysOff,
            SamplerKind::TraceIdRatio => SdkSampler::TraceIdRatioBased(ratio),
            SamplerKind::ParentBasedAlwaysOn => parent(SdkSampler::AlwaysOn),
            SamplerKind::ParentBasedAlwaysOff => parent(SdkSampler::AlwaysOff),
            SamplerKind::ParentBasedTraceIdRatio => parent(SdkSampler::TraceIdRatioBased(ratio)),
        }
    }
}

/// Why tracing could not start.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("{OTEL_EXPORTER_OTLP_ENDPOINT}: cannot build the exporter: {0}")]
    Exporter(String),
    #[error("{OTEL_EXPORTER_OTLP_HEADERS}: {0}")]
    Headers(String),
    #[error("cannot start the trace export thread: {0}")]
    Thread(#[from] std::io::Error),
}

/// Counts spans that never reached the collector (the queue was full, or their export
/// failed or took too long).
pub type Dropped = Arc<dyn Fn(u64) + Send + Sync>;

/// Running tracing: the tracer spans are made with, and the provider to shut down.
#[derive(Debug, Clone)]
pub struct Tracing {
    pub tracer: SdkTracer,
    provider: SdkTracerProvider,
}

impl Tracing {
    /// Sends what is queued, waiting at most `timeout`.
    pub fn shutdown(&self, timeout: Duration) {
        let _ = self.provider.shutdown_with_timeout(timeout);
    }
}

/// Starts tracing when an endpoint is set (`None` otherwise): the tracer, and the thread
/// that exports. `service` names the spans' service unless `OTEL_SERVICE_NAME` does.
pub fn start(
    settings: &TelemetrySettings,
    service: &str,
    dropped: Dropped,
) -> Result<Option<Tracing>, TelemetryError> {
    let Some(endpoint) = settings.otel_exporter_otlp_endpoint.url() else {
        return Ok(None);
    };
    let name = settings
        .otel_service_name
        .as_deref()
        .filter(|n| !n.trim().is_empty())
        .unwrap_or(service);
    let resource = Resource::builder_empty()
        .with_service_name(name.to_string())
        .build();
    // The exporter's runtime: one thread, apart from the request path.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut exporter = {
        let _entered = runtime.enter();
        exporter(settings, endpoint)?
    };
    exporter.set_resource(&resource);
    let pending = Arc::new(Mutex::new(Pending::default()));
    // A batch never waits for more spans than the queue holds.
    let batch_size = settings
        .otel_bsp_max_export_batch_size
        .min(settings.otel_bsp_max_queue_size);
    let batch = Batching {
        max: batch_size,
        delay: settings.otel_bsp_schedule_delay,
        timeout: settings.otel_exporter_otlp_timeout,
    };
    let export_dropped = dropped.clone();
    let exported = pending.clone();
    let thread = std::thread::Builder::new()
        .name("trace export".into())
        .spawn(move || export_loop(runtime, exporter, exported, batch, export_dropped))?;
    let processor = Queue {
        pending,
        capacity: settings.otel_bsp_max_queue_size,
        batch: batch_size,
        exporter: thread.thread().clone(),
        dropped,
    };
    let provider = SdkTracerProvider::builder()
        .with_sampler(settings.sampler())
        .with_resource(resource)
        .with_span_processor(processor)
        .build();
    let tracer = provider.tracer(service.to_string());
    Ok(Some(Tracing { tracer, provider }))
}

/// The OTLP exporter the settings name.
fn exporter(
    settings: &TelemetrySettings,
    endpoint: &url::Url,
) -> Result<SpanExporter, TelemetryError> {
    let headers = match &settings.otel_exporter_otlp_headers {
        Some(raw) => {
            parse_headers(raw.expose())
                .map_err(TelemetryError::Headers)?
                .0
        }
        None => Vec::new(),
    };
    let base = endpoint.as_str().trim_end_matches('/');
    let built = match settings.otel_exporter_otlp_protocol {
        Protocol::HttpProtobuf => {
            use opentelemetry_otlp::WithHttpConfig;
            SpanExporter::builder()
                .with_http()
                .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                .with_endpoint(format!("{base}/v1/traces"))
                .with_timeout(settings.otel_exporter_otlp_timeout)
                .with_headers(headers.into_iter().collect::<HashMap<_, _>>())
                .with_http_client(Http::new(settings.otel_exporter_otlp_timeout)?)
                .build()
        }
        Protocol::Grpc => grpc(base, headers, settings.otel_exporter_otlp_timeout)?,
    };
    built.map_err(|e| TelemetryError::Exporter(e.to_string()))
}

#[cfg(feature = "otlp-grpc")]
fn grpc(
    base: &str,
    headers: Vec<(String, String)>,
    timeout: Duration,
) -> Result<Result<SpanExporter, opentelemetry_otlp::ExporterBuildError>, TelemetryError> {
    use opentelemetry_otlp::tonic_types::metadata::MetadataMap;
    use opentelemetry_otlp::WithTonicConfig;
    let mut map = http::HeaderMap::new();
    for (k, v) in headers {
        if let (Ok(k), Ok(v)) = (
            http::HeaderName::from_bytes(k.as_bytes()),
            http::HeaderValue::from_str(&v),
        ) {
            map.insert(k, v);
        }
    }
    Ok(SpanExporter::builder()
        .with_tonic()
        .with_endpoint(base.to_string())
        .with_timeout(timeout)
        .with_metadata(MetadataMap::from_headers(map))
        .build())
}

#[cfg(not(feature = "otlp-grpc"))]
fn grpc(
    _base: &str,
    _headers: Vec<(String, String)>,
    _timeout: Duration,
) -> Result<Result<SpanExporter, opentelemetry_otlp::ExporterBuildError>, TelemetryError> {
    // `protocol` refuses `grpc` in a build without the feature.
    Err(TelemetryError::Exporter(
        "grpc needs a build with the otlp-grpc feature".into(),
    ))
}

/// The OTLP/HTTP client: the workspace's reqwest, each request bounded by the export
/// timeout (connecting included).
#[derive(Debug, Clone)]
struct Http(reqwest::Client);

impl Http {
    fn new(timeout: Duration) -> Result<Self, TelemetryError> {
        reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .map(Http)
            .map_err(|e| TelemetryError::Exporter(e.to_string()))
    }
}

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for Http {
    async fn send_bytes(
        &self,
        request: http::Request<bytes::Bytes>,
    ) -> Result<http::Response<bytes::Bytes>, opentelemetry_http::HttpError> {
        let (parts, body) = request.into_parts();
        let response = self
            .0
            .request(parts.method, parts.uri.to_string())
            .headers(parts.headers)
            .body(body)
            .send()
            .await?;
        let mut out = http::Response::builder().status(response.status());
        for (k, v) in response.headers() {
            out = out.header(k, v);
        }
        let body = response.bytes().await?;
        Ok(out.body(body)?)
    }
}

/// What the request path and the export thread share: the finished spans waiting, and
/// who waits for a flush.
#[derive(Default)]
struct Pending {
    spans: Vec<SpanData>,
    flushes: Vec<SyncSender<()>>,
    closed: bool,
}

/// The span processor: a finished span joins the bounded queue, or is dropped and
/// counted when it is full. Nothing here waits, and the export thread is woken only when a
/// batch is full or a flush is asked for, never once per span: it otherwise sleeps until
/// the schedule delay.
struct Queue {
    pending: Arc<Mutex<Pending>>,
    capacity: usize,
    batch: usize,
    exporter: std::thread::Thread,
    dropped: Dropped,
}

impl fmt::Debug for Queue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Queue")
    }
}

/// Locks the queue; a panic elsewhere while it was held leaves plain data behind.
fn lock(pending: &Mutex<Pending>) -> MutexGuard<'_, Pending> {
    pending.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Queue {
    /// Asks the export thread to send what is queued, waiting at most `timeout`.
    fn flush(&self, timeout: Duration) -> OTelSdkResult {
        let (tx, rx) = mpsc::sync_channel(1);
        {
            let mut pending = lock(&self.pending);
            if pending.closed {
                return Ok(());
            }
            pending.flushes.push(tx);
        }
        self.exporter.unpark();
        rx.recv_timeout(timeout)
            .map_err(|_| OTelSdkError::Timeout(timeout))
    }
}

impl SpanProcessor for Queue {
    fn on_start(&self, _span: &mut Span, _cx: &opentelemetry::Context) {}

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        let full = {
            let mut pending = lock(&self.pending);
            if pending.closed {
                return;
            }
            if pending.spans.len() >= self.capacity {
                drop(pending);
                (self.dropped)(1);
                return;
            }
            pending.spans.push(span);
            pending.spans.len() == self.batch
        };
        if full {
            self.exporter.unpark();
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.flush(Duration::from_secs(5))
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        let flushed = self.flush(timeout);
        lock(&self.pending).closed = true;
        self.exporter.unpark();
        flushed
    }
}

impl Drop for Queue {
    fn drop(&mut self) {
        lock(&self.pending).closed = true;
        self.exporter.unpark();
    }
}

/// How batches are made and sent.
#[derive(Debug, Clone, Copy)]
struct Batching {
    max: usize,
    delay: Duration,
    timeout: Duration,
}

/// The export thread: sleeps until the schedule delay has passed, a batch is full or a
/// flush is asked for, then sends what is queued in batches of at most `max`, each within
/// the timeout; a batch that fails is dropped and counted. Ends when the processor is
/// shut down or gone.
fn export_loop(
    runtime: tokio::runtime::Runtime,
    exporter: SpanExporter,
    pending: Arc<Mutex<Pending>>,
    batching: Batching,
    dropped: Dropped,
) {
    let send = |spans: Vec<SpanData>| {
        let n = spans.len() as u64;
        let sent = runtime.block_on(async {
            tokio::time::timeout(batching.timeout, exporter.export(spans)).await
        });
        if !matches!(sent, Ok(Ok(()))) {
            dropped(n);
        }
    };
    let mut due = Instant::now() + batching.delay;
    loop {
        let now = Instant::now();
        let (spans, flushes, closed) = {
            let mut p = lock(&pending);
            let ready = now >= due || p.spans.len() >= batching.max;
            if !ready && p.flushes.is_empty() && !p.closed {
                drop(p);
                std::thread::park_timeout(due.saturating_duration_since(now));
                continue;
            }
            let spans = std::mem::replace(&mut p.spans, Vec::with_capacity(batching.max));
            (spans, std::mem::take(&mut p.flushes), p.closed)
        };
        if now >= due {
            due = now + batching.delay;
        }
        let mut spans = spans.into_iter();
        loop {
            let batch: Vec<SpanData> = spans.by_ref().take(batching.max).collect();
            if batch.is_empty() {
                break;
            }
            send(batch);
        }
        for done in flushes {
            let _ = done.try_send(());
        }
        if closed {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocols_without_grpc_name_the_feature() {
        assert_eq!(protocol("http/protobuf"), Ok(Protocol::HttpProtobuf));
        if !cfg!(feature = "otlp-grpc") {
            assert!(protocol("grpc").unwrap_err().contains("otlp-grpc"));
        }
        assert!(protocol("http/json").is_err());
    }

    #[test]
    fn headers_errors_never_repeat_a_value() {
        let raw = headers("authorization=Bearer%20s3cret, x-team = a").unwrap();
        assert_eq!(format!("{raw:?}"), "***");
        let h = parse_headers(raw.expose()).unwrap();
        assert_eq!(
            h.0,
            vec![
                ("authorization".to_string(), "Bearer s3cret".to_string()),
                ("x-team".to_string(), "a".to_string())
            ]
        );
        let err = parse_headers("authorization=ok,s3cret").unwrap_err();
        assert!(!err.contains("s3cret"), "{err}");
        let err = parse_headers("bad key=s3cret").unwrap_err();
        assert!(!err.contains("s3cret"), "{err}");
    }

    #[test]
    fn samplers_and_ratios() {
        assert_eq!(
            sampler("parentbased_traceidratio"),
            Ok(SamplerKind::ParentBasedTraceIdRatio)
        );
        assert_eq!(sampler(""), Ok(SamplerKind::ParentBasedAlwaysOn));
        assert!(sampler("jaeger_remote").is_err());
        assert_eq!(ratio("0.25"), Ok(0.25));
        assert!(ratio("1.5").is_err());
        assert!(export_timeout("0").is_err());
        assert!(endpoint("localhost:4318").is_err());
        assert!(endpoint("http://collector:4318").is_ok());
    }

    #[test]
    fn an_empty_variable_reads_as_unset() {
        assert_eq!(endpoint(" "), Ok(Endpoint::default()));
        assert_eq!(ratio(""), Ok(1.0));
        assert_eq!(export_timeout(""), Ok(Duration::from_millis(10_000)));
        assert_eq!(schedule_delay(""), Ok(Duration::from_millis(5_000)));
        assert_eq!((queue_size(""), batch_size("")), (Ok(2048), Ok(512)));
        assert!(queue_size("0").is_err());
        assert_eq!(protocol(""), Ok(Protocol::HttpProtobuf));
    }
}

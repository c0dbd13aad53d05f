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

use opentelemetry::trace::{SpanContext, TraceId, TracerProvider as _};
use opentelemetry_otlp::{SpanExporter, WithExportConfig};
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{
    Sampler as SdkSampler, SdkTracer, SdkTracerProvider, Span, SpanData, SpanExporter as _,
    SpanProcessor,
};
use opentelemetry_sdk::Resource;

use crate::otlp::{self, SpanRecord};
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
    /// The spans' `service.name`: `OTEL_SERVICE_NAME`, else the binary's `default`.
    fn service_name<'a>(&'a self, default: &'a str) -> &'a str {
        self.otel_service_name
            .as_deref()
            .filter(|n| !n.trim().is_empty())
            .unwrap_or(default)
    }

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
    let name = settings.service_name(service);
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
    let timeout = settings.otel_exporter_otlp_timeout;
    let send = move |spans: Vec<SpanData>| {
        let sent =
            runtime.block_on(async { tokio::time::timeout(timeout, exporter.export(spans)).await });
        matches!(sent, Ok(Ok(())))
    };
    let processor = SdkQueue(queue(settings, dropped, send)?);
    let provider = SdkTracerProvider::builder()
        .with_sampler(settings.sampler())
        .with_resource(resource)
        .with_span_processor(processor)
        .build();
    let tracer = provider.tracer(service.to_string());
    Ok(Some(Tracing { tracer, provider }))
}

/// Spans a binary records itself as [`SpanRecord`]s (the gateway's, on its request path):
/// the sampler that decides which traces are kept, and the queue that exports them,
/// encoded straight to OTLP. The same variables as [`start`], the same bounds.
pub struct Exporter {
    sampler: Sampler,
    queue: Queue<SpanRecord>,
}

impl fmt::Debug for Exporter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Exporter")
            .field("sampler", &self.sampler)
            .finish_non_exhaustive()
    }
}

impl Exporter {
    /// Whether a trace whose parent (a client's context) is `parent` is kept.
    pub fn sampled(&self, parent: Option<&SpanContext>, trace_id: TraceId) -> bool {
        self.sampler.sampled(parent, trace_id)
    }

    /// Queues one request's finished spans for export: all of them, or (the queue full)
    /// none, counted as dropped.
    pub fn submit(&self, spans: Vec<SpanRecord>) {
        self.queue.push(spans.into_iter());
    }

    /// Sends what is queued, waiting at most `timeout`, and stops the export thread.
    pub fn shutdown(&self, timeout: Duration) {
        let _ = self.queue.shutdown(timeout);
    }
}

/// Starts an [`Exporter`] when an endpoint is set (`None` otherwise). `service` names the
/// spans' service unless `OTEL_SERVICE_NAME` does, and their instrumentation scope.
pub fn start_exporter(
    settings: &TelemetrySettings,
    service: &str,
    dropped: Dropped,
) -> Result<Option<Exporter>, TelemetryError> {
    let Some(endpoint) = settings.otel_exporter_otlp_endpoint.url() else {
        return Ok(None);
    };
    let name = settings.service_name(service).to_string();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let send = match settings.otel_exporter_otlp_protocol {
        Protocol::HttpProtobuf => {
            let post = OtlpPost::new(settings, endpoint, name, service.to_string())?;
            Box::new(move |spans: Vec<SpanRecord>| runtime.block_on(post.send(&spans))) as SendBatch
        }
        Protocol::Grpc => grpc_records(settings, endpoint, runtime, name, service)?,
    };
    Ok(Some(Exporter {
        sampler: Sampler {
            kind: settings.otel_traces_sampler,
            ratio: settings.otel_traces_sampler_arg,
        },
        queue: queue(settings, dropped, send)?,
    }))
}

/// Sends one batch of recorded spans: whether the collector took it.
type SendBatch = Box<dyn FnMut(Vec<SpanRecord>) -> bool + Send>;

/// The specification's built-in samplers, for spans recorded without the SDK (the SDK's
/// own rules: a parent-based sampler follows a remote parent's sampled flag; the ratio
/// compares the trace id's low 63 bits).
#[derive(Debug, Clone, Copy)]
struct Sampler {
    kind: SamplerKind,
    ratio: f64,
}

impl Sampler {
    fn sampled(&self, parent: Option<&SpanContext>, trace_id: TraceId) -> bool {
        let by_ratio = || {
            if self.ratio >= 1.0 {
                return true;
            }
            let bound = (self.ratio.max(0.0) * (1u64 << 63) as f64) as u64;
            let low = u128::from_be_bytes(trace_id.to_bytes()) as u64;
            (low >> 1) < bound
        };
        match (self.kind, parent) {
            (SamplerKind::AlwaysOn, _) => true,
            (SamplerKind::AlwaysOff, _) => false,
            (SamplerKind::TraceIdRatio, _) => by_ratio(),
            (_, Some(parent)) => parent.is_sampled(),
            (SamplerKind::ParentBasedAlwaysOn, None) => true,
            (SamplerKind::ParentBasedAlwaysOff, None) => false,
            (SamplerKind::ParentBasedTraceIdRatio, None) => by_ratio(),
        }
    }
}

/// OTLP/HTTP exports of recorded spans: one protobuf `POST {endpoint}/v1/traces` a batch,
/// bounded by the export timeout.
struct OtlpPost {
    client: reqwest::Client,
    url: String,
    headers: http::HeaderMap,
    timeout: Duration,
    service: String,
    scope: String,
}

impl OtlpPost {
    fn new(
        settings: &TelemetrySettings,
        endpoint: &url::Url,
        service: String,
        scope: String,
    ) -> Result<Self, TelemetryError> {
        let timeout = settings.otel_exporter_otlp_timeout;
        let mut headers = http::HeaderMap::new();
        for (k, v) in configured_headers(settings)? {
            if let (Ok(k), Ok(v)) = (
                http::HeaderName::from_bytes(k.as_bytes()),
                http::HeaderValue::from_str(&v),
            ) {
                headers.insert(k, v);
            }
        }
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/x-protobuf"),
        );
        Ok(Self {
            client: Http::new(timeout)?.0,
            url: format!("{}/v1/traces", endpoint.as_str().trim_end_matches('/')),
            headers,
            timeout,
            service,
            scope,
        })
    }

    /// Whether the collector took the batch (a 2xx within the timeout).
    async fn send(&self, spans: &[SpanRecord]) -> bool {
        let mut body = Vec::new();
        otlp::encode_request(&self.service, &self.scope, spans, &mut body);
        let exported = async {
            let response = self
                .client
                .post(&self.url)
                .headers(self.headers.clone())
                .body(body)
                .send()
                .await
                .ok()?;
            let ok = response.status().is_success();
            // Read to the end, so that the connection is kept for the next batch.
            read_capped(response).await?;
            Some(ok)
        };
        matches!(
            tokio::time::timeout(self.timeout, exported).await,
            Ok(Some(true))
        )
    }
}

/// OTLP/gRPC exports of recorded spans, through the SDK's exporter.
#[cfg(feature = "otlp-grpc")]
fn grpc_records(
    settings: &TelemetrySettings,
    endpoint: &url::Url,
    runtime: tokio::runtime::Runtime,
    service: String,
    scope: &str,
) -> Result<SendBatch, TelemetryError> {
    let mut exporter = {
        let _entered = runtime.enter();
        exporter(settings, endpoint)?
    };
    exporter.set_resource(&Resource::builder_empty().with_service_name(service).build());
    let scope = opentelemetry::InstrumentationScope::builder(scope.to_string()).build();
    let timeout = settings.otel_exporter_otlp_timeout;
    Ok(Box::new(move |spans: Vec<SpanRecord>| {
        let data = spans.iter().map(|s| sdk_span(s, &scope)).collect();
        let sent =
            runtime.block_on(async { tokio::time::timeout(timeout, exporter.export(data)).await });
        matches!(sent, Ok(Ok(())))
    }))
}

#[cfg(not(feature = "otlp-grpc"))]
fn grpc_records(
    _settings: &TelemetrySettings,
    _endpoint: &url::Url,
    _runtime: tokio::runtime::Runtime,
    _service: String,
    _scope: &str,
) -> Result<SendBatch, TelemetryError> {
    // `protocol` refuses `grpc` in a build without the feature.
    Err(TelemetryError::Exporter(
        "grpc needs a build with the otlp-grpc feature".into(),
    ))
}

/// A recorded span as the SDK's exporter takes it.
#[cfg(feature = "otlp-grpc")]
fn sdk_span(s: &SpanRecord, scope: &opentelemetry::InstrumentationScope) -> SpanData {
    use opentelemetry::trace::{SpanId, SpanKind, Status, TraceFlags, TraceState};
    use opentelemetry::{KeyValue, StringValue};
    let at = |nanos: u64| std::time::UNIX_EPOCH + Duration::from_nanos(nanos);
    let state = s
        .trace_state
        .as_deref()
        .and_then(|t| t.parse::<TraceState>().ok())
        .unwrap_or_default();
    let attributes = s
        .attributes
        .iter()
        .map(|a| {
            let value = match &a.value {
                otlp::Value::Str(v) => opentelemetry::Value::from(v.to_string()),
                otlp::Value::Int(n) => opentelemetry::Value::I64(*n),
                otlp::Value::Float(f) => opentelemetry::Value::F64(*f),
                otlp::Value::Bool(b) => opentelemetry::Value::Bool(*b),
                otlp::Value::Strs(items) => opentelemetry::Value::Array(
                    items
                        .iter()
                        .map(|i| StringValue::from(i.clone()))
                        .collect::<Vec<_>>()
                        .into(),
                ),
            };
            KeyValue::new(a.key, value)
        })
        .collect();
    let mut events = opentelemetry_sdk::trace::SpanEvents::default();
    events.events = s
        .events
        .iter()
        .map(|e| opentelemetry::trace::Event::new(e.name, at(e.unix_nanos), Vec::new(), 0))
        .collect();
    SpanData {
        span_context: SpanContext::new(
            TraceId::from_bytes(s.trace_id),
            SpanId::from_bytes(s.span_id),
            TraceFlags::new(s.flags),
            false,
            state,
        ),
        parent_span_id: s
            .parent
            .map_or(SpanId::INVALID, |(p, _)| SpanId::from_bytes(p)),
        parent_span_is_remote: s.parent.is_some_and(|(_, remote)| remote),
        span_kind: match s.kind {
            otlp::Kind::Internal => SpanKind::Internal,
            otlp::Kind::Server => SpanKind::Server,
            otlp::Kind::Client => SpanKind::Client,
        },
        name: s.name.clone(),
        start_time: at(s.start_unix_nanos),
        end_time: at(s.end_unix_nanos),
        attributes,
        dropped_attributes_count: 0,
        events,
        links: opentelemetry_sdk::trace::SpanLinks::default(),
        status: match &s.error {
            Some(e) => Status::error(e.clone()),
            None => Status::Unset,
        },
        instrumentation_scope: scope.clone(),
    }
}

/// `OTEL_EXPORTER_OTLP_HEADERS`' pairs.
fn configured_headers(
    settings: &TelemetrySettings,
) -> Result<Vec<(String, String)>, TelemetryError> {
    match &settings.otel_exporter_otlp_headers {
        Some(raw) => Ok(parse_headers(raw.expose())
            .map_err(TelemetryError::Headers)?
            .0),
        None => Ok(Vec::new()),
    }
}

/// The OTLP exporter the settings name.
fn exporter(
    settings: &TelemetrySettings,
    endpoint: &url::Url,
) -> Result<SpanExporter, TelemetryError> {
    let headers = configured_headers(settings)?;
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
        let body = read_capped(response)
            .await
            .ok_or("the collector's answer is larger than 64 KiB")?;
        Ok(out.body(body)?)
    }
}

/// The most of a collector's answer read (an OTLP answer is a few bytes, or a partial
/// success's message); past it the answer is refused and its connection dropped.
const MAX_COLLECTOR_ANSWER: usize = 64 * 1024;

/// A collector's answer body, read to its end within [`MAX_COLLECTOR_ANSWER`]; `None` when
/// it is longer or breaks off.
async fn read_capped(mut response: reqwest::Response) -> Option<bytes::Bytes> {
    if response
        .content_length()
        .is_some_and(|n| n > MAX_COLLECTOR_ANSWER as u64)
    {
        return None;
    }
    let mut body = bytes::BytesMut::new();
    while let Some(chunk) = response.chunk().await.ok()? {
        if body.len() + chunk.len() > MAX_COLLECTOR_ANSWER {
            return None;
        }
        body.extend_from_slice(&chunk);
    }
    Some(body.freeze())
}

/// What the request path and the export thread share: the finished spans waiting, and
/// who waits for a flush.
struct Pending<T> {
    spans: Vec<T>,
    flushes: Vec<SyncSender<()>>,
    closed: bool,
}

impl<T> Default for Pending<T> {
    fn default() -> Self {
        Self {
            spans: Vec::new(),
            flushes: Vec::new(),
            closed: false,
        }
    }
}

/// The bounded queue of finished spans: a span joins it, or is dropped and counted when
/// it is full. Nothing here waits, and the export thread is woken only when a batch is
/// full or a flush is asked for, never once per span: it otherwise sleeps until the
/// schedule delay.
struct Queue<T> {
    pending: Arc<Mutex<Pending<T>>>,
    capacity: usize,
    batch: usize,
    exporter: std::thread::Thread,
    dropped: Dropped,
}

/// Locks the queue; a panic elsewhere while it was held leaves plain data behind.
fn lock<T>(pending: &Mutex<Pending<T>>) -> MutexGuard<'_, Pending<T>> {
    pending.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<T> Queue<T> {
    /// Queues `spans`, all of them or (the queue too full for them all) none, counted as
    /// dropped; an empty queue takes them whatever their number.
    fn push(&self, spans: impl ExactSizeIterator<Item = T>) {
        let n = spans.len();
        if n == 0 {
            return;
        }
        let full = {
            let mut pending = lock(&self.pending);
            if pending.closed {
                return;
            }
            let before = pending.spans.len();
            // A request's spans larger than the whole queue still go when it is empty
            // (the queue then holds one trace past its size), so a small
            // `OTEL_BSP_MAX_QUEUE_SIZE` does not drop every trace.
            if before > 0 && before + n > self.capacity {
                drop(pending);
                (self.dropped)(n as u64);
                return;
            }
            pending.spans.extend(spans);
            before < self.batch && before + n >= self.batch
        };
        if full {
            self.exporter.unpark();
        }
    }

    /// Asks the export thread to send what is queued, waiting at most `timeout`.
    fn flush(&self, timeout: Duration) -> Result<(), Duration> {
        let (tx, rx) = mpsc::sync_channel(1);
        {
            let mut pending = lock(&self.pending);
            if pending.closed {
                return Ok(());
            }
            pending.flushes.push(tx);
        }
        self.exporter.unpark();
        rx.recv_timeout(timeout).map_err(|_| timeout)
    }

    /// Sends what is queued (within `timeout`), then stops the export thread.
    fn shutdown(&self, timeout: Duration) -> Result<(), Duration> {
        let flushed = self.flush(timeout);
        self.close();
        flushed
    }

    fn close(&self) {
        lock(&self.pending).closed = true;
        self.exporter.unpark();
    }
}

/// Starts the export thread of a queue whose batches `send` exports (`false`: the batch
/// was not delivered, its spans are counted as dropped).
fn queue<T: Send + 'static>(
    settings: &TelemetrySettings,
    dropped: Dropped,
    send: impl FnMut(Vec<T>) -> bool + Send + 'static,
) -> Result<Queue<T>, TelemetryError> {
    let pending = Arc::new(Mutex::new(Pending::default()));
    // A batch never waits for more spans than the queue holds.
    let batch_size = settings
        .otel_bsp_max_export_batch_size
        .min(settings.otel_bsp_max_queue_size);
    let batch = Batching {
        max: batch_size,
        delay: settings.otel_bsp_schedule_delay,
    };
    let export_dropped = dropped.clone();
    let exported = pending.clone();
    let thread = std::thread::Builder::new()
        .name("trace export".into())
        .spawn(move || export_loop(exported, batch, send, export_dropped))?;
    Ok(Queue {
        pending,
        capacity: settings.otel_bsp_max_queue_size,
        batch: batch_size,
        exporter: thread.thread().clone(),
        dropped,
    })
}

/// The SDK's span processor (the admin API's spans): each finished span joins the queue.
struct SdkQueue(Queue<SpanData>);

impl fmt::Debug for SdkQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Queue")
    }
}

impl SpanProcessor for SdkQueue {
    fn on_start(&self, _span: &mut Span, _cx: &opentelemetry::Context) {}

    fn on_end(&self, span: SpanData) {
        if span.span_context.is_sampled() {
            self.0.push(std::iter::once(span));
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.0
            .flush(Duration::from_secs(5))
            .map_err(OTelSdkError::Timeout)
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.0.shutdown(timeout).map_err(OTelSdkError::Timeout)
    }
}

impl<T> Drop for Queue<T> {
    fn drop(&mut self) {
        self.close();
    }
}

/// How batches are made.
#[derive(Debug, Clone, Copy)]
struct Batching {
    max: usize,
    delay: Duration,
}

/// The export thread: sleeps until the schedule delay has passed, a batch is full or a
/// flush is asked for, then sends what is queued in batches of at most `max`; a batch
/// that fails is dropped and counted. Ends when the queue is shut down or gone.
fn export_loop<T>(
    pending: Arc<Mutex<Pending<T>>>,
    batching: Batching,
    mut send: impl FnMut(Vec<T>) -> bool,
    dropped: Dropped,
) {
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
            let batch: Vec<T> = spans.by_ref().take(batching.max).collect();
            if batch.is_empty() {
                break;
            }
            let n = batch.len() as u64;
            if !send(batch) {
                dropped(n);
            }
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
    fn recorded_spans_are_sampled_by_the_sdks_rules() {
        use opentelemetry::trace::{SpanId, TraceFlags, TraceState};
        let sampler = |kind, ratio| Sampler { kind, ratio };
        let parent = |sampled: bool| {
            SpanContext::new(
                TraceId::from(1u128),
                SpanId::from(1u64),
                if sampled {
                    TraceFlags::SAMPLED
                } else {
                    TraceFlags::default()
                },
                true,
                TraceState::NONE,
            )
        };
        let (low, high) = (TraceId::from(2u128), TraceId::from(u128::from(u64::MAX)));
        let on = sampler(SamplerKind::ParentBasedAlwaysOn, 1.0);
        assert!(on.sampled(None, low));
        assert!(!on.sampled(Some(&parent(false)), low));
        assert!(sampler(SamplerKind::AlwaysOn, 1.0).sampled(Some(&parent(false)), low));
        let half = sampler(SamplerKind::ParentBasedTraceIdRatio, 0.5);
        assert!(half.sampled(None, low));
        assert!(!half.sampled(None, high));
        assert!(half.sampled(Some(&parent(true)), high));
        assert!(!sampler(SamplerKind::TraceIdRatio, 0.0).sampled(None, low));
        assert!(!sampler(SamplerKind::ParentBasedAlwaysOff, 1.0).sampled(None, low));
    }

    /// A queue with no export thread behind it, and its drop count.
    fn bare_queue(capacity: usize) -> (Queue<u32>, Arc<std::sync::atomic::AtomicU64>) {
        let dropped = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counted = dropped.clone();
        let queue = Queue {
            pending: Arc::new(Mutex::new(Pending::default())),
            capacity,
            batch: capacity,
            exporter: std::thread::current(),
            dropped: Arc::new(move |n| {
                counted.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
            }),
        };
        (queue, dropped)
    }

    #[test]
    fn a_trace_goes_whole_or_not_at_all_and_an_empty_queue_takes_any() {
        let (queue, dropped) = bare_queue(4);
        queue.push([1, 2, 3].into_iter());
        queue.push([4, 5].into_iter());
        assert_eq!(lock(&queue.pending).spans, [1, 2, 3], "no half trace");
        assert_eq!(dropped.load(std::sync::atomic::Ordering::Relaxed), 2);
        queue.push([4].into_iter());
        assert_eq!(lock(&queue.pending).spans.len(), 4);

        // A queue smaller than one request's spans still exports them, one trace at a time.
        let (small, dropped) = bare_queue(2);
        small.push([1, 2, 3, 4].into_iter());
        small.push([5, 6, 7, 8].into_iter());
        assert_eq!(lock(&small.pending).spans, [1, 2, 3, 4]);
        assert_eq!(dropped.load(std::sync::atomic::Ordering::Relaxed), 4);
    }

    #[tokio::test]
    async fn a_collectors_answer_is_read_within_a_bound() {
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let at = listener.local_addr().unwrap();
        tokio::spawn(async move {
            // Two answers: a huge chunked one that never ends, and a small one.
            for body in [None, Some("ok")] {
                let (mut conn, _) = listener.accept().await.unwrap();
                let mut head = [0u8; 4096];
                let _ = tokio::io::AsyncReadExt::read(&mut conn, &mut head).await;
                match body {
                    None => {
                        conn.write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
                            .await
                            .unwrap();
                        let chunk = format!("10000\r\n{}\r\n", "x".repeat(0x10000));
                        while conn.write_all(chunk.as_bytes()).await.is_ok() {}
                    }
                    Some(b) => {
                        let answer = format!(
                            "HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{b}",
                            b.len()
                        );
                        conn.write_all(answer.as_bytes()).await.unwrap();
                    }
                }
            }
        });
        let client = reqwest::Client::new();
        let url = format!("http://{at}/v1/traces");
        let huge = client.post(&url).send().await.unwrap();
        assert_eq!(read_capped(huge).await, None);
        let small = client.post(&url).send().await.unwrap();
        assert_eq!(read_capped(small).await.as_deref(), Some(&b"ok"[..]));
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

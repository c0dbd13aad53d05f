//! The request's trace (OpenTelemetry, GenAI semantic conventions v1.37): a SERVER span
//! for the proxied request, its `authenticate` and `route` children, and one CLIENT span
//! per provider attempt (`{gen_ai.operation.name} {gen_ai.request.model}`), siblings
//! when the request falls back. A client's W3C `traceparent`/`tracestate` continue its
//! trace, and each attempt sends the provider a `traceparent` naming its span. With
//! tracing off nothing here builds a span: a client's `traceparent` still names the log
//! row's trace and is passed on to the provider unchanged.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId};
use perpetuo_core::otlp::{Attribute, Event, Kind, SpanRecord, Value};
use perpetuo_core::telemetry::Exporter;
use perpetuo_wire::kind::ProviderKind;
use perpetuo_wire::lazy_json::LazyJson;
use perpetuo_wire::translation::AnswerMeta;
use pingora::proxy::Session;

use perpetuo_core::trace_context;

use crate::frontdoor::Door;

/// The GenAI semantic conventions these spans follow.
pub const SEMCONV_VERSION: &str = "1.37.0";

/// Bytes of message content one attribute holds at most (`gen_ai.input.messages`,
/// `gen_ai.output.messages`); past it the content is cut and `perpetuo.content.truncated`
/// says so.
pub const MAX_CONTENT_BYTES: usize = 16 * 1024;

/// The semantic conventions' name for what a door asks (`gen_ai.operation.name`).
pub fn operation(door: Door) -> &'static str {
    match door {
        Door::Chat | Door::Messages | Door::Responses => "chat",
        Door::Embeddings => "embeddings",
    }
}

/// The semantic conventions' well-known `gen_ai.provider.name` of a provider kind (an
/// OpenAI-compatible entry speaks OpenAI's API).
pub fn provider_name(kind: ProviderKind) -> &'static str {
    match kind {
        ProviderKind::Openai | ProviderKind::OpenaiCompatible => "openai",
        ProviderKind::Anthropic => "anthropic",
        ProviderKind::Gemini => "gcp.gemini",
    }
}

/// A W3C trace context a client sent, checked.
#[derive(Debug, Clone)]
pub struct Incoming {
    /// As received, passed on unchanged when tracing is off.
    traceparent: String,
    tracestate: Option<String>,
    context: SpanContext,
}

impl Incoming {
    /// The request's `traceparent` (and `tracestate`), when it has a valid one.
    fn read(session: &Session) -> Option<Self> {
        let headers = &session.req_header().headers;
        let traceparent = headers.get("traceparent")?.to_str().ok()?.trim();
        let tracestate = headers
            .get("tracestate")
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|s| !s.is_empty() && s.len() <= trace_context::MAX_TRACESTATE);
        let context = trace_context::remote(traceparent, tracestate)?;
        Some(Self {
            traceparent: traceparent.to_string(),
            tracestate: tracestate.map(str::to_string),
            context,
        })
    }
}

/// Now, in nanoseconds since the Unix epoch (a span's times).
fn now() -> u64 {
    unix_nanos(SystemTime::now())
}

fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// A new span id (never the invalid all-zero one).
fn span_id() -> SpanId {
    SpanId::from(rand::random::<u64>().max(1))
}

/// A span begun and not yet ended.
struct Open {
    id: SpanId,
    start: u64,
    name: Cow<'static, str>,
    kind: Kind,
    attributes: Vec<Attribute>,
}

impl Open {
    fn new(name: impl Into<Cow<'static, str>>, kind: Kind, attributes: Vec<Attribute>) -> Self {
        Self {
            id: span_id(),
            start: now(),
            name: name.into(),
            kind,
            attributes,
        }
    }
}

/// Spans being recorded (tracing on, the trace sampled): plain values, handed to the
/// exporter together when the request ends.
struct Recording {
    exporter: Arc<Exporter>,
    trace_id: TraceId,
    /// The client's span, the SERVER span's remote parent.
    parent: Option<SpanId>,
    trace_state: Option<Arc<str>>,
    server: Open,
    authenticate: Option<Open>,
    route: Option<Open>,
    /// The served attempt, open until the request ends.
    attempt: Option<Open>,
    /// The spans already ended.
    ended: Vec<SpanRecord>,
}

impl Recording {
    /// Ends `span`, a child of the SERVER span, now.
    fn end(&mut self, span: Open, error: Option<&'static str>, events: Vec<Event>) {
        let record = self.record(span, Some((self.server.id, false)), error, events);
        self.ended.push(record);
    }

    fn record(
        &self,
        mut span: Open,
        parent: Option<(SpanId, bool)>,
        error: Option<&'static str>,
        events: Vec<Event>,
    ) -> SpanRecord {
        if let Some(e) = error {
            span.attributes.push(Attribute::new("error.type", e));
        }
        SpanRecord {
            trace_id: self.trace_id.to_bytes(),
            span_id: span.id.to_bytes(),
            parent: parent.map(|(id, remote)| (id.to_bytes(), remote)),
            flags: TraceFlags::SAMPLED.to_u8(),
            trace_state: self.trace_state.clone(),
            name: span.name,
            kind: span.kind,
            start_unix_nanos: span.start,
            end_unix_nanos: now(),
            attributes: span.attributes,
            events,
            error: error.map(Cow::Borrowed),
        }
    }
}

/// The request's trace state.
#[derive(Default)]
pub struct Trace {
    incoming: Option<Incoming>,
    spans: Option<Box<Recording>>,
    /// The SERVER span's context when the sampler dropped it: still the row's trace, and
    /// passed on (not sampled) to providers.
    unsampled: Option<SpanContext>,
    /// The trace id as the log line and the log row give it, written once.
    hex: Option<String>,
}

/// What an attempt span names of its entry.
pub struct AttemptOf<'a> {
    pub door: Door,
    pub kind: ProviderKind,
    pub model: &'a str,
    pub request: &'a LazyJson,
    pub entry: &'a str,
    pub key_label: Option<&'a str>,
    pub server: Option<(&'a str, u16)>,
}

impl Trace {
    /// The trace of a proxied request: the client's context, and with an exporter its
    /// SERVER span (`{method} {path}`).
    pub fn begin(exporter: Option<&Arc<Exporter>>, session: &Session) -> Self {
        let mut trace = Self::open(exporter, session);
        let id = if let Some(s) = &trace.spans {
            Some(s.trace_id)
        } else if let Some(cx) = &trace.unsampled {
            Some(cx.trace_id())
        } else {
            trace.incoming.as_ref().map(|i| i.context.trace_id())
        };
        trace.hex = id.map(|id| id.to_string());
        trace
    }

    fn open(exporter: Option<&Arc<Exporter>>, session: &Session) -> Self {
        let incoming = Incoming::read(session);
        let Some(exporter) = exporter else {
            return Self {
                incoming,
                ..Self::default()
            };
        };
        let parent = incoming.as_ref().map(|i| &i.context);
        let trace_id = parent.map_or_else(
            || TraceId::from(rand::random::<u128>().max(1)),
            SpanContext::trace_id,
        );
        let state = parent.map(|p| p.trace_state().clone()).unwrap_or_default();
        if !exporter.sampled(parent, trace_id) {
            let unsampled =
                SpanContext::new(trace_id, span_id(), TraceFlags::default(), false, state);
            return Self {
                incoming,
                spans: None,
                unsampled: Some(unsampled),
                hex: None,
            };
        }
        let req = session.req_header();
        let method = req.method.as_str();
        let path = req.uri.path();
        // Room for what the request's end adds.
        let mut attributes = Vec::with_capacity(16);
        attributes.push(Attribute::new("http.request.method", method.to_string()));
        attributes.push(Attribute::new("url.path", path.to_string()));
        attributes.push(Attribute::new("url.scheme", "http"));
        if let Some(host) = req
            .headers
            .get("host")
            .and_then(|h| h.to_str().ok())
            .or_else(|| req.uri.host())
        {
            let (name, port) = match host.rsplit_once(':') {
                Some((h, p)) if p.parse::<u16>().is_ok() => (h, p.parse::<i64>().ok()),
                _ => (host, None),
            };
            attributes.push(Attribute::new("server.address", name.to_string()));
            if let Some(port) = port {
                attributes.push(Attribute::new("server.port", port));
            }
        }
        if let Some(agent) = req.headers.get("user-agent").and_then(|h| h.to_str().ok()) {
            attributes.push(Attribute::new("user_agent.original", agent.to_string()));
        }
        let header = state.header();
        Self {
            spans: Some(Box::new(Recording {
                exporter: exporter.clone(),
                trace_id,
                parent: parent.map(SpanContext::span_id),
                trace_state: (!header.is_empty()).then(|| Arc::from(header)),
                server: Open::new(format!("{method} {path}"), Kind::Server, attributes),
                authenticate: None,
                route: None,
                attempt: None,
                ended: Vec::with_capacity(4),
            })),
            incoming,
            unsampled: None,
            hex: None,
        }
    }

    /// The trace id (32 lowercase hex digits): the SERVER span's, else the client's.
    pub fn trace_id(&self) -> Option<&str> {
        self.hex.as_deref()
    }

    /// Whether spans are being recorded.
    pub fn recording(&self) -> bool {
        self.spans.is_some()
    }

    /// The key's authentication and its limits' admission begin.
    pub fn authenticate(&mut self) {
        if let Some(s) = self.spans.as_deref_mut() {
            s.authenticate = Some(Open::new("authenticate", Kind::Internal, Vec::new()));
        }
    }

    /// The key's limits admitted the request (or refused it: `error`).
    pub fn authenticated(&mut self, error: Option<&'static str>) {
        if let Some(s) = self.spans.as_deref_mut() {
            if let Some(span) = s.authenticate.take() {
                s.end(span, error, Vec::new());
            }
        }
    }

    /// Routing begins: the entries' order for the model.
    pub fn route(&mut self) {
        if let Some(s) = self.spans.as_deref_mut() {
            s.route = Some(Open::new("route", Kind::Internal, Vec::with_capacity(2)));
        }
    }

    /// Routing ordered `candidates` entries.
    pub fn routed(&mut self, candidates: usize, error: Option<&'static str>) {
        if let Some(s) = self.spans.as_deref_mut() {
            if let Some(mut span) = s.route.take() {
                span.attributes
                    .push(Attribute::new("perpetuo.candidates", candidates as i64));
                s.end(span, error, Vec::new());
            }
        }
    }

    /// An attempt begins: its CLIENT span, and the `traceparent` (with the client's
    /// `tracestate`) the provider is sent, when there is a trace.
    pub fn attempt(&mut self, of: &AttemptOf<'_>) -> Vec<(&'static str, String)> {
        let tracestate = || self.incoming.as_ref().and_then(|i| i.tracestate.clone());
        let Some(s) = self.spans.as_deref() else {
            // Not sampled: the provider hears of the trace, not sampled, as the SERVER
            // span's child.
            if let Some(cx) = &self.unsampled {
                let mut h = vec![("traceparent", trace_context::traceparent(cx))];
                if let Some(state) = tracestate() {
                    h.push(("tracestate", state));
                }
                return h;
            }
            // Tracing off: the client's context goes on unchanged.
            return self.incoming.as_ref().map_or_else(Vec::new, |i| {
                let mut h = vec![("traceparent", i.traceparent.clone())];
                if let Some(state) = &i.tracestate {
                    h.push(("tracestate", state.clone()));
                }
                h
            });
        };
        let operation = operation(of.door);
        let mut attributes = Vec::with_capacity(24);
        attributes.push(Attribute::new("gen_ai.operation.name", operation));
        attributes.push(Attribute::new(
            "gen_ai.provider.name",
            provider_name(of.kind),
        ));
        attributes.push(Attribute::new("gen_ai.request.model", of.model.to_string()));
        attributes.push(Attribute::new("perpetuo.entry", of.entry.to_string()));
        if let Some(label) = of.key_label {
            attributes.push(Attribute::new("perpetuo.pool_key", label.to_string()));
        }
        if let Some((host, port)) = of.server {
            attributes.push(Attribute::new("server.address", host.to_string()));
            attributes.push(Attribute::new("server.port", i64::from(port)));
        }
        request_parameters(of.request, &mut attributes);
        let span = Open::new(
            format!("{operation} {}", of.model),
            Kind::Client,
            attributes,
        );
        let mut headers = vec![("traceparent", format!("00-{}-{}-01", s.trace_id, span.id))];
        if let Some(state) = tracestate() {
            headers.push(("tracestate", state));
        }
        if let Some(s) = self.spans.as_deref_mut() {
            if let Some(previous) = s.attempt.replace(span) {
                s.end(previous, None, Vec::new());
            }
        }
        headers
    }

    /// The attempt failed (`status` when the provider answered): its span ends.
    pub fn attempt_failed(&mut self, status: Option<u16>, error: &'static str) {
        if let Some(s) = self.spans.as_deref_mut() {
            if let Some(mut span) = s.attempt.take() {
                if let Some(status) = status {
                    span.attributes.push(Attribute::new(
                        "http.response.status_code",
                        i64::from(status),
                    ));
                }
                s.end(span, Some(error), Vec::new());
            }
        }
    }

    /// The request ends: the served attempt's span and the SERVER span get what the
    /// request came to, end, and go to the exporter with the request's other spans.
    pub fn finish(&mut self, end: End<'_>) {
        let Some(mut s) = self.spans.take() else {
            return;
        };
        for open in [s.authenticate.take(), s.route.take()]
            .into_iter()
            .flatten()
        {
            s.end(open, end.error, Vec::new());
        }
        if let Some(mut span) = s.attempt.take() {
            let attributes = &mut span.attributes;
            attributes.push(Attribute::new(
                "http.response.status_code",
                i64::from(end.status),
            ));
            if let Some(model) = end.served_model {
                attributes.push(Attribute::new("gen_ai.response.model", model.to_string()));
            }
            if let Some(meta) = end.answer {
                if let Some(id) = &meta.id {
                    attributes.push(Attribute::new("gen_ai.response.id", id.clone()));
                }
                if !meta.finish_reasons.is_empty() {
                    attributes.push(Attribute::new(
                        "gen_ai.response.finish_reasons",
                        Value::Strs(meta.finish_reasons.clone()),
                    ));
                }
            }
            if let Some(u) = end.usage {
                attributes.push(Attribute::new("gen_ai.usage.input_tokens", u.input as i64));
                attributes.push(Attribute::new(
                    "gen_ai.usage.output_tokens",
                    u.output as i64,
                ));
                if let Some(n) = u.cache_read {
                    attributes.push(Attribute::new(
                        "gen_ai.usage.cache_read.input_tokens",
                        n as i64,
                    ));
                }
                if let Some(n) = u.cache_creation {
                    attributes.push(Attribute::new(
                        "gen_ai.usage.cache_creation.input_tokens",
                        n as i64,
                    ));
                }
            }
            if let Some(c) = end.content {
                if let Some(input) = c.input {
                    attributes.push(Attribute::new("gen_ai.input.messages", input));
                }
                if let Some(output) = c.output {
                    attributes.push(Attribute::new("gen_ai.output.messages", output));
                }
                if c.truncated {
                    attributes.push(Attribute::new("perpetuo.content.truncated", true));
                }
            }
            let events = end
                .ttfb
                .map(|t| Event {
                    name: "perpetuo.first_token",
                    unix_nanos: s
                        .server
                        .start
                        .saturating_add(u64::try_from(t.as_nanos()).unwrap_or(u64::MAX)),
                })
                .into_iter()
                .collect();
            s.end(span, end.error, events);
        }
        let mut server = std::mem::replace(
            &mut s.server,
            Open {
                id: SpanId::INVALID,
                start: 0,
                name: Cow::Borrowed(""),
                kind: Kind::Server,
                attributes: Vec::new(),
            },
        );
        let attributes = &mut server.attributes;
        attributes.push(Attribute::new(
            "http.response.status_code",
            i64::from(end.status),
        ));
        attributes.push(Attribute::new(
            "perpetuo.request_id",
            end.request_id.to_string(),
        ));
        if let Some(w) = end.workspace {
            attributes.push(Attribute::new("perpetuo.workspace_id", w.to_string()));
        }
        if let Some(k) = end.key {
            attributes.push(Attribute::new("perpetuo.api_key_id", k.to_string()));
        }
        if let Some(entry) = end.entry {
            attributes.push(Attribute::new("perpetuo.entry", entry.to_string()));
        }
        if let Some(label) = end.key_label {
            attributes.push(Attribute::new("perpetuo.pool_key", label.to_string()));
        }
        if let Some(cache) = end.cache {
            attributes.push(Attribute::new("perpetuo.cache", cache));
        }
        if let Some(nusd) = end.cost_nusd {
            attributes.push(Attribute::new("perpetuo.cost_usd", nusd as f64 / 1e9));
        }
        if let Some(model) = end.requested_model {
            attributes.push(Attribute::new("gen_ai.request.model", model.to_string()));
        }
        let parent = s.parent.map(|p| (p, true));
        let record = s.record(server, parent, end.error, Vec::new());
        let mut spans = std::mem::take(&mut s.ended);
        spans.push(record);
        s.exporter.submit(spans);
    }
}

/// The request parameters present in the client's body, as `gen_ai.request.*`.
fn request_parameters(body: &LazyJson, out: &mut Vec<Attribute>) {
    const FLOATS: [(&str, &str); 4] = [
        ("temperature", "gen_ai.request.temperature"),
        ("top_p", "gen_ai.request.top_p"),
        ("frequency_penalty", "gen_ai.request.frequency_penalty"),
        ("presence_penalty", "gen_ai.request.presence_penalty"),
    ];
    const INTS: [(&str, &str); 6] = [
        ("max_tokens", "gen_ai.request.max_tokens"),
        ("max_completion_tokens", "gen_ai.request.max_tokens"),
        ("max_output_tokens", "gen_ai.request.max_tokens"),
        ("top_k", "gen_ai.request.top_k"),
        ("seed", "gen_ai.request.seed"),
        ("n", "gen_ai.request.choice.count"),
    ];
    let Ok(fields) = serde_json::from_slice::<Parameters>(body.raw()) else {
        return;
    };
    for (field, name) in FLOATS {
        if let Some(v) = fields.get(field).and_then(serde_json::Value::as_f64) {
            out.push(Attribute::new(name, v));
        }
    }
    for (field, name) in INTS {
        if let Some(v) = fields.get(field).and_then(serde_json::Value::as_i64) {
            if !out.iter().any(|kv| kv.key == name) {
                out.push(Attribute::new(name, v));
            }
        }
    }
    if let Some(stream) = fields.get("stream").and_then(serde_json::Value::as_bool) {
        out.push(Attribute::new("gen_ai.request.stream", stream));
    }
    if let Some(dims) = fields.get("dimensions").and_then(serde_json::Value::as_i64) {
        out.push(Attribute::new("gen_ai.embeddings.dimension.count", dims));
    }
    let stop: Vec<String> = match fields.get("stop").or_else(|| fields.get("stop_sequences")) {
        Some(serde_json::Value::String(s)) => vec![s.clone()],
        Some(serde_json::Value::Array(a)) => a
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    };
    if !stop.is_empty() {
        out.push(Attribute::new(
            "gen_ai.request.stop_sequences",
            Value::Strs(stop),
        ));
    }
}

/// The top-level fields a span reports as request parameters.
const PARAMETERS: [&str; 14] = [
    "temperature",
    "top_p",
    "frequency_penalty",
    "presence_penalty",
    "max_tokens",
    "max_completion_tokens",
    "max_output_tokens",
    "top_k",
    "seed",
    "n",
    "stream",
    "dimensions",
    "stop",
    "stop_sequences",
];

/// A body's [`PARAMETERS`], read from its bytes without building the rest of it (a
/// repeated key keeps its last value, as in the tree).
#[derive(Default)]
struct Parameters([Option<serde_json::Value>; PARAMETERS.len()]);

impl Parameters {
    fn get(&self, field: &str) -> Option<&serde_json::Value> {
        let at = PARAMETERS.iter().position(|p| *p == field)?;
        self.0[at].as_ref()
    }
}

/// Which of [`PARAMETERS`] a key names, if any.
struct Parameter(Option<usize>);

impl<'de> serde::Deserialize<'de> for Parameter {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Parameter;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a key")
            }
            fn visit_str<E: serde::de::Error>(self, k: &str) -> Result<Parameter, E> {
                Ok(Parameter(PARAMETERS.iter().position(|p| *p == k)))
            }
        }
        d.deserialize_identifier(V)
    }
}

impl<'de> serde::Deserialize<'de> for Parameters {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Parameters;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Parameters, A::Error> {
                let mut out = Parameters::default();
                while let Some(Parameter(at)) = map.next_key()? {
                    match at {
                        Some(i) => out.0[i] = Some(map.next_value()?),
                        None => {
                            map.next_value::<serde::de::IgnoredAny>()?;
                        }
                    }
                }
                Ok(out)
            }
        }
        d.deserialize_map(V)
    }
}

/// The usage a request's spans report.
#[derive(Debug, Clone, Copy)]
pub struct SpanUsage {
    pub input: u64,
    pub output: u64,
    pub cache_read: Option<u64>,
    pub cache_creation: Option<u64>,
}

/// Message content for the spans of a workspace that opts in.
#[derive(Debug, Default)]
pub struct Content {
    input: Option<String>,
    output: Option<String>,
    truncated: bool,
}

impl Content {
    /// The request's messages and the answer's text, in the conventions' shape
    /// (`[{"role", "parts": [{"type": "text", "content"}]}]`), each within
    /// [`MAX_CONTENT_BYTES`].
    pub fn capture(request: Option<&LazyJson>, output: Option<&str>) -> Self {
        let mut truncated = false;
        let input = request.and_then(|r| {
            let messages = input_messages(r)?;
            let (json, cut) = capped(messages);
            truncated |= cut;
            Some(json)
        });
        let output = output.filter(|t| !t.is_empty()).map(|text| {
            let (json, cut) = capped(vec![("assistant".into(), text.to_string())]);
            truncated |= cut;
            json
        });
        Self {
            input,
            output,
            truncated,
        }
    }
}

/// `(role, text)` of each message of a chat, Messages or Responses body (or an
/// embeddings input), the system prompt first.
fn input_messages(body: &LazyJson) -> Option<Vec<(Cow<'static, str>, String)>> {
    let fields = body.as_object()?;
    let mut out = Vec::new();
    let text = |v: &serde_json::Value| -> String {
        match v {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Array(parts) => parts
                .iter()
                .filter_map(|p| p.get("text").and_then(|t| t.as_str()))
                .collect::<Vec<_>>()
                .join("\n"),
            other => other.to_string(),
        }
    };
    if let Some(system) = fields.get("system").or_else(|| fields.get("instructions")) {
        out.push((Cow::Borrowed("system"), text(system)));
    }
    match fields.get("messages").or_else(|| fields.get("input")) {
        Some(serde_json::Value::Array(items)) => {
            for m in items {
                let role = m
                    .get("role")
                    .and_then(|r| r.as_str())
                    .unwrap_or("user")
                    .to_string();
                let content = m.get("content").map_or_else(|| text(m), text);
                out.push((Cow::Owned(role), content));
            }
        }
        Some(other) => out.push((Cow::Borrowed("user"), text(other))),
        None => {}
    }
    Some(out)
}

/// The messages as the conventions' JSON, cut to [`MAX_CONTENT_BYTES`] of text (whether
/// it was cut).
fn capped(messages: Vec<(Cow<'static, str>, String)>) -> (String, bool) {
    let mut budget = MAX_CONTENT_BYTES;
    let mut cut = false;
    let mut out = Vec::with_capacity(messages.len());
    for (role, mut content) in messages {
        if budget == 0 {
            cut = true;
            break;
        }
        if content.len() > budget {
            let mut at = budget;
            while !content.is_char_boundary(at) {
                at -= 1;
            }
            content.truncate(at);
            cut = true;
        }
        budget -= content.len();
        out.push(serde_json::json!({
            "role": role,
            "parts": [{"type": "text", "content": content}],
        }));
    }
    (serde_json::Value::Array(out).to_string(), cut)
}

/// What the request came to, for its spans.
pub struct End<'a> {
    pub status: u16,
    pub error: Option<&'static str>,
    pub request_id: uuid::Uuid,
    pub workspace: Option<uuid::Uuid>,
    pub key: Option<uuid::Uuid>,
    pub entry: Option<&'a str>,
    pub key_label: Option<&'a str>,
    pub requested_model: Option<&'a str>,
    pub served_model: Option<&'a str>,
    pub cache: Option<&'static str>,
    pub cost_nusd: Option<i64>,
    pub usage: Option<SpanUsage>,
    pub ttfb: Option<Duration>,
    pub content: Option<Content>,
    /// The served answer's id and finish reasons.
    pub answer: Option<&'a AnswerMeta>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_parameters_are_read_without_the_rest_of_the_body() {
        let body = LazyJson::read(bytes::Bytes::from_static(
            br#"{"messages":[{"role":"user","content":"hi"}],"temperature":0.5,
                "max_tokens":64,"max_completion_tokens":32,"top_k":2.5,"stream":true,
                "stop":["a",1,"b"],"seed":1,"seed":7}"#,
        ))
        .unwrap();
        let mut out = Vec::new();
        request_parameters(&body, &mut out);
        let get = |k: &str| out.iter().find(|a| a.key == k).map(|a| a.value.clone());
        assert_eq!(get("gen_ai.request.temperature"), Some(Value::Float(0.5)));
        assert_eq!(get("gen_ai.request.max_tokens"), Some(Value::Int(64)));
        assert_eq!(get("gen_ai.request.top_k"), None, "not a whole number");
        assert_eq!(
            get("gen_ai.request.seed"),
            Some(Value::Int(7)),
            "the last value"
        );
        assert_eq!(get("gen_ai.request.stream"), Some(Value::Bool(true)));
        assert_eq!(
            get("gen_ai.request.stop_sequences"),
            Some(Value::Strs(vec!["a".into(), "b".into()]))
        );
        let mut none = Vec::new();
        request_parameters(
            &LazyJson::read(bytes::Bytes::from_static(b"[1]")).unwrap(),
            &mut none,
        );
        assert!(none.is_empty());
    }

    #[test]
    fn content_is_capped_on_a_character_boundary() {
        let long = "é".repeat(MAX_CONTENT_BYTES);
        let (json, cut) = capped(vec![("user".into(), long), ("user".into(), "x".into())]);
        assert!(cut);
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v.as_array().unwrap().len(), 1);
        let (json, cut) = capped(vec![("user".into(), "hi".into())]);
        assert!(!cut);
        assert_eq!(
            json,
            r#"[{"parts":[{"content":"hi","type":"text"}],"role":"user"}]"#
        );
    }
}

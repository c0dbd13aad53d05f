//! The request's trace (OpenTelemetry, GenAI semantic conventions v1.37): a SERVER span
//! for the proxied request, its `authenticate` and `route` children, and one CLIENT span
//! per provider attempt (`{gen_ai.operation.name} {gen_ai.request.model}`), siblings
//! when the request falls back. A client's W3C `traceparent`/`tracestate` continue its
//! trace, and each attempt sends the provider a `traceparent` naming its span. With
//! tracing off nothing here builds a span: a client's `traceparent` still names the log
//! row's trace and is passed on to the provider unchanged.

use std::borrow::Cow;
use std::time::{Duration, SystemTime};

use opentelemetry::trace::{
    Span as _, SpanContext, SpanKind, Status, TraceContextExt, Tracer as _,
};
use opentelemetry::{Context, KeyValue, StringValue, Value};
use opentelemetry_sdk::trace::{SdkTracer, Span};
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

/// Spans being recorded (tracing on, the trace sampled).
struct Spans {
    tracer: SdkTracer,
    /// Holds the SERVER span.
    cx: Context,
    /// When the request began, for times the pipeline keeps as durations.
    started: SystemTime,
    authenticate: Option<Span>,
    route: Option<Span>,
    /// The served attempt, open until the request ends.
    attempt: Option<Span>,
}

/// The request's trace state.
#[derive(Default)]
pub struct Trace {
    incoming: Option<Incoming>,
    spans: Option<Box<Spans>>,
    /// The SERVER span's context when the sampler dropped it: still the row's trace, and
    /// passed on (not sampled) to providers.
    unsampled: Option<SpanContext>,
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
    /// The trace of a proxied request: the client's context, and with a tracer its
    /// SERVER span (`{method} {path}`).
    pub fn begin(tracer: Option<&SdkTracer>, session: &Session) -> Self {
        let incoming = Incoming::read(session);
        let Some(tracer) = tracer else {
            return Self {
                incoming,
                ..Self::default()
            };
        };
        let parent = match &incoming {
            Some(i) => Context::new().with_remote_span_context(i.context.clone()),
            None => Context::new(),
        };
        let req = session.req_header();
        let method = req.method.as_str().to_string();
        let path = req.uri.path().to_string();
        let mut attributes = vec![
            KeyValue::new("http.request.method", method.clone()),
            KeyValue::new("url.path", path.clone()),
            KeyValue::new("url.scheme", "http"),
        ];
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
            attributes.push(KeyValue::new("server.address", name.to_string()));
            if let Some(port) = port {
                attributes.push(KeyValue::new("server.port", port));
            }
        }
        if let Some(agent) = req.headers.get("user-agent").and_then(|h| h.to_str().ok()) {
            attributes.push(KeyValue::new("user_agent.original", agent.to_string()));
        }
        let span = tracer
            .span_builder(format!("{method} {path}"))
            .with_kind(SpanKind::Server)
            .with_attributes(attributes)
            .start_with_context(tracer, &parent);
        if !span.is_recording() {
            let unsampled = Some(span.span_context().clone()).filter(SpanContext::is_valid);
            return Self {
                incoming,
                spans: None,
                unsampled,
            };
        }
        Self {
            incoming,
            unsampled: None,
            spans: Some(Box::new(Spans {
                tracer: tracer.clone(),
                cx: parent.with_span(span),
                started: SystemTime::now(),
                authenticate: None,
                route: None,
                attempt: None,
            })),
        }
    }

    /// The trace id (32 lowercase hex digits): the SERVER span's, else the client's.
    pub fn trace_id(&self) -> Option<String> {
        if let Some(s) = &self.spans {
            return Some(s.cx.span().span_context().trace_id().to_string());
        }
        if let Some(cx) = &self.unsampled {
            return Some(cx.trace_id().to_string());
        }
        self.incoming
            .as_ref()
            .map(|i| i.context.trace_id().to_string())
    }

    /// Whether spans are being recorded.
    pub fn recording(&self) -> bool {
        self.spans.is_some()
    }

    fn child(&mut self, name: &'static str, kind: SpanKind) -> Option<Span> {
        let s = self.spans.as_deref()?;
        Some(
            s.tracer
                .span_builder(name)
                .with_kind(kind)
                .start_with_context(&s.tracer, &s.cx),
        )
    }

    /// The key's authentication and its limits' admission begin.
    pub fn authenticate(&mut self) {
        let span = self.child("authenticate", SpanKind::Internal);
        if let Some(s) = self.spans.as_deref_mut() {
            s.authenticate = span;
        }
    }

    /// The key's limits admitted the request (or refused it: `error`).
    pub fn authenticated(&mut self, error: Option<&'static str>) {
        if let Some(mut span) = self
            .spans
            .as_deref_mut()
            .and_then(|s| s.authenticate.take())
        {
            fail(&mut span, error);
            span.end();
        }
    }

    /// Routing begins: the entries' order for the model.
    pub fn route(&mut self) {
        let span = self.child("route", SpanKind::Internal);
        if let Some(s) = self.spans.as_deref_mut() {
            s.route = span;
        }
    }

    /// Routing ordered `candidates` entries.
    pub fn routed(&mut self, candidates: usize, error: Option<&'static str>) {
        if let Some(mut span) = self.spans.as_deref_mut().and_then(|s| s.route.take()) {
            span.set_attribute(KeyValue::new("perpetuo.candidates", candidates as i64));
            fail(&mut span, error);
            span.end();
        }
    }

    /// An attempt begins: its CLIENT span, and the `traceparent` (with the client's
    /// `tracestate`) the provider is sent, when there is a trace.
    pub fn attempt(&mut self, of: &AttemptOf<'_>) -> Vec<(&'static str, String)> {
        let Some(s) = self.spans.as_deref_mut() else {
            // Not sampled: the provider hears of the trace, not sampled, as the SERVER
            // span's child.
            if let Some(cx) = &self.unsampled {
                let mut h = vec![("traceparent", trace_context::traceparent(cx))];
                if let Some(state) = self.incoming.as_ref().and_then(|i| i.tracestate.clone()) {
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
        let mut attributes = vec![
            KeyValue::new("gen_ai.operation.name", operation),
            KeyValue::new("gen_ai.provider.name", provider_name(of.kind)),
            KeyValue::new("gen_ai.request.model", of.model.to_string()),
            KeyValue::new("perpetuo.entry", of.entry.to_string()),
        ];
        if let Some(label) = of.key_label {
            attributes.push(KeyValue::new("perpetuo.pool_key", label.to_string()));
        }
        if let Some((host, port)) = of.server {
            attributes.push(KeyValue::new("server.address", host.to_string()));
            attributes.push(KeyValue::new("server.port", i64::from(port)));
        }
        request_parameters(of.request, &mut attributes);
        let span = s
            .tracer
            .span_builder(format!("{operation} {}", of.model))
            .with_kind(SpanKind::Client)
            .with_attributes(attributes)
            .start_with_context(&s.tracer, &s.cx);
        let mut headers = vec![(
            "traceparent",
            trace_context::traceparent(span.span_context()),
        )];
        if let Some(state) = self.incoming.as_ref().and_then(|i| i.tracestate.clone()) {
            headers.push(("tracestate", state));
        }
        if let Some(mut previous) = s.attempt.replace(span) {
            previous.end();
        }
        headers
    }

    /// The attempt failed (`status` when the provider answered): its span ends.
    pub fn attempt_failed(&mut self, status: Option<u16>, error: &'static str) {
        if let Some(mut span) = self.spans.as_deref_mut().and_then(|s| s.attempt.take()) {
            if let Some(status) = status {
                span.set_attribute(KeyValue::new(
                    "http.response.status_code",
                    i64::from(status),
                ));
            }
            fail(&mut span, Some(error));
            span.end();
        }
    }

    /// The request ends: the served attempt's span and the SERVER span get what the
    /// request came to, and end.
    pub fn finish(&mut self, end: End<'_>) {
        let Some(mut s) = self.spans.take() else {
            return;
        };
        let ttfb_at = end.ttfb.map(|t| s.started + t);
        for open in [s.authenticate.take(), s.route.take()]
            .into_iter()
            .flatten()
        {
            let mut open = open;
            fail(&mut open, end.error);
            open.end();
        }
        if let Some(mut span) = s.attempt.take() {
            let mut attributes = Vec::with_capacity(12);
            attributes.push(KeyValue::new(
                "http.response.status_code",
                i64::from(end.status),
            ));
            if let Some(model) = end.served_model {
                attributes.push(KeyValue::new("gen_ai.response.model", model.to_string()));
            }
            if let Some(meta) = end.answer {
                if let Some(id) = &meta.id {
                    attributes.push(KeyValue::new("gen_ai.response.id", id.clone()));
                }
                if !meta.finish_reasons.is_empty() {
                    let reasons: Vec<StringValue> = meta
                        .finish_reasons
                        .iter()
                        .map(|r| StringValue::from(r.clone()))
                        .collect();
                    attributes.push(KeyValue::new(
                        "gen_ai.response.finish_reasons",
                        Value::Array(reasons.into()),
                    ));
                }
            }
            if let Some(u) = end.usage {
                attributes.push(KeyValue::new("gen_ai.usage.input_tokens", u.input as i64));
                attributes.push(KeyValue::new("gen_ai.usage.output_tokens", u.output as i64));
                if let Some(n) = u.cache_read {
                    attributes.push(KeyValue::new(
                        "gen_ai.usage.cache_read.input_tokens",
                        n as i64,
                    ));
                }
                if let Some(n) = u.cache_creation {
                    attributes.push(KeyValue::new(
                        "gen_ai.usage.cache_creation.input_tokens",
                        n as i64,
                    ));
                }
            }
            if let Some(c) = &end.content {
                attributes.extend(c.input.iter().cloned());
                attributes.extend(c.output.iter().cloned());
                if c.truncated {
                    attributes.push(KeyValue::new("perpetuo.content.truncated", true));
                }
            }
            span.set_attributes(attributes);
            if let Some(at) = ttfb_at {
                span.add_event_with_timestamp("perpetuo.first_token", at, Vec::new());
            }
            fail(&mut span, end.error);
            span.end();
        }
        let server = s.cx.span();
        let mut attributes = vec![
            KeyValue::new("http.response.status_code", i64::from(end.status)),
            KeyValue::new("perpetuo.request_id", end.request_id.to_string()),
        ];
        if let Some(w) = end.workspace {
            attributes.push(KeyValue::new("perpetuo.workspace_id", w.to_string()));
        }
        if let Some(k) = end.key {
            attributes.push(KeyValue::new("perpetuo.api_key_id", k.to_string()));
        }
        if let Some(entry) = end.entry {
            attributes.push(KeyValue::new("perpetuo.entry", entry.to_string()));
        }
        if let Some(label) = end.key_label {
            attributes.push(KeyValue::new("perpetuo.pool_key", label.to_string()));
        }
        if let Some(cache) = end.cache {
            attributes.push(KeyValue::new("perpetuo.cache", cache));
        }
        if let Some(nusd) = end.cost_nusd {
            attributes.push(KeyValue::new("perpetuo.cost_usd", nusd as f64 / 1e9));
        }
        if let Some(model) = end.requested_model {
            attributes.push(KeyValue::new("gen_ai.request.model", model.to_string()));
        }
        server.set_attributes(attributes);
        if let Some(e) = end.error {
            server.set_attribute(KeyValue::new("error.type", e));
            server.set_status(Status::error(e));
        }
        server.end();
    }
}

/// Marks a span failed with `error.type`.
fn fail(span: &mut Span, error: Option<&'static str>) {
    if let Some(e) = error {
        span.set_attribute(KeyValue::new("error.type", e));
        span.set_status(Status::error(e));
    }
}

/// The request parameters present in the client's body, as `gen_ai.request.*`.
fn request_parameters(body: &LazyJson, out: &mut Vec<KeyValue>) {
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
    let Some(fields) = body.as_object() else {
        return;
    };
    for (field, name) in FLOATS {
        if let Some(v) = fields.get(field).and_then(serde_json::Value::as_f64) {
            out.push(KeyValue::new(name, v));
        }
    }
    for (field, name) in INTS {
        if let Some(v) = fields.get(field).and_then(serde_json::Value::as_i64) {
            if !out.iter().any(|kv| kv.key.as_str() == name) {
                out.push(KeyValue::new(name, v));
            }
        }
    }
    if let Some(stream) = fields.get("stream").and_then(serde_json::Value::as_bool) {
        out.push(KeyValue::new("gen_ai.request.stream", stream));
    }
    if let Some(dims) = fields.get("dimensions").and_then(serde_json::Value::as_i64) {
        out.push(KeyValue::new("gen_ai.embeddings.dimension.count", dims));
    }
    let stop: Vec<StringValue> = match fields.get("stop").or_else(|| fields.get("stop_sequences")) {
        Some(serde_json::Value::String(s)) => vec![s.clone().into()],
        Some(serde_json::Value::Array(a)) => a
            .iter()
            .filter_map(|v| v.as_str().map(|s| StringValue::from(s.to_string())))
            .collect(),
        _ => Vec::new(),
    };
    if !stop.is_empty() {
        out.push(KeyValue::new(
            "gen_ai.request.stop_sequences",
            Value::Array(stop.into()),
        ));
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
    input: Option<KeyValue>,
    output: Option<KeyValue>,
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
            Some(KeyValue::new("gen_ai.input.messages", json))
        });
        let output = output.filter(|t| !t.is_empty()).map(|text| {
            let (json, cut) = capped(vec![("assistant".into(), text.to_string())]);
            truncated |= cut;
            KeyValue::new("gen_ai.output.messages", json)
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

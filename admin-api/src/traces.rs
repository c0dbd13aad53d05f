//! The admin API's traces (OpenTelemetry HTTP semantic conventions): a SERVER span per
//! API request, named `{method} {route}` after the route's template (ids never name a
//! span), continuing a client's W3C `traceparent`; the statements the request sends to
//! the database are its children (`perpetuo_core::db::traced`). Only with tracing on is
//! the layer added at all.

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderMap};
use axum::middleware::Next;
use axum::response::Response;
use opentelemetry::context::FutureExt as _;
use opentelemetry::trace::{SpanKind, Status, TraceContextExt, Tracer as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::SdkTracer;
use perpetuo_core::trace_context;

/// Wraps a request in its SERVER span.
pub async fn server_span(State(tracer): State<SdkTracer>, req: Request, next: Next) -> Response {
    let parent = parent(req.headers());
    let method = req.method().as_str().to_string();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string());
    let name = match &route {
        Some(route) => format!("{method} {route}"),
        None => method.clone(),
    };
    let mut attributes = vec![
        KeyValue::new("http.request.method", method),
        KeyValue::new("url.path", req.uri().path().to_string()),
        KeyValue::new("url.scheme", "http"),
    ];
    if let Some(route) = route {
        attributes.push(KeyValue::new("http.route", route));
    }
    if let Some(host) = header_str(req.headers(), header::HOST.as_str()) {
        let (name, port) = match host.rsplit_once(':') {
            Some((h, p)) => (h, p.parse::<u16>().ok()),
            None => (host, None),
        };
        attributes.push(KeyValue::new("server.address", name.to_string()));
        if let Some(port) = port {
            attributes.push(KeyValue::new("server.port", i64::from(port)));
        }
    }
    if let Some(agent) = header_str(req.headers(), header::USER_AGENT.as_str()) {
        attributes.push(KeyValue::new("user_agent.original", agent.to_string()));
    }
    let span = tracer
        .span_builder(name)
        .with_kind(SpanKind::Server)
        .with_attributes(attributes)
        .start_with_context(&tracer, &parent);
    let cx = parent.with_span(span);
    let response = next.run(req).with_context(cx.clone()).await;
    let span = cx.span();
    let status = response.status().as_u16();
    span.set_attribute(KeyValue::new(
        "http.response.status_code",
        i64::from(status),
    ));
    // A server span is an error on a 5xx only: a 4xx is the client's.
    if status >= 500 {
        span.set_attribute(KeyValue::new("error.type", status.to_string()));
        span.set_status(Status::error(""));
    }
    span.end();
    response
}

/// The client's trace, when its headers name a valid one; else a new root.
fn parent(headers: &HeaderMap) -> Context {
    let incoming = header_str(headers, "traceparent")
        .and_then(|tp| trace_context::remote(tp, header_str(headers, "tracestate")));
    match incoming {
        Some(remote) => Context::new().with_remote_span_context(remote),
        None => Context::new(),
    }
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

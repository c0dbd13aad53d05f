//! An OTLP/HTTP collector in the test process: `POST /v1/traces` protobuf bodies decoded
//! with `opentelemetry-proto` into [`Exported`] spans; and a collector that accepts
//! connections and never answers.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::common::v1::AnyValue;
use prost::Message;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::eventually;

/// OTLP's span kinds.
pub const SERVER: i32 = 2;
pub const CLIENT: i32 = 3;
pub const INTERNAL: i32 = 1;

/// One exported span, flattened.
#[derive(Debug, Clone)]
pub struct Exported {
    pub name: String,
    pub kind: i32,
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a root span.
    pub parent: String,
    pub service: String,
    pub attributes: BTreeMap<String, Value>,
    pub events: Vec<String>,
    /// 2: error.
    pub status: i32,
}

impl Exported {
    pub fn attr(&self, name: &str) -> Option<&Value> {
        self.attributes.get(name)
    }

    pub fn str(&self, name: &str) -> Option<&str> {
        self.attr(name).and_then(Value::as_str)
    }

    pub fn int(&self, name: &str) -> Option<i64> {
        self.attr(name).and_then(Value::as_i64)
    }
}

fn value(v: &AnyValue) -> Value {
    match &v.value {
        Some(Any::StringValue(s)) => json!(s),
        Some(Any::IntValue(i)) => json!(i),
        Some(Any::DoubleValue(d)) => json!(d),
        Some(Any::BoolValue(b)) => json!(b),
        Some(Any::ArrayValue(a)) => Value::Array(a.values.iter().map(value).collect()),
        _ => Value::Null,
    }
}

/// The collector: every span it received, and the raw bodies.
pub struct Collector {
    pub endpoint: String,
    spans: Arc<Mutex<Vec<Exported>>>,
    bodies: Arc<Mutex<Vec<u8>>>,
    /// Each export's request head, lowercased.
    heads: Arc<Mutex<Vec<String>>>,
}

impl Collector {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let spans = Arc::new(Mutex::new(Vec::new()));
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let heads = Arc::new(Mutex::new(Vec::new()));
        let (s, b, h) = (spans.clone(), bodies.clone(), heads.clone());
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                tokio::spawn(serve(conn, s.clone(), b.clone(), h.clone()));
            }
        });
        Self {
            endpoint,
            spans,
            bodies,
            heads,
        }
    }

    /// The gateway settings that export to this collector promptly.
    pub fn settings(&self) -> Vec<(&'static str, String)> {
        vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT", self.endpoint.clone()),
            ("OTEL_BSP_SCHEDULE_DELAY", "20".into()),
        ]
    }

    pub fn spans(&self) -> Vec<Exported> {
        self.spans.lock().unwrap().clone()
    }

    /// Whether an export's request head held `line` (compared lowercased).
    pub fn saw_header(&self, line: &str) -> bool {
        let line = line.to_ascii_lowercase();
        self.heads
            .lock()
            .unwrap()
            .iter()
            .any(|h| h.lines().any(|l| l.trim() == line))
    }

    /// Every byte the collector received, lossily as text (for the canary).
    pub fn raw(&self) -> String {
        String::from_utf8_lossy(&self.bodies.lock().unwrap()).into_owned()
    }

    /// The spans of the trace whose SERVER span names `request_id`, once its server span
    /// and `at_least` spans in all are there.
    pub async fn trace_of(&self, request_id: &str, at_least: usize) -> Vec<Exported> {
        eventually(
            &format!("the spans of {request_id}"),
            Duration::from_secs(10),
            || async {
                let spans = self.spans();
                let server = spans.iter().find(|s| {
                    s.kind == SERVER && s.str("perpetuo.request_id") == Some(request_id)
                })?;
                let trace: Vec<Exported> = spans
                    .iter()
                    .filter(|s| s.trace_id == server.trace_id)
                    .cloned()
                    .collect();
                (trace.len() >= at_least).then_some(trace)
            },
        )
        .await
    }
}

/// Answers OTLP exports on one connection (HTTP/1.1, kept alive).
async fn serve(
    mut conn: TcpStream,
    spans: Arc<Mutex<Vec<Exported>>>,
    raw: Arc<Mutex<Vec<u8>>>,
    heads: Arc<Mutex<Vec<String>>>,
) {
    let mut buf = Vec::new();
    loop {
        let head_end = loop {
            if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            let mut chunk = [0u8; 8192];
            match conn.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        while buf.len() < head_end + length {
            let mut chunk = [0u8; 65536];
            match conn.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let body: Vec<u8> = buf.drain(..head_end + length).skip(head_end).collect();
        raw.lock().unwrap().extend_from_slice(&body);
        heads.lock().unwrap().push(head.clone());
        if head.starts_with("post /v1/traces") {
            if let Ok(request) = ExportTraceServiceRequest::decode(body.as_slice()) {
                spans.lock().unwrap().extend(flatten(&request));
            }
        }
        let answer =
            b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n";
        if conn.write_all(answer).await.is_err() {
            return;
        }
    }
}

fn flatten(request: &ExportTraceServiceRequest) -> Vec<Exported> {
    let mut out = Vec::new();
    for rs in &request.resource_spans {
        let service = rs
            .resource
            .as_ref()
            .and_then(|r| r.attributes.iter().find(|a| a.key == "service.name"))
            .and_then(|a| a.value.as_ref())
            .map(value)
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        for ss in &rs.scope_spans {
            for s in &ss.spans {
                out.push(Exported {
                    name: s.name.clone(),
                    kind: s.kind,
                    trace_id: hex::encode(&s.trace_id),
                    span_id: hex::encode(&s.span_id),
                    parent: hex::encode(&s.parent_span_id),
                    service: service.clone(),
                    attributes: s
                        .attributes
                        .iter()
                        .map(|a| (a.key.clone(), a.value.as_ref().map_or(Value::Null, value)))
                        .collect(),
                    events: s.events.iter().map(|e| e.name.clone()).collect(),
                    status: s.status.as_ref().map_or(0, |st| st.code),
                });
            }
        }
    }
    out
}

/// A collector that accepts connections and never answers (nor reads).
pub struct Silent {
    pub endpoint: String,
}

impl Silent {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((conn, _)) = listener.accept().await {
                held.push(conn);
            }
        });
        Self { endpoint }
    }
}

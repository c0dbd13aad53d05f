//! OpenAI-format stream events that translated streams are written as.

use bytes::Bytes;
use serde_json::{json, Value};

use crate::Usage;

/// Identity shared by every chunk of one translated stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Meta {
    pub id: String,
    pub model: String,
    pub created: i64,
}

impl Meta {
    pub fn new(model: &str) -> Self {
        Self {
            id: format!("chatcmpl-{}", uuid::Uuid::now_v7().simple()),
            model: model.to_string(),
            created: time::OffsetDateTime::now_utc().unix_timestamp(),
        }
    }
}

fn event(v: &Value) -> Bytes {
    Bytes::from(format!("data: {v}\n\n"))
}

/// A `chat.completion.chunk` with one choice.
pub fn delta(meta: &Meta, delta: Value, finish_reason: Option<&str>) -> Bytes {
    event(&json!({
        "id": meta.id,
        "object": "chat.completion.chunk",
        "created": meta.created,
        "model": meta.model,
        "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish_reason}],
    }))
}

/// The usage-only chunk OpenAI sends when `stream_options.include_usage` is set.
pub fn usage_event(meta: &Meta, usage: &Usage) -> Bytes {
    event(&json!({
        "id": meta.id,
        "object": "chat.completion.chunk",
        "created": meta.created,
        "model": meta.model,
        "choices": [],
        "usage": usage.to_openai(),
    }))
}

pub fn done() -> Bytes {
    Bytes::from_static(b"data: [DONE]\n\n")
}

/// An error event in OpenAI's error shape (what OpenAI itself sends mid-stream).
pub fn error_event(message: &str, err_type: &str, code: &str) -> Bytes {
    event(&json!({"error": {"message": message, "type": err_type, "code": code, "param": null}}))
}

/// A whole `chat.completion` object.
pub fn completion(
    meta: &Meta,
    content: Option<String>,
    tool_calls: Vec<Value>,
    finish_reason: &str,
    usage: Option<&Usage>,
) -> Value {
    let mut message = json!({"role": "assistant", "content": content, "refusal": null});
    if !tool_calls.is_empty() {
        message["tool_calls"] = Value::Array(tool_calls);
    }
    let mut v = json!({
        "id": meta.id,
        "object": "chat.completion",
        "created": meta.created,
        "model": meta.model,
        "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": finish_reason}],
    });
    if let Some(u) = usage {
        v["usage"] = u.to_openai();
    }
    v
}

/// A provider's error body in OpenAI's shape: `error.message` and the field naming the
/// error's kind (`code_field`) are read from the provider's `error` object.
pub fn openai_error_body(status: u16, body: &[u8], code_field: &str) -> Bytes {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let e = v
        .get("error")
        .or_else(|| v.get(0).and_then(|x| x.get("error")));
    let field = |name: &str| e.and_then(|e| e.get(name)).and_then(Value::as_str);
    let message = field("message").unwrap_or("The provider returned an error.");
    let code = field(code_field).unwrap_or("upstream_error");
    let err_type = if status >= 500 {
        "server_error"
    } else {
        "invalid_request_error"
    };
    Bytes::from(
        json!({"error": {"message": message, "type": err_type, "code": code, "param": null}})
            .to_string(),
    )
}

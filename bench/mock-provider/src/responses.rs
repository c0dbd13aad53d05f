//! OpenAI's Responses API (`POST /v1/responses`), as far as a gateway passing requests
//! through needs it: a text answer, whole or as the numbered event stream, with usage.
//! Built-in tools and every other field are accepted and recorded, not acted on; the
//! behaviours that fail before the headers (`error-NNN`, `slow-<ms>`, `stall`) apply.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use serde_json::{json, Value};

use crate::agent::Wire;
use crate::behavior::Behavior;
use crate::openai::{
    content_pieces, invalid_json, missing_model, missing_parameter, status_error, EVENT_STREAM,
};
use crate::record::RecordedRequest;
use crate::reply::{json_response, recorded, stream_response, to_json, wait_before_headers, words};
use crate::server::Shared;
use crate::sse::Step;

pub(crate) async fn create(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request = RecordedRequest::new(&method, &uri, &headers, body);
    recorded(shared, request, true, respond).await
}

/// Words of the input: a string, or the text parts of its message items.
fn input_words(json: &Value) -> u64 {
    let text = |v: &Value| -> u64 {
        match v {
            Value::String(s) => words(s),
            Value::Array(parts) => parts
                .iter()
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .map(words)
                .sum(),
            _ => 0,
        }
    };
    let instructions = json
        .get("instructions")
        .and_then(Value::as_str)
        .map_or(0, words);
    instructions
        + match json.get("input") {
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(|i| i.get("content"))
                .map(text)
                .sum(),
            Some(other) => text(other),
            None => 0,
        }
}

async fn respond(shared: Arc<Shared>, json: Option<Value>) -> Response {
    let Some(json) = json.filter(Value::is_object) else {
        return invalid_json();
    };
    let Some(model) = json
        .get("model")
        .and_then(Value::as_str)
        .map(str::to_string)
    else {
        return missing_model();
    };
    if json.get("input").is_none() {
        return missing_parameter("input");
    }
    if let Some(script) = &shared.config.agent {
        let stream = json.get("stream").and_then(Value::as_bool) == Some(true);
        return crate::agent::answer(&shared, script, Wire::Responses, &json, &model, stream);
    }
    let behavior = shared.behavior_for(&model);
    if let Behavior::Status(status) = behavior {
        return status_error(status, &model);
    }
    wait_before_headers(&shared, behavior).await;
    let number = shared.next_completion_number();
    let (id, item) = (format!("resp_mock_{number}"), format!("msg_mock_{number}"));
    let text = shared.config.content.clone();
    let usage = json!({
        "input_tokens": input_words(&json), "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": words(&text), "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": input_words(&json) + words(&text)});
    let message = json!({"type": "message", "id": item, "status": "completed", "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": []}]});
    let response = |status: &str, output: Value, usage: Value| {
        json!({"id": id, "object": "response", "created_at": shared.created(), "status": status,
               "model": model, "output": output, "usage": usage,
               "tools": json.get("tools").cloned().unwrap_or(json!([])), "error": null})
    };
    if json.get("stream").and_then(Value::as_bool) != Some(true) {
        return json_response(
            StatusCode::OK,
            to_json(&response("completed", json!([message]), usage)),
        );
    }
    let mut events: Vec<(String, Value)> = vec![
        (
            "response.created".into(),
            json!({"response": response("in_progress", json!([]), Value::Null)}),
        ),
        (
            "response.in_progress".into(),
            json!({"response": response("in_progress", json!([]), Value::Null)}),
        ),
        (
            "response.output_item.added".into(),
            json!({"output_index": 0, "item": {"type": "message", "id": item, "status": "in_progress", "role": "assistant", "content": []}}),
        ),
        (
            "response.content_part.added".into(),
            json!({"item_id": item, "output_index": 0, "content_index": 0, "part": {"type": "output_text", "text": "", "annotations": []}}),
        ),
    ];
    for piece in content_pieces(&text) {
        events.push((
            "response.output_text.delta".into(),
            json!({"item_id": item, "output_index": 0, "content_index": 0, "delta": piece}),
        ));
    }
    events.push((
        "response.output_text.done".into(),
        json!({"item_id": item, "output_index": 0, "content_index": 0, "text": text}),
    ));
    events.push(("response.content_part.done".into(), json!({"item_id": item, "output_index": 0, "content_index": 0, "part": {"type": "output_text", "text": text, "annotations": []}})));
    events.push((
        "response.output_item.done".into(),
        json!({"output_index": 0, "item": message}),
    ));
    events.push((
        "response.completed".into(),
        json!({"response": response("completed", json!([message]), usage)}),
    ));
    let steps = numbered(events).into_iter().map(Step::Event).collect();
    stream_response(&shared, steps, EVENT_STREAM)
}

/// The stream's events as sent: each named, its `type` the name and its
/// `sequence_number` its place.
pub(crate) fn numbered<K: AsRef<str>>(events: Vec<(K, Value)>) -> Vec<Bytes> {
    events
        .into_iter()
        .enumerate()
        .map(|(n, (kind, mut data))| {
            let kind = kind.as_ref();
            data["type"] = json!(kind);
            data["sequence_number"] = json!(n);
            Bytes::from(format!("event: {kind}\ndata: {data}\n\n"))
        })
        .collect()
}

//! Anthropic Messages API: OpenAI chat requests become Messages requests (system and
//! developer messages to `system`, alternating roles merged, images, tools and tool
//! results, a default `max_tokens`), and answers and event streams become OpenAI
//! `chat.completion` objects and `chat.completion.chunk` events, translated as they arrive.
//! [`messages`] maps the Messages door to and from chat.

pub mod messages;

use bytes::Bytes;
use serde_json::{json, Map, Value};

use crate::messages::{content_text, parse_data_url, parts, push_merged, Part};
use crate::openai::chunk;
use crate::sse::Event;
use crate::{
    unsupported, Decoded, Generated, Signal, StreamState, Unsupported, UpstreamRequest, Usage,
};

pub const VERSION: &str = "2023-06-01";
/// Anthropic requires `max_tokens`; used when the client sets none.
pub const DEFAULT_MAX_TOKENS: u64 = 4096;

fn user_blocks(content: Option<&Value>) -> Result<Vec<Value>, Unsupported> {
    Ok(parts(content, "anthropic")?
        .into_iter()
        .map(|p| match p {
            Part::Text(t) => json!({"type": "text", "text": t}),
            Part::Image(url) => match parse_data_url(url) {
                Some((media, data)) => {
                    json!({"type": "image", "source": {"type": "base64", "media_type": media, "data": data}})
                }
                None => json!({"type": "image", "source": {"type": "url", "url": url}}),
            },
        })
        .collect())
}

fn tools(request: &Value) -> Option<Value> {
    let tools = request.get("tools")?.as_array()?;
    Some(Value::Array(
        tools
            .iter()
            .filter_map(|t| t.get("function"))
            .map(|f| {
                let mut tool = json!({
                    "name": f.get("name").cloned().unwrap_or(Value::Null),
                    "input_schema": f.get("parameters").cloned().unwrap_or_else(|| json!({"type": "object", "properties": {}})),
                });
                if let Some(d) = f.get("description") {
                    tool["description"] = d.clone();
                }
                tool
            })
            .collect(),
    ))
}

fn tool_choice(choice: &Value) -> Option<Value> {
    match choice {
        Value::String(s) if s == "auto" => Some(json!({"type": "auto"})),
        Value::String(s) if s == "none" => Some(json!({"type": "none"})),
        Value::String(s) if s == "required" => Some(json!({"type": "any"})),
        Value::Object(o) => o
            .get("function")
            .and_then(|f| f.get("name"))
            .map(|n| json!({"type": "tool", "name": n})),
        _ => None,
    }
}

/// The Messages API body for an OpenAI chat request.
pub fn translate_request(request: &Value, model: &str, stream: bool) -> Result<Value, Unsupported> {
    if request
        .get("n")
        .and_then(Value::as_u64)
        .is_some_and(|n| n > 1)
    {
        return Err(unsupported(
            "`n` greater than 1 is not supported by anthropic providers",
        ));
    }
    if request.get("logprobs").and_then(Value::as_bool) == Some(true) {
        return Err(unsupported(
            "`logprobs` is not supported by anthropic providers",
        ));
    }
    let msgs = request
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| unsupported("`messages` must be an array"))?;
    let mut system: Vec<String> = Vec::new();
    let mut messages: Vec<Value> = Vec::new();
    for m in msgs {
        let role = m.get("role").and_then(Value::as_str).unwrap_or("");
        match role {
            "system" | "developer" => system.push(content_text(m.get("content"))),
            "user" => {
                let blocks = user_blocks(m.get("content"))?;
                push_merged(&mut messages, "user", "content", blocks);
            }
            "assistant" => {
                let mut blocks = Vec::new();
                let text = content_text(m.get("content"));
                if !text.is_empty() {
                    blocks.push(json!({"type": "text", "text": text}));
                }
                for call in m
                    .get("tool_calls")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let f = call.get("function").cloned().unwrap_or(Value::Null);
                    let args = f.get("arguments").and_then(Value::as_str).unwrap_or("{}");
                    let input: Value = if args.trim().is_empty() {
                        json!({})
                    } else {
                        serde_json::from_str(args)
                            .map_err(|_| unsupported("tool call arguments must be a JSON object"))?
                    };
                    blocks.push(json!({"type": "tool_use", "id": call.get("id").cloned().unwrap_or(Value::Null),
                                       "name": f.get("name").cloned().unwrap_or(Value::Null), "input": input}));
                }
                push_merged(&mut messages, "assistant", "content", blocks);
            }
            "tool" => {
                let block = json!({"type": "tool_result",
                                   "tool_use_id": m.get("tool_call_id").cloned().unwrap_or(Value::Null),
                                   "content": content_text(m.get("content"))});
                push_merged(&mut messages, "user", "content", vec![block]);
            }
            other => {
                return Err(unsupported(format!(
                    "message role `{other}` is not supported"
                )))
            }
        }
    }
    let mut body = Map::new();
    body.insert("model".into(), json!(model));
    body.insert("messages".into(), Value::Array(messages));
    let system = system
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join("\n\n");
    if !system.is_empty() {
        body.insert("system".into(), json!(system));
    }
    let max_tokens = request
        .get("max_completion_tokens")
        .or_else(|| request.get("max_tokens"))
        .and_then(Value::as_u64)
        .unwrap_or(DEFAULT_MAX_TOKENS);
    body.insert("max_tokens".into(), json!(max_tokens));
    for (from, to) in [("temperature", "temperature"), ("top_p", "top_p")] {
        if let Some(v) = request.get(from).filter(|v| v.is_number()) {
            body.insert(to.into(), v.clone());
        }
    }
    match request.get("stop") {
        Some(Value::String(s)) => {
            body.insert("stop_sequences".into(), json!([s]));
        }
        Some(Value::Array(a)) if !a.is_empty() => {
            body.insert("stop_sequences".into(), Value::Array(a.clone()));
        }
        _ => {}
    }
    if let Some(t) = tools(request).filter(|t| t.as_array().is_some_and(|a| !a.is_empty())) {
        body.insert("tools".into(), t);
        if let Some(c) = request.get("tool_choice").and_then(tool_choice) {
            body.insert("tool_choice".into(), c);
        }
    }
    if stream {
        body.insert("stream".into(), json!(true));
    }
    Ok(Value::Object(body))
}

pub fn build_request(
    prefix: &str,
    key: &str,
    request: &Value,
    model: &str,
    stream: bool,
) -> Result<UpstreamRequest, Unsupported> {
    let body = translate_request(request, model, stream)?;
    let body = Bytes::from(serde_json::to_vec(&body).map_err(|e| unsupported(e.to_string()))?);
    Ok(UpstreamRequest::json(
        format!("{prefix}/messages"),
        vec![
            ("x-api-key", key.to_string()),
            ("anthropic-version", VERSION.to_string()),
        ],
        body,
        stream,
    ))
}

/// A Messages-API request passed through as the client sent it (full fidelity: thinking,
/// `cache_control`, server tools, betas), with the entry's key, the served model and the
/// client's `anthropic-version` / `anthropic-beta`.
pub fn passthrough_request(
    prefix: &str,
    key: &str,
    call: &crate::Call<'_>,
    served_model: &str,
    version: Option<&str>,
    beta: Option<&str>,
) -> Result<UpstreamRequest, Unsupported> {
    let body = call
        .request
        .with_model(served_model)
        .map_err(|e| unsupported(e.to_string()))?;
    let mut headers = vec![
        ("x-api-key", key.to_string()),
        ("anthropic-version", version.unwrap_or(VERSION).to_string()),
    ];
    if let Some(beta) = beta {
        headers.push(("anthropic-beta", beta.to_string()));
    }
    Ok(UpstreamRequest::json(
        format!("{prefix}/messages"),
        headers,
        body,
        call.stream,
    ))
}

pub fn finish_reason(stop_reason: Option<&str>) -> &'static str {
    match stop_reason {
        Some("max_tokens") => "length",
        Some("tool_use") => "tool_calls",
        Some("refusal") => "content_filter",
        _ => "stop",
    }
}

fn usage(u: &Value, previous: Option<Usage>) -> Usage {
    let n = |k: &str| u.get(k).and_then(Value::as_u64);
    let prev = previous.unwrap_or_default();
    let input = n("input_tokens");
    let write = n("cache_creation_input_tokens");
    let read = n("cache_read_input_tokens");
    let (input, write, read) = match (input, write, read) {
        (None, None, None) => (
            prev.prompt_tokens
                .saturating_sub(prev.cached_tokens.saturating_add(prev.cache_write_tokens)),
            prev.cache_write_tokens,
            prev.cached_tokens,
        ),
        (i, w, r) => (i.unwrap_or(0), w.unwrap_or(0), r.unwrap_or(0)),
    };
    Usage {
        prompt_tokens: input.saturating_add(write).saturating_add(read),
        completion_tokens: n("output_tokens").unwrap_or(prev.completion_tokens),
        cached_tokens: read,
        cache_write_tokens: write,
    }
}

pub fn decode_response(body: &[u8], model: &str) -> Decoded {
    let mut content = Generated::default();
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return Decoded {
            body: None,
            usage: None,
            content,
        };
    };
    let mut text = String::new();
    let mut calls = Vec::new();
    for block in v
        .get("content")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        match block.get("type").and_then(Value::as_str) {
            Some("text") => text.push_str(block.get("text").and_then(Value::as_str).unwrap_or("")),
            Some("tool_use") => calls.push(json!({
                "id": block.get("id").cloned().unwrap_or(Value::Null),
                "type": "function",
                "function": {
                    "name": block.get("name").cloned().unwrap_or(Value::Null),
                    "arguments": block.get("input").map(Value::to_string).unwrap_or_else(|| "{}".into()),
                },
            })),
            _ => {}
        }
    }
    content.push(&text);
    let usage = v.get("usage").map(|u| usage(u, None));
    let mut meta = chunk::Meta::new(v.get("model").and_then(Value::as_str).unwrap_or(model));
    if let Some(id) = v.get("id").and_then(Value::as_str) {
        meta.id = id.to_string();
    }
    let finish = finish_reason(v.get("stop_reason").and_then(Value::as_str));
    let out = chunk::completion(
        &meta,
        (!text.is_empty() || calls.is_empty()).then_some(text),
        calls,
        finish,
        usage.as_ref(),
    );
    Decoded {
        body: Some(Bytes::from(out.to_string())),
        usage,
        content,
    }
}

fn start(state: &mut StreamState, out: &mut Vec<Bytes>) {
    if !state.started {
        state.started = true;
        out.push(chunk::delta(
            &state.meta,
            json!({"role": "assistant", "content": ""}),
            None,
        ));
    }
}

#[derive(serde::Deserialize)]
struct SignalView<'a> {
    #[serde(default, rename = "type", borrow)]
    kind: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    content_block: Option<BlockView<'a>>,
    #[serde(default, borrow)]
    delta: Option<BlockView<'a>>,
}

#[derive(serde::Deserialize)]
struct BlockView<'a> {
    #[serde(default, rename = "type", borrow)]
    kind: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    text: Option<std::borrow::Cow<'a, str>>,
}

/// Anthropic streams open with `message_start`, an empty text block and pings: preamble,
/// like thinking blocks (the chat client is not shown them). Text, a tool use, a stop
/// reason or the end of the message is content; an `error` event is an error.
pub fn signal<'a>(event: &'a Event) -> Signal {
    let Some(data) = event.data.as_deref() else {
        return Signal::Preamble;
    };
    let Ok(view) = serde_json::from_str::<SignalView<'a>>(data) else {
        return Signal::Content;
    };
    let kind = view
        .kind
        .as_deref()
        .or(event.event.as_deref())
        .unwrap_or("");
    let block_kind = |b: &Option<BlockView<'a>>| b.as_ref().and_then(|b| b.kind.clone());
    let has_text = |b: &Option<BlockView<'_>>| {
        b.as_ref()
            .and_then(|b| b.text.as_deref())
            .is_some_and(|t| !t.is_empty())
    };
    match kind {
        "message_start" | "ping" | "content_block_stop" => Signal::Preamble,
        "error" => Signal::Error,
        "content_block_start" => match block_kind(&view.content_block).as_deref().unwrap_or("") {
            "text" if !has_text(&view.content_block) => Signal::Preamble,
            "thinking" | "redacted_thinking" => Signal::Preamble,
            _ => Signal::Content,
        },
        "content_block_delta" => match block_kind(&view.delta).as_deref().unwrap_or("") {
            "text_delta" if !has_text(&view.delta) => Signal::Preamble,
            "thinking_delta" | "signature_delta" => Signal::Preamble,
            _ => Signal::Content,
        },
        _ => Signal::Content,
    }
}

pub fn decode_event(state: &mut StreamState, event: &Event) -> Vec<Bytes> {
    let mut out = Vec::new();
    let Some(v) = event
        .data
        .as_deref()
        .and_then(|d| serde_json::from_str::<Value>(d).ok())
    else {
        return out;
    };
    let kind = v
        .get("type")
        .and_then(Value::as_str)
        .or(event.event.as_deref())
        .unwrap_or("");
    match kind {
        "message_start" => {
            let msg = v.get("message").cloned().unwrap_or(Value::Null);
            if let Some(id) = msg.get("id").and_then(Value::as_str) {
                state.meta.id = id.to_string();
            }
            if let Some(m) = msg.get("model").and_then(Value::as_str) {
                state.meta.model = m.to_string();
            }
            if let Some(u) = msg.get("usage") {
                state.usage = Some(usage(u, state.usage));
            }
            start(state, &mut out);
        }
        "content_block_start" => {
            start(state, &mut out);
            let block = v.get("content_block").cloned().unwrap_or(Value::Null);
            let index = v.get("index").and_then(Value::as_u64).unwrap_or(0);
            match block.get("type").and_then(Value::as_str) {
                Some("tool_use") => {
                    let n = state.tool_calls;
                    state.tool_calls += 1;
                    state.saw_tool_call = true;
                    state.tool_blocks.push((index, n));
                    out.push(chunk::delta(
                        &state.meta,
                        json!({"tool_calls": [{"index": n, "id": block.get("id"), "type": "function",
                                               "function": {"name": block.get("name"), "arguments": ""}}]}),
                        None,
                    ));
                }
                Some("text") => {
                    if let Some(t) = block
                        .get("text")
                        .and_then(Value::as_str)
                        .filter(|t| !t.is_empty())
                    {
                        state.content.push(t);
                        out.push(chunk::delta(&state.meta, json!({"content": t}), None));
                    }
                }
                _ => {}
            }
        }
        "content_block_delta" => {
            start(state, &mut out);
            let delta = v.get("delta").cloned().unwrap_or(Value::Null);
            let index = v.get("index").and_then(Value::as_u64).unwrap_or(0);
            match delta.get("type").and_then(Value::as_str) {
                Some("text_delta") => {
                    let t = delta.get("text").and_then(Value::as_str).unwrap_or("");
                    state.content.push(t);
                    out.push(chunk::delta(&state.meta, json!({"content": t}), None));
                }
                Some("input_json_delta") => {
                    let part = delta
                        .get("partial_json")
                        .and_then(Value::as_str)
                        .unwrap_or("");
                    if let Some((_, n)) = state.tool_blocks.iter().find(|(i, _)| *i == index) {
                        out.push(chunk::delta(
                            &state.meta,
                            json!({"tool_calls": [{"index": n, "function": {"arguments": part}}]}),
                            None,
                        ));
                    }
                }
                _ => {}
            }
        }
        "message_delta" => {
            if let Some(u) = v.get("usage") {
                state.usage = Some(usage(u, state.usage));
            }
            let reason = v
                .get("delta")
                .and_then(|d| d.get("stop_reason"))
                .and_then(Value::as_str);
            start(state, &mut out);
            out.push(chunk::delta(
                &state.meta,
                json!({}),
                Some(finish_reason(reason)),
            ));
        }
        "message_stop" => state.finished = true,
        "error" => {
            state.errored = true;
            let e = v.get("error").cloned().unwrap_or(Value::Null);
            let msg = e
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("provider error");
            out.push(chunk::error_event(
                msg,
                "server_error",
                "upstream_error_midstream",
            ));
        }
        _ => {}
    }
    out
}

/// An Anthropic error body in OpenAI's shape.
pub fn error_body(status: u16, body: &[u8]) -> Bytes {
    chunk::openai_error_body(status, body, "type")
}

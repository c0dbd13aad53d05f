//! Anthropic Messages API: OpenAI chat requests become Messages requests (system and
//! developer messages to `system`, alternating roles merged, images, tools and tool
//! results, a default `max_tokens`), and answers and event streams become OpenAI
//! `chat.completion` objects and `chat.completion.chunk` events, translated as they arrive.
//! [`messages`] maps the Messages door to and from chat.

pub mod messages;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::lenient::{self, Leaf, Lenient, List, Raw};
use crate::messages::{parse_data_url, push_merged, ChatMessage, ChatRequest, Part, ToolChoice};
use crate::openai::chunk;
use crate::sse::Event;
use crate::{
    unsupported, Decoded, Generated, Signal, StreamState, Unsupported, UpstreamRequest, Usage,
};

pub const VERSION: &str = "2023-06-01";
/// Anthropic requires `max_tokens`; used when the client sets none.
pub const DEFAULT_MAX_TOKENS: u64 = 4096;

fn user_blocks(m: &ChatMessage<'_>) -> Result<Vec<Value>, Unsupported> {
    Ok(m.content()
        .parts("anthropic")?
        .into_iter()
        .map(|p| match p {
            Part::Text(t) => json!({"type": "text", "text": t}),
            Part::Image(url) => match parse_data_url(&url) {
                Some((media, data)) => {
                    json!({"type": "image", "source": {"type": "base64", "media_type": media, "data": data}})
                }
                None => json!({"type": "image", "source": {"type": "url", "url": url}}),
            },
        })
        .collect())
}

fn tools(request: &ChatRequest<'_>) -> Option<Vec<Value>> {
    Some(
        request
            .functions()?
            .map(|f| {
                let mut tool = json!({
                    "name": f.name.value(),
                    "input_schema": f.parameters.to_value().unwrap_or_else(|| json!({"type": "object", "properties": {}})),
                });
                if let Some(d) = f.description.to_value() {
                    tool["description"] = d;
                }
                tool
            })
            .collect(),
    )
}

fn tool_choice(choice: ToolChoice) -> Option<Value> {
    match choice {
        ToolChoice::Mode(s) if s == "auto" => Some(json!({"type": "auto"})),
        ToolChoice::Mode(s) if s == "none" => Some(json!({"type": "none"})),
        ToolChoice::Mode(s) if s == "required" => Some(json!({"type": "any"})),
        ToolChoice::Function(Some(name)) => Some(json!({"type": "tool", "name": name})),
        _ => None,
    }
}

/// The Messages API body for an OpenAI chat request (its bytes).
pub fn translate_request(request: &[u8], model: &str, stream: bool) -> Result<Value, Unsupported> {
    let request = ChatRequest::read(request)?;
    request.refuse_choices("anthropic")?;
    if request.logprobs.as_bool() == Some(true) {
        return Err(unsupported(
            "`logprobs` is not supported by anthropic providers",
        ));
    }
    let mut system: Vec<String> = Vec::new();
    let mut messages: Vec<Value> = Vec::new();
    for m in request.messages()? {
        match m.role() {
            "system" | "developer" => system.push(m.text()),
            "user" => {
                let blocks = user_blocks(m)?;
                push_merged(&mut messages, "user", "content", blocks);
            }
            "assistant" => {
                let mut blocks = Vec::new();
                let text = m.text();
                if !text.is_empty() {
                    blocks.push(json!({"type": "text", "text": text}));
                }
                for (call, f) in m.tool_calls() {
                    let input = f.arguments()?;
                    blocks.push(json!({"type": "tool_use", "id": call.id.value(),
                                       "name": f.name.value(), "input": input}));
                }
                push_merged(&mut messages, "assistant", "content", blocks);
            }
            "tool" => {
                let block = json!({"type": "tool_result",
                                   "tool_use_id": m.tool_call_id.value(),
                                   "content": m.text()});
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
        .max_tokens()
        .and_then(|v| v.as_u64())
        .unwrap_or(DEFAULT_MAX_TOKENS);
    body.insert("max_tokens".into(), json!(max_tokens));
    for (name, raw) in [
        ("temperature", &request.temperature),
        ("top_p", &request.top_p),
    ] {
        if let Some(v) = ChatRequest::number(raw) {
            body.insert(name.into(), v);
        }
    }
    if let Some(stop) = request.stop_sequences() {
        body.insert("stop_sequences".into(), stop);
    }
    if let Some(t) = tools(&request).filter(|t| !t.is_empty()) {
        body.insert("tools".into(), Value::Array(t));
        if let Some(c) = request.tool_choice().and_then(tool_choice) {
            body.insert("tool_choice".into(), c);
        }
    }
    if stream {
        body.insert("stream".into(), json!(true));
    }
    if request.prompt_cache_key.is_present() {
        mark_cache_prefix(&mut body);
    }
    Ok(Value::Object(body))
}

/// Anthropic caches a prompt's prefix up to a block marked with `cache_control`: the
/// request asked for caching (OpenAI's `prompt_cache_key`), so the stable parts are
/// marked — the tools, the system prompt, and the conversation so far (which the next
/// turn repeats). Three of the four marks Anthropic allows.
fn mark_cache_prefix(body: &mut Map<String, Value>) {
    let mark = || json!({"type": "ephemeral"});
    if let Some(Value::String(system)) = body.get("system") {
        let block = json!([{"type": "text", "text": system, "cache_control": mark()}]);
        body.insert("system".into(), block);
    }
    if let Some(Value::Object(tool)) = body
        .get_mut("tools")
        .and_then(|t| t.as_array_mut())
        .and_then(|t| t.last_mut())
    {
        tool.insert("cache_control".into(), mark());
    }
    let last_block = body
        .get_mut("messages")
        .and_then(Value::as_array_mut)
        .and_then(|m| m.last_mut())
        .and_then(|m| m.get_mut("content"))
        .and_then(Value::as_array_mut)
        .and_then(|c| c.last_mut());
    if let Some(Value::Object(block)) = last_block {
        block.insert("cache_control".into(), mark());
    }
}

pub fn build_request(
    prefix: &str,
    key: &str,
    request: &[u8],
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

/// Anthropic's `usage` object.
#[derive(Default, Deserialize)]
struct UsageView<'a> {
    #[serde(default, borrow)]
    input_tokens: Leaf<'a>,
    #[serde(default, borrow)]
    cache_creation_input_tokens: Leaf<'a>,
    #[serde(default, borrow)]
    cache_read_input_tokens: Leaf<'a>,
    #[serde(default, borrow)]
    output_tokens: Leaf<'a>,
}

/// A content block of an answer (or the one a stream event starts).
#[derive(Default, Deserialize)]
struct BlockView<'a> {
    #[serde(default, rename = "type", borrow)]
    kind: Leaf<'a>,
    #[serde(default, borrow)]
    text: Leaf<'a>,
    #[serde(default, borrow)]
    id: Raw<'a>,
    #[serde(default, borrow)]
    name: Raw<'a>,
    #[serde(default, borrow)]
    input: Raw<'a>,
}

/// A whole Messages answer, or the message a stream's `message_start` opens.
#[derive(Default, Deserialize)]
struct MessageView<'a> {
    #[serde(default, borrow)]
    id: Leaf<'a>,
    #[serde(default, borrow)]
    model: Leaf<'a>,
    #[serde(default, borrow)]
    content: List<BlockView<'a>>,
    #[serde(default, borrow)]
    stop_reason: Leaf<'a>,
    #[serde(default, borrow)]
    usage: Lenient<UsageView<'a>>,
}

/// The usage of a `usage` field that is there (whatever its shape), after `previous`.
fn usage(u: &Lenient<UsageView<'_>>, previous: Option<Usage>) -> Option<Usage> {
    if !u.present {
        return None;
    }
    let fields = UsageView::default();
    let u = u.get().unwrap_or(&fields);
    let prev = previous.unwrap_or_default();
    let input = u.input_tokens.as_u64();
    let write = u.cache_creation_input_tokens.as_u64();
    let read = u.cache_read_input_tokens.as_u64();
    let (input, write, read) = match (input, write, read) {
        (None, None, None) => (
            prev.prompt_tokens
                .saturating_sub(prev.cached_tokens.saturating_add(prev.cache_write_tokens)),
            prev.cache_write_tokens,
            prev.cached_tokens,
        ),
        (i, w, r) => (i.unwrap_or(0), w.unwrap_or(0), r.unwrap_or(0)),
    };
    Some(Usage {
        prompt_tokens: input.saturating_add(write).saturating_add(read),
        completion_tokens: u.output_tokens.as_u64().unwrap_or(prev.completion_tokens),
        cached_tokens: read,
        cache_write_tokens: write,
    })
}

pub fn decode_response(body: &[u8], model: &str) -> Decoded {
    let mut content = Generated::default();
    let Some(v) = lenient::document::<MessageView>(body) else {
        return Decoded {
            body: None,
            usage: None,
            content,
        };
    };
    let mut text = String::new();
    let mut calls = Vec::new();
    for block in lenient::items(&v.content).flatten() {
        match block.kind.as_str() {
            Some("text") => text.push_str(block.text.as_str().unwrap_or("")),
            Some("tool_use") => calls.push(json!({
                "id": block.id.value(),
                "type": "function",
                "function": {
                    "name": block.name.value(),
                    "arguments": block.input.to_value().map_or_else(|| "{}".into(), |i| i.to_string()),
                },
            })),
            _ => {}
        }
    }
    content.push(&text);
    let usage = usage(&v.usage, None);
    let mut meta = chunk::Meta::new(v.model.as_str().unwrap_or(model));
    if let Some(id) = v.id.as_str() {
        meta.id = id.to_string();
    }
    let finish = finish_reason(v.stop_reason.as_str());
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
    content_block: Option<SignalBlock<'a>>,
    #[serde(default, borrow)]
    delta: Option<SignalBlock<'a>>,
}

#[derive(serde::Deserialize)]
struct SignalBlock<'a> {
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
    let block_kind = |b: &Option<SignalBlock<'a>>| b.as_ref().and_then(|b| b.kind.clone());
    let has_text = |b: &Option<SignalBlock<'_>>| {
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

/// One event of Anthropic's stream, as far as the translation reads it.
#[derive(Default, Deserialize)]
struct EventView<'a> {
    #[serde(default, rename = "type", borrow)]
    kind: Leaf<'a>,
    #[serde(default, borrow)]
    message: Lenient<MessageView<'a>>,
    #[serde(default, borrow)]
    index: Leaf<'a>,
    #[serde(default, borrow)]
    content_block: Lenient<BlockView<'a>>,
    #[serde(default, borrow)]
    delta: Lenient<DeltaView<'a>>,
    #[serde(default, borrow)]
    usage: Lenient<UsageView<'a>>,
    #[serde(default, borrow)]
    error: Lenient<ErrorView<'a>>,
}

#[derive(Default, Deserialize)]
struct DeltaView<'a> {
    #[serde(default, rename = "type", borrow)]
    kind: Leaf<'a>,
    #[serde(default, borrow)]
    text: Leaf<'a>,
    #[serde(default, borrow)]
    partial_json: Leaf<'a>,
    #[serde(default, borrow)]
    stop_reason: Leaf<'a>,
}

#[derive(Default, Deserialize)]
struct ErrorView<'a> {
    #[serde(default, borrow)]
    message: Leaf<'a>,
}

pub fn decode_event(state: &mut StreamState, event: &Event) -> Vec<Bytes> {
    let mut out = Vec::new();
    let Some(v) = event
        .data
        .as_deref()
        .and_then(|d| lenient::document::<EventView>(d.as_bytes()))
    else {
        return out;
    };
    let kind = v.kind.as_str().or(event.event.as_deref()).unwrap_or("");
    let index = v.index.as_u64().unwrap_or(0);
    match kind {
        "message_start" => {
            if let Some(msg) = v.message.get() {
                if let Some(id) = msg.id.as_str() {
                    state.meta.id = id.to_string();
                }
                if let Some(m) = msg.model.as_str() {
                    state.meta.model = m.to_string();
                }
                if let Some(u) = usage(&msg.usage, state.usage) {
                    state.usage = Some(u);
                }
            }
            start(state, &mut out);
        }
        "content_block_start" => {
            start(state, &mut out);
            let Some(block) = v.content_block.get() else {
                return out;
            };
            match block.kind.as_str() {
                Some("tool_use") => {
                    let n = state.tool_calls;
                    state.tool_calls += 1;
                    state.saw_tool_call = true;
                    state.tool_blocks.push((index, n));
                    out.push(chunk::delta(
                        &state.meta,
                        json!({"tool_calls": [{"index": n, "id": block.id.value(), "type": "function",
                                               "function": {"name": block.name.value(), "arguments": ""}}]}),
                        None,
                    ));
                }
                Some("text") => {
                    if let Some(t) = block.text.as_str().filter(|t| !t.is_empty()) {
                        state.content.push(t);
                        out.push(chunk::delta(&state.meta, json!({"content": t}), None));
                    }
                }
                _ => {}
            }
        }
        "content_block_delta" => {
            start(state, &mut out);
            let Some(delta) = v.delta.get() else {
                return out;
            };
            match delta.kind.as_str() {
                Some("text_delta") => {
                    let t = delta.text.as_str().unwrap_or("");
                    state.content.push(t);
                    out.push(chunk::delta(&state.meta, json!({"content": t}), None));
                }
                Some("input_json_delta") => {
                    let part = delta.partial_json.as_str().unwrap_or("");
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
            if let Some(u) = usage(&v.usage, state.usage) {
                state.usage = Some(u);
            }
            let reason = v.delta.get().and_then(|d| d.stop_reason.as_str());
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
            let msg = v
                .error
                .get()
                .and_then(|e| e.message.as_str())
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

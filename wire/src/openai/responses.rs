//! The OpenAI Responses API as a front door. A request (with the conversation of its
//! `previous_response_id`, when stored) is decoded into the OpenAI chat shape the provider
//! adapters take, and the answer is encoded back into a Response object or the Responses
//! event sequence, every event numbered; OpenAI's own Responses stream, passed through, is
//! read for its usage and for storing ([`Reader`]). Pure transforms: the door around the
//! pipeline and the storage are the gateway's.

use std::borrow::Cow;
use std::collections::BTreeMap;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};

use super::{ChunkIn, CompletionIn, MessageIn};
use crate::lenient::{self, Leaf, Lenient, List, Raw};
use crate::messages::{chat_request, Typed};
use crate::sse::Event;
use crate::{unsupported, Signal, StreamState, Unsupported, Usage};

fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::now_v7().simple())
}

/// A new response id.
pub fn response_id() -> String {
    new_id("resp")
}

/// The request's own input as Responses items, each with an id (what
/// `GET /v1/responses/{id}/input_items` lists).
pub fn input_items(request: &Value) -> Vec<Value> {
    match request.get("input") {
        Some(Value::String(text)) => vec![json!({
            "id": new_id("msg"), "type": "message", "role": "user", "status": "completed",
            "content": [{"type": "input_text", "text": text}]})],
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| {
                let mut item = item.clone();
                if let Some(obj) = item.as_object_mut() {
                    if !obj.contains_key("type") {
                        obj.insert("type".into(), json!("message"));
                    }
                    if !obj.contains_key("id") {
                        obj.insert("id".into(), json!(new_id("item")));
                    }
                    if let Some(Value::String(text)) = obj.get("content").cloned() {
                        let part = if obj.get("role").and_then(Value::as_str) == Some("assistant") {
                            "output_text"
                        } else {
                            "input_text"
                        };
                        obj.insert("content".into(), json!([{"type": part, "text": text}]));
                    }
                }
                item
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// A Responses request as the conversion reads it (typed, lenient: a field of the wrong
/// type reads as missing, as `Value` accessors read it).
#[derive(Default, Deserialize)]
pub struct ResponsesRequest<'a> {
    #[serde(default, borrow)]
    model: Raw<'a>,
    #[serde(default, borrow)]
    instructions: Leaf<'a>,
    #[serde(default, borrow)]
    input: Raw<'a>,
    #[serde(default, borrow)]
    max_output_tokens: Raw<'a>,
    #[serde(default, borrow)]
    temperature: Raw<'a>,
    #[serde(default, borrow)]
    top_p: Raw<'a>,
    #[serde(default, borrow)]
    parallel_tool_calls: Raw<'a>,
    #[serde(default, borrow)]
    user: Raw<'a>,
    #[serde(default, borrow)]
    reasoning: Lenient<Reasoning<'a>>,
    #[serde(default, borrow)]
    text: Lenient<TextOptions<'a>>,
    #[serde(default, borrow)]
    tools: List<ToolIn<'a>>,
    #[serde(default, borrow)]
    tool_choice: Raw<'a>,
    #[serde(default, borrow)]
    stream: Leaf<'a>,
}

#[derive(Default, Deserialize)]
struct Reasoning<'a> {
    #[serde(default, borrow)]
    effort: Raw<'a>,
}

#[derive(Default, Deserialize)]
struct TextOptions<'a> {
    #[serde(default, borrow)]
    format: Lenient<Format<'a>>,
}

#[derive(Default, Deserialize)]
struct Format<'a> {
    #[serde(default, rename = "type", borrow)]
    kind: Leaf<'a>,
    #[serde(default, borrow)]
    name: Raw<'a>,
    #[serde(default, borrow)]
    schema: Raw<'a>,
    #[serde(default, borrow)]
    strict: Raw<'a>,
}

/// A tool, or a `tool_choice` object.
#[derive(Default, Deserialize)]
struct ToolIn<'a> {
    #[serde(default, rename = "type", borrow)]
    kind: Leaf<'a>,
    #[serde(default, borrow)]
    name: Raw<'a>,
    #[serde(default, borrow)]
    description: Raw<'a>,
    #[serde(default, borrow)]
    parameters: Raw<'a>,
}

/// An input item.
#[derive(Default, Deserialize)]
struct Item<'a> {
    #[serde(default, rename = "type", borrow)]
    kind: Leaf<'a>,
    #[serde(default, borrow)]
    role: Leaf<'a>,
    #[serde(default, borrow)]
    content: Raw<'a>,
    #[serde(default, borrow)]
    call_id: Raw<'a>,
    #[serde(default, borrow)]
    name: Raw<'a>,
    #[serde(default, borrow)]
    arguments: Leaf<'a>,
    #[serde(default, borrow)]
    output: Raw<'a>,
}

/// A content part of an input message.
#[derive(Default, Deserialize)]
struct PartIn<'a> {
    #[serde(default, rename = "type", borrow)]
    kind: Leaf<'a>,
    #[serde(default, borrow)]
    text: Leaf<'a>,
    #[serde(default, borrow)]
    image_url: Leaf<'a>,
    #[serde(default, borrow)]
    detail: Raw<'a>,
    #[serde(default, borrow)]
    refusal: Leaf<'a>,
}

impl<'a> ResponsesRequest<'a> {
    /// Reads a request's bytes; a body that is JSON but not an object reads as empty.
    pub fn read(raw: &'a [u8]) -> Result<Self, Unsupported> {
        lenient::document(raw).ok_or_else(|| unsupported("the request is not JSON"))
    }
}

/// A message's content as chat content: a string, or parts when it has images.
fn chat_content(content: &Raw<'_>) -> Result<Value, Unsupported> {
    let Some(raw) = content.0 else {
        return Ok(json!(""));
    };
    let text = raw.get();
    let parts: Vec<Lenient<PartIn>> = match text.as_bytes().first() {
        Some(b'"') => {
            return lenient::parse::<Leaf>(text)
                .and_then(Leaf::into_string)
                .map(Value::String)
                .ok_or_else(|| unsupported("message `content` must be a string or parts"))
        }
        Some(b'n') => return Ok(json!("")),
        Some(b'[') => lenient::parse(text)
            .ok_or_else(|| unsupported("message `content` must be a string or parts"))?,
        _ => return Err(unsupported("message `content` must be a string or parts")),
    };
    let mut out = Vec::new();
    let none = PartIn::default();
    for p in &parts {
        let p = p.get().unwrap_or(&none);
        match p.kind.as_str().unwrap_or("") {
            "input_text" | "output_text" | "text" => out.push(json!({
                "type": "text",
                "text": p.text.as_str().unwrap_or("")
            })),
            "input_image" => {
                let Some(url) = p.image_url.as_str() else {
                    return Err(unsupported(
                        "images need an `image_url` (file ids are not supported)",
                    ));
                };
                let mut image = json!({"url": url});
                if let Some(detail) = p.detail.to_value() {
                    image["detail"] = detail;
                }
                out.push(json!({"type": "image_url", "image_url": image}));
            }
            "refusal" => out.push(json!({
                "type": "text",
                "text": p.refusal.as_str().unwrap_or("")
            })),
            other => {
                return Err(unsupported(format!(
                    "content parts of type `{other}` are not supported for this provider"
                )))
            }
        }
    }
    if out.iter().all(|p| p["type"] == "text") {
        return Ok(json!(out
            .iter()
            .filter_map(|p| p["text"].as_str())
            .collect::<Vec<_>>()
            .join("")));
    }
    Ok(Value::Array(out))
}

/// Responses input items as chat messages (consecutive function calls join one
/// assistant message).
fn items_to_messages(items: &[Lenient<Item<'_>>]) -> Result<Vec<Value>, Unsupported> {
    let mut out: Vec<Value> = Vec::new();
    let none = Item::default();
    for item in items {
        let item = item.get().unwrap_or(&none);
        match item.kind.as_str().unwrap_or("message") {
            "message" => {
                let role = match item.role.as_str() {
                    Some(r @ ("user" | "assistant" | "system")) => r,
                    Some("developer") => "system",
                    Some(other) => return Err(unsupported(format!("unknown role `{other}`"))),
                    None => return Err(unsupported("every message needs a `role`")),
                };
                out.push(json!({"role": role, "content": chat_content(&item.content)?}));
            }
            "function_call" => {
                let call = json!({
                    "id": item.call_id.value(),
                    "type": "function",
                    "function": {
                        "name": item.name.value(),
                        "arguments": item.arguments.as_str().unwrap_or("{}"),
                    }
                });
                let joins = out.last().is_some_and(|m| {
                    m["role"] == "assistant"
                        && m.as_object().is_some_and(|o| o.contains_key("tool_calls"))
                        && m["content"].is_null()
                });
                match out.last_mut() {
                    Some(last) if joins => {
                        if let Some(calls) = last["tool_calls"].as_array_mut() {
                            calls.push(call);
                        }
                    }
                    _ => out
                        .push(json!({"role": "assistant", "content": null, "tool_calls": [call]})),
                }
            }
            "function_call_output" => {
                let output = match item.output.to_value() {
                    Some(Value::String(s)) => s,
                    Some(other) => other.to_string(),
                    None => String::new(),
                };
                out.push(json!({
                    "role": "tool",
                    "tool_call_id": item.call_id.value(),
                    "content": output,
                }));
            }
            // Reasoning items only mean something to the provider that made them.
            "reasoning" => {}
            other => {
                return Err(unsupported(format!(
                    "input items of type `{other}` are not supported for this provider"
                )))
            }
        }
    }
    Ok(out)
}

/// The request's own `input` as chat messages.
pub fn input_messages(request: &ResponsesRequest<'_>) -> Result<Vec<Value>, Unsupported> {
    let refused = || unsupported("`input` must be a string or an array of items");
    let text = request.input.0.ok_or_else(refused)?.get();
    match text.as_bytes().first() {
        Some(b'"') => {
            let text = lenient::parse::<Leaf>(text)
                .and_then(Leaf::into_string)
                .ok_or_else(refused)?;
            Ok(vec![json!({"role": "user", "content": text})])
        }
        Some(b'[') => {
            let items: Vec<Lenient<Item>> = lenient::parse(text).ok_or_else(refused)?;
            items_to_messages(&items)
        }
        _ => Err(refused()),
    }
}

/// A Responses request (its bytes) as an OpenAI chat request. `history` is the stored
/// conversation of its `previous_response_id` (chat messages), when it names one.
pub fn to_chat(request: &[u8], history: &[Value]) -> Result<Value, Unsupported> {
    let request = ResponsesRequest::read(request)?;
    chat_from(&request, history, input_messages(&request)?)
}

/// [`to_chat`] with the request's input already converted ([`input_messages`]).
pub fn chat_from(
    request: &ResponsesRequest<'_>,
    history: &[Value],
    input: Vec<Value>,
) -> Result<Value, Unsupported> {
    let mut messages: Vec<Value> = Vec::new();
    if let Some(instructions) = request.instructions.as_str() {
        messages.push(json!({"role": "system", "content": instructions}));
    }
    // The previous turn's instructions do not carry over (as with OpenAI).
    messages.extend(history.iter().filter(|m| m["role"] != "system").cloned());
    messages.extend(input);
    let mut out = chat_request(
        request.model.value(),
        messages,
        [
            ("max_tokens", &request.max_output_tokens),
            ("temperature", &request.temperature),
            ("top_p", &request.top_p),
            ("parallel_tool_calls", &request.parallel_tool_calls),
            ("user", &request.user),
        ],
    );
    if let Some(effort) = request
        .reasoning
        .get()
        .and_then(|r| r.effort.to_value())
        .filter(|e| !e.is_null())
    {
        out.insert("reasoning_effort".into(), effort);
    }
    if let Some(format) = request.text.get().map(|t| &t.format).filter(|f| f.present) {
        let none = Format::default();
        let format = format.get().unwrap_or(&none);
        match format.kind.as_str() {
            Some("json_schema") => {
                out.insert(
                    "response_format".into(),
                    json!({"type": "json_schema", "json_schema": {
                        "name": format.name.to_value().unwrap_or(json!("response")),
                        "schema": format.schema.to_value().unwrap_or(json!({})),
                        "strict": format.strict.value(),
                    }}),
                );
            }
            Some("json_object") => {
                out.insert("response_format".into(), json!({"type": "json_object"}));
            }
            _ => {}
        }
    }
    if let Some(tools) = request.tools.get() {
        let mut converted = Vec::new();
        let none = ToolIn::default();
        for t in tools {
            let t = t.get().unwrap_or(&none);
            match t.kind.as_str() {
                Some("function") => converted.push(json!({
                    "type": "function",
                    "function": {
                        "name": t.name.value(),
                        "description": t.description.to_value().unwrap_or(json!("")),
                        "parameters": t.parameters.to_value().unwrap_or_else(|| json!({"type": "object"})),
                    }
                })),
                other => {
                    return Err(unsupported(format!(
                        "the built-in tool `{}` is only available on openai providers",
                        other.unwrap_or("(none)")
                    )))
                }
            }
        }
        if !converted.is_empty() {
            out.insert("tools".into(), Value::Array(converted));
        }
    }
    if let Some(raw) = request.tool_choice.0 {
        let text = raw.get();
        let mapped = match text.as_bytes().first() {
            Some(b'"') => match lenient::parse::<Leaf>(text).and_then(Leaf::into_string) {
                Some(s) if ["auto", "none", "required"].contains(&s.as_str()) => json!(s),
                _ => return Err(unsupported("unsupported `tool_choice`")),
            },
            Some(b'{') => match lenient::parse::<ToolIn>(text) {
                Some(t) if t.kind.as_str() == Some("function") => {
                    json!({"type": "function", "function": {"name": t.name.value()}})
                }
                _ => return Err(unsupported("unsupported `tool_choice`")),
            },
            _ => return Err(unsupported("unsupported `tool_choice`")),
        };
        out.insert("tool_choice".into(), mapped);
    }
    if request.stream.as_bool() == Some(true) {
        out.insert("stream".into(), json!(true));
        out.insert("stream_options".into(), json!({"include_usage": true}));
    }
    Ok(Value::Object(out))
}

/// What a Response object repeats of its request.
#[derive(Debug, Clone)]
pub struct Echo {
    pub id: String,
    pub created_at: i64,
    pub model: String,
    pub fields: Map<String, Value>,
}

impl Echo {
    /// What the response repeats of `request` (its bytes).
    pub fn new(id: String, request: &[u8], model: &str) -> Self {
        let given: Lenient<BTreeMap<Cow<'_, str>, &RawValue>> =
            serde_json::from_slice(request).unwrap_or_default();
        let given = given.into_inner().unwrap_or_default();
        let mut fields = Map::new();
        for (k, default) in [
            ("instructions", Value::Null),
            ("max_output_tokens", Value::Null),
            ("temperature", json!(1.0)),
            ("top_p", json!(1.0)),
            ("tools", json!([])),
            ("tool_choice", json!("auto")),
            ("parallel_tool_calls", json!(true)),
            ("previous_response_id", Value::Null),
            ("store", json!(true)),
            ("metadata", json!({})),
            ("text", json!({"format": {"type": "text"}})),
            ("reasoning", Value::Null),
            ("user", Value::Null),
        ] {
            let v = Raw(given.get(k).copied())
                .to_value()
                .filter(|v| !v.is_null())
                .unwrap_or(default);
            fields.insert(k.into(), v);
        }
        Self {
            id,
            created_at: time::OffsetDateTime::now_utc().unix_timestamp(),
            model: model.to_string(),
            fields,
        }
    }

    /// The Response object with `status`, `output` and `usage`.
    pub fn response(&self, status: &str, output: Vec<Value>, usage: Option<&Usage>) -> Value {
        let mut v = Map::new();
        v.insert("id".into(), json!(self.id));
        v.insert("object".into(), json!("response"));
        v.insert("created_at".into(), json!(self.created_at));
        v.insert("status".into(), json!(status));
        v.insert("model".into(), json!(self.model));
        v.insert("output".into(), Value::Array(output));
        v.insert("error".into(), Value::Null);
        v.insert(
            "incomplete_details".into(),
            if status == "incomplete" {
                json!({"reason": "max_output_tokens"})
            } else {
                Value::Null
            },
        );
        v.insert("usage".into(), usage.map_or(Value::Null, usage_json));
        for (k, val) in &self.fields {
            v.insert(k.clone(), val.clone());
        }
        Value::Object(v)
    }
}

fn usage_json(u: &Usage) -> Value {
    json!({
        "input_tokens": u.prompt_tokens,
        "input_tokens_details": {"cached_tokens": u.cached_tokens},
        "output_tokens": u.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": u.prompt_tokens.saturating_add(u.completion_tokens),
    })
}

fn message_item(id: &str, text: &str, status: &str) -> Value {
    json!({"type": "message", "id": id, "status": status, "role": "assistant",
           "content": [{"type": "output_text", "text": text, "annotations": []}]})
}

fn call_item(id: &str, call_id: &Value, name: &Value, arguments: &str, status: &str) -> Value {
    json!({"type": "function_call", "id": id, "call_id": call_id, "name": name,
           "arguments": arguments, "status": status})
}

fn status_for(finish: Option<&str>) -> &'static str {
    match finish {
        Some("length") => "incomplete",
        _ => "completed",
    }
}

/// A whole chat completion (its bytes) as a Response object, and the assistant's chat
/// message (for the stored conversation).
pub fn from_completion(completion: &[u8], echo: &Echo, usage: Option<&Usage>) -> (Value, Value) {
    let completion = CompletionIn::read(completion);
    let message = completion.message();
    let mut output = Vec::new();
    if let Some(text) = message.and_then(MessageIn::text).filter(|t| !t.is_empty()) {
        output.push(message_item(&new_id("msg"), &text, "completed"));
    }
    for call in message.map(MessageIn::tool_calls).unwrap_or_default() {
        let f = call.function();
        output.push(call_item(
            &new_id("fc"),
            &call.id.value(),
            &f.name.value(),
            f.arguments.as_str().unwrap_or("{}"),
            "completed",
        ));
    }
    let response = echo.response(status_for(completion.finish_reason()), output, usage);
    let assistant = assistant_message(
        message.map_or(Value::Null, |m| m.content.value()),
        message.and_then(|m| m.tool_calls.to_value()),
    );
    (response, assistant)
}

/// The assistant's chat message as the conversation keeps it: its content, and its tool
/// calls when it has some.
fn assistant_message(content: Value, tool_calls: Option<Value>) -> Value {
    let mut m = json!({"role": "assistant", "content": content});
    if let Some(calls) = tool_calls.filter(|c| c.as_array().is_some_and(|a| !a.is_empty())) {
        m["tool_calls"] = calls;
    }
    m
}

/// What one event of OpenAI's own Responses stream (passed through) means for the hold:
/// the `response.created` / `in_progress` / item-added preamble is held; text, a function
/// call, a refusal or the end is content; `error` / `response.failed` is an error.
pub fn upstream_signal(event: &Event) -> Signal {
    let Some(data) = event.data.as_deref() else {
        return Signal::Preamble;
    };
    let Some(v) = lenient::document::<EventIn>(data.as_bytes()) else {
        return Signal::Content;
    };
    let item = v.item.get().and_then(|i| i.kind.as_str());
    match v.kind.as_str().or(event.event.as_deref()).unwrap_or("") {
        "response.created" | "response.in_progress" | "response.content_part.added" => {
            Signal::Preamble
        }
        "response.output_item.added" if item == Some("message") => Signal::Preamble,
        "response.output_item.added" if item == Some("reasoning") => Signal::Preamble,
        t if t.starts_with("response.reasoning") => Signal::Preamble,
        "error" | "response.failed" => Signal::Error,
        _ => Signal::Content,
    }
}

/// One event of OpenAI's own Responses stream, as the gateway reads it.
#[derive(Default, Deserialize)]
struct EventIn<'a> {
    #[serde(default, rename = "type", borrow)]
    kind: Leaf<'a>,
    #[serde(default, borrow)]
    sequence_number: Leaf<'a>,
    #[serde(default, borrow)]
    item: Lenient<Typed<'a>>,
    #[serde(default, borrow)]
    response: Raw<'a>,
    #[serde(default, borrow)]
    delta: Leaf<'a>,
}

/// Usage of a Response object (OpenAI's `input_tokens` include the cached ones).
pub fn usage_of(response: &Value) -> Option<Usage> {
    let u = response.get("usage").filter(|u| u.is_object())?;
    let n = |v: &Value| v.as_u64().unwrap_or(0);
    Some(Usage {
        prompt_tokens: n(&u["input_tokens"]),
        completion_tokens: n(&u["output_tokens"]),
        cached_tokens: n(&u["input_tokens_details"]["cached_tokens"]),
        cache_write_tokens: 0,
    })
}

/// The assistant's chat message (for the stored conversation) of a Response's output.
pub fn assistant_from_output(response: &Value) -> Value {
    let items = response["output"].as_array().cloned().unwrap_or_default();
    let text: String = items
        .iter()
        .filter(|i| i["type"] == "message")
        .flat_map(|i| i["content"].as_array().cloned().unwrap_or_default())
        .filter_map(|c| c["text"].as_str().map(str::to_string))
        .collect();
    let calls: Vec<Value> = items
        .iter()
        .filter(|i| i["type"] == "function_call")
        .map(|i| json!({"id": i["call_id"], "type": "function", "function": {"name": i["name"], "arguments": i["arguments"]}}))
        .collect();
    let text = (!text.is_empty()).then_some(text);
    assistant_message(json!(text), Some(Value::Array(calls)))
}

/// Reads OpenAI's own Responses stream as it is passed through: its usage, its end, and
/// the final Response object (for storing).
#[derive(Debug, Default)]
pub struct Reader {
    /// The final Response object, once `response.completed` (or `.incomplete`) passed.
    pub last: Option<Value>,
    /// The last `sequence_number` seen, to number an error event after it.
    sequence: u64,
}

impl Reader {
    /// Reads one event into the stream's state.
    pub fn read(&mut self, state: &mut StreamState, event: &Event) {
        let Some(v) = event
            .data
            .as_deref()
            .and_then(|d| lenient::document::<EventIn>(d.as_bytes()))
        else {
            return;
        };
        if let Some(n) = v.sequence_number.as_u64() {
            self.sequence = n;
        }
        match v.kind.as_str().unwrap_or("") {
            "response.completed" | "response.incomplete" => {
                let response = v.response.value();
                state.usage = usage_of(&response);
                state.finished = true;
                self.last = Some(response);
            }
            "response.failed" | "error" => state.errored = true,
            "response.output_text.delta" => {
                if let Some(d) = v.delta.as_str() {
                    state.content.push(d);
                }
            }
            _ => {}
        }
    }

    /// The `error` event that ends a broken stream, numbered after the last event.
    pub fn error_event(&self, message: &str, kind: &str) -> Bytes {
        let event = json!({"type": "error", "code": kind, "message": message,
                           "param": null, "sequence_number": self.sequence + 1});
        Bytes::from(format!("event: error\ndata: {event}\n\n"))
    }
}

/// A tool call being streamed.
#[derive(Debug)]
struct StreamCall {
    id: String,
    call_id: Value,
    name: Value,
    arguments: String,
    output_index: usize,
}

/// Most text and arguments one encoded answer keeps (the Responses events repeat the
/// whole text at the end): past it the stream fails rather than grow without bound.
pub const MAX_KEPT_OUTPUT: usize = 16 * 1024 * 1024;

/// Encodes an OpenAI chat stream as the Responses event sequence.
#[derive(Debug)]
pub struct StreamEncoder {
    /// Bytes of text and arguments kept so far.
    kept: usize,
    echo: Echo,
    seq: u64,
    started: bool,
    text: Option<(String, String, usize)>,
    calls: Vec<(u64, StreamCall)>,
    output: Vec<Value>,
    next_index: usize,
    finish: Option<String>,
    usage: Option<Usage>,
    done: bool,
    /// The provider reported an error (already passed on as `response.failed`).
    pub errored: bool,
}

impl StreamEncoder {
    pub fn new(echo: Echo) -> Self {
        Self {
            kept: 0,
            echo,
            seq: 0,
            started: false,
            text: None,
            calls: Vec::new(),
            output: Vec::new(),
            next_index: 0,
            finish: None,
            usage: None,
            done: false,
            errored: false,
        }
    }

    fn event(&mut self, kind: &str, mut data: Value) -> Bytes {
        data["type"] = json!(kind);
        data["sequence_number"] = json!(self.seq);
        self.seq += 1;
        Bytes::from(format!("event: {kind}\ndata: {data}\n\n"))
    }

    fn start(&mut self, out: &mut Vec<Bytes>) {
        if self.started {
            return;
        }
        self.started = true;
        let response = self.echo.response("in_progress", Vec::new(), None);
        out.push(self.event("response.created", json!({"response": response})));
        let response = self.echo.response("in_progress", Vec::new(), None);
        out.push(self.event("response.in_progress", json!({"response": response})));
    }

    fn close_text(&mut self, out: &mut Vec<Bytes>) {
        let Some((id, text, index)) = self.text.take() else {
            return;
        };
        let part = json!({"type": "output_text", "text": text, "annotations": []});
        let e = self.event(
            "response.output_text.done",
            json!({"item_id": id, "output_index": index, "content_index": 0, "text": text}),
        );
        out.push(e);
        let e = self.event(
            "response.content_part.done",
            json!({"item_id": id, "output_index": index, "content_index": 0, "part": part}),
        );
        out.push(e);
        let item = message_item(&id, &text, "completed");
        let e = self.event(
            "response.output_item.done",
            json!({"output_index": index, "item": item}),
        );
        out.push(e);
        self.output.push(item);
    }

    fn close_calls(&mut self, out: &mut Vec<Bytes>) {
        for (_, call) in std::mem::take(&mut self.calls) {
            let e = self.event("response.function_call_arguments.done", json!({
                "item_id": call.id, "output_index": call.output_index, "arguments": call.arguments}));
            out.push(e);
            let item = call_item(
                &call.id,
                &call.call_id,
                &call.name,
                &call.arguments,
                "completed",
            );
            let e = self.event(
                "response.output_item.done",
                json!({"output_index": call.output_index, "item": item}),
            );
            out.push(e);
            self.output.push(item);
        }
    }

    /// Encodes one OpenAI-format event (`data: {chunk}` or `[DONE]`).
    pub fn push(&mut self, event: &Event) -> Vec<Bytes> {
        let mut out = Vec::new();
        if self.errored {
            return out;
        }
        let Some(data) = event.data.as_deref() else {
            return out;
        };
        if data.trim() == "[DONE]" {
            return out;
        }
        let Some(chunk) = ChunkIn::read(data) else {
            return out;
        };
        if let Some(message) = chunk.error() {
            self.errored = true;
            out.extend(self.failed(message));
            return out;
        }
        self.start(&mut out);
        if let Some(u) = chunk.usage() {
            self.usage = Some(u);
        }
        self.kept = self.kept.saturating_add(data.len());
        if self.kept > MAX_KEPT_OUTPUT {
            self.errored = true;
            out.extend(
                self.failed("The answer is longer than the gateway keeps for one response."),
            );
            return out;
        }
        for choice in chunk.choices() {
            if let Some(text) = choice.text().filter(|t| !t.is_empty()) {
                if self.text.is_none() {
                    let (id, index) = (new_id("msg"), self.next_index);
                    self.next_index += 1;
                    let item = json!({"type": "message", "id": id, "status": "in_progress", "role": "assistant", "content": []});
                    let e = self.event(
                        "response.output_item.added",
                        json!({"output_index": index, "item": item}),
                    );
                    out.push(e);
                    let part = json!({"type": "output_text", "text": "", "annotations": []});
                    let e = self.event("response.content_part.added", json!({"item_id": id, "output_index": index, "content_index": 0, "part": part}));
                    out.push(e);
                    self.text = Some((id, String::new(), index));
                }
                let (id, index) = match &mut self.text {
                    Some((id, acc, index)) => {
                        acc.push_str(text);
                        (id.clone(), *index)
                    }
                    None => continue,
                };
                let e = self.event("response.output_text.delta", json!({"item_id": id, "output_index": index, "content_index": 0, "delta": text}));
                out.push(e);
            }
            for call in choice.tool_calls() {
                let i = call.index.as_u64().unwrap_or(0);
                let f = call.function();
                if !self.calls.iter().any(|(k, _)| *k == i) {
                    self.close_text(&mut out);
                    let c = StreamCall {
                        id: new_id("fc"),
                        call_id: call.id.value(),
                        name: f.name.value(),
                        arguments: String::new(),
                        output_index: self.next_index,
                    };
                    self.next_index += 1;
                    let item = call_item(&c.id, &c.call_id, &c.name, "", "in_progress");
                    let e = self.event(
                        "response.output_item.added",
                        json!({"output_index": c.output_index, "item": item}),
                    );
                    out.push(e);
                    self.calls.push((i, c));
                }
                if let Some(args) = f.arguments.as_str().filter(|a| !a.is_empty()) {
                    let Some((_, c)) = self.calls.iter_mut().find(|(k, _)| *k == i) else {
                        continue;
                    };
                    c.arguments.push_str(args);
                    let (id, index) = (c.id.clone(), c.output_index);
                    let e = self.event(
                        "response.function_call_arguments.delta",
                        json!({"item_id": id, "output_index": index, "delta": args}),
                    );
                    out.push(e);
                }
            }
            if let Some(finish) = choice.finish_reason.as_str() {
                self.finish = Some(finish.to_string());
            }
        }
        out
    }

    /// The events that end a stream that broke.
    pub fn failed(&mut self, message: &str) -> Vec<Bytes> {
        let mut response = self.echo.response(
            "failed",
            std::mem::take(&mut self.output),
            self.usage.as_ref(),
        );
        response["error"] = json!({"code": "server_error", "message": message});
        vec![self.event("response.failed", json!({"response": response}))]
    }

    /// What the Response object repeats of its request.
    pub fn echo(&self) -> &Echo {
        &self.echo
    }

    /// Whether the provider finished its answer (a finish reason was seen).
    pub fn finished(&self) -> bool {
        self.finish.is_some()
    }

    /// The completed Response and the assistant's chat message, once the stream ended
    /// properly; the events that close it are made by [`Self::close`].
    pub fn complete(&mut self) -> Option<(Vec<Bytes>, Value, Value)> {
        if self.done || self.errored || self.finish.is_none() {
            return None;
        }
        self.done = true;
        let mut out = Vec::new();
        self.start(&mut out);
        self.close_text(&mut out);
        self.close_calls(&mut out);
        let text: String = self
            .output
            .iter()
            .filter(|i| i["type"] == "message")
            .filter_map(|i| i["content"][0]["text"].as_str())
            .collect();
        let calls: Vec<Value> = self
            .output
            .iter()
            .filter(|i| i["type"] == "function_call")
            .map(|i| json!({"id": i["call_id"], "type": "function", "function": {"name": i["name"], "arguments": i["arguments"]}}))
            .collect();
        let text = (!text.is_empty()).then_some(text);
        let response = self.echo.response(
            status_for(self.finish.as_deref()),
            self.output.clone(),
            self.usage.as_ref(),
        );
        let message = assistant_message(json!(text), Some(Value::Array(calls)));
        Some((out, response, message))
    }

    /// The final event, for the response [`Self::complete`] gave.
    pub fn close(&mut self, response: &Value) -> Bytes {
        let kind = if response["status"] == "incomplete" {
            "response.incomplete"
        } else {
            "response.completed"
        };
        self.event(kind, json!({"response": response}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sse::Framer;

    #[test]
    fn request_to_chat() {
        let req = json!({
            "model": "gpt-4o", "instructions": "Be terse.", "max_output_tokens": 50,
            "text": {"format": {"type": "json_schema", "name": "w", "schema": {"type": "object"}}},
            "tools": [{"type": "function", "name": "get_weather", "parameters": {"type": "object"}}],
            "tool_choice": {"type": "function", "name": "get_weather"},
            "input": [
                {"role": "user", "content": [{"type": "input_text", "text": "Hi"},
                    {"type": "input_image", "image_url": "data:image/png;base64,AA"}]},
                {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": "{}"},
                {"type": "function_call", "call_id": "c2", "name": "get_weather", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "c1", "output": "Sunny"},
                {"type": "reasoning", "id": "rs_1", "summary": []}
            ]
        });
        let history = vec![
            json!({"role": "system", "content": "old"}),
            json!({"role": "user", "content": "Before"}),
        ];
        let chat = to_chat(req.to_string().as_bytes(), &history).unwrap();
        let m = chat["messages"].as_array().unwrap();
        assert_eq!(m[0], json!({"role": "system", "content": "Be terse."}));
        assert_eq!(m[1], json!({"role": "user", "content": "Before"}));
        assert_eq!(
            m[2]["content"][1]["image_url"]["url"],
            "data:image/png;base64,AA"
        );
        assert_eq!(m[3]["tool_calls"].as_array().unwrap().len(), 2);
        assert_eq!(
            m[4],
            json!({"role": "tool", "tool_call_id": "c1", "content": "Sunny"})
        );
        assert_eq!(m.len(), 5);
        assert_eq!(chat["max_tokens"], 50);
        assert_eq!(chat["response_format"]["json_schema"]["name"], "w");
        assert_eq!(chat["tool_choice"]["function"]["name"], "get_weather");
        let builtin =
            json!({"model": "m", "input": "x", "tools": [{"type": "web_search_preview"}]});
        assert!(to_chat(builtin.to_string().as_bytes(), &[])
            .unwrap_err()
            .0
            .contains("web_search_preview"));
        assert_eq!(
            input_items(&json!({"input": "hi"}))[0]["content"][0]["type"],
            "input_text"
        );
    }

    #[test]
    fn completion_to_response() {
        let echo = Echo::new("resp_1".into(), br#"{"model": "m", "store": false}"#, "m");
        let completion = json!({"choices": [{"message": {"content": "Hello", "tool_calls": [
            {"id": "call_1", "function": {"name": "f", "arguments": "{\"a\":1}"}}]}, "finish_reason": "tool_calls"}]});
        let usage = Usage {
            prompt_tokens: 5,
            completion_tokens: 2,
            ..Default::default()
        };
        let (r, message) = from_completion(completion.to_string().as_bytes(), &echo, Some(&usage));
        assert_eq!(r["object"], "response");
        assert_eq!(r["status"], "completed");
        assert_eq!(r["store"], false);
        assert_eq!(r["output"][0]["content"][0]["text"], "Hello");
        assert_eq!(r["output"][1]["call_id"], "call_1");
        assert_eq!(r["usage"]["total_tokens"], 7);
        assert_eq!(message["tool_calls"][0]["id"], "call_1");
    }

    #[test]
    fn an_endless_answer_fails_instead_of_growing() {
        let mut enc = StreamEncoder::new(Echo::new("resp_1".into(), b"{}", "m"));
        let piece = "x".repeat(64 * 1024);
        let chunk = format!(
            "data: {}\n\n",
            json!({"choices": [{"delta": {"content": piece}}]})
        );
        let mut failed = false;
        for _ in 0..(MAX_KEPT_OUTPUT / piece.len() + 2) {
            let out = enc.push(&Framer::new().push(chunk.as_bytes()).unwrap()[0]);
            if out
                .iter()
                .any(|e| String::from_utf8_lossy(e).contains("response.failed"))
            {
                failed = true;
                break;
            }
        }
        assert!(failed && enc.errored);
        assert!(enc.complete().is_none());
        assert!(enc
            .push(&Framer::new().push(chunk.as_bytes()).unwrap()[0])
            .is_empty());
    }

    #[test]
    fn stream_to_events() {
        let stream = concat!(
            "data: {\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n",
            "data: {\"choices\":[{\"delta\":{\"content\":\"Hel\"}}]}\n\n",
            "data: {\"choices\":[{\"delta\":{\"content\":\"lo\"}}]}\n\n",
            "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_1\",\"function\":{\"name\":\"f\",\"arguments\":\"{\\\"a\\\":\"}}]}}]}\n\n",
            "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"1}\"}}]}}]}\n\n",
            "data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\n",
            "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":7}}\n\n",
            "data: [DONE]\n\n",
        );
        let mut enc = StreamEncoder::new(Echo::new("resp_1".into(), b"{}", "m"));
        let mut out: Vec<Bytes> = Vec::new();
        for ev in Framer::new().push(stream.as_bytes()).unwrap() {
            out.extend(enc.push(&ev));
        }
        let (tail, response, message) = enc.complete().unwrap();
        out.extend(tail);
        out.push(enc.close(&response));
        let events: Vec<Value> = Framer::new()
            .push(&out.concat())
            .unwrap()
            .iter()
            .map(|e| serde_json::from_str(e.data.as_deref().unwrap()).unwrap())
            .collect();
        let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(
            kinds,
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.output_text.delta",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.output_item.added",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.done",
                "response.output_item.done",
                "response.completed",
            ]
        );
        for (i, e) in events.iter().enumerate() {
            assert_eq!(e["sequence_number"], i as u64);
        }
        let done = events.last().unwrap();
        assert_eq!(done["response"]["output"][0]["content"][0]["text"], "Hello");
        assert_eq!(done["response"]["output"][1]["arguments"], "{\"a\":1}");
        assert_eq!(done["response"]["usage"]["output_tokens"], 7);
        assert_eq!(message["content"], "Hello");
        assert_eq!(
            message["tool_calls"][0]["function"]["arguments"],
            "{\"a\":1}"
        );
    }
}

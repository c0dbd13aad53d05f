//! The Anthropic Messages API as a front door. To `anthropic` entries a request passes
//! through unchanged (full fidelity); to every other kind it is decoded into the OpenAI
//! chat shape the provider adapters take, and the answer — whole or streamed — is encoded
//! back into a Messages response or Anthropic's event sequence. Pure transforms: the door
//! around the pipeline is the gateway's.

use bytes::Bytes;
use serde_json::{json, Value};

use serde::Deserialize;

use crate::lenient::{self, Leaf, Lenient, List, Raw};
use crate::messages::chat_request;
use crate::openai::{ChunkIn, CompletionIn, MessageIn};
use crate::sse::Event;
use crate::tool_names::{Kind, ToolMap};
use crate::{unsupported, Unsupported, Usage};

/// `anthropic-version` sent upstream when the client sent none.
pub const DEFAULT_VERSION: &str = "2023-06-01";

/// A Messages request as the conversion reads it (typed, lenient: a field of the wrong
/// type reads as missing, as `Value` accessors read it).
#[derive(Default, Deserialize)]
struct MessagesRequest<'a> {
    #[serde(default, borrow)]
    model: Raw<'a>,
    #[serde(default, borrow)]
    system: Raw<'a>,
    #[serde(default, borrow)]
    messages: List<Message<'a>>,
    #[serde(default, borrow)]
    max_tokens: Raw<'a>,
    #[serde(default, borrow)]
    temperature: Raw<'a>,
    #[serde(default, borrow)]
    top_p: Raw<'a>,
    #[serde(default, borrow)]
    stop_sequences: Raw<'a>,
    #[serde(default, borrow)]
    metadata: Lenient<Metadata<'a>>,
    #[serde(default, borrow)]
    tools: List<ToolIn<'a>>,
    #[serde(default, borrow)]
    tool_choice: Lenient<ChoiceIn<'a>>,
    #[serde(default, borrow)]
    stream: Leaf<'a>,
}

#[derive(Default, Deserialize)]
struct Metadata<'a> {
    #[serde(default, borrow)]
    user_id: Leaf<'a>,
}

#[derive(Default, Deserialize)]
struct Message<'a> {
    #[serde(default, borrow)]
    role: Leaf<'a>,
    #[serde(default, borrow)]
    content: Raw<'a>,
}

/// A content block of a request message (or of the `system` field).
#[derive(Default, Deserialize)]
struct BlockIn<'a> {
    #[serde(default, rename = "type", borrow)]
    kind: Leaf<'a>,
    #[serde(default, borrow)]
    text: Leaf<'a>,
    #[serde(default, borrow)]
    source: Lenient<Source<'a>>,
    #[serde(default, borrow)]
    id: Leaf<'a>,
    #[serde(default, borrow)]
    name: Leaf<'a>,
    #[serde(default, borrow)]
    input: Raw<'a>,
    #[serde(default, borrow)]
    tool_use_id: Leaf<'a>,
    #[serde(default, borrow)]
    content: Raw<'a>,
}

#[derive(Default, Deserialize)]
struct Source<'a> {
    #[serde(default, rename = "type", borrow)]
    kind: Leaf<'a>,
    #[serde(default, borrow)]
    media_type: Leaf<'a>,
    #[serde(default, borrow)]
    data: Leaf<'a>,
    #[serde(default, borrow)]
    url: Leaf<'a>,
}

#[derive(Default, Deserialize)]
struct ToolIn<'a> {
    #[serde(default, rename = "type", borrow)]
    kind: Leaf<'a>,
    #[serde(default, borrow)]
    name: Leaf<'a>,
    #[serde(default, borrow)]
    description: Raw<'a>,
    #[serde(default, borrow)]
    input_schema: Raw<'a>,
}

#[derive(Default, Deserialize)]
struct ChoiceIn<'a> {
    #[serde(default, rename = "type", borrow)]
    kind: Leaf<'a>,
    #[serde(default, borrow)]
    name: Leaf<'a>,
    #[serde(default, borrow)]
    disable_parallel_tool_use: Leaf<'a>,
}

/// A field that is a string or an array of blocks, by its shape.
enum Blocks<'a> {
    Missing,
    Null,
    Text(String),
    List(Vec<Lenient<BlockIn<'a>>>),
    Other,
}

fn blocks<'a>(raw: &Raw<'a>) -> Blocks<'a> {
    let Some(raw) = raw.0 else {
        return Blocks::Missing;
    };
    let text = raw.get();
    match text.as_bytes().first() {
        Some(b'"') => lenient::parse::<Leaf>(text)
            .and_then(Leaf::into_string)
            .map_or(Blocks::Other, Blocks::Text),
        Some(b'[') => lenient::parse(text).map_or(Blocks::Other, Blocks::List),
        Some(b'n') => Blocks::Null,
        _ => Blocks::Other,
    }
}

static NO_BLOCK: BlockIn<'static> = BlockIn {
    kind: Leaf::Absent,
    text: Leaf::Absent,
    source: Lenient::absent(),
    id: Leaf::Absent,
    name: Leaf::Absent,
    input: Raw(None),
    tool_use_id: Leaf::Absent,
    content: Raw(None),
};

/// Each element of a block list (one that is not an object reads as an empty block).
fn each<'b, 'a>(list: &'b [Lenient<BlockIn<'a>>]) -> impl Iterator<Item = &'b BlockIn<'a>> {
    list.iter().map(|b| b.get().unwrap_or(&NO_BLOCK))
}

/// Text of a `system` field: a string, or text blocks joined.
fn system_text(system: &Raw<'_>) -> Result<String, Unsupported> {
    match blocks(system) {
        Blocks::Text(s) => Ok(s),
        Blocks::List(list) => {
            let mut out = Vec::new();
            for b in each(&list) {
                match b.kind.as_str() {
                    Some("text") => out.push(b.text.as_str().unwrap_or_default().to_string()),
                    other => {
                        return Err(unsupported(format!(
                            "system blocks of type {} are not supported for this provider",
                            other.unwrap_or("(none)")
                        )))
                    }
                }
            }
            Ok(out.join("\n"))
        }
        Blocks::Null | Blocks::Missing => Ok(String::new()),
        Blocks::Other => Err(unsupported("`system` must be a string or text blocks")),
    }
}

/// An image block as an OpenAI `image_url` part.
fn image_part(block: &BlockIn<'_>) -> Result<Value, Unsupported> {
    let none = Source::default();
    let source = block.source.get().unwrap_or(&none);
    let url = match source.kind.as_str() {
        Some("base64") => format!(
            "data:{};base64,{}",
            source.media_type.as_str().unwrap_or("image/png"),
            source.data.as_str().unwrap_or("")
        ),
        Some("url") => source.url.as_str().unwrap_or("").to_string(),
        _ => return Err(unsupported("image blocks need a base64 or url source")),
    };
    Ok(json!({"type": "image_url", "image_url": {"url": url}}))
}

/// The text of a content: a string, or its text blocks joined (a `tool_result` block's, a
/// system message's).
fn text_of(content: &Raw<'_>) -> String {
    match blocks(content) {
        Blocks::Text(s) => s,
        Blocks::List(list) => list
            .iter()
            .filter_map(|b| b.get().and_then(|b| b.text.as_str()))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// What a conversion dropped, for the log row.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Dropped {
    pub thinking: bool,
    /// Tools Anthropic runs itself (web search, web fetch, code execution), and their
    /// blocks in earlier turns.
    pub server_tools: bool,
}

impl Dropped {
    /// The log row's note, when something was dropped.
    pub fn note(&self) -> Option<String> {
        let mut what = Vec::new();
        if self.thinking {
            what.push("thinking blocks");
        }
        if self.server_tools {
            what.push("server tools");
        }
        (!what.is_empty()).then(|| format!("{} dropped in translation", what.join(", ")))
    }
}

/// Whether a tool type (or a block type) is one of the tools Anthropic runs itself: an
/// agent works without them (the model just cannot search or run code there).
fn server_tool(kind: &str) -> bool {
    ["web_search", "web_fetch", "code_execution"]
        .iter()
        .any(|t| kind.starts_with(t))
}

/// One Messages-API message as OpenAI chat messages (a user turn with tool results
/// becomes `tool` messages followed by the rest of the turn).
fn convert_message(
    m: &Message<'_>,
    tools: &ToolMap,
    dropped: &mut Dropped,
) -> Result<Vec<Value>, Unsupported> {
    let role = match m.role.as_str() {
        Some(r @ ("user" | "assistant")) => r,
        // Instructions within the conversation (Claude Code sends its environment so):
        // a system message where it stands, its text blocks joined.
        Some("system") => {
            return Ok(vec![
                json!({"role": "system", "content": text_of(&m.content)}),
            ])
        }
        Some(other) => return Err(unsupported(format!("unknown role `{other}`"))),
        None => return Err(unsupported("every message needs a `role`")),
    };
    let list = match blocks(&m.content) {
        Blocks::Text(s) => return Ok(vec![json!({"role": role, "content": s})]),
        Blocks::List(list) => list,
        _ => return Err(unsupported("message `content` must be a string or blocks")),
    };
    let mut out = Vec::new();
    let mut parts: Vec<Value> = Vec::new();
    let mut tool_calls: Vec<Value> = Vec::new();
    for b in each(&list) {
        match b.kind.as_str().unwrap_or("") {
            "text" => parts.push(json!({
                "type": "text",
                "text": b.text.as_str().unwrap_or("")
            })),
            "image" if role == "user" => parts.push(image_part(b)?),
            "tool_use" if role == "assistant" => {
                let input = b.input.to_value().unwrap_or_else(|| json!({}));
                tool_calls.push(json!({
                    "id": b.id.as_str().unwrap_or(""),
                    "type": "function",
                    "function": {
                        "name": tools.provider_name(None, b.name.as_str().unwrap_or(""), Kind::Function),
                        "arguments": input.to_string(),
                    }
                }));
            }
            "tool_result" if role == "user" => out.push(json!({
                "role": "tool",
                "tool_call_id": b.tool_use_id.as_str().unwrap_or(""),
                "content": text_of(&b.content),
            })),
            "thinking" | "redacted_thinking" => dropped.thinking = true,
            "server_tool_use" => dropped.server_tools = true,
            k if k.ends_with("_tool_result") && server_tool(k) => dropped.server_tools = true,
            other => {
                return Err(unsupported(format!(
                    "content blocks of type `{other}` are not supported for this provider"
                )))
            }
        }
    }
    let only_text = parts.iter().all(|p| p["type"] == "text");
    let content = if parts.is_empty() {
        Value::Null
    } else if only_text {
        Value::String(
            parts
                .iter()
                .filter_map(|p| p["text"].as_str())
                .collect::<Vec<_>>()
                .join(""),
        )
    } else {
        Value::Array(parts)
    };
    if role == "assistant" {
        let has_calls = !tool_calls.is_empty();
        let mut msg = json!({"role": "assistant", "content": content});
        if has_calls {
            msg["tool_calls"] = Value::Array(tool_calls);
        }
        if !msg["content"].is_null() || has_calls {
            out.push(msg);
        }
    } else if !content.is_null() {
        out.push(json!({"role": "user", "content": content}));
    }
    Ok(out)
}

/// A Messages request (its bytes) as an OpenAI chat request, and what the conversion
/// dropped.
pub fn to_chat(request: &[u8]) -> Result<(Value, Dropped), Unsupported> {
    let request: MessagesRequest =
        lenient::document(request).ok_or_else(|| unsupported("the request is not JSON"))?;
    let names = names(&request);
    let mut dropped = Dropped::default();
    let mut messages = Vec::new();
    if request.system.is_present() {
        let text = system_text(&request.system)?;
        if !text.is_empty() {
            messages.push(json!({"role": "system", "content": text}));
        }
    }
    let Some(turns) = request.messages.get() else {
        return Err(unsupported("`messages` must be an array"));
    };
    for m in turns {
        messages.extend(convert_message(
            m.get().unwrap_or(&NO_MESSAGE),
            &names,
            &mut dropped,
        )?);
    }
    let mut out = chat_request(
        request.model.value(),
        messages,
        [
            ("max_tokens", &request.max_tokens),
            ("temperature", &request.temperature),
            ("top_p", &request.top_p),
            ("stop", &request.stop_sequences),
        ],
    );
    if let Some(user) = request.metadata.get().and_then(|m| m.user_id.as_str()) {
        out.insert("user".into(), json!(user));
    }
    if let Some(tools) = request.tools.get() {
        let mut converted = Vec::new();
        for t in tools {
            let t = t.get().unwrap_or(&NO_TOOL);
            match t.kind.as_str() {
                None | Some("custom") => converted.push(json!({
                    "type": "function",
                    "function": {
                        "name": names.provider_name(None, t.name.as_str().unwrap_or(""), Kind::Function),
                        "description": t.description.to_value().unwrap_or(json!("")),
                        "parameters": t.input_schema.to_value().unwrap_or_else(|| json!({"type": "object"})),
                    }
                })),
                Some(kind) if server_tool(kind) => dropped.server_tools = true,
                Some(kind) => {
                    return Err(unsupported(format!(
                        "the tool `{kind}` is only available on anthropic providers"
                    )))
                }
            }
        }
        if !converted.is_empty() {
            out.insert("tools".into(), Value::Array(converted));
        }
    }
    if request.tool_choice.present {
        let choice = request.tool_choice.get().unwrap_or(&NO_CHOICE);
        let mapped = match choice.kind.as_str() {
            Some("auto") => json!("auto"),
            Some("any") => json!("required"),
            Some("none") => json!("none"),
            Some("tool") => {
                let name = choice.name.as_str().unwrap_or("");
                json!({"type": "function", "function": {
                    "name": names.provider_name(None, name, Kind::Function)}})
            }
            _ => return Err(unsupported("unknown `tool_choice`")),
        };
        out.insert("tool_choice".into(), mapped);
        if choice.disable_parallel_tool_use.as_bool() == Some(true) {
            out.insert("parallel_tool_calls".into(), json!(false));
        }
    }
    if request.stream.as_bool().unwrap_or(false) {
        out.insert("stream".into(), json!(true));
        out.insert("stream_options".into(), json!({"include_usage": true}));
    }
    Ok((Value::Object(out), dropped))
}

/// The names the request's tools get for the provider: their own, unless one breaks the
/// rules of OpenAI or Gemini (longer than 64 characters, say), which gets a valid name
/// that the answer maps back.
fn names(request: &MessagesRequest<'_>) -> ToolMap {
    let mut map = ToolMap::default();
    for t in request.tools.get().into_iter().flatten() {
        let t = t.get().unwrap_or(&NO_TOOL);
        if matches!(t.kind.as_str(), None | Some("custom")) {
            map.add_renamed(t.name.as_str().unwrap_or(""));
        }
    }
    map
}

/// The names a Messages request's (its bytes) tools get for the provider, and what each
/// stands for ([`StreamEncoder::with_tools`], [`from_completion`]).
pub fn tool_map(request: &[u8]) -> ToolMap {
    lenient::document::<MessagesRequest>(request)
        .map(|r| names(&r))
        .unwrap_or_default()
}

static NO_MESSAGE: Message<'static> = Message {
    role: Leaf::Absent,
    content: Raw(None),
};

static NO_TOOL: ToolIn<'static> = ToolIn {
    kind: Leaf::Absent,
    name: Leaf::Absent,
    description: Raw(None),
    input_schema: Raw(None),
};

static NO_CHOICE: ChoiceIn<'static> = ChoiceIn {
    kind: Leaf::Absent,
    name: Leaf::Absent,
    disable_parallel_tool_use: Leaf::Absent,
};

/// Anthropic's `stop_reason` for an OpenAI `finish_reason`.
pub fn stop_reason(finish: &str) -> &'static str {
    match finish {
        "length" => "max_tokens",
        "tool_calls" | "function_call" => "tool_use",
        "content_filter" => "refusal",
        _ => "end_turn",
    }
}

fn message_id() -> String {
    format!("msg_{}", uuid::Uuid::now_v7().simple())
}

fn usage_json(u: &Usage) -> Value {
    let cached = u.cached_tokens.min(u.prompt_tokens);
    let written = u.cache_write_tokens.min(u.prompt_tokens - cached);
    json!({
        "input_tokens": u.prompt_tokens - cached - written,
        "output_tokens": u.completion_tokens,
        "cache_read_input_tokens": cached,
        "cache_creation_input_tokens": written,
    })
}

/// A whole OpenAI `chat.completion` (its bytes) as a Messages response.
pub fn from_completion(
    completion: &[u8],
    model: &str,
    usage: Option<&Usage>,
    tools: &ToolMap,
) -> Value {
    let completion = CompletionIn::read(completion);
    let message = completion.message();
    let mut content = Vec::new();
    if let Some(text) = message.and_then(MessageIn::text) {
        if !text.is_empty() {
            content.push(json!({"type": "text", "text": text}));
        }
    }
    for call in message.map(MessageIn::tool_calls).unwrap_or_default() {
        let f = call.function();
        let args = f.arguments.as_str().unwrap_or("{}");
        let input: Value = serde_json::from_str(args).unwrap_or_else(|_| json!({}));
        content.push(json!({
            "type": "tool_use",
            "id": call.id.value(),
            "name": tools.resolve(f.name.value().as_str().unwrap_or("")).name,
            "input": input,
        }));
    }
    let finish = completion.finish_reason().unwrap_or("stop");
    json!({
        "id": message_id(),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason(finish),
        "stop_sequence": null,
        "usage": usage_json(&usage.copied().unwrap_or_default()),
    })
}

/// Anthropic's error `type` for an HTTP status.
pub fn error_type(status: u16) -> &'static str {
    match status {
        400 | 422 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        _ => "api_error",
    }
}

/// An error body in Anthropic's shape.
pub fn error_body(status: u16, message: &str) -> Bytes {
    Bytes::from(
        json!({"type": "error", "error": {"type": error_type(status), "message": message}})
            .to_string(),
    )
}

/// A provider's OpenAI-shaped error body in Anthropic's shape.
pub fn from_openai_error(status: u16, body: &[u8]) -> Bytes {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let message = v["error"]["message"]
        .as_str()
        .unwrap_or("The provider returned an error.");
    error_body(status, message)
}

/// An `error` event, which ends a broken stream (never followed by `message_stop`).
pub fn error_event(status: u16, message: &str) -> Bytes {
    sse(
        "error",
        &json!({"type": "error", "error": {"type": error_type(status), "message": message}}),
    )
}

fn sse(name: &str, data: &Value) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
}

/// The block open in an encoded stream.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Block {
    Text,
    Tool { openai_index: u64 },
}

/// Encodes an OpenAI chat stream (its events, in order) as Anthropic's event sequence:
/// `message_start`, `ping`, content blocks with `text_delta` / `input_json_delta`,
/// `message_delta` with the stop reason and usage, `message_stop`.
#[derive(Debug)]
pub struct StreamEncoder {
    model: String,
    /// What the names of the provider's tool calls stand for.
    tools: ToolMap,
    started: bool,
    open: Option<Block>,
    next_index: u64,
    stop: Option<&'static str>,
    usage: Option<Usage>,
    finished: bool,
    /// The provider reported an error (already passed on as an `error` event).
    pub errored: bool,
}

impl StreamEncoder {
    pub fn new(model: &str) -> Self {
        Self {
            model: model.to_string(),
            tools: ToolMap::default(),
            started: false,
            open: None,
            next_index: 0,
            stop: None,
            usage: None,
            finished: false,
            errored: false,
        }
    }

    /// The same, with the names the request's tools got ([`tool_map`]).
    pub fn with_tools(mut self, tools: ToolMap) -> Self {
        self.tools = tools;
        self
    }

    /// What the names of the provider's tool calls stand for.
    pub fn tools(&self) -> &ToolMap {
        &self.tools
    }

    fn start(&mut self, out: &mut Vec<Bytes>) {
        if self.started {
            return;
        }
        self.started = true;
        out.push(sse(
            "message_start",
            &json!({"type": "message_start", "message": {
                "id": message_id(), "type": "message", "role": "assistant", "model": self.model,
                "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": 0, "output_tokens": 0}}}),
        ));
        out.push(sse("ping", &json!({"type": "ping"})));
    }

    fn close_block(&mut self, out: &mut Vec<Bytes>) {
        if self.open.take().is_some() {
            out.push(sse(
                "content_block_stop",
                &json!({"type": "content_block_stop", "index": self.next_index - 1}),
            ));
        }
    }

    fn open_block(&mut self, block: Block, start: Value, out: &mut Vec<Bytes>) {
        self.close_block(out);
        out.push(sse(
            "content_block_start",
            &json!({"type": "content_block_start", "index": self.next_index, "content_block": start}),
        ));
        self.next_index += 1;
        self.open = Some(block);
    }

    fn index(&self) -> u64 {
        self.next_index.saturating_sub(1)
    }

    /// Encodes one OpenAI-format event (`data: {chunk}` or `[DONE]`).
    pub fn push(&mut self, event: &Event) -> Vec<Bytes> {
        let mut out = Vec::new();
        // After an error event nothing more goes out (the stream is over for the client).
        if self.errored {
            return out;
        }
        let Some(data) = event.data.as_deref() else {
            return out;
        };
        if data.trim() == "[DONE]" {
            self.finish_into(&mut out);
            return out;
        }
        let Some(chunk) = ChunkIn::read(data) else {
            return out;
        };
        if let Some(message) = chunk.error() {
            self.errored = true;
            out.push(error_event(502, message));
            return out;
        }
        self.start(&mut out);
        if let Some(u) = chunk.usage() {
            self.usage = Some(u);
        }
        for choice in chunk.choices() {
            if let Some(text) = choice.text().filter(|t| !t.is_empty()) {
                if self.open != Some(Block::Text) {
                    self.open_block(Block::Text, json!({"type": "text", "text": ""}), &mut out);
                }
                out.push(sse(
                    "content_block_delta",
                    &json!({"type": "content_block_delta", "index": self.index(),
                            "delta": {"type": "text_delta", "text": text}}),
                ));
            }
            for call in choice.tool_calls() {
                let i = call.index.as_u64().unwrap_or(0);
                let f = call.function();
                if self.open != (Some(Block::Tool { openai_index: i })) {
                    let name = f.name.value();
                    let name = self.tools.resolve(name.as_str().unwrap_or("")).name;
                    let start = json!({"type": "tool_use", "id": call.id.value(),
                                       "name": name, "input": {}});
                    self.open_block(Block::Tool { openai_index: i }, start, &mut out);
                }
                if let Some(args) = f.arguments.as_str().filter(|a| !a.is_empty()) {
                    out.push(sse(
                        "content_block_delta",
                        &json!({"type": "content_block_delta", "index": self.index(),
                                "delta": {"type": "input_json_delta", "partial_json": args}}),
                    ));
                }
            }
            if let Some(finish) = choice.finish_reason.as_str() {
                self.close_block(&mut out);
                self.stop = Some(stop_reason(finish));
            }
        }
        out
    }

    fn finish_into(&mut self, out: &mut Vec<Bytes>) {
        if self.finished || self.errored {
            return;
        }
        self.start(out);
        self.close_block(out);
        let usage = self.usage.unwrap_or_default();
        out.push(sse(
            "message_delta",
            &json!({"type": "message_delta",
                    "delta": {"stop_reason": self.stop.unwrap_or("end_turn"), "stop_sequence": null},
                    "usage": usage_json(&usage)}),
        ));
        out.push(sse("message_stop", &json!({"type": "message_stop"})));
        self.finished = true;
    }

    /// The end of the provider's stream: closes the message if its finish reason was
    /// seen (a provider may end without `[DONE]`); otherwise nothing, and the stream is
    /// not [`complete`](Self::complete).
    pub fn finish(&mut self) -> Vec<Bytes> {
        let mut out = Vec::new();
        if self.stop.is_some() {
            self.finish_into(&mut out);
        }
        out
    }

    /// Whether the stream reached its end (`[DONE]` after a finish reason).
    pub fn complete(&self) -> bool {
        self.finished && self.stop.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sse::Framer;

    #[test]
    fn a_system_message_within_the_conversation_stays_where_it_stands() {
        let req = br##"{"model":"m","max_tokens":9,"messages":[
            {"role":"user","content":"hi"},
            {"role":"system","content":[{"type":"text","text":"# Environment"},{"type":"text","text":"cwd: /x","cache_control":{"type":"ephemeral"}}]},
            {"role":"assistant","content":"ok"}]}"##;
        let (chat, _) = to_chat(req).unwrap();
        let roles: Vec<&str> = chat["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["role"].as_str().unwrap())
            .collect();
        assert_eq!(roles, ["user", "system", "assistant"]);
        assert_eq!(chat["messages"][1]["content"], "# Environment\ncwd: /x");
    }

    #[test]
    fn request_to_chat() {
        let req = json!({
            "model": "claude-sonnet-4-5", "max_tokens": 100, "stream": true,
            "system": [{"type": "text", "text": "Be terse."}],
            "stop_sequences": ["END"], "temperature": 0.2, "metadata": {"user_id": "u1"},
            "tools": [{"name": "get_weather", "description": "w", "input_schema": {"type": "object"}}],
            "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "Hi"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAA"}}]},
                {"role": "assistant", "content": [{"type": "thinking", "thinking": "hmm"},
                    {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"location": "Paris"}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "Sunny"},
                    {"type": "text", "text": "Thanks"}]}
            ]
        });
        let (chat, dropped) = to_chat(req.to_string().as_bytes()).unwrap();
        assert!(dropped.thinking);
        assert_eq!(
            chat["messages"][0],
            json!({"role": "system", "content": "Be terse."})
        );
        assert_eq!(
            chat["messages"][1]["content"][1]["image_url"]["url"],
            "data:image/png;base64,AAA"
        );
        assert_eq!(
            chat["messages"][2]["tool_calls"][0]["function"]["arguments"],
            "{\"location\":\"Paris\"}"
        );
        assert_eq!(
            chat["messages"][3],
            json!({"role": "tool", "tool_call_id": "toolu_1", "content": "Sunny"})
        );
        assert_eq!(
            chat["messages"][4],
            json!({"role": "user", "content": "Thanks"})
        );
        assert_eq!(chat["stop"], json!(["END"]));
        assert_eq!(chat["user"], "u1");
        assert_eq!(chat["tool_choice"], "required");
        assert_eq!(chat["parallel_tool_calls"], false);
        assert_eq!(
            chat["tools"][0]["function"]["parameters"],
            json!({"type": "object"})
        );
        assert_eq!(chat["stream_options"]["include_usage"], true);
        let server_tool = json!({"model": "m", "messages": [], "tools": [{"type": "web_search_20250305", "name": "web_search"}]});
        let (chat, dropped) = to_chat(server_tool.to_string().as_bytes()).unwrap();
        assert!(dropped.server_tools && chat.get("tools").is_none());
        assert_eq!(
            dropped.note().as_deref(),
            Some("server tools dropped in translation")
        );
        let client_run = json!({"model": "m", "messages": [], "tools": [{"type": "bash_20250124", "name": "bash"}]});
        assert!(to_chat(client_run.to_string().as_bytes())
            .unwrap_err()
            .0
            .contains("bash_20250124"));
    }

    #[test]
    fn tool_names_past_other_providers_rules_are_renamed_and_mapped_back() {
        let long = format!("mcp__{}__search", "server".repeat(15));
        let req = json!({"model": "m", "tools": [{"name": long, "input_schema": {"type": "object"}}, {"name": "Read"}],
            "tool_choice": {"type": "tool", "name": long},
            "messages": [{"role": "user", "content": "x"},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": long, "input": {}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "ok"}]}]});
        let (chat, _) = to_chat(req.to_string().as_bytes()).unwrap();
        let given = chat["tools"][0]["function"]["name"].as_str().unwrap();
        assert!(
            given.len() <= 64 && given.starts_with("__mcp__server"),
            "{given}"
        );
        assert_eq!(chat["tools"][1]["function"]["name"], "Read");
        assert_eq!(
            chat["messages"][1]["tool_calls"][0]["function"]["name"],
            given
        );
        assert_eq!(chat["tool_choice"]["function"]["name"], given);
        let tools = tool_map(req.to_string().as_bytes());
        let completion = json!({"choices": [{"message": {"tool_calls": [
            {"id": "c", "function": {"name": given, "arguments": "{}"}}]}, "finish_reason": "tool_calls"}]});
        let m = from_completion(completion.to_string().as_bytes(), "m", None, &tools);
        assert_eq!(m["content"][0]["name"], long.as_str());
        let mut enc = StreamEncoder::new("m").with_tools(tools);
        let chunk = format!(
            "data: {}\n\n",
            json!({"choices": [{"delta": {"tool_calls": [{"index": 0, "id": "c", "function": {"name": given, "arguments": ""}}]}}]})
        );
        let out: Vec<u8> = Framer::new()
            .push(chunk.as_bytes())
            .unwrap()
            .iter()
            .flat_map(|e| enc.push(e))
            .flat_map(|b| b.to_vec())
            .collect();
        assert!(String::from_utf8(out).unwrap().contains(&long));
    }

    #[test]
    fn completion_to_message() {
        let completion = json!({"choices": [{"message": {"content": "Hello", "tool_calls": [
            {"id": "call_1", "function": {"name": "f", "arguments": "{\"a\":1}"}}]}, "finish_reason": "tool_calls"}]});
        let usage = Usage {
            prompt_tokens: 10,
            completion_tokens: 3,
            cached_tokens: 4,
            cache_write_tokens: 0,
        };
        let m = from_completion(
            completion.to_string().as_bytes(),
            "gpt-4o",
            Some(&usage),
            &ToolMap::default(),
        );
        assert_eq!(m["content"][0], json!({"type": "text", "text": "Hello"}));
        assert_eq!(m["content"][1]["input"], json!({"a": 1}));
        assert_eq!(m["stop_reason"], "tool_use");
        assert_eq!(m["usage"]["input_tokens"], 6);
        assert_eq!(m["usage"]["cache_read_input_tokens"], 4);
    }

    fn encode(stream: &str) -> (Vec<(String, Value)>, StreamEncoder) {
        let mut enc = StreamEncoder::new("gpt-4o");
        let mut framer = Framer::new();
        let mut out = Vec::new();
        for ev in framer.push(stream.as_bytes()).unwrap() {
            out.extend(enc.push(&ev));
        }
        let joined: Vec<u8> = out.concat();
        let events = Framer::new()
            .push(&joined)
            .unwrap()
            .into_iter()
            .map(|e| {
                (
                    e.event.unwrap_or_default(),
                    serde_json::from_str(&e.data.unwrap_or_default()).unwrap(),
                )
            })
            .collect();
        (events, enc)
    }

    #[test]
    fn stream_to_anthropic_events() {
        let stream = concat!(
            "data: {\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n",
            "data: {\"choices\":[{\"delta\":{\"content\":\"Hel\"}}]}\n\n",
            "data: {\"choices\":[{\"delta\":{\"content\":\"lo\"}}]}\n\n",
            "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_1\",\"function\":{\"name\":\"f\",\"arguments\":\"\"}}]}}]}\n\n",
            "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"a\\\":\"}}]}}]}\n\n",
            "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"1}\"}}]}}]}\n\n",
            "data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\n",
            "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":7}}\n\n",
            "data: [DONE]\n\n",
        );
        let (events, enc) = encode(stream);
        let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "message_start",
                "ping",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop",
            ]
        );
        assert_eq!(events[6].1["content_block"]["name"], "f");
        assert_eq!(events[6].1["index"], 1);
        let args: String = events[7..9]
            .iter()
            .map(|(_, v)| v["delta"]["partial_json"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(
            serde_json::from_str::<Value>(&args).unwrap(),
            json!({"a": 1})
        );
        assert_eq!(events[10].1["delta"]["stop_reason"], "tool_use");
        assert_eq!(events[10].1["usage"]["output_tokens"], 7);
        assert!(enc.complete());
        // A stream without its end is not complete; an error chunk becomes an error event.
        let (_, enc) = encode("data: {\"choices\":[{\"delta\":{\"content\":\"x\"}}]}\n\n");
        assert!(!enc.complete());
        let (events, enc) = encode("data: {\"error\":{\"message\":\"boom\"}}\n\n");
        assert_eq!(events[0].0, "error");
        assert_eq!(events[0].1["error"]["type"], "api_error");
        assert!(enc.errored && !enc.complete());
    }

    #[test]
    fn errors_in_anthropic_shape() {
        let v: Value = serde_json::from_slice(&error_body(429, "slow down")).unwrap();
        assert_eq!(
            v,
            json!({"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}})
        );
        let v: Value =
            serde_json::from_slice(&from_openai_error(400, br#"{"error":{"message":"bad"}}"#))
                .unwrap();
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(error_type(529), "overloaded_error");
        assert_eq!(error_type(401), "authentication_error");
    }
}

//! A Responses request converted to the OpenAI chat shape the adapters take (after the
//! stored conversation it continues), and its input as the items a stored response lists.

use serde::Deserialize;
use serde_json::{json, Value};

use super::new_id;
use super::tools::{self, custom_arguments, ToolIn};
use crate::lenient::{self, Leaf, Lenient, List, Raw};
use crate::messages::chat_request;
use crate::tool_names::{Kind, ToolMap};
use crate::{unsupported, Unsupported};

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
    #[serde(default, borrow)]
    include: List<Leaf<'a>>,
    #[serde(default, borrow)]
    prompt_cache_key: Leaf<'a>,
    #[serde(default, borrow)]
    client_metadata: Leaf<'a>,
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

/// A `tool_choice` object.
#[derive(Default, Deserialize)]
struct ChoiceIn<'a> {
    #[serde(default, rename = "type", borrow)]
    kind: Leaf<'a>,
    #[serde(default, borrow)]
    name: Leaf<'a>,
    #[serde(default, borrow)]
    namespace: Leaf<'a>,
    #[serde(default, borrow)]
    mode: Leaf<'a>,
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
    name: Leaf<'a>,
    #[serde(default, borrow)]
    arguments: Leaf<'a>,
    #[serde(default, borrow)]
    output: Raw<'a>,
    #[serde(default, borrow)]
    namespace: Leaf<'a>,
    #[serde(default, borrow)]
    input: Leaf<'a>,
    #[serde(default, borrow)]
    encrypted_content: Leaf<'a>,
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

/// What a conversion left out, for the log row's note.
pub type Dropped = Vec<&'static str>;

fn note(dropped: &mut Dropped, what: &'static str) {
    if !dropped.contains(&what) {
        dropped.push(what);
    }
}

/// A tool's output (a string, or content parts) as the text of a tool message: the parts'
/// text joined; images cannot be tool results in chat, so they are left out (noted).
fn output_text(output: &Raw<'_>, dropped: &mut Dropped) -> String {
    let Some(raw) = output.0 else {
        return String::new();
    };
    let text = raw.get();
    match text.as_bytes().first() {
        Some(b'"') => lenient::parse::<Leaf>(text)
            .and_then(Leaf::into_string)
            .unwrap_or_default(),
        Some(b'[') => {
            let parts: Vec<Lenient<PartIn>> = lenient::parse(text).unwrap_or_default();
            let mut out = Vec::new();
            for p in parts.iter().filter_map(Lenient::get) {
                match p.text.as_str() {
                    Some(t) => out.push(t),
                    None => note(dropped, "non-text tool output"),
                }
            }
            out.join("")
        }
        _ => text.to_string(),
    }
}

/// Appends a tool call to the assistant message that ends `out` when it holds only calls,
/// else starts one (consecutive calls are one assistant turn).
fn push_call(out: &mut Vec<Value>, call: Value) {
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
        _ => out.push(json!({"role": "assistant", "content": null, "tool_calls": [call]})),
    }
}

/// Responses input items as chat messages (consecutive calls join one assistant
/// message); tool names as `tools` gives them to the provider.
fn items_to_messages(
    items: &[Lenient<Item<'_>>],
    tools: &ToolMap,
    dropped: &mut Dropped,
) -> Result<Vec<Value>, Unsupported> {
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
            kind @ ("function_call" | "custom_tool_call") => {
                let name = item.name.as_str().unwrap_or("");
                let namespace = item.namespace.as_str();
                let (kind, arguments) = if kind == "custom_tool_call" {
                    (
                        Kind::Custom,
                        custom_arguments(item.input.as_str().unwrap_or("")),
                    )
                } else {
                    (
                        Kind::Function,
                        item.arguments.as_str().unwrap_or("{}").to_string(),
                    )
                };
                let call = json!({
                    "id": item.call_id.value(),
                    "type": "function",
                    "function": {
                        "name": tools.provider_name(namespace, name, kind),
                        "arguments": arguments,
                    }
                });
                push_call(&mut out, call);
            }
            "function_call_output" | "custom_tool_call_output" => {
                out.push(json!({
                    "role": "tool",
                    "tool_call_id": item.call_id.value(),
                    "content": output_text(&item.output, dropped),
                }));
            }
            // Reasoning items (encrypted or not) only mean something to the provider that
            // made them.
            "reasoning" => {
                if item.encrypted_content.is_present() {
                    note(dropped, "encrypted reasoning items");
                }
            }
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
fn input_messages(
    request: &ResponsesRequest<'_>,
    tools: &ToolMap,
    dropped: &mut Dropped,
) -> Result<Vec<Value>, Unsupported> {
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
            items_to_messages(&items, tools, dropped)
        }
        _ => Err(refused()),
    }
}

/// A Responses request converted for providers that take chat.
#[derive(Debug)]
pub struct Conversion {
    /// The request's own input as chat messages (what its turn stores).
    pub input: Result<Vec<Value>, Unsupported>,
    /// The chat request, after the stored conversation it continues.
    pub chat: Result<Value, Unsupported>,
    /// What the conversion left out, for the log row's note.
    pub dropped: Dropped,
}

/// The names the provider sees for a request's tools (its bytes), and what each stands for.
pub fn tool_map(request: &[u8]) -> ToolMap {
    ResponsesRequest::read(request)
        .ok()
        .and_then(|r| r.tools.into_items())
        .map(|tools| tools::convert(&tools).map)
        .unwrap_or_default()
}

/// A Responses request (its bytes) as an OpenAI chat request. `history` is the stored
/// conversation of its `previous_response_id` (chat messages), when it names one.
pub fn convert(request: &[u8], history: &[Value]) -> Conversion {
    let request = match ResponsesRequest::read(request) {
        Ok(r) => r,
        Err(e) => {
            return Conversion {
                input: Err(e.clone()),
                chat: Err(e),
                dropped: Vec::new(),
            }
        }
    };
    let tools = tools::convert(request.tools.get().map(Vec::as_slice).unwrap_or_default());
    let mut dropped: Dropped = tools.dropped.clone();
    let input = input_messages(&request, &tools.map, &mut dropped);
    if request.include.get().is_some_and(|i| !i.is_empty()) {
        // `reasoning.encrypted_content` and the like: content only OpenAI returns.
        note(&mut dropped, "include");
    }
    if request.client_metadata.is_present() {
        note(&mut dropped, "client_metadata");
    }
    let chat = match (&input, tools.refused) {
        (_, Some(refused)) => Err(refused),
        (Err(e), None) => Err(e.clone()),
        (Ok(input), None) => chat_from(
            &request,
            history,
            input.clone(),
            tools.functions,
            &tools.map,
        ),
    };
    Conversion {
        input,
        chat,
        dropped,
    }
}

/// [`convert`]'s chat request alone.
pub fn to_chat(request: &[u8], history: &[Value]) -> Result<Value, Unsupported> {
    convert(request, history).chat
}

/// The `tool_choice` of a request as chat's.
fn tool_choice(raw: &serde_json::value::RawValue, tools: &ToolMap) -> Result<Value, Unsupported> {
    let refused = || unsupported("unsupported `tool_choice`");
    let text = raw.get();
    match text.as_bytes().first() {
        Some(b'"') => match lenient::parse::<Leaf>(text).and_then(Leaf::into_string) {
            Some(s) if ["auto", "none", "required"].contains(&s.as_str()) => Ok(json!(s)),
            _ => Err(refused()),
        },
        Some(b'{') => {
            let choice = lenient::parse::<ChoiceIn>(text).ok_or_else(refused)?;
            let name = |kind| {
                choice.name.as_str().map(|n| {
                    json!({"type": "function", "function": {
                        "name": tools.provider_name(choice.namespace.as_str(), n, kind)}})
                })
            };
            match choice.kind.as_str() {
                Some("function") => name(Kind::Function).ok_or_else(refused),
                Some("custom") => name(Kind::Custom).ok_or_else(refused),
                // The tools a turn may use, narrowed: every declared tool stays offered.
                Some("allowed_tools") => match choice.mode.as_str() {
                    Some(m @ ("auto" | "required")) => Ok(json!(m)),
                    _ => Err(refused()),
                },
                _ => Err(refused()),
            }
        }
        _ => Err(refused()),
    }
}

fn chat_from(
    request: &ResponsesRequest<'_>,
    history: &[Value],
    input: Vec<Value>,
    functions: Vec<Value>,
    tools: &ToolMap,
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
    if let Some(key) = request.prompt_cache_key.as_str() {
        out.insert(PROMPT_CACHE_KEY.into(), json!(key));
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
    if !functions.is_empty() {
        out.insert("tools".into(), Value::Array(functions));
    }
    if let Some(raw) = request.tool_choice.0 {
        out.insert("tool_choice".into(), tool_choice(raw, tools)?);
    }
    if request.stream.as_bool() == Some(true) {
        out.insert("stream".into(), json!(true));
        out.insert("stream_options".into(), json!({"include_usage": true}));
    }
    Ok(Value::Object(out))
}

/// The chat request's cache hint (OpenAI's own chat field): OpenAI takes it as it is,
/// Anthropic's adapter marks the stable prefix for caching, other kinds go without it.
pub const PROMPT_CACHE_KEY: &str = "prompt_cache_key";

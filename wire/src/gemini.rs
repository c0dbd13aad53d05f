//! Google Gemini (`generateContent` / `streamGenerateContent?alt=sse`): OpenAI chat
//! requests become `contents` with `parts`, system messages `systemInstruction`, sampling
//! parameters `generationConfig`, tools `functionDeclarations`; answers and streamed
//! chunks become OpenAI objects, with safety blocks reported as `content_filter`.

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

fn mime_for_url(url: &str) -> &'static str {
    let lower = url.to_ascii_lowercase();
    if lower.ends_with(".png") {
        "image/png"
    } else if lower.ends_with(".webp") {
        "image/webp"
    } else if lower.ends_with(".gif") {
        "image/gif"
    } else {
        "image/jpeg"
    }
}

fn user_parts(m: &ChatMessage<'_>) -> Result<Vec<Value>, Unsupported> {
    Ok(m.content()
        .parts("gemini")?
        .into_iter()
        .map(|p| match p {
            Part::Text(t) => json!({"text": t}),
            Part::Image(url) => match parse_data_url(&url) {
                Some((mime, data)) => json!({"inlineData": {"mimeType": mime, "data": data}}),
                None => json!({"fileData": {"mimeType": mime_for_url(&url), "fileUri": url}}),
            },
        })
        .collect())
}

/// The `generateContent` body for an OpenAI chat request (its bytes).
pub fn translate_request(request: &[u8]) -> Result<Value, Unsupported> {
    let request = ChatRequest::read(request)?;
    request.refuse_choices("gemini")?;
    let mut system = Vec::new();
    let mut contents = Vec::new();
    // Gemini answers tool results by function name; OpenAI by call id.
    let mut call_names: Vec<(String, String)> = Vec::new();
    for m in request.messages()? {
        match m.role() {
            "system" | "developer" => {
                let t = m.text();
                if !t.is_empty() {
                    system.push(json!({"text": t}));
                }
            }
            "user" => push_merged(&mut contents, "user", "parts", user_parts(m)?),
            "assistant" => {
                let mut parts = Vec::new();
                let text = m.text();
                if !text.is_empty() {
                    parts.push(json!({"text": text}));
                }
                for (call, f) in m.tool_calls() {
                    let name = f.name.to_value();
                    let name = name
                        .as_ref()
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string();
                    let args = f.arguments()?;
                    if let Some(id) = call.id.to_value().as_ref().and_then(Value::as_str) {
                        call_names.push((id.to_string(), name.clone()));
                    }
                    parts.push(json!({"functionCall": {"name": name, "args": args}}));
                }
                push_merged(&mut contents, "model", "parts", parts);
            }
            "tool" => {
                let id = m.tool_call_id.to_value();
                let id = id.as_ref().and_then(Value::as_str).unwrap_or("");
                let name = call_names
                    .iter()
                    .find(|(i, _)| i == id)
                    .map(|(_, n)| n.clone())
                    .ok_or_else(|| unsupported("a tool message must answer a tool call of an earlier assistant message"))?;
                let text = m.text();
                let response = serde_json::from_str::<Value>(&text)
                    .ok()
                    .filter(Value::is_object)
                    .unwrap_or_else(|| json!({"content": text}));
                push_merged(
                    &mut contents,
                    "user",
                    "parts",
                    vec![json!({"functionResponse": {"name": name, "response": response}})],
                );
            }
            other => {
                return Err(unsupported(format!(
                    "message role `{other}` is not supported"
                )))
            }
        }
    }
    let mut body = Map::new();
    body.insert("contents".into(), Value::Array(contents));
    if !system.is_empty() {
        body.insert("systemInstruction".into(), json!({"parts": system}));
    }
    let mut gen = Map::new();
    if let Some(v) = ChatRequest::number(&request.temperature) {
        gen.insert("temperature".into(), v);
    }
    if let Some(v) = ChatRequest::number(&request.top_p) {
        gen.insert("topP".into(), v);
    }
    if let Some(v) = request.max_tokens().filter(Value::is_number) {
        gen.insert("maxOutputTokens".into(), v);
    }
    if let Some(stop) = request.stop_sequences() {
        gen.insert("stopSequences".into(), stop);
    }
    if request.response_format.get().and_then(|f| f.kind.as_str()) == Some("json_object") {
        gen.insert("responseMimeType".into(), json!("application/json"));
    }
    if !gen.is_empty() {
        body.insert("generationConfig".into(), Value::Object(gen));
    }
    let decls: Vec<Value> = request
        .functions()
        .into_iter()
        .flatten()
        .map(|f| {
            let mut d = json!({"name": f.name.value()});
            if let Some(desc) = f.description.to_value() {
                d["description"] = desc;
            }
            // As JSON Schema, which takes what agents' tools declare (`$schema`,
            // `additionalProperties`, …); `parameters` takes only OpenAPI's subset.
            if let Some(p) = f.parameters.to_value().filter(|p| !p.is_null()) {
                d["parametersJsonSchema"] = p;
            }
            d
        })
        .collect();
    if !decls.is_empty() {
        body.insert("tools".into(), json!([{"functionDeclarations": decls}]));
        let config = match request.tool_choice() {
            Some(ToolChoice::Mode(s)) if s == "none" => Some(json!({"mode": "NONE"})),
            Some(ToolChoice::Mode(s)) if s == "required" => Some(json!({"mode": "ANY"})),
            Some(ToolChoice::Function(name)) => {
                name.map(|n| json!({"mode": "ANY", "allowedFunctionNames": [n]}))
            }
            _ => None,
        };
        if let Some(c) = config {
            body.insert("toolConfig".into(), json!({"functionCallingConfig": c}));
        }
    }
    Ok(Value::Object(body))
}

/// Everything but RFC 3986's unreserved characters is encoded in the model segment.
const PATH_SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

pub fn build_request(
    prefix: &str,
    key: &str,
    request: &[u8],
    model: &str,
    stream: bool,
) -> Result<UpstreamRequest, Unsupported> {
    let body = translate_request(request)?;
    let body = Bytes::from(serde_json::to_vec(&body).map_err(|e| unsupported(e.to_string()))?);
    // The model is the client's string: encoded, it stays one path segment, so no name
    // can reach another endpoint (or query) of the provider.
    let model = percent_encoding::utf8_percent_encode(model, PATH_SEGMENT);
    let path = if stream {
        format!("{prefix}/models/{model}:streamGenerateContent?alt=sse")
    } else {
        format!("{prefix}/models/{model}:generateContent")
    };
    Ok(UpstreamRequest::json(
        path,
        vec![("x-goog-api-key", key.to_string())],
        body,
        stream,
    ))
}

pub fn finish_reason(reason: Option<&str>, tool_calls: bool) -> &'static str {
    match reason {
        Some("MAX_TOKENS") => "length",
        Some(
            "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" | "IMAGE_SAFETY",
        ) => "content_filter",
        _ if tool_calls => "tool_calls",
        _ => "stop",
    }
}

/// A `generateContent` answer, or one chunk of its stream, as the translation reads it.
#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AnswerView<'a> {
    #[serde(default, borrow)]
    candidates: List<AnswerCandidate<'a>>,
    #[serde(default, borrow)]
    prompt_feedback: Lenient<Feedback<'a>>,
    #[serde(default, borrow)]
    usage_metadata: Lenient<UsageMetadata<'a>>,
    #[serde(default, borrow)]
    model_version: Leaf<'a>,
    #[serde(default, borrow)]
    error: Lenient<ErrorView<'a>>,
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AnswerCandidate<'a> {
    #[serde(default, borrow)]
    content: Lenient<AnswerContent<'a>>,
    #[serde(default, borrow)]
    finish_reason: Leaf<'a>,
}

#[derive(Default, Deserialize)]
struct AnswerContent<'a> {
    #[serde(default, borrow)]
    parts: List<AnswerPart<'a>>,
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AnswerPart<'a> {
    #[serde(default, borrow)]
    text: Leaf<'a>,
    #[serde(default, borrow)]
    thought: Leaf<'a>,
    #[serde(default, borrow)]
    function_call: Lenient<FunctionCall<'a>>,
}

#[derive(Default, Deserialize)]
struct FunctionCall<'a> {
    #[serde(default, borrow)]
    name: Raw<'a>,
    #[serde(default, borrow)]
    args: Raw<'a>,
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Feedback<'a> {
    #[serde(default, borrow)]
    block_reason: Leaf<'a>,
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct UsageMetadata<'a> {
    #[serde(default, borrow)]
    prompt_token_count: Leaf<'a>,
    #[serde(default, borrow)]
    candidates_token_count: Leaf<'a>,
    #[serde(default, borrow)]
    thoughts_token_count: Leaf<'a>,
    #[serde(default, borrow)]
    cached_content_token_count: Leaf<'a>,
}

#[derive(Default, Deserialize)]
struct ErrorView<'a> {
    #[serde(default, borrow)]
    message: Leaf<'a>,
}

fn usage(v: &AnswerView<'_>) -> Option<Usage> {
    if !v.usage_metadata.present {
        return None;
    }
    let none = UsageMetadata::default();
    let u = v.usage_metadata.get().unwrap_or(&none);
    let n = |l: &Leaf<'_>| l.as_u64().unwrap_or(0);
    Some(Usage {
        prompt_tokens: n(&u.prompt_token_count),
        completion_tokens: n(&u.candidates_token_count).saturating_add(n(&u.thoughts_token_count)),
        cached_tokens: n(&u.cached_content_token_count),
        cache_write_tokens: 0,
    })
}

/// Text and function calls of the first candidate, and its finish reason. Gemini names
/// no call: each gets an id made of its answer's id (`answer`, unique per answer) and its
/// index, so that ids stay unique across the turns of a conversation (agents match
/// results to calls by id).
fn candidate(
    v: &AnswerView<'_>,
    answer: &str,
    first_call_index: usize,
) -> (String, Vec<Value>, Option<String>) {
    let stem = answer.rsplit(['-', '_']).next().unwrap_or(answer);
    let stem = &stem[stem.len().saturating_sub(12)..];
    let c = lenient::items(&v.candidates).next().flatten();
    let mut text = String::new();
    let mut calls = Vec::new();
    let parts = c
        .and_then(|c| c.content.get())
        .map(|content| lenient::items(&content.parts));
    for part in parts.into_iter().flatten().flatten() {
        if let Some(t) = part.text.as_str() {
            if part.thought.as_bool() != Some(true) {
                text.push_str(t);
            }
        } else if part.function_call.present {
            let none = FunctionCall::default();
            let fc = part.function_call.get().unwrap_or(&none);
            let index = first_call_index + calls.len();
            calls.push(json!({
                "id": format!("call_{stem}_{index}"),
                "type": "function",
                "function": {
                    "name": fc.name.value(),
                    "arguments": fc.args.to_value().map_or_else(|| "{}".into(), |a| a.to_string()),
                },
            }));
        }
    }
    let mut reason = c.and_then(|c| c.finish_reason.as_str()).map(str::to_string);
    if reason.is_none()
        && v.prompt_feedback
            .get()
            .is_some_and(|p| p.block_reason.is_present())
    {
        reason = Some("SAFETY".into());
    }
    (text, calls, reason)
}

pub fn decode_response(body: &[u8], model: &str) -> Decoded {
    let mut content = Generated::default();
    let Some(v) = lenient::document::<AnswerView>(body) else {
        return Decoded {
            body: None,
            usage: None,
            content,
        };
    };
    let meta = chunk::Meta::new(v.model_version.as_str().unwrap_or(model));
    let (text, calls, reason) = candidate(&v, &meta.id, 0);
    content.push(&text);
    let usage = usage(&v);
    let finish = finish_reason(reason.as_deref(), !calls.is_empty());
    let text = (!text.is_empty() || calls.is_empty()).then_some(text);
    let out = chunk::completion(&meta, text, calls, finish, usage.as_ref());
    Decoded {
        body: Some(Bytes::from(out.to_string())),
        usage,
        content,
    }
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct SignalView {
    #[serde(default)]
    candidates: Option<Vec<CandidateView>>,
    #[serde(default)]
    prompt_feedback: Option<FeedbackView>,
    #[serde(default)]
    error: Option<serde::de::IgnoredAny>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct CandidateView {
    #[serde(default)]
    content: Option<ContentView>,
    #[serde(default)]
    finish_reason: Option<serde::de::IgnoredAny>,
}

#[derive(serde::Deserialize)]
struct ContentView {
    #[serde(default)]
    parts: Vec<PartView>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct PartView {
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    thought: Option<bool>,
    #[serde(default)]
    function_call: Option<serde::de::IgnoredAny>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct FeedbackView {
    #[serde(default)]
    block_reason: Option<serde::de::IgnoredAny>,
}

/// Gemini has no formal preamble, but a chunk can carry only empty text, thoughts or
/// usage: those are held. Text, a function call, a finish reason or a blocked prompt
/// is content; an `error` object is an error.
pub fn signal(event: &Event) -> Signal {
    let Some(data) = event.data.as_deref() else {
        return Signal::Preamble;
    };
    let Ok(view) = serde_json::from_str::<SignalView>(data) else {
        return Signal::Content;
    };
    if view.error.is_some() {
        return Signal::Error;
    }
    if view
        .prompt_feedback
        .is_some_and(|f| f.block_reason.is_some())
    {
        return Signal::Content;
    }
    let content = view.candidates.iter().flatten().any(|c| {
        c.finish_reason.is_some()
            || c.content.as_ref().is_some_and(|content| {
                content.parts.iter().any(|p| {
                    p.function_call.is_some()
                        || (p.thought != Some(true)
                            && p.text.as_deref().is_some_and(|t| !t.is_empty()))
                })
            })
    });
    if content {
        Signal::Content
    } else {
        Signal::Preamble
    }
}

pub fn decode_event(state: &mut StreamState, event: &Event) -> Vec<Bytes> {
    let mut out = Vec::new();
    let Some(v) = event
        .data
        .as_deref()
        .and_then(|d| lenient::document::<AnswerView>(d.as_bytes()))
    else {
        return out;
    };
    if v.error.present {
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
        return out;
    }
    if !state.started {
        state.started = true;
        out.push(chunk::delta(
            &state.meta,
            json!({"role": "assistant", "content": ""}),
            None,
        ));
    }
    if let Some(u) = usage(&v) {
        state.usage = Some(u);
    }
    let (text, calls, reason) = candidate(&v, &state.meta.id, state.tool_calls);
    if !text.is_empty() {
        state.content.push(&text);
        out.push(chunk::delta(&state.meta, json!({"content": text}), None));
    }
    if !calls.is_empty() {
        let indexed: Vec<Value> = calls
            .into_iter()
            .enumerate()
            .map(|(i, mut c)| {
                c["index"] = json!(state.tool_calls + i);
                c
            })
            .collect();
        state.tool_calls += indexed.len();
        state.saw_tool_call = true;
        out.push(chunk::delta(
            &state.meta,
            json!({"tool_calls": indexed}),
            None,
        ));
    }
    if let Some(r) = reason {
        state.finished = true;
        out.push(chunk::delta(
            &state.meta,
            json!({}),
            Some(finish_reason(Some(&r), state.saw_tool_call)),
        ));
    }
    out
}

/// A Google error body in OpenAI's shape.
pub fn error_body(status: u16, body: &[u8]) -> Bytes {
    chunk::openai_error_body(status, body, "status")
}

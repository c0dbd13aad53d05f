//! Google Gemini (`generateContent` / `streamGenerateContent?alt=sse`): OpenAI chat
//! requests become `contents` with `parts`, system messages `systemInstruction`, sampling
//! parameters `generationConfig`, tools `functionDeclarations`; answers and streamed
//! chunks become OpenAI objects, with safety blocks reported as `content_filter`.

use bytes::Bytes;
use serde_json::{json, Map, Value};

use crate::messages::{content_text, parse_data_url, parts, push_merged, Part};
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

fn user_parts(content: Option<&Value>) -> Result<Vec<Value>, Unsupported> {
    Ok(parts(content, "gemini")?
        .into_iter()
        .map(|p| match p {
            Part::Text(t) => json!({"text": t}),
            Part::Image(url) => match parse_data_url(url) {
                Some((mime, data)) => json!({"inlineData": {"mimeType": mime, "data": data}}),
                None => json!({"fileData": {"mimeType": mime_for_url(url), "fileUri": url}}),
            },
        })
        .collect())
}

/// The `generateContent` body for an OpenAI chat request.
pub fn translate_request(request: &Value) -> Result<Value, Unsupported> {
    if request
        .get("n")
        .and_then(Value::as_u64)
        .is_some_and(|n| n > 1)
    {
        return Err(unsupported(
            "`n` greater than 1 is not supported by gemini providers",
        ));
    }
    let msgs = request
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| unsupported("`messages` must be an array"))?;
    let mut system = Vec::new();
    let mut contents = Vec::new();
    // Gemini answers tool results by function name; OpenAI by call id.
    let mut call_names: Vec<(String, String)> = Vec::new();
    for m in msgs {
        match m.get("role").and_then(Value::as_str).unwrap_or("") {
            "system" | "developer" => {
                let t = content_text(m.get("content"));
                if !t.is_empty() {
                    system.push(json!({"text": t}));
                }
            }
            "user" => push_merged(
                &mut contents,
                "user",
                "parts",
                user_parts(m.get("content"))?,
            ),
            "assistant" => {
                let mut parts = Vec::new();
                let text = content_text(m.get("content"));
                if !text.is_empty() {
                    parts.push(json!({"text": text}));
                }
                for call in m
                    .get("tool_calls")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let f = call.get("function").cloned().unwrap_or(Value::Null);
                    let name = f
                        .get("name")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string();
                    let args = f.get("arguments").and_then(Value::as_str).unwrap_or("{}");
                    let args: Value = if args.trim().is_empty() {
                        json!({})
                    } else {
                        serde_json::from_str(args)
                            .map_err(|_| unsupported("tool call arguments must be a JSON object"))?
                    };
                    if let Some(id) = call.get("id").and_then(Value::as_str) {
                        call_names.push((id.to_string(), name.clone()));
                    }
                    parts.push(json!({"functionCall": {"name": name, "args": args}}));
                }
                push_merged(&mut contents, "model", "parts", parts);
            }
            "tool" => {
                let id = m.get("tool_call_id").and_then(Value::as_str).unwrap_or("");
                let name = call_names
                    .iter()
                    .find(|(i, _)| i == id)
                    .map(|(_, n)| n.clone())
                    .ok_or_else(|| unsupported("a tool message must answer a tool call of an earlier assistant message"))?;
                let text = content_text(m.get("content"));
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
    if let Some(v) = request.get("temperature").filter(|v| v.is_number()) {
        gen.insert("temperature".into(), v.clone());
    }
    if let Some(v) = request.get("top_p").filter(|v| v.is_number()) {
        gen.insert("topP".into(), v.clone());
    }
    if let Some(v) = request
        .get("max_completion_tokens")
        .or_else(|| request.get("max_tokens"))
        .filter(|v| v.is_number())
    {
        gen.insert("maxOutputTokens".into(), v.clone());
    }
    match request.get("stop") {
        Some(Value::String(s)) => {
            gen.insert("stopSequences".into(), json!([s]));
        }
        Some(Value::Array(a)) if !a.is_empty() => {
            gen.insert("stopSequences".into(), Value::Array(a.clone()));
        }
        _ => {}
    }
    if request
        .get("response_format")
        .and_then(|f| f.get("type"))
        .and_then(Value::as_str)
        == Some("json_object")
    {
        gen.insert("responseMimeType".into(), json!("application/json"));
    }
    if !gen.is_empty() {
        body.insert("generationConfig".into(), Value::Object(gen));
    }
    let decls: Vec<Value> = request
        .get("tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|t| t.get("function"))
        .map(|f| {
            let mut d = json!({"name": f.get("name").cloned().unwrap_or(Value::Null)});
            if let Some(desc) = f.get("description") {
                d["description"] = desc.clone();
            }
            if let Some(p) = f.get("parameters") {
                d["parameters"] = p.clone();
            }
            d
        })
        .collect();
    if !decls.is_empty() {
        body.insert("tools".into(), json!([{"functionDeclarations": decls}]));
        let config = match request.get("tool_choice") {
            Some(Value::String(s)) if s == "none" => Some(json!({"mode": "NONE"})),
            Some(Value::String(s)) if s == "required" => Some(json!({"mode": "ANY"})),
            Some(Value::Object(o)) => o
                .get("function")
                .and_then(|f| f.get("name"))
                .map(|n| json!({"mode": "ANY", "allowedFunctionNames": [n]})),
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
    request: &Value,
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

fn usage(v: &Value) -> Option<Usage> {
    let u = v.get("usageMetadata")?;
    let n = |k: &str| u.get(k).and_then(Value::as_u64).unwrap_or(0);
    Some(Usage {
        prompt_tokens: n("promptTokenCount"),
        completion_tokens: n("candidatesTokenCount").saturating_add(n("thoughtsTokenCount")),
        cached_tokens: n("cachedContentTokenCount"),
        cache_write_tokens: 0,
    })
}

/// Text and function calls of the first candidate, and its finish reason.
fn candidate(v: &Value, first_call_index: usize) -> (String, Vec<Value>, Option<String>) {
    let c = v.get("candidates").and_then(|c| c.get(0));
    let mut text = String::new();
    let mut calls = Vec::new();
    for part in c
        .and_then(|c| c.get("content"))
        .and_then(|c| c.get("parts"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(t) = part.get("text").and_then(Value::as_str) {
            if part.get("thought").and_then(Value::as_bool) != Some(true) {
                text.push_str(t);
            }
        } else if let Some(fc) = part.get("functionCall") {
            let index = first_call_index + calls.len();
            calls.push(json!({
                "id": format!("call_{index}"),
                "type": "function",
                "function": {
                    "name": fc.get("name").cloned().unwrap_or(Value::Null),
                    "arguments": fc.get("args").map(Value::to_string).unwrap_or_else(|| "{}".into()),
                },
            }));
        }
    }
    let mut reason = c
        .and_then(|c| c.get("finishReason"))
        .and_then(Value::as_str)
        .map(str::to_string);
    if reason.is_none()
        && v.get("promptFeedback")
            .and_then(|p| p.get("blockReason"))
            .is_some()
    {
        reason = Some("SAFETY".into());
    }
    (text, calls, reason)
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
    let (text, calls, reason) = candidate(&v, 0);
    content.push(&text);
    let usage = usage(&v);
    let meta = chunk::Meta::new(
        v.get("modelVersion")
            .and_then(Value::as_str)
            .unwrap_or(model),
    );
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
        .and_then(|d| serde_json::from_str::<Value>(d).ok())
    else {
        return out;
    };
    if let Some(e) = v.get("error") {
        state.errored = true;
        let msg = e
            .get("message")
            .and_then(Value::as_str)
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
    let (text, calls, reason) = candidate(&v, state.tool_calls);
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

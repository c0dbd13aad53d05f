//! The OpenAI Responses API as a front door. A request (with the conversation of its
//! `previous_response_id`, when stored) is decoded into the OpenAI chat shape the provider
//! adapters take, and the answer is encoded back into a Response object or the Responses
//! event sequence, every event numbered; OpenAI's own Responses stream, passed through, is
//! read for its usage and for storing ([`Reader`]). Pure transforms: the door around the
//! pipeline and the storage are the gateway's.
//!
//! [`request`] converts a request to chat; this module builds Response objects; [`stream`]
//! encodes a chat stream as Responses events; [`passthrough`] reads OpenAI's own.

pub mod passthrough;
pub mod request;
pub mod stream;
pub mod tools;

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde_json::value::RawValue;
use serde_json::{json, Map, Value};

use super::{CompletionIn, MessageIn};
use crate::lenient::{Lenient, Raw};
use crate::Usage;

pub use crate::tool_names::ToolMap;
pub use passthrough::{upstream_signal, Reader};
pub use request::{convert, input_items, to_chat, tool_map, Conversion, ResponsesRequest};
pub use stream::{StreamEncoder, MAX_KEPT_OUTPUT};

use crate::tool_names::Kind;
use tools::custom_input;

pub(crate) fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::now_v7().simple())
}

/// A new response id.
pub fn response_id() -> String {
    new_id("resp")
}

/// What a Response object repeats of its request.
#[derive(Debug, Clone)]
pub struct Echo {
    pub id: String,
    pub created_at: i64,
    pub model: String,
    pub fields: Map<String, Value>,
    /// What the names of the provider's tool calls stand for.
    pub tools: ToolMap,
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
            tools: tool_map(request),
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

pub(crate) fn usage_json(u: &Usage) -> Value {
    json!({
        "input_tokens": u.prompt_tokens,
        "input_tokens_details": {"cached_tokens": u.cached_tokens},
        "output_tokens": u.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": u.prompt_tokens.saturating_add(u.completion_tokens),
    })
}

pub(crate) fn message_item(id: &str, text: &str, status: &str) -> Value {
    json!({"type": "message", "id": id, "status": status, "role": "assistant",
           "content": [{"type": "output_text", "text": text, "annotations": []}]})
}

/// The output item of a provider's tool call (named `name` for the provider): a
/// `function_call` (with its `namespace`, when declared in one) or a `custom_tool_call`
/// with its `input`, as the client declared the tool.
pub(crate) fn call_item(
    tools: &ToolMap,
    id: &str,
    call_id: &Value,
    name: &str,
    arguments: &str,
    status: &str,
) -> Value {
    let tool = tools.resolve(name);
    let mut item = match tool.kind {
        Kind::Function => json!({"type": "function_call", "id": id, "call_id": call_id,
                                 "name": tool.name, "arguments": arguments, "status": status}),
        Kind::Custom => json!({"type": "custom_tool_call", "id": id, "call_id": call_id,
                               "name": tool.name, "input": custom_input(arguments)}),
    };
    if let Some(ns) = tool.namespace {
        item["namespace"] = json!(ns);
    }
    item
}

pub(crate) fn status_for(finish: Option<&str>) -> &'static str {
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
            &echo.tools,
            &new_id("fc"),
            &call.id.value(),
            f.name.value().as_str().unwrap_or(""),
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
pub(crate) fn assistant_message(content: Value, tool_calls: Option<Value>) -> Value {
    let mut m = json!({"role": "assistant", "content": content});
    if let Some(calls) = tool_calls.filter(|c| c.as_array().is_some_and(|a| !a.is_empty())) {
        m["tool_calls"] = calls;
    }
    m
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
    let no_tools = ToolMap::default();
    let calls: Vec<Value> = items
        .iter()
        .filter_map(|i| {
            let (kind, arguments) = match i["type"].as_str() {
                Some("function_call") => (Kind::Function, i["arguments"].clone()),
                Some("custom_tool_call") => (
                    Kind::Custom,
                    json!(tools::custom_arguments(i["input"].as_str().unwrap_or(""))),
                ),
                _ => return None,
            };
            let name = no_tools.provider_name(
                i["namespace"].as_str(),
                i["name"].as_str().unwrap_or(""),
                kind,
            );
            Some(json!({"id": i["call_id"], "type": "function",
                        "function": {"name": name, "arguments": arguments}}))
        })
        .collect();
    let text = (!text.is_empty()).then_some(text);
    assistant_message(json!(text), Some(Value::Array(calls)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sse::Framer;
    use bytes::Bytes;

    /// A chat stream through the Responses encoder: the events' data, and the assistant's
    /// chat message of the finished answer.
    fn encode(echo: Echo, stream: &str) -> (Vec<Value>, Value) {
        let mut enc = StreamEncoder::new(echo);
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
        (events, message)
    }

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
            json!({"model": "m", "input": "x", "tools": [{"type": "computer_use_preview"}]});
        assert!(to_chat(builtin.to_string().as_bytes(), &[])
            .unwrap_err()
            .0
            .contains("computer_use_preview"));
        assert_eq!(
            input_items(&json!({"input": "hi"}))[0]["content"][0]["type"],
            "input_text"
        );
    }

    /// What Codex sends: tools grouped in namespaces, its freeform `apply_patch`, a
    /// built-in it can do without, reasoning it asks back, its cache key and metadata.
    fn codex_request() -> Value {
        json!({
            "model": "gpt-5-codex", "instructions": "You are Codex.", "stream": true,
            "store": false, "parallel_tool_calls": true,
            "include": ["reasoning.encrypted_content"], "prompt_cache_key": "conv-1",
            "client_metadata": {"x-codex-turn-metadata": "{}"},
            "reasoning": {"effort": "medium", "summary": "auto"},
            "tools": [
                {"type": "function", "name": "shell", "description": "Runs a command.",
                 "parameters": {"type": "object", "properties": {"command": {"type": "array"}}}},
                {"type": "custom", "name": "apply_patch", "description": "Edits files.",
                 "format": {"type": "grammar", "syntax": "lark", "definition": "start: begin_patch"}},
                {"type": "namespace", "name": "mcp__docs", "description": "Docs server.",
                 "tools": [{"type": "function", "name": "search", "description": "Searches.",
                            "parameters": {"type": "object"}, "defer_loading": true},
                           {"type": "custom", "name": "note"}]},
                {"type": "web_search"}
            ],
            "input": [
                {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "Sandbox: none."}]},
                {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Fix the bug."}]},
                {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "gAAAA"},
                {"type": "function_call", "call_id": "c1", "namespace": "mcp__docs", "name": "search", "arguments": "{\"q\":\"bug\"}"},
                {"type": "function_call_output", "call_id": "c1", "output": [{"type": "input_text", "text": "found"}]},
                {"type": "custom_tool_call", "call_id": "c2", "name": "apply_patch", "input": "*** Begin Patch\n*** End Patch"},
                {"type": "custom_tool_call_output", "call_id": "c2", "output": "Done!"}
            ]
        })
    }

    #[test]
    fn what_codex_sends_becomes_chat() {
        let conversion = convert(codex_request().to_string().as_bytes(), &[]);
        let chat = conversion.chat.unwrap();
        let names: Vec<&str> = chat["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["function"]["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "shell",
                "apply_patch",
                "mcp__docs__search",
                "mcp__docs__note"
            ]
        );
        let patch = &chat["tools"][1]["function"];
        assert_eq!(patch["parameters"]["required"], json!(["input"]));
        let description = patch["description"].as_str().unwrap();
        assert!(description.starts_with("Edits files."), "{description}");
        assert!(description.contains("lark grammar:\nstart: begin_patch"));
        assert!(chat["tools"][2]["function"]["description"]
            .as_str()
            .unwrap()
            .contains("Searches."));
        let m = chat["messages"].as_array().unwrap();
        assert_eq!(m[0], json!({"role": "system", "content": "You are Codex."}));
        assert_eq!(m[1], json!({"role": "system", "content": "Sandbox: none."}));
        assert_eq!(
            m[3]["tool_calls"][0]["function"],
            json!({"name": "mcp__docs__search", "arguments": "{\"q\":\"bug\"}"})
        );
        assert_eq!(
            m[4],
            json!({"role": "tool", "tool_call_id": "c1", "content": "found"})
        );
        let args = m[5]["tool_calls"][0]["function"]["arguments"]
            .as_str()
            .unwrap();
        assert_eq!(
            serde_json::from_str::<Value>(args).unwrap(),
            json!({"input": "*** Begin Patch\n*** End Patch"})
        );
        assert_eq!(
            m[6],
            json!({"role": "tool", "tool_call_id": "c2", "content": "Done!"})
        );
        assert_eq!(m.len(), 7);
        assert_eq!(chat["prompt_cache_key"], "conv-1");
        assert_eq!(chat["reasoning_effort"], "medium");
        assert_eq!(
            conversion.dropped,
            [
                "web_search tool",
                "encrypted reasoning items",
                "include",
                "client_metadata"
            ]
        );
        // A custom tool can be forced; so can a namespace's function.
        let mut forced = codex_request();
        forced["tool_choice"] = json!({"type": "custom", "name": "apply_patch"});
        let chat = to_chat(forced.to_string().as_bytes(), &[]).unwrap();
        assert_eq!(chat["tool_choice"]["function"]["name"], "apply_patch");
        forced["tool_choice"] =
            json!({"type": "function", "namespace": "mcp__docs", "name": "search"});
        let chat = to_chat(forced.to_string().as_bytes(), &[]).unwrap();
        assert_eq!(chat["tool_choice"]["function"]["name"], "mcp__docs__search");
    }

    #[test]
    fn calls_come_back_as_the_items_the_client_declared() {
        let request = codex_request().to_string();
        let echo = Echo::new("resp_1".into(), request.as_bytes(), "m");
        let completion = json!({"choices": [{"message": {"content": null, "tool_calls": [
            {"id": "call_1", "function": {"name": "mcp__docs__search", "arguments": "{\"q\":1}"}},
            {"id": "call_2", "function": {"name": "apply_patch", "arguments": "{\"input\":\"*** Begin Patch\\n\"}"}},
            {"id": "call_3", "function": {"name": "shell", "arguments": "{}"}}]},
            "finish_reason": "tool_calls"}]});
        let (r, message) = from_completion(completion.to_string().as_bytes(), &echo, None);
        let out = &r["output"];
        assert_eq!(out[0]["type"], "function_call");
        assert_eq!(out[0]["namespace"], "mcp__docs");
        assert_eq!(out[0]["name"], "search");
        assert_eq!(out[1]["type"], "custom_tool_call");
        assert_eq!(out[1]["name"], "apply_patch");
        assert_eq!(out[1]["input"], "*** Begin Patch\n");
        assert!(out[1].get("namespace").is_none());
        assert_eq!(out[2]["name"], "shell");
        assert!(out[2].get("namespace").is_none());
        // The stored conversation keeps the provider's names.
        assert_eq!(
            message["tool_calls"][0]["function"]["name"],
            "mcp__docs__search"
        );

        let stream = concat!(
            "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_1\",\"function\":{\"name\":\"apply_patch\",\"arguments\":\"{\\\"input\\\":\\\"*** Begin\"}}]}}]}\n\n",
            "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\" Patch\\\\n\\\"}\"}}]}}]}\n\n",
            "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":1,\"id\":\"call_2\",\"function\":{\"name\":\"mcp__docs__note\",\"arguments\":\"{\\\"input\\\":\\\"hi\\\"}\"}}]}}]}\n\n",
            "data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\n",
            "data: [DONE]\n\n",
        );
        let (events, message) = encode(echo, stream);
        let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(
            kinds,
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.output_item.added",
                "response.custom_tool_call_input.delta",
                "response.custom_tool_call_input.done",
                "response.output_item.done",
                "response.custom_tool_call_input.delta",
                "response.custom_tool_call_input.done",
                "response.output_item.done",
                "response.completed",
            ]
        );
        assert_eq!(events[2]["item"]["type"], "custom_tool_call");
        assert_eq!(events[2]["item"]["input"], "");
        assert_eq!(events[4]["delta"], "*** Begin Patch\n");
        assert_eq!(events[5]["input"], "*** Begin Patch\n");
        assert_eq!(events[5]["item_id"], events[2]["item"]["id"]);
        assert_eq!(events[9]["item"]["namespace"], "mcp__docs");
        assert_eq!(events[9]["item"]["name"], "note");
        assert_eq!(events[9]["item"]["input"], "hi");
        let done = &events[10]["response"]["output"];
        assert_eq!(done[0]["call_id"], "call_1");
        assert_eq!(done[1]["type"], "custom_tool_call");
        assert_eq!(
            message["tool_calls"][1]["function"]["name"],
            "mcp__docs__note"
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
        let (events, message) = encode(Echo::new("resp_1".into(), b"{}", "m"), stream);
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

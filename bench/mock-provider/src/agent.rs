//! The scripted coding-agent session ([`AgentScript`]): the mock plays the model behind a
//! real coding agent (Codex, Claude Code) for a whole session, in whichever wire format
//! it is asked in (OpenAI chat completions and Responses, Anthropic Messages, Gemini),
//! streamed or not.
//!
//! The script reads the conversation, not a counter: with no tool result yet it asks to
//! read the file (the agent's `Read` tool, or its shell with `cat`); with one it asks to
//! edit it with the agent's own edit tool (`apply_patch`, Responses `custom` tool or the
//! function a gateway offers in its place, or `Edit` / `Write`); with two or more it
//! answers [`AgentScript::reply`]. Tool names and argument names come from the
//! request's tools list. A request without tools (an agent's side request, such as a
//! title) gets the reply as well.

use std::path::PathBuf;
use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::Response;
use bytes::Bytes;
use serde_json::{json, Value};

use crate::openai::{content_pieces_of, EVENT_STREAM};
use crate::reply::{json_response, stream_response, to_json};
use crate::server::Shared;
use crate::sse::{self, Step};

/// Into how many pieces a streamed answer (text or tool arguments) is cut; also its
/// output tokens.
const PIECES: usize = 4;

/// The session the mock plays, set with [`crate::MockConfig::agent`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentScript {
    /// The file the session reads and edits, by absolute path.
    pub file: PathBuf,
    /// The line of the file the edit replaces (the file's only line).
    pub old_line: String,
    /// What the edit puts in its place.
    pub new_line: String,
    /// The final answer.
    pub reply: String,
    /// A turn (counting from 1) answered with a 503 in the format's error shape
    /// instead, so that a gateway falls back to its next entry mid-session.
    pub fail_turn: Option<usize>,
}

/// A wire format the script answers in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wire {
    /// `POST /v1/chat/completions`.
    Chat,
    /// `POST /v1/responses`.
    Responses,
    /// Anthropic's `POST /v1/messages`.
    Messages,
    /// Gemini's `generateContent` (`stream` false) or `streamGenerateContent?alt=sse`.
    Gemini,
}

/// A tool the request offers.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Offered {
    /// A function (JSON arguments) and its parameters' JSON schema.
    Function { name: String, parameters: Value },
    /// A Responses `custom` (freeform) tool: one string of input.
    Custom { name: String },
}

impl Offered {
    fn name(&self) -> &str {
        match self {
            Offered::Function { name, .. } | Offered::Custom { name } => name,
        }
    }

    /// The type of the schema's property `name`, if the function has it.
    fn property(&self, name: &str) -> Option<&str> {
        match self {
            Offered::Function { parameters, .. } => parameters
                .pointer(&format!("/properties/{name}"))
                .map(|p| p.get("type").and_then(Value::as_str).unwrap_or("string")),
            Offered::Custom { .. } => None,
        }
    }

    /// The first string property of the function's schema.
    fn first_string_property(&self) -> Option<&str> {
        let Offered::Function { parameters, .. } = self else {
            return None;
        };
        parameters
            .get("properties")?
            .as_object()?
            .iter()
            .find(|(_, p)| p.get("type").and_then(Value::as_str) == Some("string"))
            .map(|(name, _)| name.as_str())
    }
}

/// What the model says next.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Move {
    /// Calls `name` with JSON arguments (a function) or freeform input (a custom tool).
    Call { name: String, input: Input },
    /// Answers with text and ends the turn.
    Text(String),
}

/// The script's turn to fail ([`AgentScript::fail_turn`]): a 503 in the format's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fail;

/// The input of a tool call.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Input {
    Json(Value),
    Freeform(String),
}

impl Input {
    /// The input as it travels: JSON text, or the freeform string itself.
    fn text(&self) -> String {
        match self {
            Input::Json(value) => value.to_string(),
            Input::Freeform(text) => text.clone(),
        }
    }

    /// The input as a JSON object (a freeform input, which only a Responses custom tool
    /// takes, is never asked for this way).
    fn value(&self) -> Value {
        match self {
            Input::Json(value) => value.clone(),
            Input::Freeform(text) => json!({ "input": text }),
        }
    }
}

impl AgentScript {
    /// The next move, given the tools offered and how many tool results the
    /// conversation holds.
    pub(crate) fn decide(&self, tools: &[Offered], results: usize) -> Result<Move, Fail> {
        if self.fail_turn == Some(results + 1) {
            return Err(Fail);
        }
        if tools.is_empty() {
            return Ok(Move::Text(self.reply.clone()));
        }
        let chosen = match results {
            0 => self.read(tools),
            1 => self.edit(tools),
            _ => return Ok(Move::Text(self.reply.clone())),
        };
        Ok(chosen.unwrap_or_else(|| {
            let names: Vec<&str> = tools.iter().map(Offered::name).collect();
            let step = if results == 0 { "read" } else { "edit" };
            Move::Text(format!(
                "The mock agent script found no tool to {step} a file among: {}",
                names.join(", ")
            ))
        }))
    }

    fn path(&self) -> String {
        self.file.display().to_string()
    }

    /// `Read`, or a shell tool running `cat`.
    fn read(&self, tools: &[Offered]) -> Option<Move> {
        let call = |name: &str, input: Value| Move::Call {
            name: name.to_owned(),
            input: Input::Json(input),
        };
        if let Some(read) = find(tools, "Read").filter(|t| t.property("file_path").is_some()) {
            return Some(call(read.name(), json!({ "file_path": self.path() })));
        }
        let cat = format!("cat '{}'", self.path());
        ["exec_command", "shell_command", "shell", "Bash"]
            .iter()
            .filter_map(|name| find(tools, name))
            .find_map(|shell| {
                let arguments = match (shell.property("cmd"), shell.property("command")) {
                    (Some(_), _) => json!({ "cmd": cat }),
                    (None, Some("array")) => json!({ "command": ["bash", "-lc", cat] }),
                    (None, Some(_)) => json!({ "command": cat }),
                    (None, None) => return None,
                };
                Some(call(shell.name(), arguments))
            })
    }

    /// `apply_patch` (freeform, or the function standing in for it), `Edit` or `Write`.
    fn edit(&self, tools: &[Offered]) -> Option<Move> {
        let call = |name: &str, input: Input| Move::Call {
            name: name.to_owned(),
            input,
        };
        if let Some(patch_tool) = find(tools, "apply_patch") {
            let patch = format!(
                "*** Begin Patch\n*** Update File: {}\n@@\n-{}\n+{}\n*** End Patch\n",
                self.path(),
                self.old_line,
                self.new_line
            );
            let input = match patch_tool {
                Offered::Custom { .. } => Input::Freeform(patch),
                Offered::Function { .. } => {
                    let field = patch_tool.first_string_property().unwrap_or("input");
                    Input::Json(json!({ field: patch }))
                }
            };
            return Some(call(patch_tool.name(), input));
        }
        if let Some(edit) = find(tools, "Edit").filter(|t| t.property("old_string").is_some()) {
            let input = json!({
                "file_path": self.path(),
                "old_string": self.old_line,
                "new_string": self.new_line,
            });
            return Some(call(edit.name(), Input::Json(input)));
        }
        let write = find(tools, "Write").filter(|t| t.property("content").is_some())?;
        let input = json!({ "file_path": self.path(), "content": format!("{}\n", self.new_line) });
        Some(call(write.name(), Input::Json(input)))
    }
}

fn find<'a>(tools: &'a [Offered], name: &str) -> Option<&'a Offered> {
    tools.iter().find(|t| t.name() == name)
}

// ---------------------------------------------------------------------------
// Reading a request.

fn str_of<'a>(value: &'a Value, key: &str) -> Option<&'a str> {
    value.get(key).and_then(Value::as_str)
}

fn array<'a>(value: &'a Value, key: &str) -> impl Iterator<Item = &'a Value> {
    value
        .get(key)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

fn function(name: Option<&str>, parameters: Option<&Value>) -> Option<Offered> {
    Some(Offered::Function {
        name: name?.to_owned(),
        parameters: parameters.cloned().unwrap_or(Value::Null),
    })
}

/// The tools a request offers, in its wire format.
pub(crate) fn offered(wire: Wire, request: &Value) -> Vec<Offered> {
    match wire {
        Wire::Chat => array(request, "tools")
            .filter_map(|tool| match str_of(tool, "type") {
                Some("custom") => Some(Offered::Custom {
                    name: str_of(tool.get("custom")?, "name")?.to_owned(),
                }),
                _ => {
                    let f = tool.get("function")?;
                    function(str_of(f, "name"), f.get("parameters"))
                }
            })
            .collect(),
        Wire::Responses => array(request, "tools")
            .filter_map(|tool| match str_of(tool, "type") {
                Some("function") => function(str_of(tool, "name"), tool.get("parameters")),
                Some("custom") => Some(Offered::Custom {
                    name: str_of(tool, "name")?.to_owned(),
                }),
                _ => None,
            })
            .collect(),
        Wire::Messages => array(request, "tools")
            .filter(|tool| matches!(str_of(tool, "type"), None | Some("custom")))
            .filter_map(|tool| function(str_of(tool, "name"), tool.get("input_schema")))
            .collect(),
        Wire::Gemini => array(request, "tools")
            .flat_map(|tool| {
                array(tool, "functionDeclarations").chain(array(tool, "function_declarations"))
            })
            .filter_map(|f| {
                let parameters = f
                    .get("parameters")
                    .or_else(|| f.get("parametersJsonSchema"));
                function(str_of(f, "name"), parameters)
            })
            .collect(),
    }
}

/// How many tool results the conversation holds.
pub(crate) fn tool_results(wire: Wire, request: &Value) -> usize {
    match wire {
        Wire::Chat => array(request, "messages")
            .filter(|m| str_of(m, "role") == Some("tool"))
            .count(),
        Wire::Responses => array(request, "input")
            .filter(|item| {
                matches!(
                    str_of(item, "type"),
                    Some("function_call_output" | "custom_tool_call_output")
                )
            })
            .count(),
        Wire::Messages => array(request, "messages")
            .flat_map(|m| array(m, "content"))
            .filter(|block| str_of(block, "type") == Some("tool_result"))
            .count(),
        Wire::Gemini => array(request, "contents")
            .flat_map(|c| array(c, "parts"))
            .filter(|part| part.get("functionResponse").is_some())
            .count(),
    }
}

/// The turn (counting from 1) a request of the session asks for, by its path and body:
/// one more than the tool results it holds. `None` for a path the script does not
/// answer. A test uses it to tell the requests [`AgentScript::fail_turn`] failed.
pub fn turn_of(path: &str, request: &Value) -> Option<usize> {
    let wire = if path.ends_with("/chat/completions") {
        Wire::Chat
    } else if path.ends_with("/responses") {
        Wire::Responses
    } else if path.ends_with("/messages") {
        Wire::Messages
    } else if path.ends_with(":generateContent") || path.ends_with(":streamGenerateContent") {
        Wire::Gemini
    } else {
        return None;
    };
    Some(tool_results(wire, request) + 1)
}

// ---------------------------------------------------------------------------
// Answering.

/// One answer of the script, ready to be written in a wire format.
struct Turn<'a> {
    shared: &'a Shared,
    model: &'a str,
    /// `N` of this answer's ids.
    number: u64,
    input_tokens: u64,
}

/// Answers `request` (already validated by the format's handler) as the script says.
pub(crate) fn answer(
    shared: &Arc<Shared>,
    script: &AgentScript,
    wire: Wire,
    request: &Value,
    model: &str,
    stream: bool,
) -> Response {
    let next = match script.decide(&offered(wire, request), tool_results(wire, request)) {
        Ok(next) => next,
        Err(Fail) => {
            return match wire {
                Wire::Chat | Wire::Responses => crate::openai::status_error(503, model),
                Wire::Messages => crate::anthropic::status_error(503, model),
                Wire::Gemini => crate::gemini::status_error(503, model),
            }
        }
    };
    let turn = Turn {
        shared,
        model,
        number: shared.next_completion_number(),
        // A rough four bytes a token: never zero, and it grows with the conversation.
        input_tokens: request.to_string().len() as u64 / 4 + 1,
    };
    let (events, body) = match wire {
        Wire::Chat => turn.chat(&next, request),
        Wire::Responses => turn.responses(&next),
        Wire::Messages => turn.messages(&next),
        Wire::Gemini => turn.gemini(&next),
    };
    if stream {
        let steps = events.into_iter().map(Step::Event).collect();
        stream_response(shared, steps, EVENT_STREAM)
    } else {
        json_response(StatusCode::OK, to_json(&body))
    }
}

/// The pieces a streamed text or argument string is cut into.
fn pieces(text: &str) -> Vec<String> {
    content_pieces_of(text, PIECES)
}

impl Turn<'_> {
    fn output_tokens(&self) -> u64 {
        PIECES as u64
    }

    /// OpenAI chat completions: the stream's events and the whole completion.
    fn chat(&self, next: &Move, request: &Value) -> (Vec<Bytes>, Value) {
        let id = format!("chatcmpl-agent-{}", self.number);
        let created = self.shared.created();
        let include_usage = request
            .pointer("/stream_options/include_usage")
            .and_then(Value::as_bool)
            == Some(true);
        let usage = json!({
            "prompt_tokens": self.input_tokens,
            "completion_tokens": self.output_tokens(),
            "total_tokens": self.input_tokens + self.output_tokens(),
        });
        let chunk = |delta: Value, finish: Option<&str>| {
            let mut chunk = json!({
                "id": id, "object": "chat.completion.chunk", "created": created,
                "model": self.model, "system_fingerprint": "fp_mock",
                "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
            });
            if include_usage {
                chunk["usage"] = Value::Null;
            }
            sse::data(chunk.to_string().as_bytes())
        };
        let call_id = format!("call_agent_{}", self.number);
        let (message, finish, mut events) = match next {
            Move::Call { name, input } => {
                let custom = matches!(input, Input::Freeform(_));
                let text = input.text();
                let (kind, body_key, value_key) = if custom {
                    ("custom", "custom", "input")
                } else {
                    ("function", "function", "arguments")
                };
                let mut events = vec![
                    chunk(json!({"role": "assistant", "content": null}), None),
                    chunk(
                        json!({"tool_calls": [{"index": 0, "id": call_id, "type": kind,
                            body_key: {"name": name, value_key: ""}}]}),
                        None,
                    ),
                ];
                for piece in pieces(&text) {
                    events.push(chunk(
                        json!({"tool_calls": [{"index": 0, body_key: {value_key: piece}}]}),
                        None,
                    ));
                }
                let message = json!({"role": "assistant", "content": null,
                    "tool_calls": [{"id": call_id, "type": kind, body_key: {"name": name, value_key: text}}],
                    "refusal": null, "annotations": []});
                (message, "tool_calls", events)
            }
            Move::Text(text) => {
                let mut events = vec![chunk(json!({"role": "assistant", "content": ""}), None)];
                for piece in pieces(text) {
                    events.push(chunk(json!({ "content": piece }), None));
                }
                let message = json!({"role": "assistant", "content": text, "refusal": null, "annotations": []});
                (message, "stop", events)
            }
        };
        events.push(chunk(json!({}), Some(finish)));
        if include_usage {
            events.push(sse::data(
                json!({"id": id, "object": "chat.completion.chunk", "created": created,
                       "model": self.model, "system_fingerprint": "fp_mock",
                       "choices": [], "usage": usage})
                .to_string()
                .as_bytes(),
            ));
        }
        events.push(Bytes::from_static(sse::DONE));
        let whole = json!({
            "id": id, "object": "chat.completion", "created": created, "model": self.model,
            "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": finish}],
            "usage": usage, "system_fingerprint": "fp_mock",
        });
        (events, whole)
    }

    /// OpenAI Responses: the numbered event stream and the whole response.
    fn responses(&self, next: &Move) -> (Vec<Bytes>, Value) {
        let id = format!("resp_agent_{}", self.number);
        let item_id = format!("item_agent_{}", self.number);
        let usage = json!({
            "input_tokens": self.input_tokens, "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": self.output_tokens(), "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": self.input_tokens + self.output_tokens(),
        });
        let response = |status: &str, output: Value, usage: Value| {
            json!({"id": id, "object": "response", "created_at": self.shared.created(),
                   "status": status, "model": self.model, "output": output, "usage": usage,
                   "error": null, "incomplete_details": null})
        };
        let mut events: Vec<(&str, Value)> = vec![
            (
                "response.created",
                json!({"response": response("in_progress", json!([]), Value::Null)}),
            ),
            (
                "response.in_progress",
                json!({"response": response("in_progress", json!([]), Value::Null)}),
            ),
        ];
        let item = match next {
            Move::Call { name, input } => {
                let call_id = format!("call_agent_{}", self.number);
                let text = input.text();
                let (kind, field, delta_event, done_event) = match input {
                    Input::Freeform(_) => (
                        "custom_tool_call",
                        "input",
                        "response.custom_tool_call_input.delta",
                        "response.custom_tool_call_input.done",
                    ),
                    Input::Json(_) => (
                        "function_call",
                        "arguments",
                        "response.function_call_arguments.delta",
                        "response.function_call_arguments.done",
                    ),
                };
                let open = json!({"type": kind, "id": item_id, "call_id": call_id,
                                  "name": name, field: "", "status": "in_progress"});
                events.push((
                    "response.output_item.added",
                    json!({"output_index": 0, "item": open}),
                ));
                for piece in pieces(&text) {
                    events.push((
                        delta_event,
                        json!({"item_id": item_id, "output_index": 0, "delta": piece}),
                    ));
                }
                events.push((
                    done_event,
                    json!({"item_id": item_id, "output_index": 0, field: text}),
                ));
                json!({"type": kind, "id": item_id, "call_id": call_id, "name": name,
                       field: text, "status": "completed"})
            }
            Move::Text(text) => {
                let part =
                    |text: &str| json!({"type": "output_text", "text": text, "annotations": []});
                events.push((
                    "response.output_item.added",
                    json!({"output_index": 0, "item": {"type": "message", "id": item_id,
                        "status": "in_progress", "role": "assistant", "content": []}}),
                ));
                events.push((
                    "response.content_part.added",
                    json!({"item_id": item_id, "output_index": 0, "content_index": 0, "part": part("")}),
                ));
                for piece in pieces(text) {
                    events.push((
                        "response.output_text.delta",
                        json!({"item_id": item_id, "output_index": 0, "content_index": 0, "delta": piece}),
                    ));
                }
                events.push((
                    "response.output_text.done",
                    json!({"item_id": item_id, "output_index": 0, "content_index": 0, "text": text}),
                ));
                events.push((
                    "response.content_part.done",
                    json!({"item_id": item_id, "output_index": 0, "content_index": 0, "part": part(text)}),
                ));
                json!({"type": "message", "id": item_id, "status": "completed",
                       "role": "assistant", "content": [part(text)]})
            }
        };
        events.push((
            "response.output_item.done",
            json!({"output_index": 0, "item": item}),
        ));
        let whole = response("completed", json!([item]), usage);
        events.push(("response.completed", json!({ "response": whole })));
        (crate::responses::numbered(events), whole)
    }

    /// Anthropic Messages: the event stream and the whole message.
    fn messages(&self, next: &Move) -> (Vec<Bytes>, Value) {
        let id = format!("msg_agent_{}", self.number);
        let usage = |output: u64| {
            json!({"input_tokens": self.input_tokens, "output_tokens": output,
                   "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0})
        };
        let message = |content: Value, stop: Value, output: u64| {
            json!({"id": id, "type": "message", "role": "assistant", "model": self.model,
                   "content": content, "stop_reason": stop, "stop_sequence": null,
                   "usage": usage(output)})
        };
        let mut events = vec![(
            "message_start",
            json!({"type": "message_start", "message": message(json!([]), Value::Null, 1)}),
        )];
        let (block, stop) = match next {
            Move::Call { name, input } => {
                let tool_id = format!("toolu_agent_{}", self.number);
                events.push(("content_block_start", json!({"type": "content_block_start", "index": 0,
                    "content_block": {"type": "tool_use", "id": tool_id, "name": name, "input": {}}})));
                for piece in pieces(&input.value().to_string()) {
                    events.push((
                        "content_block_delta",
                        json!({"type": "content_block_delta", "index": 0,
                        "delta": {"type": "input_json_delta", "partial_json": piece}}),
                    ));
                }
                (
                    json!({"type": "tool_use", "id": tool_id, "name": name, "input": input.value()}),
                    "tool_use",
                )
            }
            Move::Text(text) => {
                events.push((
                    "content_block_start",
                    json!({"type": "content_block_start", "index": 0,
                    "content_block": {"type": "text", "text": ""}}),
                ));
                events.push(("ping", json!({"type": "ping"})));
                for piece in pieces(text) {
                    events.push((
                        "content_block_delta",
                        json!({"type": "content_block_delta", "index": 0,
                        "delta": {"type": "text_delta", "text": piece}}),
                    ));
                }
                (json!({"type": "text", "text": text}), "end_turn")
            }
        };
        events.push((
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 0}),
        ));
        events.push((
            "message_delta",
            json!({"type": "message_delta",
            "delta": {"stop_reason": stop, "stop_sequence": null},
            "usage": {"output_tokens": self.output_tokens()}}),
        ));
        events.push(("message_stop", json!({"type": "message_stop"})));
        let events = events
            .into_iter()
            .map(|(name, data)| sse::named_event(name, data.to_string().as_bytes()))
            .collect();
        (
            events,
            message(json!([block]), json!(stop), self.output_tokens()),
        )
    }

    /// Gemini: the `alt=sse` chunks and the whole answer.
    fn gemini(&self, next: &Move) -> (Vec<Bytes>, Value) {
        let id = format!("agent-{}", self.number);
        let chunk = |parts: Value, finish: bool, output: u64| {
            let mut candidate = json!({"content": {"role": "model", "parts": parts}, "index": 0});
            if finish {
                candidate["finishReason"] = json!("STOP");
            }
            json!({"candidates": [candidate],
                   "usageMetadata": {"promptTokenCount": self.input_tokens,
                       "candidatesTokenCount": output, "totalTokenCount": self.input_tokens + output},
                   "modelVersion": self.model, "responseId": id})
        };
        let (chunks, whole) = match next {
            Move::Call { name, input } => {
                let part = json!([{"functionCall": {"name": name, "args": input.value()}}]);
                let whole = chunk(part.clone(), true, self.output_tokens());
                (vec![whole.clone()], whole)
            }
            Move::Text(text) => {
                let parts = pieces(text);
                let last = parts.len().saturating_sub(1);
                let chunks = parts
                    .iter()
                    .enumerate()
                    .map(|(n, piece)| chunk(json!([{ "text": piece }]), n == last, n as u64 + 1))
                    .collect();
                (
                    chunks,
                    chunk(json!([{ "text": text }]), true, self.output_tokens()),
                )
            }
        };
        let events = chunks
            .iter()
            .map(|c| sse::data_crlf(c.to_string().as_bytes()))
            .collect();
        (events, whole)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn script() -> AgentScript {
        AgentScript {
            file: PathBuf::from("/work/notes.txt"),
            old_line: "colour = red".into(),
            new_line: "colour = blue".into(),
            reply: "Changed the colour to blue.".into(),
            fail_turn: None,
        }
    }

    fn function(name: &str, parameters: Value) -> Offered {
        Offered::Function {
            name: name.into(),
            parameters,
        }
    }

    fn claude_tools() -> Vec<Offered> {
        let props = |names: &[&str]| {
            let props: serde_json::Map<String, Value> = names
                .iter()
                .map(|n| (n.to_string(), json!({"type": "string"})))
                .collect();
            json!({"type": "object", "properties": props})
        };
        vec![
            function("Bash", props(&["command"])),
            function("Edit", props(&["file_path", "old_string", "new_string"])),
            function("Read", props(&["file_path"])),
            function("Write", props(&["file_path", "content"])),
        ]
    }

    fn call(name: &str, input: Input) -> Result<Move, Fail> {
        Ok(Move::Call {
            name: name.into(),
            input,
        })
    }

    fn said(text: String) -> Result<Move, Fail> {
        Ok(Move::Text(text))
    }

    #[test]
    fn claude_code_reads_edits_and_answers() {
        let (s, tools) = (script(), claude_tools());
        assert_eq!(
            s.decide(&tools, 0),
            call("Read", Input::Json(json!({"file_path": "/work/notes.txt"})))
        );
        assert_eq!(
            s.decide(&tools, 1),
            call(
                "Edit",
                Input::Json(json!({"file_path": "/work/notes.txt",
                    "old_string": "colour = red", "new_string": "colour = blue"}))
            )
        );
        assert_eq!(
            s.decide(&tools, 2),
            said("Changed the colour to blue.".into())
        );
        let write_only: Vec<Offered> = tools.into_iter().filter(|t| t.name() != "Edit").collect();
        assert_eq!(
            s.decide(&write_only, 1),
            call(
                "Write",
                Input::Json(json!({"file_path": "/work/notes.txt", "content": "colour = blue\n"}))
            )
        );
    }

    #[test]
    fn codex_reads_with_its_shell_and_patches_freeform_or_through_a_function() {
        let s = script();
        let exec = function(
            "exec_command",
            json!({"type": "object", "properties": {"cmd": {"type": "string"}}}),
        );
        let custom = vec![
            exec.clone(),
            Offered::Custom {
                name: "apply_patch".into(),
            },
        ];
        assert_eq!(
            s.decide(&custom, 0),
            call(
                "exec_command",
                Input::Json(json!({"cmd": "cat '/work/notes.txt'"}))
            )
        );
        let patch = "*** Begin Patch\n*** Update File: /work/notes.txt\n@@\n-colour = red\n+colour = blue\n*** End Patch\n";
        assert_eq!(
            s.decide(&custom, 1),
            call("apply_patch", Input::Freeform(patch.into()))
        );
        let translated = vec![
            exec,
            function(
                "apply_patch",
                json!({"type": "object", "properties": {"patch": {"type": "string"}}}),
            ),
        ];
        assert_eq!(
            s.decide(&translated, 1),
            call("apply_patch", Input::Json(json!({ "patch": patch })))
        );
        let shell = vec![function(
            "shell",
            json!({"type": "object", "properties": {"command": {"type": "array"}}}),
        )];
        assert_eq!(
            s.decide(&shell, 0),
            call(
                "shell",
                Input::Json(json!({"command": ["bash", "-lc", "cat '/work/notes.txt'"]}))
            )
        );
    }

    #[test]
    fn no_tools_get_the_reply_and_missing_tools_are_named() {
        let s = script();
        assert_eq!(s.decide(&[], 0), said("Changed the colour to blue.".into()));
        let only = vec![function("get_goal", json!({"type": "object"}))];
        assert_eq!(
            s.decide(&only, 0),
            said("The mock agent script found no tool to read a file among: get_goal".into())
        );
    }

    #[test]
    fn the_failing_turn_fails_and_only_it() {
        let s = AgentScript {
            fail_turn: Some(2),
            ..script()
        };
        let tools = claude_tools();
        assert!(matches!(s.decide(&tools, 0), Ok(Move::Call { .. })));
        assert_eq!(s.decide(&tools, 1), Err(Fail));
        assert!(matches!(s.decide(&tools, 2), Ok(Move::Text(_))));
    }

    #[test]
    fn each_format_shows_its_tools_and_results() {
        let chat = json!({
            "tools": [{"type": "function", "function": {"name": "Read", "parameters": {"type": "object"}}},
                      {"type": "custom", "custom": {"name": "apply_patch"}}],
            "messages": [{"role": "user", "content": "go"}, {"role": "tool", "content": "x"}],
        });
        let names = |wire, request: &Value| -> Vec<String> {
            offered(wire, request)
                .iter()
                .map(|t| t.name().to_owned())
                .collect()
        };
        assert_eq!(names(Wire::Chat, &chat), ["Read", "apply_patch"]);
        assert_eq!(tool_results(Wire::Chat, &chat), 1);

        let responses = json!({
            "tools": [{"type": "function", "name": "exec_command", "parameters": {}},
                      {"type": "custom", "name": "apply_patch"}, {"type": "web_search"},
                      {"type": "namespace", "name": "ns", "tools": []}],
            "input": [{"type": "message", "role": "user", "content": []},
                      {"type": "function_call_output", "call_id": "a", "output": "x"},
                      {"type": "custom_tool_call_output", "call_id": "b", "output": "y"}],
        });
        assert_eq!(
            names(Wire::Responses, &responses),
            ["exec_command", "apply_patch"]
        );
        assert_eq!(tool_results(Wire::Responses, &responses), 2);
        assert_eq!(
            offered(Wire::Responses, &responses)[1],
            Offered::Custom {
                name: "apply_patch".into()
            }
        );

        let messages = json!({
            "tools": [{"name": "Read", "input_schema": {}}, {"type": "web_search_20250305", "name": "web_search"}],
            "messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": "x"}]}],
        });
        assert_eq!(names(Wire::Messages, &messages), ["Read"]);
        assert_eq!(tool_results(Wire::Messages, &messages), 1);

        let gemini = json!({
            "tools": [{"functionDeclarations": [{"name": "exec_command", "parameters": {}}]}],
            "contents": [{"role": "user", "parts": [{"text": "go"}]},
                         {"role": "user", "parts": [{"functionResponse": {"name": "exec_command", "response": {}}}]}],
        });
        assert_eq!(names(Wire::Gemini, &gemini), ["exec_command"]);
        assert_eq!(tool_results(Wire::Gemini, &gemini), 1);
    }
}

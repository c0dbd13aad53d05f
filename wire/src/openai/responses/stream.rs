//! An OpenAI chat stream encoded as the Responses event sequence, every event numbered.

use bytes::Bytes;
use serde_json::{json, Value};

use super::tools::custom_input;
use super::{assistant_message, call_item, message_item, new_id, status_for, Echo};
use crate::openai::ChunkIn;
use crate::sse::Event;
use crate::tool_names::Kind;
use crate::Usage;

/// A tool call being streamed.
#[derive(Debug)]
struct StreamCall {
    id: String,
    call_id: Value,
    /// The name the provider called (the stored conversation keeps it).
    name: String,
    /// A custom tool's input is sent whole when the call ends: the provider streams it
    /// as JSON arguments, whose pieces are not pieces of the input.
    kind: Kind,
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

    /// Ends the calls; gives them as chat tool calls (for the stored conversation).
    fn close_calls(&mut self, out: &mut Vec<Bytes>) -> Vec<Value> {
        let mut chat_calls = Vec::new();
        for (_, call) in std::mem::take(&mut self.calls) {
            let (id, index) = (&call.id, call.output_index);
            match call.kind {
                Kind::Function => {
                    let e = self.event(
                        "response.function_call_arguments.done",
                        json!({"item_id": id, "output_index": index, "arguments": call.arguments}),
                    );
                    out.push(e);
                }
                Kind::Custom => {
                    let input = custom_input(&call.arguments);
                    if !input.is_empty() {
                        let e = self.event(
                            "response.custom_tool_call_input.delta",
                            json!({"item_id": id, "output_index": index, "delta": input}),
                        );
                        out.push(e);
                    }
                    let e = self.event(
                        "response.custom_tool_call_input.done",
                        json!({"item_id": id, "output_index": index, "input": input}),
                    );
                    out.push(e);
                }
            }
            chat_calls.push(json!({"id": call.call_id, "type": "function",
                "function": {"name": call.name, "arguments": call.arguments}}));
            let item = call_item(
                &self.echo.tools,
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
        chat_calls
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
                    let name = f.name.value().as_str().unwrap_or("").to_string();
                    let kind = self.echo.tools.resolve(&name).kind;
                    let prefix = if kind == Kind::Custom { "ctc" } else { "fc" };
                    let c = StreamCall {
                        id: new_id(prefix),
                        call_id: call.id.value(),
                        name,
                        kind,
                        arguments: String::new(),
                        output_index: self.next_index,
                    };
                    self.next_index += 1;
                    let item = call_item(
                        &self.echo.tools,
                        &c.id,
                        &c.call_id,
                        &c.name,
                        "",
                        "in_progress",
                    );
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
                    if c.kind == Kind::Custom {
                        continue;
                    }
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
        let calls = self.close_calls(&mut out);
        let text: String = self
            .output
            .iter()
            .filter(|i| i["type"] == "message")
            .filter_map(|i| i["content"][0]["text"].as_str())
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

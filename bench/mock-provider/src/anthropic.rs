//! Anthropic's wire format: the Messages API (`POST /v1/messages`), JSON and SSE, and
//! its errors.
//!
//! Responses follow the shapes Anthropic's API sends, field for field: a `message`
//! object, the `message_start` … `message_stop` event sequence when streaming, and
//! `{"type":"error","error":{"type","message"}}` errors. Token counts are
//! deterministic, so tests can predict them with [`expected_anthropic_usage`].

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::header::RETRY_AFTER;
use axum::http::{HeaderMap, HeaderName, Method, StatusCode, Uri};
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::agent::Wire;
use crate::behavior::Behavior;
use crate::openai::{content_pieces_of, CONTENT_PIECES, TOKENS_PER_MESSAGE};
use crate::record::RecordedRequest;
use crate::reply::{
    broken_stream, json_response, plain_body, recorded, stream_response, to_json,
    wait_before_headers, with_header, words,
};
use crate::server::Shared;
use crate::sse::{self, Step};
use crate::tool_call::{
    tool_call_arguments, TOOL_CALL_ARGUMENT_PIECES, TOOL_CALL_PREAMBLE, TOOL_RESULT_REPLY,
    TOOL_USE_ID,
};

const EVENT_STREAM: &str = "text/event-stream; charset=utf-8";

/// `cache_creation_input_tokens` reported when the model name contains `cache`.
pub const CACHE_CREATION_INPUT_TOKENS: u64 = 6;

/// `cache_read_input_tokens` reported when the model name contains `cache`.
pub const CACHE_READ_INPUT_TOKENS: u64 = 4;

/// Token counts as Anthropic reports them in `usage`.
///
/// Deserializes from any of Anthropic's `usage` objects; fields a given object leaves
/// out (e.g. `message_delta` carries only `output_tokens`) read as 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct AnthropicUsage {
    /// Tokens of the request that were neither written to nor read from the cache.
    pub input_tokens: u64,
    /// Tokens of the reply.
    pub output_tokens: u64,
    /// Tokens of the request written to the prompt cache.
    pub cache_creation_input_tokens: u64,
    /// Tokens of the request read from the prompt cache.
    pub cache_read_input_tokens: u64,
}

/// The usage the mock reports for a Messages request body.
///
/// * `input_tokens` = the words of `system` (a string, or the `text` of its text
///   blocks) + for each entry of `messages`: 3 + the whitespace-separated words of its
///   `content` (a string, or the `text` of each `text` block; other blocks, tool
///   results included, count 0 words);
/// * `output_tokens` = the number of streamed content pieces: 5 for a text answer, and
///   for a tool-use answer 2 + the 4 `partial_json` pieces = 6 (one for the
///   "Let me check." text, one for the `tool_use` block);
/// * `cache_creation_input_tokens` = 6 and `cache_read_input_tokens` = 4 when the
///   model name contains `cache`, 0 otherwise (like Anthropic, `input_tokens` does not
///   include them).
///
/// The same numbers are sent whether the request streams or not.
pub fn expected_anthropic_usage(request: &Value) -> AnthropicUsage {
    let system = text_words(request.get("system"));
    let messages: u64 = request
        .get("messages")
        .and_then(Value::as_array)
        .map(|messages| {
            messages
                .iter()
                .map(|message| TOKENS_PER_MESSAGE + text_words(message.get("content")))
                .sum()
        })
        .unwrap_or(0);
    let output = match answer_kind(request) {
        AnswerKind::ToolUse(_) => 2 + TOOL_CALL_ARGUMENT_PIECES.len(),
        AnswerKind::Content | AnswerKind::ToolResult => CONTENT_PIECES,
    };
    let cached = request
        .get("model")
        .and_then(Value::as_str)
        .is_some_and(|model| model.contains("cache"));
    AnthropicUsage {
        input_tokens: system + messages,
        output_tokens: output as u64,
        cache_creation_input_tokens: if cached {
            CACHE_CREATION_INPUT_TOKENS
        } else {
            0
        },
        cache_read_input_tokens: if cached { CACHE_READ_INPUT_TOKENS } else { 0 },
    }
}

/// Words of a string, or of the `text` blocks of an array of blocks.
fn text_words(content: Option<&Value>) -> u64 {
    match content {
        Some(Value::String(text)) => words(text),
        Some(Value::Array(blocks)) => blocks
            .iter()
            .filter(|block| block.get("type").and_then(Value::as_str) == Some("text"))
            .filter_map(|block| block.get("text").and_then(Value::as_str))
            .map(words)
            .sum(),
        _ => 0,
    }
}

/// What the answer is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
enum AnswerKind {
    /// The configured content.
    Content,
    /// "Let me check." and a `tool_use` block calling this tool.
    ToolUse(String),
    /// [`TOOL_RESULT_REPLY`], after a tool result.
    ToolResult,
}

/// A tool result in the last user message wins; otherwise tools (unless `tool_choice`
/// is `none`) ask for a tool call: the tool `tool_choice` names, or the first one.
fn answer_kind(request: &Value) -> AnswerKind {
    let messages = request.get("messages").and_then(Value::as_array);
    let last_user = messages.and_then(|messages| {
        messages
            .iter()
            .rev()
            .find(|message| message.get("role").and_then(Value::as_str) == Some("user"))
    });
    let has_tool_result = last_user
        .and_then(|message| message.get("content"))
        .and_then(Value::as_array)
        .is_some_and(|blocks| {
            blocks
                .iter()
                .any(|block| block.get("type").and_then(Value::as_str) == Some("tool_result"))
        });
    if has_tool_result {
        return AnswerKind::ToolResult;
    }
    let choice = request.get("tool_choice");
    let choice_type = choice
        .and_then(|choice| choice.get("type"))
        .and_then(Value::as_str);
    if choice_type == Some("none") {
        return AnswerKind::Content;
    }
    let chosen = choice
        .filter(|_| choice_type == Some("tool"))
        .and_then(|choice| choice.get("name"))
        .and_then(Value::as_str);
    let first = request
        .get("tools")
        .and_then(Value::as_array)
        .and_then(|tools| tools.first())
        .and_then(|tool| tool.get("name"))
        .and_then(Value::as_str);
    match first {
        Some(first) => AnswerKind::ToolUse(chosen.unwrap_or(first).to_owned()),
        None => AnswerKind::Content,
    }
}

// ---------------------------------------------------------------------------
// Wire structures (field order as Anthropic sends them).

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Block<'a> {
    Text {
        text: &'a str,
    },
    ToolUse {
        id: &'static str,
        name: &'a str,
        input: Value,
    },
}

#[derive(Serialize)]
struct MessageWire<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    role: &'static str,
    model: &'a str,
    content: Vec<Block<'a>>,
    stop_reason: Option<&'static str>,
    stop_sequence: (),
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<AnthropicUsage>,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Delta<'a> {
    TextDelta { text: &'a str },
    InputJsonDelta { partial_json: &'a str },
}

#[derive(Serialize)]
struct MessageDeltaBody {
    stop_reason: &'static str,
    stop_sequence: (),
}

#[derive(Serialize)]
struct OutputUsage {
    output_tokens: u64,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Event<'a> {
    MessageStart {
        message: MessageWire<'a>,
    },
    ContentBlockStart {
        index: usize,
        content_block: Block<'a>,
    },
    Ping,
    ContentBlockDelta {
        index: usize,
        delta: Delta<'a>,
    },
    ContentBlockStop {
        index: usize,
    },
    MessageDelta {
        delta: MessageDeltaBody,
        #[serde(skip_serializing_if = "Option::is_none")]
        usage: Option<OutputUsage>,
    },
    MessageStop,
}

impl Event<'_> {
    /// The SSE event name, which is also the payload's `type`.
    fn name(&self) -> &'static str {
        match self {
            Event::MessageStart { .. } => "message_start",
            Event::ContentBlockStart { .. } => "content_block_start",
            Event::Ping => "ping",
            Event::ContentBlockDelta { .. } => "content_block_delta",
            Event::ContentBlockStop { .. } => "content_block_stop",
            Event::MessageDelta { .. } => "message_delta",
            Event::MessageStop => "message_stop",
        }
    }

    fn sse(&self) -> Bytes {
        sse::named_event(self.name(), &to_json(self))
    }
}

#[derive(Serialize)]
struct ErrorDetail<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    message: &'a str,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    error: ErrorDetail<'a>,
}

fn error_json(kind: &str, message: &str) -> Vec<u8> {
    to_json(&ErrorBody {
        kind: "error",
        error: ErrorDetail { kind, message },
    })
}

/// The error `type` Anthropic uses for an HTTP status.
pub fn error_type(status: u16) -> &'static str {
    match status {
        400 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        529 => "overloaded_error",
        500..=599 => "api_error",
        _ => "invalid_request_error",
    }
}

/// An error in Anthropic's shape, its `type` following `status`.
fn error(status: StatusCode, message: &str) -> Response {
    json_response(status, error_json(error_type(status.as_u16()), message))
}

/// The error response for [`Behavior::Status`]; `429` also carries `retry-after: 1`
/// and rate-limit headers.
pub(crate) fn status_error(status: u16, model: &str) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let message = match status.as_u16() {
        400 => "Invalid request: the mock provider was asked to reject it.".to_owned(),
        401 => "invalid x-api-key".to_owned(),
        403 => "Your API key does not have permission to use the specified resource.".to_owned(),
        404 => format!("model: {model}"),
        413 => "Request exceeds the maximum allowed number of bytes.".to_owned(),
        429 => "This request would exceed the rate limit for your organization of 60 requests \
                per minute. Please try again in 1s."
            .to_owned(),
        529 => "Overloaded".to_owned(),
        500..=599 => "Internal server error".to_owned(),
        _ => format!("The mock provider answered {status}."),
    };
    let mut response = error(status, &message);
    if status == StatusCode::TOO_MANY_REQUESTS {
        for (name, value) in [
            (RETRY_AFTER, "1"),
            (
                HeaderName::from_static("anthropic-ratelimit-requests-limit"),
                "60",
            ),
            (
                HeaderName::from_static("anthropic-ratelimit-requests-remaining"),
                "0",
            ),
        ] {
            response = with_header(response, name, value);
        }
    }
    response
}

fn invalid_request(message: &str) -> Response {
    error(StatusCode::BAD_REQUEST, message)
}

/// The event a [`Behavior::StreamErrorEvent`] stream ends with.
fn stream_error_event() -> Bytes {
    sse::named_event("error", &error_json("overloaded_error", "Overloaded"))
}

// ---------------------------------------------------------------------------
// Handlers.

/// The Anthropic routes.
pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new().route("/v1/messages", post(messages))
}

/// Copies `x-request-id` into Anthropic's own `request-id` header.
fn with_request_id(response: Response) -> Response {
    let id = response
        .headers()
        .get("x-request-id")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    match id {
        Some(id) => with_header(response, HeaderName::from_static("request-id"), &id),
        None => response,
    }
}

async fn messages(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request = RecordedRequest::new(&method, &uri, &headers, body);
    with_request_id(recorded(shared, request, true, messages_response).await)
}

async fn messages_response(shared: Arc<Shared>, json: Option<Value>) -> Response {
    let Some(json) = json.filter(Value::is_object) else {
        return invalid_request("The request body is not valid JSON.");
    };
    let Some(model) = json.get("model").and_then(Value::as_str) else {
        return invalid_request("model: Field required");
    };
    if !json.get("messages").is_some_and(Value::is_array) {
        return invalid_request("messages: Field required");
    }
    match json.get("max_tokens") {
        None => return invalid_request("max_tokens: Field required"),
        Some(value) if !value.is_u64() => {
            return invalid_request("max_tokens: Input should be a valid integer")
        }
        Some(_) => {}
    }
    if let Some(script) = &shared.config.agent {
        let stream = json.get("stream").and_then(Value::as_bool) == Some(true);
        return crate::agent::answer(&shared, script, Wire::Messages, &json, model, stream);
    }
    let behavior = shared.behavior_for(model);
    if let Behavior::Status(status) = behavior {
        return status_error(status, model);
    }
    wait_before_headers(&shared, behavior).await;

    let kind = answer_kind(&json);
    let pieces = shared.config.pieces;
    let usage = (!behavior.omits_usage()).then(|| {
        let usage = expected_anthropic_usage(&json);
        match kind {
            AnswerKind::ToolUse(_) => usage,
            _ => AnthropicUsage {
                output_tokens: pieces as u64,
                ..usage
            },
        }
    });
    let reply = Reply {
        id: format!("msg_mock_{}", shared.next_completion_number()),
        model,
        kind,
        usage,
        content: &shared.config.content,
        pieces,
    };
    if json.get("stream").and_then(Value::as_bool) == Some(true) {
        let steps = reply.steps(behavior, shared.config.stall);
        return stream_response(&shared, steps, EVENT_STREAM);
    }
    plain_body(&shared, behavior, to_json(&reply.message()))
}

/// One answer, as a message or as a stream of events.
struct Reply<'a> {
    id: String,
    model: &'a str,
    kind: AnswerKind,
    usage: Option<AnthropicUsage>,
    content: &'a str,
    /// Into how many pieces a text answer is streamed.
    pieces: usize,
}

impl Reply<'_> {
    /// The text of the first content block.
    fn text(&self) -> &str {
        match self.kind {
            AnswerKind::Content => self.content,
            AnswerKind::ToolUse(_) => TOOL_CALL_PREAMBLE,
            AnswerKind::ToolResult => TOOL_RESULT_REPLY,
        }
    }

    fn tool(&self) -> Option<&str> {
        match &self.kind {
            AnswerKind::ToolUse(name) => Some(name),
            _ => None,
        }
    }

    fn stop_reason(&self) -> &'static str {
        if self.tool().is_some() {
            "tool_use"
        } else {
            "end_turn"
        }
    }

    /// The non-streamed message.
    fn message(&self) -> MessageWire<'_> {
        let mut content = vec![Block::Text { text: self.text() }];
        if let Some(name) = self.tool() {
            content.push(Block::ToolUse {
                id: TOOL_USE_ID,
                name,
                input: tool_call_arguments(),
            });
        }
        MessageWire {
            id: &self.id,
            kind: "message",
            role: "assistant",
            model: self.model,
            content,
            stop_reason: Some(self.stop_reason()),
            stop_sequence: (),
            usage: self.usage,
        }
    }

    /// `message_start`, the text block (`content_block_start`, `ping`, one
    /// `text_delta` per piece, `content_block_stop`), the `tool_use` block when there is
    /// one (one `input_json_delta` per argument piece), `message_delta`, and
    /// `message_stop`; broken after the second delta as `behavior` asks.
    fn steps(&self, behavior: Behavior, stall: Duration) -> Vec<Step> {
        let start_usage = self.usage.map(|usage| AnthropicUsage {
            output_tokens: 1,
            ..usage
        });
        let mut events: Vec<Event<'_>> = vec![
            Event::MessageStart {
                message: MessageWire {
                    id: &self.id,
                    kind: "message",
                    role: "assistant",
                    model: self.model,
                    content: Vec::new(),
                    stop_reason: None,
                    stop_sequence: (),
                    usage: start_usage,
                },
            },
            Event::ContentBlockStart {
                index: 0,
                content_block: Block::Text { text: "" },
            },
            Event::Ping,
        ];
        let pieces = match self.kind {
            AnswerKind::ToolUse(_) => vec![TOOL_CALL_PREAMBLE.to_owned()],
            _ => content_pieces_of(self.text(), self.pieces),
        };
        for piece in &pieces {
            events.push(Event::ContentBlockDelta {
                index: 0,
                delta: Delta::TextDelta { text: piece },
            });
        }
        events.push(Event::ContentBlockStop { index: 0 });
        if let Some(name) = self.tool() {
            events.push(Event::ContentBlockStart {
                index: 1,
                content_block: Block::ToolUse {
                    id: TOOL_USE_ID,
                    name,
                    input: Value::Object(serde_json::Map::new()),
                },
            });
            for piece in TOOL_CALL_ARGUMENT_PIECES {
                events.push(Event::ContentBlockDelta {
                    index: 1,
                    delta: Delta::InputJsonDelta {
                        partial_json: piece,
                    },
                });
            }
            events.push(Event::ContentBlockStop { index: 1 });
        }
        events.push(Event::MessageDelta {
            delta: MessageDeltaBody {
                stop_reason: self.stop_reason(),
                stop_sequence: (),
            },
            usage: self.usage.map(|usage| OutputUsage {
                output_tokens: usage.output_tokens,
            }),
        });
        events.push(Event::MessageStop);

        let split = events
            .iter()
            .enumerate()
            .filter(|(_, event)| matches!(event, Event::ContentBlockDelta { .. }))
            .nth(1)
            .map_or(events.len(), |(at, _)| at + 1);
        // message_start, the empty text block and the ping come before the first delta
        // (or the first tool-use block).
        let preamble = events
            .iter()
            .position(|event| {
                matches!(
                    event,
                    Event::ContentBlockDelta { .. }
                        | Event::ContentBlockStart {
                            content_block: Block::ToolUse { .. },
                            ..
                        }
                )
            })
            .unwrap_or(events.len());
        let mut head: Vec<Bytes> = events.iter().map(Event::sse).collect();
        let tail = head.split_off(split);
        broken_stream(head, tail, preamble, behavior, stall, stream_error_event())
    }
}

/// Any path under `/v1/messages` the mock does not serve: Anthropic's 404.
pub(crate) async fn not_found(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request = RecordedRequest::new(&method, &uri, &headers, body);
    let response = recorded(shared, request, false, |_, _| async {
        error(StatusCode::NOT_FOUND, "Not Found")
    })
    .await;
    with_request_id(response)
}

/// `/v1/messages` with another method than `POST`: Anthropic's 405.
pub(crate) async fn method_not_allowed(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let message = format!("Method Not Allowed ({} {})", method, uri.path());
    let request = RecordedRequest::new(&method, &uri, &headers, body);
    let response = recorded(shared, request, false, |_, _| async move {
        error(StatusCode::METHOD_NOT_ALLOWED, &message)
    })
    .await;
    with_request_id(response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn usage_counts_system_and_text_blocks() {
        let request = json!({
            "model": "claude-x",
            "max_tokens": 10,
            "system": [{"type": "text", "text": "Be brief."}],
            "messages": [
                {"role": "user", "content": "one two  three"},
                {"role": "assistant", "content": [
                    {"type": "text", "text": "four"},
                    {"type": "tool_use", "id": "t", "name": "n", "input": {}}
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "t", "content": "ignored words"}
                ]}
            ]
        });
        assert_eq!(
            expected_anthropic_usage(&request),
            AnthropicUsage {
                input_tokens: 2 + (3 + 3) + (3 + 1) + 3,
                output_tokens: 5,
                cache_creation_input_tokens: 0,
                cache_read_input_tokens: 0,
            }
        );
    }

    #[test]
    fn tools_choose_the_answer() {
        let tools = json!([{"name": "get_weather", "input_schema": {}}, {"name": "other"}]);
        let ask = json!({"model": "claude-cache", "tools": tools,
            "messages": [{"role": "user", "content": "Weather?"}]});
        assert_eq!(answer_kind(&ask), AnswerKind::ToolUse("get_weather".into()));
        let usage = expected_anthropic_usage(&ask);
        assert_eq!(usage.output_tokens, 6);
        assert_eq!(
            (
                usage.cache_creation_input_tokens,
                usage.cache_read_input_tokens
            ),
            (6, 4)
        );
        let mut named = ask.clone();
        named["tool_choice"] = json!({"type": "tool", "name": "other"});
        assert_eq!(answer_kind(&named), AnswerKind::ToolUse("other".into()));
        let mut none = ask.clone();
        none["tool_choice"] = json!({"type": "none"});
        assert_eq!(answer_kind(&none), AnswerKind::Content);
        let mut answered = ask;
        answered["messages"] = json!([{"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_mock_1", "content": "sunny"}]}]);
        assert_eq!(answer_kind(&answered), AnswerKind::ToolResult);
    }

    #[test]
    fn error_types_follow_the_status() {
        let cases = [
            (400, "invalid_request_error"),
            (401, "authentication_error"),
            (403, "permission_error"),
            (404, "not_found_error"),
            (429, "rate_limit_error"),
            (500, "api_error"),
            (529, "overloaded_error"),
        ];
        for (status, kind) in cases {
            assert_eq!(error_type(status), kind);
        }
    }
}

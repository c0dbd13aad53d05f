//! OpenAI's wire format: chat completions (JSON and SSE), embeddings, models, and errors.
//!
//! Responses follow the shapes OpenAI's API sends, field for field and in the same
//! field order, so that a gateway tested against the mock parses the real service too.
//!
//! Asked with `tools`, a chat completion plays the scripted exchange of
//! [`crate::tool_call`]: it calls the first function (or the one a named `tool_choice`
//! picks) with `{"location":"Paris"}`, and once the last message is a `tool` message
//! it answers [`TOOL_RESULT_REPLY`].
//!
//! Token counts are deterministic, so tests can predict them with [`expected_usage`]
//! and [`expected_embedding_usage`].

use std::sync::Arc;

use axum::extract::State;
use axum::http::header::RETRY_AFTER;
use axum::http::{HeaderMap, HeaderName, Method, StatusCode, Uri};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use base64::Engine as _;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::agent::Wire;
use crate::behavior::Behavior;
use crate::record::RecordedRequest;
use crate::reply::{
    broken_stream, json_response, plain_body, recorded, stream_response, to_json,
    wait_before_headers, with_header, words,
};
use crate::server::{MockConfig, Shared};
use crate::sse::{self, Step};
use crate::tool_call::{TOOL_CALL_ARGUMENTS, TOOL_CALL_ARGUMENT_PIECES, TOOL_RESULT_REPLY};

/// Into how many pieces a text reply is split when streamed; also its
/// `completion_tokens`.
pub const CONTENT_PIECES: usize = 5;

/// The `id` of the tool call the mock makes.
pub const TOOL_CALL_ID: &str = "call_mock_1";

/// Tokens counted per message on top of its words (see [`expected_usage`]).
pub const TOKENS_PER_MESSAGE: u64 = 3;

/// Length of the vectors returned by `/v1/embeddings`.
pub const EMBEDDING_DIMENSIONS: usize = 8;

/// The `system_fingerprint` of every completion.
const SYSTEM_FINGERPRINT: &str = "fp_mock";

pub(crate) const EVENT_STREAM: &str = "text/event-stream; charset=utf-8";

/// The models listed by `GET /v1/models`.
pub const MODELS: &[&str] = &["mock-gpt-4o", "mock-gpt-4o-mini", "mock-text-embedding"];

/// Token counts as OpenAI reports them in `usage`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Usage {
    /// Tokens of the request.
    pub prompt_tokens: u64,
    /// Tokens of the reply (0 for embeddings).
    pub completion_tokens: u64,
    /// `prompt_tokens + completion_tokens`.
    pub total_tokens: u64,
}

impl Usage {
    fn new(prompt_tokens: u64, completion_tokens: u64) -> Usage {
        Usage {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
        }
    }
}

/// The usage the mock reports for a chat-completion request body.
///
/// * `prompt_tokens` = for each entry of `messages`: 3 + the number of
///   whitespace-separated words of its `content` (a string, or the `text` of each part
///   when it is an array of parts; anything else counts 0 words);
///   (`tool` messages count the words of their content like any other; an assistant
///   message carrying only `tool_calls` has `null` content and counts 3);
/// * `completion_tokens` = the number of streamed pieces of the answer: for a text
///   answer (the configured content, or [`TOOL_RESULT_REPLY`] after a `tool` message)
///   its [`CONTENT_PIECES`] (5) content pieces; for a tool call 1 (the chunk naming the
///   function) + the 4 argument pieces of [`TOOL_CALL_ARGUMENT_PIECES`] = 5;
/// * `total_tokens` = their sum.
///
/// The same numbers are sent whether the request streams or not.
pub fn expected_usage(request_json: &Value) -> Usage {
    let prompt = request_json
        .get("messages")
        .and_then(Value::as_array)
        .map(|messages| {
            messages
                .iter()
                .map(|message| TOKENS_PER_MESSAGE + content_words(message.get("content")))
                .sum()
        })
        .unwrap_or(0);
    let completion = match answer_kind(request_json) {
        AnswerKind::ToolCall(_) => 1 + TOOL_CALL_ARGUMENT_PIECES.len(),
        AnswerKind::Content | AnswerKind::ToolResult => CONTENT_PIECES,
    };
    Usage::new(prompt, completion as u64)
}

/// What a chat completion answers.
#[derive(Debug, Clone, PartialEq, Eq)]
enum AnswerKind {
    /// The configured content.
    Content,
    /// A call of this function with [`TOOL_CALL_ARGUMENTS`].
    ToolCall(String),
    /// [`TOOL_RESULT_REPLY`], after a `tool` message.
    ToolResult,
}

/// A last message with role `tool` asks for [`TOOL_RESULT_REPLY`]; otherwise a
/// non-empty `tools` array (unless `tool_choice` is `"none"`) asks for a call of the
/// function a named `tool_choice` picks (`{"type":"function","function":{"name":..}}`),
/// or of the first tool's `function.name`.
fn answer_kind(request: &Value) -> AnswerKind {
    let last_role = request
        .get("messages")
        .and_then(Value::as_array)
        .and_then(|messages| messages.last())
        .and_then(|message| message.get("role"))
        .and_then(Value::as_str);
    if last_role == Some("tool") {
        return AnswerKind::ToolResult;
    }
    let choice = request.get("tool_choice");
    if choice.and_then(Value::as_str) == Some("none") {
        return AnswerKind::Content;
    }
    let chosen = choice
        .and_then(|choice| choice.pointer("/function/name"))
        .and_then(Value::as_str);
    let first = request
        .get("tools")
        .and_then(Value::as_array)
        .and_then(|tools| tools.first())
        .and_then(|tool| tool.pointer("/function/name"))
        .and_then(Value::as_str);
    match first {
        Some(first) => AnswerKind::ToolCall(chosen.unwrap_or(first).to_owned()),
        None => AnswerKind::Content,
    }
}

/// The usage the mock reports for an embeddings request body.
///
/// `prompt_tokens` = `total_tokens` = the number of whitespace-separated words across
/// the inputs (`input` as a string or an array of strings), or the number of token ids
/// when inputs are given as token arrays; `completion_tokens` = 0.
pub fn expected_embedding_usage(request_json: &Value) -> Usage {
    let prompt = embedding_inputs(request_json.get("input"))
        .iter()
        .map(|input| match input {
            EmbeddingInput::Text(text) => words(text),
            EmbeddingInput::Tokens(tokens) => tokens.len() as u64,
        })
        .sum();
    Usage::new(prompt, 0)
}

/// The deterministic embedding of one text input: 8 components of unit length, derived
/// from a 64-bit FNV-1a hash of the text. Token-array inputs are embedded as their ids
/// joined by single spaces.
pub fn embedding_for(text: &str) -> [f32; EMBEDDING_DIMENSIONS] {
    let mut state = text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    let mut vector = [0f32; EMBEDDING_DIMENSIONS];
    for component in vector.iter_mut() {
        // xorshift64*; the top 24 bits give an exact f32 in [-1, 1).
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        let bits = (state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 40) as u32;
        *component = bits as f32 / (1u32 << 23) as f32 - 1.0;
    }
    let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        for component in vector.iter_mut() {
            *component /= norm;
        }
    }
    vector
}

/// The reply split into [`CONTENT_PIECES`] runs of characters as even as possible
/// (earlier pieces take the remainder). Pieces are empty when the reply is shorter.
pub fn content_pieces(content: &str) -> Vec<String> {
    content_pieces_of(content, CONTENT_PIECES)
}

/// The reply split into `count` runs of characters as even as possible (earlier pieces
/// take the remainder); [`content_pieces`] with another count.
pub fn content_pieces_of(content: &str, count: usize) -> Vec<String> {
    let count = count.max(1);
    let chars: Vec<char> = content.chars().collect();
    let base = chars.len() / count;
    let extra = chars.len() % count;
    let mut pieces = Vec::with_capacity(count);
    let mut start = 0;
    for i in 0..count {
        let len = base + usize::from(i < extra);
        pieces.push(chars[start..start + len].iter().collect());
        start += len;
    }
    pieces
}

fn content_words(content: Option<&Value>) -> u64 {
    match content {
        Some(Value::String(text)) => words(text),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|part| part.get("text").and_then(Value::as_str))
            .map(words)
            .sum(),
        _ => 0,
    }
}

enum EmbeddingInput {
    Text(String),
    Tokens(Vec<u64>),
}

impl EmbeddingInput {
    fn text(&self) -> String {
        match self {
            EmbeddingInput::Text(text) => text.clone(),
            EmbeddingInput::Tokens(tokens) => tokens
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(" "),
        }
    }
}

fn tokens(values: &[Value]) -> Option<Vec<u64>> {
    values.iter().map(Value::as_u64).collect()
}

/// `input` as OpenAI accepts it: a string, an array of strings, a token array, or an
/// array of token arrays.
fn embedding_inputs(input: Option<&Value>) -> Vec<EmbeddingInput> {
    match input {
        Some(Value::String(text)) => vec![EmbeddingInput::Text(text.clone())],
        Some(Value::Array(items)) if !items.is_empty() && items.iter().all(Value::is_u64) => {
            tokens(items)
                .map(|ids| vec![EmbeddingInput::Tokens(ids)])
                .unwrap_or_default()
        }
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|item| match item {
                Value::String(text) => Some(EmbeddingInput::Text(text.clone())),
                Value::Array(ids) => tokens(ids).map(EmbeddingInput::Tokens),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

// ---------------------------------------------------------------------------
// Wire structures (field order as OpenAI sends them).

#[derive(Serialize)]
struct PromptTokensDetails {
    cached_tokens: u64,
    audio_tokens: u64,
}

#[derive(Serialize)]
struct CompletionTokensDetails {
    reasoning_tokens: u64,
    audio_tokens: u64,
    accepted_prediction_tokens: u64,
    rejected_prediction_tokens: u64,
}

#[derive(Serialize)]
struct UsageWire {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
    prompt_tokens_details: PromptTokensDetails,
    completion_tokens_details: CompletionTokensDetails,
}

impl From<Usage> for UsageWire {
    fn from(usage: Usage) -> Self {
        UsageWire {
            prompt_tokens: usage.prompt_tokens,
            completion_tokens: usage.completion_tokens,
            total_tokens: usage.total_tokens,
            prompt_tokens_details: PromptTokensDetails {
                cached_tokens: 0,
                audio_tokens: 0,
            },
            completion_tokens_details: CompletionTokensDetails {
                reasoning_tokens: 0,
                audio_tokens: 0,
                accepted_prediction_tokens: 0,
                rejected_prediction_tokens: 0,
            },
        }
    }
}

#[derive(Serialize)]
struct FunctionCall<'a> {
    name: &'a str,
    arguments: &'static str,
}

#[derive(Serialize)]
struct ToolCall<'a> {
    id: &'static str,
    #[serde(rename = "type")]
    kind: &'static str,
    function: FunctionCall<'a>,
}

#[derive(Serialize)]
struct Message<'a> {
    role: &'static str,
    /// `None` writes `"content": null` (a tool call).
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<[ToolCall<'a>; 1]>,
    refusal: (),
    annotations: [(); 0],
}

#[derive(Serialize)]
struct Choice<'a> {
    index: u32,
    message: Message<'a>,
    logprobs: (),
    finish_reason: &'static str,
}

#[derive(Serialize)]
struct ChatCompletion<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: [Choice<'a>; 1],
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<UsageWire>,
    service_tier: &'static str,
    system_fingerprint: &'static str,
}

#[derive(Serialize, Default)]
struct Delta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    /// `Some(None)` writes `"content": null`.
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<Option<&'a str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<[ToolCallDelta<'a>; 1]>,
    /// `Some(())` writes `"refusal": null`.
    #[serde(skip_serializing_if = "Option::is_none")]
    refusal: Option<()>,
}

/// One piece of a streamed tool call: the first names it (`id`, `type`, `function.name`
/// and empty `arguments`), the next ones only add to `function.arguments`.
#[derive(Serialize)]
struct ToolCallDelta<'a> {
    index: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'static str>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    function: FunctionDelta<'a>,
}

#[derive(Serialize)]
struct FunctionDelta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    arguments: &'a str,
}

#[derive(Serialize)]
struct ChunkChoice<'a> {
    index: u32,
    delta: Delta<'a>,
    logprobs: (),
    finish_reason: Option<&'static str>,
}

#[derive(Serialize)]
struct ChatChunk<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    service_tier: &'static str,
    system_fingerprint: &'static str,
    choices: Vec<ChunkChoice<'a>>,
    /// Absent without `include_usage`; `null` on every chunk but the last with it.
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Option<UsageWire>>,
}

#[derive(Serialize)]
struct Embedding {
    object: &'static str,
    index: usize,
    embedding: EmbeddingValue,
}

#[derive(Serialize)]
#[serde(untagged)]
enum EmbeddingValue {
    Floats([f32; EMBEDDING_DIMENSIONS]),
    Base64(String),
}

#[derive(Serialize)]
struct EmbeddingUsage {
    prompt_tokens: u64,
    total_tokens: u64,
}

#[derive(Serialize)]
struct EmbeddingList<'a> {
    object: &'static str,
    data: Vec<Embedding>,
    model: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<EmbeddingUsage>,
}

#[derive(Serialize)]
struct ModelObject<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    owned_by: &'static str,
}

#[derive(Serialize)]
struct ModelList<'a> {
    object: &'static str,
    data: Vec<ModelObject<'a>>,
}

#[derive(Serialize)]
struct ErrorDetail<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    param: Option<&'a str>,
    code: Option<&'a str>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorDetail<'a>,
}

// ---------------------------------------------------------------------------
// Responses.

/// An error in OpenAI's shape: `{"error":{"message","type","param","code"}}`.
fn error(
    status: StatusCode,
    message: &str,
    kind: &str,
    param: Option<&str>,
    code: Option<&str>,
) -> Response {
    let body = ErrorBody {
        error: ErrorDetail {
            message,
            kind,
            param,
            code,
        },
    };
    json_response(status, to_json(&body))
}

/// The error response for [`Behavior::Status`], with the `type` and `code` OpenAI uses
/// for that status; `429` also carries `retry-after: 1` and rate-limit headers.
pub(crate) fn status_error(status: u16, model: &str) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let (message, kind, code) = match status.as_u16() {
        400 => (
            "Invalid request: the mock provider was asked to reject it.".to_owned(),
            "invalid_request_error",
            None,
        ),
        401 => (
            "Incorrect API key provided. You can find your API key in your account settings."
                .to_owned(),
            "invalid_request_error",
            Some("invalid_api_key"),
        ),
        403 => (
            "You are not allowed to sample from this model.".to_owned(),
            "invalid_request_error",
            Some("model_not_allowed"),
        ),
        404 => (
            format!("The model `{model}` does not exist or you do not have access to it."),
            "invalid_request_error",
            Some("model_not_found"),
        ),
        429 => (
            format!(
                "Rate limit reached for {model} on requests per min (RPM): Limit 60, Used 60, \
                 Requested 1. Please try again in 1s."
            ),
            "rate_limit_exceeded",
            Some("rate_limit_exceeded"),
        ),
        503 => (
            "The engine is currently overloaded, please try again later.".to_owned(),
            "server_error",
            None,
        ),
        code if code >= 500 => (
            "The server had an error while processing your request. Sorry about that!".to_owned(),
            "server_error",
            None,
        ),
        _ => (
            format!("The mock provider answered {status}."),
            "invalid_request_error",
            None,
        ),
    };
    let mut response = error(status, &message, kind, None, code);
    if status == StatusCode::TOO_MANY_REQUESTS {
        for (name, value) in [
            (RETRY_AFTER, "1"),
            (HeaderName::from_static("x-ratelimit-limit-requests"), "60"),
            (
                HeaderName::from_static("x-ratelimit-remaining-requests"),
                "0",
            ),
            (HeaderName::from_static("x-ratelimit-reset-requests"), "1s"),
        ] {
            response = with_header(response, name, value);
        }
    }
    response
}

pub(crate) fn invalid_json() -> Response {
    error(
        StatusCode::BAD_REQUEST,
        "We could not parse the JSON body of your request. (HINT: This likely means you aren't \
         using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was \
         sent was not valid JSON.)",
        "invalid_request_error",
        None,
        None,
    )
}

pub(crate) fn missing_model() -> Response {
    error(
        StatusCode::BAD_REQUEST,
        "you must provide a model parameter",
        "invalid_request_error",
        None,
        None,
    )
}

pub(crate) fn missing_parameter(name: &str) -> Response {
    error(
        StatusCode::BAD_REQUEST,
        &format!("Missing required parameter: '{name}'."),
        "invalid_request_error",
        Some(name),
        Some("missing_required_parameter"),
    )
}

// ---------------------------------------------------------------------------
// Handlers.

/// The OpenAI routes.
pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/responses", post(crate::responses::create))
        .route("/v1/embeddings", post(embeddings))
        .route("/v1/models", get(list_models))
        .route("/v1/models/{model}", get(retrieve_model))
}

async fn chat_completions(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let request = RecordedRequest::new(&method, &uri, &headers, body);
    recorded(shared, request, true, |shared, json| {
        chat_response(shared, json, auth)
    })
    .await
}

/// The tokens of a chat request's prefix (its leading system messages and first other
/// message) and a hash of it, for [`crate::MockConfig::prompt_cache`].
fn prompt_prefix(json: &Value) -> (u64, u64) {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    let mut tokens = 0;
    for message in json["messages"].as_array().into_iter().flatten() {
        message.to_string().hash(&mut hasher);
        tokens += TOKENS_PER_MESSAGE + content_words(message.get("content"));
        if !matches!(message["role"].as_str(), Some("system" | "developer")) {
            break;
        }
    }
    (tokens, hasher.finish())
}

async fn chat_response(shared: Arc<Shared>, json: Option<Value>, auth: String) -> Response {
    let Some(json) = json.filter(Value::is_object) else {
        return invalid_json();
    };
    let Some(model) = json.get("model").and_then(Value::as_str) else {
        return missing_model();
    };
    if !json.get("messages").is_some_and(Value::is_array) {
        return missing_parameter("messages");
    }
    if let Some(script) = &shared.config.agent {
        let stream = json.get("stream").and_then(Value::as_bool) == Some(true);
        return crate::agent::answer(&shared, script, Wire::Chat, &json, model, stream);
    }
    let behavior = shared.behavior_for(model);
    if let Behavior::Status(status) = behavior {
        return status_error(status, model);
    }
    wait_before_headers(&shared, behavior).await;

    let id = format!("chatcmpl-mock-{}", shared.next_completion_number());
    let created = shared.created();
    let kind = answer_kind(&json);
    let usage = (!behavior.omits_usage()).then(|| {
        let usage = expected_usage(&json);
        match kind {
            AnswerKind::ToolCall(_) => usage,
            _ => Usage::new(usage.prompt_tokens, shared.config.pieces as u64),
        }
    });
    let answer = match &kind {
        AnswerKind::Content => Answer::Text(shared.config.content.as_str()),
        AnswerKind::ToolResult => Answer::Text(TOOL_RESULT_REPLY),
        AnswerKind::ToolCall(name) => Answer::ToolCall(name),
    };

    if json.get("stream").and_then(Value::as_bool) == Some(true) {
        let include_usage = json
            .pointer("/stream_options/include_usage")
            .and_then(Value::as_bool)
            == Some(true);
        let stream = StreamReply {
            id: &id,
            created,
            model,
            usage: if include_usage { usage } else { None },
            usage_field: include_usage && usage.is_some(),
        };
        let steps = stream.steps(&answer, behavior, &shared.config);
        return stream_response(&shared, steps, EVENT_STREAM);
    }

    let cached = if shared.config.prompt_cache {
        let (tokens, prefix) = prompt_prefix(&json);
        if shared.prompt_cached(&auth, prefix) {
            tokens
        } else {
            0
        }
    } else {
        0
    };
    let completion = ChatCompletion {
        id: &id,
        object: "chat.completion",
        created,
        model,
        choices: [Choice {
            index: 0,
            message: answer.message(),
            logprobs: (),
            finish_reason: answer.finish_reason(),
        }],
        usage: usage.map(|u| {
            let mut wire = UsageWire::from(u);
            wire.prompt_tokens_details.cached_tokens = cached.min(u.prompt_tokens);
            wire
        }),
        service_tier: "default",
        system_fingerprint: SYSTEM_FINGERPRINT,
    };
    plain_body(&shared, behavior, to_json(&completion))
}

/// The answer of one chat completion.
enum Answer<'a> {
    /// A text reply.
    Text(&'a str),
    /// A call of this function with [`TOOL_CALL_ARGUMENTS`].
    ToolCall(&'a str),
}

impl Answer<'_> {
    fn finish_reason(&self) -> &'static str {
        match self {
            Answer::Text(_) => "stop",
            Answer::ToolCall(_) => "tool_calls",
        }
    }

    /// The non-streamed `choices[0].message`.
    fn message(&self) -> Message<'_> {
        let (content, tool_calls) = match *self {
            Answer::Text(text) => (Some(text), None),
            Answer::ToolCall(name) => (
                None,
                Some([ToolCall {
                    id: TOOL_CALL_ID,
                    kind: "function",
                    function: FunctionCall {
                        name,
                        arguments: TOOL_CALL_ARGUMENTS,
                    },
                }]),
            ),
        };
        Message {
            role: "assistant",
            content,
            tool_calls,
            refusal: (),
            annotations: [],
        }
    }
}

/// The events of one streamed chat completion.
struct StreamReply<'a> {
    id: &'a str,
    created: u64,
    model: &'a str,
    /// The usage chunk to send before `[DONE]`, if any.
    usage: Option<Usage>,
    /// Whether chunks carry a `usage` field (`null` until the usage chunk).
    usage_field: bool,
}

impl StreamReply<'_> {
    fn chunk(&self, delta: Delta<'_>, finish_reason: Option<&'static str>) -> Bytes {
        let chunk = ChatChunk {
            id: self.id,
            object: "chat.completion.chunk",
            created: self.created,
            model: self.model,
            service_tier: "default",
            system_fingerprint: SYSTEM_FINGERPRINT,
            choices: vec![ChunkChoice {
                index: 0,
                delta,
                logprobs: (),
                finish_reason,
            }],
            usage: self.usage_field.then_some(None),
        };
        sse::data(&to_json(&chunk))
    }

    fn tool_call_chunk(&self, call: ToolCallDelta<'_>) -> Bytes {
        self.chunk(
            Delta {
                tool_calls: Some([call]),
                ..Delta::default()
            },
            None,
        )
    }

    fn usage_chunk(&self, usage: Usage) -> Bytes {
        let chunk = ChatChunk {
            id: self.id,
            object: "chat.completion.chunk",
            created: self.created,
            model: self.model,
            service_tier: "default",
            system_fingerprint: SYSTEM_FINGERPRINT,
            choices: Vec::new(),
            usage: Some(Some(UsageWire::from(usage))),
        };
        sse::data(&to_json(&chunk))
    }

    /// The role chunk, the pieces of the answer, the finish chunk, the usage chunk when
    /// asked for, then `[DONE]`; broken after the role chunk and two pieces as
    /// `behavior` asks (for [`Behavior::StreamErrorEvent`], with a `data: {"error":..}`
    /// event and no `[DONE]`).
    ///
    /// A text answer streams one chunk per content piece and finishes with `stop`. A
    /// tool call streams a chunk naming the call (`id`, `type`, `function.name`, empty
    /// `arguments`), one chunk per piece of [`TOOL_CALL_ARGUMENT_PIECES`], and finishes
    /// with `tool_calls`.
    fn steps(&self, answer: &Answer<'_>, behavior: Behavior, config: &MockConfig) -> Vec<Step> {
        let mut events = Vec::new();
        match *answer {
            Answer::Text(text) => {
                events.push(self.chunk(
                    Delta {
                        role: Some("assistant"),
                        content: Some(Some("")),
                        refusal: Some(()),
                        ..Delta::default()
                    },
                    None,
                ));
                for piece in content_pieces_of(text, config.pieces) {
                    events.push(self.chunk(
                        Delta {
                            content: Some(Some(&piece)),
                            ..Delta::default()
                        },
                        None,
                    ));
                }
            }
            Answer::ToolCall(name) => {
                events.push(self.chunk(
                    Delta {
                        role: Some("assistant"),
                        content: Some(None),
                        ..Delta::default()
                    },
                    None,
                ));
                events.push(self.tool_call_chunk(ToolCallDelta {
                    index: 0,
                    id: Some(TOOL_CALL_ID),
                    kind: Some("function"),
                    function: FunctionDelta {
                        name: Some(name),
                        arguments: "",
                    },
                }));
                for piece in TOOL_CALL_ARGUMENT_PIECES {
                    events.push(self.tool_call_chunk(ToolCallDelta {
                        index: 0,
                        id: None,
                        kind: None,
                        function: FunctionDelta {
                            name: None,
                            arguments: piece,
                        },
                    }));
                }
            }
        }
        events.push(self.chunk(Delta::default(), Some(answer.finish_reason())));
        if let Some(usage) = self.usage {
            events.push(self.usage_chunk(usage));
        }
        events.push(Bytes::from_static(sse::DONE));
        let tail = events.split_off(3);
        // The role-only chunk is the preamble.
        broken_stream(
            events,
            tail,
            1,
            behavior,
            config.stall,
            stream_error_event(),
        )
    }
}

/// The event a [`Behavior::StreamErrorEvent`] stream ends with: OpenAI's error object
/// as a `data:` event.
fn stream_error_event() -> Bytes {
    let body = ErrorBody {
        error: ErrorDetail {
            message: "The server had an error while processing your request. Sorry about that!",
            kind: "server_error",
            param: None,
            code: None,
        },
    };
    sse::data(&to_json(&body))
}

async fn embeddings(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request = RecordedRequest::new(&method, &uri, &headers, body);
    recorded(shared, request, true, embeddings_response).await
}

async fn embeddings_response(shared: Arc<Shared>, json: Option<Value>) -> Response {
    let Some(json) = json.filter(Value::is_object) else {
        return invalid_json();
    };
    let Some(model) = json.get("model").and_then(Value::as_str) else {
        return missing_model();
    };
    let inputs = embedding_inputs(json.get("input"));
    if inputs.is_empty() {
        return missing_parameter("input");
    }
    let behavior = shared.behavior_for(model);
    if let Behavior::Status(status) = behavior {
        return status_error(status, model);
    }
    wait_before_headers(&shared, behavior).await;

    let base64 = json.get("encoding_format").and_then(Value::as_str) == Some("base64");
    let data = inputs
        .iter()
        .enumerate()
        .map(|(index, input)| {
            let vector = embedding_for(&input.text());
            let embedding = if base64 {
                let bytes: Vec<u8> = vector.iter().flat_map(|x| x.to_le_bytes()).collect();
                EmbeddingValue::Base64(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                EmbeddingValue::Floats(vector)
            };
            Embedding {
                object: "embedding",
                index,
                embedding,
            }
        })
        .collect();
    let usage = (!behavior.omits_usage()).then(|| {
        let usage = expected_embedding_usage(&json);
        EmbeddingUsage {
            prompt_tokens: usage.prompt_tokens,
            total_tokens: usage.total_tokens,
        }
    });
    let list = EmbeddingList {
        object: "list",
        data,
        model,
        usage,
    };
    plain_body(&shared, behavior, to_json(&list))
}

fn model_object(id: &str) -> ModelObject<'_> {
    ModelObject {
        id,
        object: "model",
        created: 1_700_000_000,
        owned_by: "mock-provider",
    }
}

async fn list_models(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let request = RecordedRequest::new(&method, &uri, &headers, Bytes::new());
    recorded(shared, request, false, |_, _| async {
        let list = ModelList {
            object: "list",
            data: MODELS.iter().map(|id| model_object(id)).collect(),
        };
        json_response(StatusCode::OK, to_json(&list))
    })
    .await
}

async fn retrieve_model(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let request = RecordedRequest::new(&method, &uri, &headers, Bytes::new());
    let id = uri.path().trim_start_matches("/v1/models/").to_owned();
    recorded(shared, request, false, |_, _| async move {
        json_response(StatusCode::OK, to_json(&model_object(&id)))
    })
    .await
}

/// Any path the mock does not serve: OpenAI's 404 for an unknown URL.
pub(crate) async fn not_found(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let message = format!("Invalid URL ({} {})", method, uri.path());
    let request = RecordedRequest::new(&method, &uri, &headers, body);
    recorded(shared, request, false, |_, _| async move {
        error(
            StatusCode::NOT_FOUND,
            &message,
            "invalid_request_error",
            None,
            None,
        )
    })
    .await
}

/// A known path with the wrong method: OpenAI's 405.
pub(crate) async fn method_not_allowed(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let message = format!("Invalid method for URL ({} {})", method, uri.path());
    let request = RecordedRequest::new(&method, &uri, &headers, body);
    recorded(shared, request, false, |_, _| async move {
        error(
            StatusCode::METHOD_NOT_ALLOWED,
            &message,
            "invalid_request_error",
            None,
            None,
        )
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn usage_counts_words_and_messages() {
        let request = json!({
            "model": "m",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "one two  three"}]},
                {"role": "assistant", "content": null}
            ]
        });
        assert_eq!(
            expected_usage(&request),
            Usage {
                prompt_tokens: 3 + 2 + 3 + 3 + 3,
                completion_tokens: 5,
                total_tokens: 14 + 5,
            }
        );
    }

    #[test]
    fn tools_choose_the_answer() {
        let tools = json!([
            {"type": "function", "function": {"name": "get_weather", "parameters": {}}},
            {"type": "function", "function": {"name": "get_time"}}
        ]);
        let ask = json!({"model": "m", "tools": tools,
            "messages": [{"role": "user", "content": "Weather in Paris?"}]});
        assert_eq!(
            answer_kind(&ask),
            AnswerKind::ToolCall("get_weather".to_owned())
        );
        assert_eq!(
            expected_usage(&ask),
            Usage {
                prompt_tokens: 3 + 3,
                completion_tokens: 1 + 4,
                total_tokens: 6 + 5,
            }
        );

        let mut named = ask.clone();
        named["tool_choice"] = json!({"type": "function", "function": {"name": "get_time"}});
        assert_eq!(
            answer_kind(&named),
            AnswerKind::ToolCall("get_time".to_owned())
        );
        let mut required = ask.clone();
        required["tool_choice"] = json!("required");
        assert_eq!(
            answer_kind(&required),
            AnswerKind::ToolCall("get_weather".to_owned())
        );
        let mut none = ask.clone();
        none["tool_choice"] = json!("none");
        assert_eq!(answer_kind(&none), AnswerKind::Content);
        let mut empty = ask.clone();
        empty["tools"] = json!([]);
        assert_eq!(answer_kind(&empty), AnswerKind::Content);

        let mut answered = ask;
        answered["messages"] = json!([
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "call_mock_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "call_mock_1", "content": "sunny, 24 C"}
        ]);
        assert_eq!(answer_kind(&answered), AnswerKind::ToolResult);
        assert_eq!(
            expected_usage(&answered),
            Usage {
                prompt_tokens: (3 + 3) + 3 + (3 + 3),
                completion_tokens: content_pieces(TOOL_RESULT_REPLY).len() as u64,
                total_tokens: 15 + 5,
            }
        );
    }

    #[test]
    fn pieces_cover_the_content() {
        let pieces = content_pieces(crate::DEFAULT_CONTENT);
        assert_eq!(pieces.len(), CONTENT_PIECES);
        assert_eq!(pieces.concat(), crate::DEFAULT_CONTENT);
        assert_eq!(pieces[0], "Hello");
        let short = content_pieces("añ");
        assert_eq!(short, vec!["a", "ñ", "", "", ""]);
    }

    #[test]
    fn embeddings_are_deterministic_unit_vectors() {
        let a = embedding_for("hello");
        assert_eq!(a, embedding_for("hello"));
        assert_ne!(a, embedding_for("hello!"));
        let norm: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5);
    }

    #[test]
    fn embedding_usage_counts_words_or_tokens() {
        let text = json!({"model": "m", "input": ["a b", "c"]});
        assert_eq!(expected_embedding_usage(&text).prompt_tokens, 3);
        let ids = json!({"model": "m", "input": [[1, 2, 3], [4]]});
        assert_eq!(expected_embedding_usage(&ids).total_tokens, 4);
        let one = json!({"model": "m", "input": [5, 6]});
        assert_eq!(expected_embedding_usage(&one).prompt_tokens, 2);
    }
}

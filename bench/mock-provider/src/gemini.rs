//! Google Gemini's wire format: `generateContent` and `streamGenerateContent` (SSE with
//! `alt=sse`, a streamed JSON array without), and Google's errors.
//!
//! The model comes from the path, `/v1beta/models/{model}:{method}`. Responses follow
//! the shapes the Gemini API sends, with its camelCase field names and CRLF-framed SSE
//! events; token counts are deterministic, so tests can predict them with
//! [`expected_gemini_usage`].

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::header::RETRY_AFTER;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::agent::Wire;
use crate::behavior::Behavior;
use crate::openai::{content_pieces_of, CONTENT_PIECES, TOKENS_PER_MESSAGE};
use crate::record::RecordedRequest;
use crate::reply::{
    broken_stream, json_response, plain_body, recorded, stream_response, to_json,
    wait_before_headers, with_header, words, JSON,
};
use crate::server::Shared;
use crate::sse::{self, Step};
use crate::tool_call::{tool_call_arguments, TOOL_RESULT_REPLY};

const EVENT_STREAM: &str = "text/event-stream";

/// Where the Gemini model routes live.
pub(crate) const MODELS_PREFIX: &str = "/v1beta/models/";

/// `cachedContentTokenCount` reported when the model name contains `cache`.
pub const CACHED_CONTENT_TOKENS: u64 = 4;

/// Token counts as Gemini reports them in `usageMetadata`.
///
/// Deserializes from a `usageMetadata` object; counts Google leaves out (it omits
/// zeros) read as 0, and `totalTokenCount` is [`GeminiUsage::total_token_count`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct GeminiUsage {
    /// Tokens of the request, cached ones included.
    pub prompt_token_count: u64,
    /// Tokens of the reply.
    pub candidates_token_count: u64,
    /// Tokens of the request read from the context cache (part of
    /// `prompt_token_count`, as Google counts them).
    pub cached_content_token_count: u64,
}

impl GeminiUsage {
    /// `totalTokenCount`: prompt + candidates.
    pub fn total_token_count(&self) -> u64 {
        self.prompt_token_count + self.candidates_token_count
    }
}

/// The usage the mock reports for a `generateContent` request body sent for `model`.
///
/// * `promptTokenCount` = the words of `systemInstruction`'s text parts + for each
///   entry of `contents`: 3 + the whitespace-separated words of its text parts (other
///   parts count 0 words);
/// * `candidatesTokenCount` = the number of streamed chunks: 5 for a text answer, 1
///   for a function call, 0 for a safety block;
/// * `cachedContentTokenCount` = 4 when `model` contains `cache`, 0 otherwise.
///
/// The same numbers are sent whether the request streams or not (streamed chunks carry
/// a running `candidatesTokenCount` that reaches this one on the last chunk).
pub fn expected_gemini_usage(request: &Value, model: &str) -> GeminiUsage {
    let system = field(request, "systemInstruction", "system_instruction")
        .map(|instruction| parts_words(instruction.get("parts")))
        .unwrap_or(0);
    let contents: u64 = request
        .get("contents")
        .and_then(Value::as_array)
        .map(|contents| {
            contents
                .iter()
                .map(|content| TOKENS_PER_MESSAGE + parts_words(content.get("parts")))
                .sum()
        })
        .unwrap_or(0);
    let candidates = match answer_kind(request, model) {
        AnswerKind::Content | AnswerKind::ToolResult => CONTENT_PIECES as u64,
        AnswerKind::FunctionCall(_) => 1,
        AnswerKind::Safety => 0,
    };
    GeminiUsage {
        prompt_token_count: system + contents,
        candidates_token_count: candidates,
        cached_content_token_count: if model.contains("cache") {
            CACHED_CONTENT_TOKENS
        } else {
            0
        },
    }
}

/// Field `camel` of `value`, or its snake_case spelling (Google accepts both).
fn field<'a>(value: &'a Value, camel: &str, snake: &str) -> Option<&'a Value> {
    value.get(camel).or_else(|| value.get(snake))
}

/// Words of the `text` parts of `parts`.
fn parts_words(parts: Option<&Value>) -> u64 {
    parts
        .and_then(Value::as_array)
        .map(|parts| {
            parts
                .iter()
                .filter_map(|part| part.get("text").and_then(Value::as_str))
                .map(words)
                .sum()
        })
        .unwrap_or(0)
}

/// What the answer is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
enum AnswerKind {
    /// The configured content.
    Content,
    /// A `functionCall` part calling this function.
    FunctionCall(String),
    /// [`TOOL_RESULT_REPLY`], after a function response.
    ToolResult,
    /// A candidate blocked for safety (model names containing `safety`).
    Safety,
}

/// A safety block wins; then a `functionResponse` in the last content; otherwise
/// function declarations (unless `toolConfig` says `NONE`) ask for a call: the first
/// allowed function name, or the first declaration.
fn answer_kind(request: &Value, model: &str) -> AnswerKind {
    if model.contains("safety") {
        return AnswerKind::Safety;
    }
    let answered = request
        .get("contents")
        .and_then(Value::as_array)
        .and_then(|contents| contents.last())
        .and_then(|content| content.get("parts"))
        .and_then(Value::as_array)
        .is_some_and(|parts| {
            parts
                .iter()
                .any(|part| field(part, "functionResponse", "function_response").is_some())
        });
    if answered {
        return AnswerKind::ToolResult;
    }
    let calling = field(request, "toolConfig", "tool_config")
        .and_then(|config| field(config, "functionCallingConfig", "function_calling_config"));
    if calling
        .and_then(|calling| calling.get("mode"))
        .and_then(Value::as_str)
        == Some("NONE")
    {
        return AnswerKind::Content;
    }
    let allowed = calling
        .and_then(|calling| field(calling, "allowedFunctionNames", "allowed_function_names"))
        .and_then(Value::as_array)
        .and_then(|names| names.first())
        .and_then(Value::as_str);
    let first = request
        .get("tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|tool| field(tool, "functionDeclarations", "function_declarations"))
        .filter_map(Value::as_array)
        .flatten()
        .find_map(|declaration| declaration.get("name").and_then(Value::as_str));
    match first {
        Some(first) => AnswerKind::FunctionCall(allowed.unwrap_or(first).to_owned()),
        None => AnswerKind::Content,
    }
}

// ---------------------------------------------------------------------------
// Wire structures (field names and order as Google sends them).

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct FunctionCall<'a> {
    name: &'a str,
    args: Value,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Part<'a> {
    Text {
        text: &'a str,
    },
    FunctionCall {
        #[serde(rename = "functionCall")]
        function_call: FunctionCall<'a>,
    },
}

#[derive(Serialize)]
struct Content<'a> {
    role: &'static str,
    parts: Vec<Part<'a>>,
}

#[derive(Serialize)]
struct SafetyRating {
    category: &'static str,
    probability: &'static str,
    blocked: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Candidate<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<Content<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    finish_reason: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    safety_ratings: Option<Vec<SafetyRating>>,
    index: u32,
}

fn is_zero(count: &u64) -> bool {
    *count == 0
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct UsageMetadata {
    prompt_token_count: u64,
    #[serde(skip_serializing_if = "is_zero")]
    candidates_token_count: u64,
    total_token_count: u64,
    #[serde(skip_serializing_if = "is_zero")]
    cached_content_token_count: u64,
}

impl UsageMetadata {
    /// `usage` with `candidates` reply tokens so far.
    fn new(usage: GeminiUsage, candidates: u64) -> Self {
        UsageMetadata {
            prompt_token_count: usage.prompt_token_count,
            candidates_token_count: candidates,
            total_token_count: usage.prompt_token_count + candidates,
            cached_content_token_count: usage.cached_content_token_count,
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct GenerateContentResponse<'a> {
    candidates: [Candidate<'a>; 1],
    #[serde(skip_serializing_if = "Option::is_none")]
    usage_metadata: Option<UsageMetadata>,
    model_version: &'a str,
    response_id: &'a str,
}

#[derive(Serialize)]
struct ErrorDetail<'a> {
    code: u16,
    message: &'a str,
    status: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    details: Option<Value>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorDetail<'a>,
}

/// The `status` Google uses for an HTTP status.
pub fn error_status(status: u16) -> &'static str {
    match status {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        409 => "ABORTED",
        429 => "RESOURCE_EXHAUSTED",
        499 => "CANCELLED",
        500 => "INTERNAL",
        501 => "UNIMPLEMENTED",
        503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        _ => "UNKNOWN",
    }
}

fn error_json(status: u16, message: &str, details: Option<Value>) -> Vec<u8> {
    to_json(&ErrorBody {
        error: ErrorDetail {
            code: status,
            message,
            status: error_status(status),
            details,
        },
    })
}

/// An error in Google's shape, its `status` following the HTTP status.
fn error(status: StatusCode, message: &str) -> Response {
    json_response(status, error_json(status.as_u16(), message, None))
}

/// The error response for [`Behavior::Status`]; `429` also carries `retry-after: 1`
/// and a `RetryInfo` detail.
pub(crate) fn status_error(status: u16, model: &str) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let message = match status.as_u16() {
        400 => "Request contains an invalid argument.".to_owned(),
        401 => "Request had invalid authentication credentials.".to_owned(),
        403 => "The caller does not have permission".to_owned(),
        404 => format!(
            "models/{model} is not found for API version v1beta, or is not supported for \
             generateContent."
        ),
        429 => "Resource has been exhausted (e.g. check quota).".to_owned(),
        500 => "An internal error has occurred. Please retry or report in \
                https://developers.generativeai.google/guide/troubleshooting"
            .to_owned(),
        503 => "The model is overloaded. Please try again later.".to_owned(),
        _ => format!("The mock provider answered {status}."),
    };
    if status == StatusCode::TOO_MANY_REQUESTS {
        let details = json!([{
            "@type": "type.googleapis.com/google.rpc.RetryInfo",
            "retryDelay": "1s"
        }]);
        let body = error_json(429, &message, Some(details));
        return with_header(json_response(status, body), RETRY_AFTER, "1");
    }
    error(status, &message)
}

fn invalid_argument(message: &str) -> Response {
    error(StatusCode::BAD_REQUEST, message)
}

/// The error object a [`Behavior::StreamErrorEvent`] stream ends with.
fn stream_error_json() -> Vec<u8> {
    error_json(
        503,
        "The model is overloaded. Please try again later.",
        None,
    )
}

// ---------------------------------------------------------------------------
// Handlers.

/// The Gemini routes.
pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new().route("/v1beta/models/{target}", post(models_call))
}

/// The model and method of a `/v1beta/models/{model}:{method}` path.
pub(crate) fn model_and_method(path: &str) -> Option<(&str, &str)> {
    path.strip_prefix(MODELS_PREFIX)?.rsplit_once(':')
}

/// How the response is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// `generateContent`: one JSON object.
    Whole,
    /// `streamGenerateContent?alt=sse`: CRLF-framed `data:` events.
    Sse,
    /// `streamGenerateContent` without `alt=sse`: a JSON array, streamed.
    Array,
}

async fn models_call(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let sse = uri
        .query()
        .is_some_and(|query| query.split('&').any(|pair| pair == "alt=sse"));
    let target = model_and_method(uri.path()).and_then(|(model, method)| {
        let mode = match method {
            "generateContent" => Mode::Whole,
            "streamGenerateContent" if sse => Mode::Sse,
            "streamGenerateContent" => Mode::Array,
            _ => return None,
        };
        Some((model.to_owned(), mode))
    });
    let Some((model, mode)) = target else {
        return unserved(shared, method, uri, headers, body, StatusCode::NOT_FOUND).await;
    };
    let request = RecordedRequest::new(&method, &uri, &headers, body);
    recorded(shared, request, true, move |shared, json| {
        generate_content(shared, json, model, mode)
    })
    .await
}

async fn generate_content(
    shared: Arc<Shared>,
    json: Option<Value>,
    model: String,
    mode: Mode,
) -> Response {
    let Some(json) = json.filter(Value::is_object) else {
        return invalid_argument("Invalid JSON payload received. Unexpected token.");
    };
    let contents = json.get("contents").and_then(Value::as_array);
    if contents.is_none_or(|contents| contents.is_empty()) {
        return invalid_argument("* GenerateContentRequest.contents: contents is not specified\n");
    }
    if let (Some(script), Mode::Whole | Mode::Sse) = (&shared.config.agent, mode) {
        let stream = mode == Mode::Sse;
        return crate::agent::answer(&shared, script, Wire::Gemini, &json, &model, stream);
    }
    let behavior = shared.behavior_for(&model);
    if let Behavior::Status(status) = behavior {
        return status_error(status, &model);
    }
    wait_before_headers(&shared, behavior).await;

    let kind = answer_kind(&json, &model);
    let pieces = shared.config.pieces;
    let usage = (!behavior.omits_usage()).then(|| {
        let usage = expected_gemini_usage(&json, &model);
        match kind {
            AnswerKind::Content | AnswerKind::ToolResult => GeminiUsage {
                candidates_token_count: pieces as u64,
                ..usage
            },
            _ => usage,
        }
    });
    let reply = Reply {
        id: format!("mock-{}", shared.next_completion_number()),
        model: &model,
        kind,
        usage,
        content: &shared.config.content,
        pieces,
    };
    let stall = shared.config.stall;
    match mode {
        Mode::Whole => plain_body(&shared, behavior, reply.whole()),
        Mode::Sse => stream_response(&shared, reply.sse_steps(behavior, stall), EVENT_STREAM),
        Mode::Array => stream_response(&shared, reply.array_steps(behavior, stall), JSON),
    }
}

/// One answer, as one response or as a stream of chunks.
struct Reply<'a> {
    id: String,
    model: &'a str,
    kind: AnswerKind,
    usage: Option<GeminiUsage>,
    content: &'a str,
    /// Into how many chunks a text answer is streamed.
    pieces: usize,
}

impl Reply<'_> {
    fn response<'b>(
        &'b self,
        candidate: Candidate<'b>,
        candidates: u64,
    ) -> GenerateContentResponse<'b> {
        GenerateContentResponse {
            candidates: [candidate],
            usage_metadata: self
                .usage
                .map(|usage| UsageMetadata::new(usage, candidates)),
            model_version: self.model,
            response_id: &self.id,
        }
    }

    fn text_candidate<'b>(&self, text: &'b str, finish: bool) -> Candidate<'b> {
        Candidate {
            content: Some(Content {
                role: "model",
                parts: vec![Part::Text { text }],
            }),
            finish_reason: finish.then_some("STOP"),
            safety_ratings: None,
            index: 0,
        }
    }

    /// The candidate of an answer that is not text, if this one is not.
    fn other_candidate(&self) -> Option<Candidate<'_>> {
        match &self.kind {
            AnswerKind::FunctionCall(name) => Some(Candidate {
                content: Some(Content {
                    role: "model",
                    parts: vec![Part::FunctionCall {
                        function_call: FunctionCall {
                            name,
                            args: tool_call_arguments(),
                        },
                    }],
                }),
                finish_reason: Some("STOP"),
                safety_ratings: None,
                index: 0,
            }),
            AnswerKind::Safety => Some(Candidate {
                content: None,
                finish_reason: Some("SAFETY"),
                safety_ratings: Some(vec![SafetyRating {
                    category: "HARM_CATEGORY_DANGEROUS_CONTENT",
                    probability: "HIGH",
                    blocked: true,
                }]),
                index: 0,
            }),
            AnswerKind::Content | AnswerKind::ToolResult => None,
        }
    }

    fn text(&self) -> &str {
        match self.kind {
            AnswerKind::ToolResult => TOOL_RESULT_REPLY,
            _ => self.content,
        }
    }

    /// The `generateContent` response.
    fn whole(&self) -> Vec<u8> {
        let candidates = self.usage.map_or(0, |usage| usage.candidates_token_count);
        let candidate = self
            .other_candidate()
            .unwrap_or_else(|| self.text_candidate(self.text(), true));
        to_json(&self.response(candidate, candidates))
    }

    /// The chunks of `streamGenerateContent`, as JSON: one per content piece with a
    /// running usage and `finishReason` on the last, or the single function-call or
    /// safety chunk.
    fn chunks(&self) -> Vec<Vec<u8>> {
        if let Some(candidate) = self.other_candidate() {
            let candidates = self.usage.map_or(0, |usage| usage.candidates_token_count);
            return vec![to_json(&self.response(candidate, candidates))];
        }
        let pieces = content_pieces_of(self.text(), self.pieces);
        let count = pieces.len();
        pieces
            .iter()
            .enumerate()
            .map(|(i, piece)| {
                let candidate = self.text_candidate(piece, i + 1 == count);
                to_json(&self.response(candidate, i as u64 + 1))
            })
            .collect()
    }

    /// `data: CHUNK\r\n\r\n` per chunk, no terminator; broken after the second chunk
    /// (before the last one when there are fewer than three) as `behavior` asks.
    fn sse_steps(&self, behavior: Behavior, stall: Duration) -> Vec<Step> {
        let mut head: Vec<Bytes> = self
            .chunks()
            .iter()
            .map(|chunk| sse::data_crlf(chunk))
            .collect();
        // Gemini has no preamble of its own: the preamble behaviours open with a chunk
        // whose only part is empty text.
        let preamble = usize::from(matches!(
            behavior,
            Behavior::DropAfterPreamble | Behavior::StallAfterPreamble
        ));
        if preamble == 1 {
            head.insert(0, sse::data_crlf(EMPTY_CHUNK.as_bytes()));
        }
        let tail = head.split_off(break_point(head.len()));
        broken_stream(
            head,
            tail,
            preamble,
            behavior,
            stall,
            sse::data_crlf(&stream_error_json()),
        )
    }

    /// `[CHUNK`, `,\r\nCHUNK`…, `]`: the JSON array Google streams without `alt=sse`;
    /// broken like [`Self::sse_steps`] (the error object becomes the last element).
    fn array_steps(&self, behavior: Behavior, stall: Duration) -> Vec<Step> {
        let chunks = self.chunks();
        let mut head: Vec<Bytes> = chunks
            .iter()
            .enumerate()
            .map(|(i, chunk)| array_element(if i == 0 { b"[" } else { b",\r\n" }, chunk, b""))
            .collect();
        let mut tail = head.split_off(break_point(head.len()));
        tail.push(Bytes::from_static(b"]"));
        let error = array_element(b",\r\n", &stream_error_json(), b"]");
        broken_stream(head, tail, 0, behavior, stall, error)
    }
}

/// A stream chunk with nothing a user would see: one empty text part.
const EMPTY_CHUNK: &str =
    r#"{"candidates":[{"content":{"parts":[{"text":""}],"role":"model"},"index":0}]}"#;

/// How many of `count` chunks come before a break: 2, or all but the last when there
/// are fewer than three.
fn break_point(count: usize) -> usize {
    2.min(count.saturating_sub(1))
}

fn array_element(before: &[u8], chunk: &[u8], after: &[u8]) -> Bytes {
    let mut element = BytesMut::with_capacity(before.len() + chunk.len() + after.len());
    element.extend_from_slice(before);
    element.extend_from_slice(chunk);
    element.extend_from_slice(after);
    element.freeze()
}

/// Any path under `/v1beta` the mock does not serve (`404`), or a wrong method on one
/// it serves (`405`): an error in Google's shape.
pub(crate) async fn unserved(
    shared: Arc<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
    status: StatusCode,
) -> Response {
    let message = if status == StatusCode::NOT_FOUND {
        format!("Method not found: {}", uri.path())
    } else {
        format!("Method not allowed: {} {}", method, uri.path())
    };
    let request = RecordedRequest::new(&method, &uri, &headers, body);
    recorded(shared, request, false, |_, _| async move {
        error(status, &message)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_counts_system_instruction_and_text_parts() {
        let request = json!({
            "systemInstruction": {"parts": [{"text": "Be brief."}]},
            "contents": [
                {"role": "user", "parts": [{"text": "one two  three"},
                    {"inlineData": {"mimeType": "image/png", "data": "AAAA"}}]},
                {"role": "model", "parts": [{"functionCall": {"name": "f", "args": {}}}]},
                {"role": "user", "parts": [{"functionResponse": {"name": "f", "response": {}}}]}
            ]
        });
        assert_eq!(
            expected_gemini_usage(&request, "gemini-cache"),
            GeminiUsage {
                prompt_token_count: 2 + (3 + 3) + 3 + 3,
                candidates_token_count: 5,
                cached_content_token_count: 4,
            }
        );
        assert_eq!(
            expected_gemini_usage(&request, "gemini-safety").candidates_token_count,
            0
        );
    }

    #[test]
    fn declarations_choose_the_answer() {
        let ask = json!({
            "contents": [{"role": "user", "parts": [{"text": "Weather?"}]}],
            "tools": [{"googleSearch": {}}, {"functionDeclarations": [
                {"name": "get_weather", "parameters": {}}, {"name": "other"}]}]
        });
        assert_eq!(
            answer_kind(&ask, "g"),
            AnswerKind::FunctionCall("get_weather".into())
        );
        assert_eq!(expected_gemini_usage(&ask, "g").candidates_token_count, 1);
        let mut allowed = ask.clone();
        allowed["toolConfig"] = json!({"functionCallingConfig": {
            "mode": "ANY", "allowedFunctionNames": ["other"]}});
        assert_eq!(
            answer_kind(&allowed, "g"),
            AnswerKind::FunctionCall("other".into())
        );
        let mut none = ask.clone();
        none["toolConfig"] = json!({"functionCallingConfig": {"mode": "NONE"}});
        assert_eq!(answer_kind(&none, "g"), AnswerKind::Content);
    }

    #[test]
    fn paths_give_model_and_method() {
        assert_eq!(
            model_and_method("/v1beta/models/gemini-2.0-flash:streamGenerateContent"),
            Some(("gemini-2.0-flash", "streamGenerateContent"))
        );
        assert_eq!(model_and_method("/v1beta/models/gemini"), None);
        assert_eq!(break_point(5), 2);
        assert_eq!(break_point(1), 0);
    }
}

//! OpenAI wire format (also every OpenAI-compatible server): the request passes through
//! with the served model name, and streams ask for the usage chunk, which is hidden again
//! from a client that did not ask for it. [`chunk`] writes the OpenAI chat events that
//! translated streams become; [`responses`] maps the Responses door to and from chat.

pub mod chunk;
pub mod responses;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::lenient::{self, Leaf, Lenient, List, Raw};
use crate::messages::Function;

use crate::sse::Event;
use crate::{Call, Generated, Route, Signal, StreamState, Unsupported, UpstreamRequest, Usage};

/// The provider key as a bearer token; none for a keyless entry (a local server that
/// needs no key gets no `Authorization` header).
pub fn bearer(key: &str) -> Vec<(&'static str, String)> {
    if key.is_empty() {
        Vec::new()
    } else {
        vec![("authorization", format!("Bearer {key}"))]
    }
}

pub fn path(prefix: &str, route: Route) -> String {
    match route {
        Route::Chat => format!("{prefix}/chat/completions"),
        Route::Embeddings => format!("{prefix}/embeddings"),
    }
}

/// Builds the upstream request; returns it and whether the client asked for usage chunks.
/// The client's own bytes (`raw`) go upstream unchanged when nothing needs rewriting.
pub fn build_request(
    prefix: &str,
    key: &str,
    call: &Call<'_>,
    served_model: &str,
) -> Result<(UpstreamRequest, bool), Unsupported> {
    let Call {
        route,
        request,
        stream,
        ..
    } = *call;
    let wants_usage = stream && request.include_usage();
    let unchanged = request.model() == Some(served_model) && (!stream || wants_usage);
    let body = if unchanged {
        request.raw().clone()
    } else {
        Bytes::from(rewrite(request, served_model, stream)?)
    };
    let auth = bearer(key);
    Ok((
        UpstreamRequest::json(path(prefix, route), auth, body, stream),
        wants_usage,
    ))
}

/// A Responses API request passed through to OpenAI unchanged (built-in tools and all),
/// with the served model name.
pub fn responses_request(
    prefix: &str,
    key: &str,
    call: &Call<'_>,
    served_model: &str,
) -> Result<UpstreamRequest, Unsupported> {
    let body = call
        .request
        .with_model(served_model)
        .map_err(|e| Unsupported(e.to_string()))?;
    let auth = bearer(key);
    Ok(UpstreamRequest::json(
        format!("{prefix}/responses"),
        auth,
        body,
        call.stream,
    ))
}

/// The request with the served model name and, for streams, the usage chunk asked for.
fn rewrite(request: &Value, served_model: &str, stream: bool) -> Result<Vec<u8>, Unsupported> {
    let mut body = request.clone();
    if let Some(obj) = body.as_object_mut() {
        obj.insert("model".into(), Value::String(served_model.to_string()));
        if stream {
            match obj.get_mut("stream_options").and_then(Value::as_object_mut) {
                Some(opts) => {
                    opts.insert("include_usage".into(), Value::Bool(true));
                }
                None => {
                    obj.insert("stream_options".into(), json!({"include_usage": true}));
                }
            }
        }
    }
    serde_json::to_vec(&body).map_err(|e| Unsupported(e.to_string()))
}

pub fn parse_usage(v: &Value) -> Option<Usage> {
    let u = v.get("usage").filter(|u| u.is_object())?;
    let n = |k: &str| u.get(k).and_then(Value::as_u64).unwrap_or(0);
    let cached = u
        .get("prompt_tokens_details")
        .and_then(|d| d.get("cached_tokens"))
        .and_then(Value::as_u64)
        .unwrap_or(0);
    Some(Usage {
        prompt_tokens: n("prompt_tokens"),
        completion_tokens: n("completion_tokens"),
        cached_tokens: cached,
        cache_write_tokens: 0,
    })
}

/// An answer's `usage`, read without building the rest of the answer.
#[derive(serde::Deserialize)]
struct UsageOnly {
    #[serde(default)]
    usage: Option<UsageView>,
}

/// Usage and generated text of a whole (non-stream) response body. The text is only
/// collected when there is no usage to report (it is kept for an estimate).
pub fn decode_response(body: &[u8]) -> (Option<Usage>, Generated) {
    let mut content = Generated::default();
    // The common case, typed; anything it cannot read (no usage, a count that is not a
    // whole number) goes through the lenient reading below.
    if let Ok(UsageOnly { usage: Some(u) }) = serde_json::from_slice::<UsageOnly>(body) {
        return (Some(u.into()), content);
    }
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return (None, content);
    };
    push_choices(&v, &mut content);
    (parse_usage(&v), content)
}

/// A whole chat answer's usage, id and finish reasons, read in one pass (for a span that
/// reports them); `None` when the answer is not a chat answer with usage of the common
/// shape (the caller then reads it the general way).
pub(crate) fn decode_chat_with_meta(body: &[u8]) -> Option<(Usage, Option<String>, Vec<String>)> {
    let end = serde_json::from_slice::<ChatEnd<'_>>(body).ok()?;
    let reasons = end
        .choices?
        .into_iter()
        .filter_map(|c| c.finish_reason.map(std::borrow::Cow::into_owned))
        .collect();
    Some((
        end.usage?.into(),
        end.id.map(std::borrow::Cow::into_owned),
        reasons,
    ))
}

/// What [`decode_chat_with_meta`] reads; every other field is skipped unbuilt.
#[derive(Deserialize)]
struct ChatEnd<'a> {
    #[serde(default)]
    usage: Option<UsageView>,
    #[serde(default, borrow)]
    id: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    choices: Option<Vec<ChoiceEnd<'a>>>,
}

#[derive(Deserialize)]
struct ChoiceEnd<'a> {
    #[serde(default, borrow)]
    finish_reason: Option<std::borrow::Cow<'a, str>>,
}

/// The text of a chat answer's choices (read only when it is wanted: the usage alone is
/// read on the common path).
pub fn content_of(body: &[u8]) -> Generated {
    let mut content = Generated::default();
    if let Ok(v) = serde_json::from_slice::<Value>(body) {
        push_choices(&v, &mut content);
    }
    content
}

fn push_choices(v: &Value, content: &mut Generated) {
    if let Some(choices) = v.get("choices").and_then(Value::as_array) {
        for c in choices {
            if let Some(s) = c
                .get("message")
                .and_then(|m| m.get("content"))
                .and_then(Value::as_str)
            {
                content.push(s);
            }
        }
    }
}

/// An OpenAI chat answer's `usage`, read leniently.
#[derive(Default, Deserialize)]
pub struct UsageIn<'a> {
    #[serde(default, borrow)]
    prompt_tokens: Leaf<'a>,
    #[serde(default, borrow)]
    completion_tokens: Leaf<'a>,
    #[serde(default, borrow)]
    prompt_tokens_details: Lenient<DetailsIn<'a>>,
}

#[derive(Default, Deserialize)]
struct DetailsIn<'a> {
    #[serde(default, borrow)]
    cached_tokens: Leaf<'a>,
}

impl UsageIn<'_> {
    pub fn usage(&self) -> Usage {
        let n = |l: &Leaf<'_>| l.as_u64().unwrap_or(0);
        Usage {
            prompt_tokens: n(&self.prompt_tokens),
            completion_tokens: n(&self.completion_tokens),
            cached_tokens: self
                .prompt_tokens_details
                .get()
                .map_or(0, |d| n(&d.cached_tokens)),
            cache_write_tokens: 0,
        }
    }
}

/// One `chat.completion.chunk` as the doors' encoders read it (typed, lenient).
#[derive(Default, Deserialize)]
pub struct ChunkIn<'a> {
    #[serde(default, borrow)]
    pub choices: List<ChunkChoice<'a>>,
    #[serde(default, borrow)]
    pub usage: Lenient<UsageIn<'a>>,
    #[serde(default, borrow)]
    pub error: Lenient<ErrorIn<'a>>,
}

#[derive(Default, Deserialize)]
pub struct ChunkChoice<'a> {
    #[serde(default, borrow)]
    pub delta: Lenient<DeltaIn<'a>>,
    #[serde(default, borrow)]
    pub finish_reason: Leaf<'a>,
}

#[derive(Default, Deserialize)]
pub struct DeltaIn<'a> {
    #[serde(default, borrow)]
    pub content: Leaf<'a>,
    #[serde(default, borrow)]
    pub tool_calls: List<CallDelta<'a>>,
}

/// A tool call (or a piece of one, in a stream).
#[derive(Default, Deserialize)]
pub struct CallDelta<'a> {
    #[serde(default, borrow)]
    pub index: Leaf<'a>,
    #[serde(default, borrow)]
    pub id: Raw<'a>,
    #[serde(default, borrow)]
    pub function: Lenient<Function<'a>>,
}

#[derive(Default, Deserialize)]
pub struct ErrorIn<'a> {
    #[serde(default, borrow)]
    pub message: Leaf<'a>,
}

static NO_FUNCTION: Function<'static> = Function::absent();

static NO_CALL: CallDelta<'static> = CallDelta {
    index: Leaf::Absent,
    id: Raw(None),
    function: Lenient::absent(),
};

impl<'a> CallDelta<'a> {
    /// Its `function` (empty when it is not an object).
    pub fn function(&self) -> &Function<'a> {
        self.function.get().unwrap_or(&NO_FUNCTION)
    }
}

impl<'a> ChunkIn<'a> {
    /// Reads a chunk's data (`None` when it is not JSON).
    pub fn read(data: &'a str) -> Option<Self> {
        lenient::document(data.as_bytes())
    }

    /// The provider's usage, when the chunk has a `usage` object.
    pub fn usage(&self) -> Option<Usage> {
        self.usage.get().map(UsageIn::usage)
    }

    /// The message of an `error` the chunk carries (whatever its shape).
    pub fn error(&self) -> Option<&str> {
        self.error.present.then(|| {
            self.error
                .get()
                .and_then(|e| e.message.as_str())
                .unwrap_or("The provider's stream failed.")
        })
    }

    /// The choices that are objects.
    pub fn choices(&self) -> impl Iterator<Item = &ChunkChoice<'a>> {
        lenient::items(&self.choices).flatten()
    }
}

impl<'a> ChunkChoice<'a> {
    pub fn text(&self) -> Option<&str> {
        self.delta.get().and_then(|d| d.content.as_str())
    }

    /// Its tool calls (one that is not an object reads as empty).
    pub fn tool_calls(&self) -> impl Iterator<Item = &CallDelta<'a>> {
        self.delta
            .get()
            .map(|d| lenient::items(&d.tool_calls).map(|c| c.unwrap_or(&NO_CALL)))
            .into_iter()
            .flatten()
    }
}

/// A whole `chat.completion`, as the doors' mappers read its first choice.
#[derive(Default, Deserialize)]
pub struct CompletionIn<'a> {
    #[serde(default, borrow)]
    choices: List<CompletionChoice<'a>>,
}

#[derive(Default, Deserialize)]
struct CompletionChoice<'a> {
    #[serde(default, borrow)]
    message: Lenient<MessageIn<'a>>,
    #[serde(default, borrow)]
    finish_reason: Leaf<'a>,
}

/// The assistant's message of a completion.
#[derive(Default, Deserialize)]
pub struct MessageIn<'a> {
    #[serde(default, borrow)]
    pub content: Raw<'a>,
    #[serde(default, borrow)]
    pub tool_calls: Raw<'a>,
}

impl<'a> CompletionIn<'a> {
    /// Reads a completion's bytes (anything else reads as an empty completion).
    pub fn read(body: &'a [u8]) -> Self {
        lenient::document(body).unwrap_or_default()
    }

    fn first(&self) -> Option<&CompletionChoice<'a>> {
        lenient::items(&self.choices).next().flatten()
    }

    /// The first choice's message, when it has one.
    pub fn message(&self) -> Option<&MessageIn<'a>> {
        self.first().and_then(|c| c.message.get())
    }

    /// The first choice's finish reason.
    pub fn finish_reason(&self) -> Option<&str> {
        self.first().and_then(|c| c.finish_reason.as_str())
    }
}

impl<'a> MessageIn<'a> {
    /// Its text, when `content` is a string.
    pub fn text(&self) -> Option<String> {
        self.content.to_value().and_then(|v| match v {
            Value::String(s) => Some(s),
            _ => None,
        })
    }

    /// Its tool calls, when `tool_calls` is an array (one that is not an object reads as
    /// empty).
    pub fn tool_calls(&self) -> Vec<CallDelta<'a>> {
        let Some(raw) = self.tool_calls.0 else {
            return Vec::new();
        };
        lenient::parse::<List<CallDelta<'a>>>(raw.get())
            .and_then(|l| l.into_items())
            .map(|items| {
                items
                    .into_iter()
                    .map(|c| c.into_inner().unwrap_or_default())
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Passes an event on, or drops the usage-only chunk the client did not ask for.
/// The parts of a `chat.completion.chunk` the gateway reads; strings are borrowed from
/// the event and every other field is skipped without being built.
#[derive(serde::Deserialize)]
struct ChunkView<'a> {
    #[serde(default, borrow)]
    choices: Option<Vec<ChoiceView<'a>>>,
    #[serde(default)]
    usage: Option<UsageView>,
    #[serde(default)]
    error: Option<serde::de::IgnoredAny>,
}

#[derive(serde::Deserialize)]
struct ChoiceView<'a> {
    #[serde(default, borrow)]
    delta: Option<DeltaView<'a>>,
}

#[derive(serde::Deserialize)]
struct DeltaView<'a> {
    #[serde(default, borrow)]
    content: Option<std::borrow::Cow<'a, str>>,
}

#[derive(serde::Deserialize)]
struct UsageView {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
    #[serde(default)]
    prompt_tokens_details: Option<DetailsView>,
}

#[derive(serde::Deserialize)]
struct DetailsView {
    #[serde(default)]
    cached_tokens: Option<u64>,
}

impl From<UsageView> for Usage {
    fn from(u: UsageView) -> Self {
        Usage {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            cached_tokens: u
                .prompt_tokens_details
                .and_then(|d| d.cached_tokens)
                .unwrap_or(0),
            cache_write_tokens: 0,
        }
    }
}

/// The parts of a chunk that say whether a user would see something in it.
#[derive(serde::Deserialize)]
struct SignalView<'a> {
    #[serde(default, borrow)]
    choices: Option<Vec<SignalChoice<'a>>>,
    #[serde(default)]
    usage: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    error: Option<serde::de::IgnoredAny>,
}

#[derive(serde::Deserialize)]
struct SignalChoice<'a> {
    #[serde(default, borrow)]
    delta: Option<SignalDelta<'a>>,
    #[serde(default)]
    finish_reason: Option<serde::de::IgnoredAny>,
}

#[derive(serde::Deserialize)]
struct SignalDelta<'a> {
    #[serde(default, borrow)]
    content: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    refusal: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    tool_calls: Option<Vec<serde::de::IgnoredAny>>,
    #[serde(default)]
    function_call: Option<serde::de::IgnoredAny>,
}

/// OpenAI-format streams open with a role-only chunk (`"delta":{"role":"assistant",
/// "content":""}`): that is preamble. Text, a refusal, a tool call or a finish reason is
/// content; a usage chunk, `[DONE]` or anything unreadable commits too, so an unusual
/// server is never held back.
pub fn signal(event: &Event) -> Signal {
    let Some(data) = event.data.as_deref() else {
        return Signal::Preamble;
    };
    let Ok(view) = serde_json::from_str::<SignalView<'_>>(data) else {
        return Signal::Content;
    };
    if view.error.is_some() {
        return Signal::Error;
    }
    let Some(choices) = view.choices else {
        return Signal::Content;
    };
    let content = choices.iter().any(|c| {
        c.finish_reason.is_some()
            || c.delta.as_ref().is_some_and(|d| {
                d.content.as_deref().is_some_and(|t| !t.is_empty())
                    || d.refusal.as_deref().is_some_and(|t| !t.is_empty())
                    || d.tool_calls.as_ref().is_some_and(|t| !t.is_empty())
                    || d.function_call.is_some()
            })
    });
    if content || view.usage.is_some() {
        Signal::Content
    } else {
        Signal::Preamble
    }
}

/// Passes an event on, or drops the usage-only chunk the client did not ask for.
pub fn decode_event(state: &mut StreamState, event: &Event) -> Option<Bytes> {
    let Some(data) = event.data.as_deref() else {
        return Some(event.raw.clone());
    };
    if data.trim() == "[DONE]" {
        state.finished = true;
        return Some(event.raw.clone());
    }
    let Ok(chunk) = serde_json::from_str::<ChunkView<'_>>(data) else {
        return Some(event.raw.clone());
    };
    for c in chunk.choices.iter().flatten() {
        if let Some(text) = c.delta.as_ref().and_then(|d| d.content.as_deref()) {
            state.content.push(text);
        }
    }
    if chunk.error.is_some() {
        state.errored = true;
    }
    if let Some(u) = chunk.usage {
        state.usage = Some(u.into());
        if !state.client_wants_usage && chunk.choices.is_some_and(|c| c.is_empty()) {
            return None;
        }
    }
    Some(event.raw.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lazy_json::LazyJson;
    use crate::sse::Framer;

    fn build(raw: &Bytes, served: &str, stream: bool) -> (UpstreamRequest, bool) {
        let request = LazyJson::read(raw.clone()).unwrap();
        let call = Call {
            route: Route::Chat,
            request: &request,
            model: "a",
            stream,
        };
        build_request("/v1", "sk", &call, served).unwrap()
    }

    #[test]
    fn stream_requests_ask_for_usage() {
        let req = json!({"model": "a", "stream": true, "messages": []});
        let raw = Bytes::from(req.to_string());
        let (up, wants) = build(&raw, "b", true);
        let body: Value = serde_json::from_slice(&up.body).unwrap();
        assert_eq!(body["model"], "b");
        assert_eq!(body["stream_options"]["include_usage"], true);
        assert!(!wants);
        assert_eq!(up.path, "/v1/chat/completions");
        let req = json!({"model": "a", "stream": true, "stream_options": {"include_usage": true}});
        let raw = Bytes::from(req.to_string());
        let (up, wants) = build(&raw, "a", true);
        assert!(wants);
        assert_eq!(
            up.body, raw,
            "nothing to rewrite: the client's bytes go upstream"
        );
        let raw = Bytes::from_static(b"{\"model\": \"a\",  \"messages\": []}");
        let (up, _) = build(&raw, "a", false);
        assert_eq!(up.body, raw);
    }

    #[test]
    fn usage_chunk_hidden_unless_asked() {
        let stream = "data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"}}],\"usage\":null}\n\n\
                      data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":1,\"total_tokens\":4}}\n\n\
                      data: [DONE]\n\n";
        for wants in [false, true] {
            let mut st = StreamState {
                client_wants_usage: wants,
                ..Default::default()
            };
            let out: Vec<Option<Bytes>> = Framer::new()
                .push(stream.as_bytes())
                .unwrap()
                .iter()
                .map(|e| decode_event(&mut st, e))
                .collect();
            assert_eq!(
                out.iter().filter(|o| o.is_none()).count(),
                usize::from(!wants)
            );
            assert_eq!(st.usage.unwrap().prompt_tokens, 3);
            assert_eq!(st.content.tokens(), 1);
            assert!(st.finished);
        }
    }
}

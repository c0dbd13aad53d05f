//! One attempt's translation of the provider's answer for the client, as a value: the
//! provider adapter, what its stream has shown so far, and the front door's encoder.
//! Bytes in, bytes out — [`Translation::push`], [`Translation::finish`],
//! [`Translation::broken`] — with no I/O, so the live path, the tests (and a cached
//! answer's replay) drive the same type. The request keeps it once the answer is
//! delivered; its record reads the usage from it.

use std::borrow::Cow;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::Value;

use crate::anthropic::messages as anthropic_messages;
use crate::openai::chunk;
use crate::openai::responses as openai_responses;
use crate::sse::{Event, Framer};
use crate::{Adapter, Generated, Signal, StreamState, Usage};

/// Says what one event of the provider's stream means for the hold before the first
/// token (the provider's wire format decides: see [`Adapter::signal`]).
pub type Classify = fn(&Event) -> Signal;

/// Largest answer body kept aside to read its usage, or read whole to rewrite it.
pub const MAX_KEPT_BODY: usize = 8 * 1024 * 1024;

/// How an answer broke after it was committed to the client. Each has the `error_kind`
/// label of the request's record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Break {
    /// The answer ran past the gateway's time limit.
    TooLong,
    /// The provider sent a stream event longer than the framer holds.
    EventTooLarge,
    /// The provider's answer broke off (a read error, an improper end, a body too large
    /// to rewrite).
    Midstream,
}

impl Break {
    pub fn label(self) -> &'static str {
        match self {
            Break::TooLong => "answer_too_long",
            Break::EventTooLarge => "upstream_event_too_large",
            Break::Midstream => "upstream_error_midstream",
        }
    }

    fn message(self) -> &'static str {
        match self {
            Break::TooLong => "The answer ran past the gateway's time limit.",
            Break::EventTooLarge => "The provider sent a stream event that is too large.",
            Break::Midstream => "The provider's stream broke off.",
        }
    }
}

/// How the answer's body is read and sent, decided by its header ([`Translation::begin`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// A stream, event by event through the door's encoder.
    Stream,
    /// A body passed on as it arrives (kept aside, bounded, for its usage).
    Pass,
    /// A body read whole and rewritten: [`Translation::finish`] gives it.
    Whole,
}

/// A finished Responses answer, for storing: the Response object and the assistant's
/// chat message that ends the turn.
pub struct Answer {
    pub response: Value,
    pub message: Value,
}

/// How the adapter's decoding reaches the client, chosen by the door for the entry's kind.
pub enum Encoder {
    /// The adapter's OpenAI chat events as they are (the Chat door).
    Chat,
    /// Anthropic's own events, unchanged (the Messages door to an anthropic entry); the
    /// adapter still reads them, for usage and for whether the stream ended properly.
    AnthropicRaw,
    /// OpenAI's own Responses events, unchanged (the Responses door to OpenAI); read for
    /// usage and for storing.
    ResponsesRaw(openai_responses::Reader),
    /// The adapter's chat events as Anthropic's event sequence (the Messages door).
    Messages(anthropic_messages::StreamEncoder),
    /// The adapter's chat events as the Responses event sequence (the Responses door).
    Responses(openai_responses::StreamEncoder),
}

/// A door's encoder of OpenAI chat stream events (`data: {chunk}` or `[DONE]`).
trait ChatEvents {
    fn push(&mut self, event: &Event) -> Vec<Bytes>;
}

impl ChatEvents for anthropic_messages::StreamEncoder {
    fn push(&mut self, event: &Event) -> Vec<Bytes> {
        anthropic_messages::StreamEncoder::push(self, event)
    }
}

impl ChatEvents for openai_responses::StreamEncoder {
    fn push(&mut self, event: &Event) -> Vec<Bytes> {
        openai_responses::StreamEncoder::push(self, event)
    }
}

/// The adapter's OpenAI chat pieces, re-encoded by a door's `events`.
fn reencode(pieces: Vec<Bytes>, events: &mut impl ChatEvents, out: &mut BytesMut) {
    for piece in pieces {
        for e in events.push(&crate::sse::parse(piece)) {
            out.extend_from_slice(&e);
        }
    }
}

/// A whole answer for the client.
struct Whole {
    body: Bytes,
    usage: Option<Usage>,
    content: Generated,
    answer: Option<Answer>,
}

impl Whole {
    fn unchanged(body: Bytes) -> Self {
        Self {
            body,
            usage: None,
            content: Generated::default(),
            answer: None,
        }
    }
}

/// A whole answer in OpenAI's chat format, as the adapter translates it (errors in
/// OpenAI's shape too).
fn whole_as_chat(adapter: Adapter, status: u16, body: Bytes, served: &str) -> Whole {
    if status >= 300 {
        return Whole::unchanged(adapter.error_body(status, &body).unwrap_or(body));
    }
    let decoded = adapter.decode_response(&body, served);
    let out = decoded.body.clone().unwrap_or(body);
    let (usage, content) = decoded.usage_and_content();
    Whole {
        body: out,
        usage,
        content,
        answer: None,
    }
}

impl Encoder {
    fn classifier(&self, adapter: Adapter) -> Classify {
        match self {
            Encoder::ResponsesRaw(_) => openai_responses::upstream_signal,
            _ => adapter.classifier(),
        }
    }

    /// Whether a non-stream answer must be read whole to be rewritten (otherwise it is
    /// passed on as it arrives, and read for its usage).
    fn rewrites_whole_body(&self, adapter: Adapter) -> bool {
        match self {
            Encoder::Chat => adapter.translates(),
            Encoder::AnthropicRaw => false,
            Encoder::ResponsesRaw(_) | Encoder::Messages(_) | Encoder::Responses(_) => true,
        }
    }

    /// Decodes one provider event and appends what the client receives to `out`.
    fn event(
        &mut self,
        adapter: Adapter,
        state: &mut StreamState,
        event: &Event,
        out: &mut BytesMut,
    ) {
        match self {
            Encoder::Chat => {
                for piece in adapter.decode_event(state, event) {
                    out.extend_from_slice(&piece);
                }
            }
            Encoder::AnthropicRaw => {
                let _ = adapter.decode_event(state, event);
                out.extend_from_slice(&event.raw);
            }
            Encoder::ResponsesRaw(reader) => {
                out.extend_from_slice(&event.raw);
                reader.read(state, event);
            }
            Encoder::Messages(events) => reencode(adapter.decode_event(state, event), events, out),
            Encoder::Responses(events) => reencode(adapter.decode_event(state, event), events, out),
        }
    }

    /// The provider's stream ended: what is still to be sent, and the answer to store;
    /// `Err` when it ended without its format's proper end.
    fn finish(
        &mut self,
        adapter: Adapter,
        state: &mut StreamState,
        storing: bool,
        out: &mut BytesMut,
    ) -> Result<Option<Answer>, Break> {
        let broke = |_| Break::Midstream;
        match self {
            Encoder::Chat => {
                for piece in adapter.finish_stream(state).map_err(broke)? {
                    out.extend_from_slice(&piece);
                }
                Ok(None)
            }
            Encoder::AnthropicRaw => adapter.finish_stream(state).map(|_| None).map_err(broke),
            Encoder::ResponsesRaw(reader) => {
                if !state.finished || state.errored {
                    return Err(Break::Midstream);
                }
                Ok(reader
                    .last
                    .take()
                    .filter(|_| storing)
                    .map(|response| Answer {
                        message: openai_responses::assistant_from_output(&response),
                        response,
                    }))
            }
            Encoder::Messages(events) => {
                reencode(adapter.finish_stream(state).map_err(broke)?, events, out);
                for e in events.finish() {
                    out.extend_from_slice(&e);
                }
                if events.complete() {
                    Ok(None)
                } else {
                    Err(Break::Midstream)
                }
            }
            Encoder::Responses(events) => {
                reencode(adapter.finish_stream(state).map_err(broke)?, events, out);
                if !events.finished() {
                    return Err(Break::Midstream);
                }
                // Stored before the client hears it is complete, so a follow-up naming
                // it as `previous_response_id` finds it.
                let Some((closing, response, message)) = events.complete() else {
                    return Ok(None);
                };
                for e in closing {
                    out.extend_from_slice(&e);
                }
                out.extend_from_slice(&events.close(&response));
                Ok(storing.then_some(Answer { response, message }))
            }
        }
    }

    /// The event that ends a broken stream, unless the provider's own error event was
    /// already passed on.
    fn broken(&mut self, state: &StreamState, kind: Break) -> Option<Bytes> {
        let message = kind.message();
        match self {
            Encoder::Chat => {
                (!state.errored).then(|| chunk::error_event(message, "server_error", kind.label()))
            }
            Encoder::AnthropicRaw => {
                (!state.errored).then(|| anthropic_messages::error_event(502, message))
            }
            Encoder::ResponsesRaw(reader) => {
                (!state.errored).then(|| reader.error_event(message, kind.label()))
            }
            Encoder::Messages(events) => {
                (!events.errored).then(|| anthropic_messages::error_event(502, message))
            }
            Encoder::Responses(events) => {
                (!events.errored).then(|| Bytes::from(events.failed(message).concat()))
            }
        }
    }

    /// A whole answer (success or error) rewritten for the client; called only when
    /// [`Self::rewrites_whole_body`] says so.
    fn whole(
        &mut self,
        adapter: Adapter,
        status: u16,
        body: Bytes,
        served: &str,
        storing: bool,
    ) -> Whole {
        match self {
            Encoder::Chat => whole_as_chat(adapter, status, body, served),
            Encoder::AnthropicRaw => Whole::unchanged(body),
            Encoder::ResponsesRaw(_) => {
                if status >= 300 {
                    return whole_as_chat(adapter, status, body, served);
                }
                let response: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let decoded = adapter.decode_response(&body, served);
                Whole {
                    usage: openai_responses::usage_of(&response),
                    content: decoded.content,
                    answer: storing.then(|| Answer {
                        message: openai_responses::assistant_from_output(&response),
                        response,
                    }),
                    body,
                }
            }
            Encoder::Messages(events) => {
                let mut whole = whole_as_chat(adapter, status, body, served);
                whole.body = if status < 300 {
                    let completion = anthropic_messages::from_completion(
                        &whole.body,
                        served,
                        whole.usage.as_ref(),
                        events.tools(),
                    );
                    Bytes::from(completion.to_string())
                } else {
                    anthropic_messages::from_openai_error(status, &whole.body)
                };
                whole
            }
            Encoder::Responses(events) => {
                let mut whole = whole_as_chat(adapter, status, body, served);
                if status < 300 {
                    let (response, message) = openai_responses::from_completion(
                        &whole.body,
                        events.echo(),
                        whole.usage.as_ref(),
                    );
                    whole.body = Bytes::from(response.to_string());
                    whole.answer = storing.then_some(Answer { response, message });
                }
                whole
            }
        }
    }
}

/// The answer's body as it is read.
enum Body {
    /// Before [`Translation::begin`].
    Unread,
    Events(Framer),
    Passed(Kept),
    Whole {
        status: u16,
        kept: Kept,
    },
}

/// Chunks kept aside, with their length.
#[derive(Default)]
struct Kept {
    parts: Vec<Bytes>,
    len: usize,
}

impl Kept {
    fn fits(&self, chunk: &Bytes) -> bool {
        self.len + chunk.len() <= MAX_KEPT_BODY
    }

    fn push(&mut self, chunk: Bytes) {
        self.len += chunk.len();
        self.parts.push(chunk);
    }

    fn take(&mut self) -> Bytes {
        let parts = std::mem::take(&mut self.parts);
        self.len = 0;
        match <[Bytes; 1]>::try_from(parts) {
            Ok([one]) => one,
            Err(parts) => Bytes::from(parts.concat()),
        }
    }
}

/// Whether `data` gives `key` a value other than `null` (most chunks of an OpenAI stream
/// carry `"finish_reason":null`, and are not parsed for it).
fn names_a_value(data: &str, key: &str) -> bool {
    data.match_indices(key).any(|(at, _)| {
        let rest = data[at + key.len()..].trim_start_matches(['"', ':', ' ']);
        !rest.is_empty() && !rest.starts_with("null")
    })
}

/// Reads a whole answer's [`AnswerMeta`], when it is wanted.
fn read_whole(meta: &mut Option<AnswerMeta>, body: &[u8]) {
    if let Some(meta) = meta {
        meta.read(body);
    }
}

/// A string where a provider puts one, or anything else (ignored).
#[derive(Deserialize)]
#[serde(untagged)]
enum Text<'a> {
    Str(#[serde(borrow)] Cow<'a, str>),
    Other(IgnoredAny),
}

impl<'a> Text<'a> {
    fn get(text: &'a Option<Text<'a>>) -> Option<&'a str> {
        match text {
            Some(Text::Str(s)) => Some(s),
            _ => None,
        }
    }
}

/// An object whose `id` is read.
#[derive(Deserialize, Default)]
#[serde(default)]
struct WithId<'a> {
    #[serde(borrow)]
    id: Option<Text<'a>>,
}

/// A choice (OpenAI) or candidate (Gemini) and why it finished.
#[derive(Deserialize, Default)]
#[serde(default)]
struct Finished<'a> {
    #[serde(borrow)]
    finish_reason: Option<Text<'a>>,
    #[serde(borrow, rename = "finishReason")]
    gemini_finish_reason: Option<Text<'a>>,
}

/// A message delta (Anthropic) and why the message stopped.
#[derive(Deserialize, Default)]
#[serde(default)]
struct Stopped<'a> {
    #[serde(borrow)]
    stop_reason: Option<Text<'a>>,
}

/// The few fields of an answer, or of one stream event, in any provider's format that say
/// what the answer is: read without building the rest (which is skipped, not allocated).
#[derive(Deserialize, Default)]
#[serde(default)]
struct Said<'a> {
    #[serde(borrow)]
    id: Option<Text<'a>>,
    #[serde(borrow)]
    message: Option<WithId<'a>>,
    #[serde(borrow)]
    response: Option<WithId<'a>>,
    #[serde(borrow, rename = "responseId")]
    response_id: Option<Text<'a>>,
    #[serde(borrow)]
    choices: Option<Vec<Finished<'a>>>,
    #[serde(borrow)]
    candidates: Option<Vec<Finished<'a>>>,
    #[serde(borrow)]
    stop_reason: Option<Text<'a>>,
    #[serde(borrow)]
    delta: Option<Stopped<'a>>,
}

/// One attempt's answer, translated for the client.
pub struct Translation {
    adapter: Adapter,
    state: StreamState,
    encoder: Encoder,
    /// The model the entry serves (named in translated answers).
    served: String,
    /// Whether the finished answer is stored (the Responses door).
    storing: bool,
    /// What the door changed in the request, for the log row.
    note: Option<Arc<str>>,
    body: Body,
    answer: Option<Answer>,
    /// What finishing produced before the stream turned out broken: sent before the
    /// door's error event.
    unsent: BytesMut,
    /// The answer's text is wanted even where the usage alone would do (a body passed
    /// through), for spans that capture content.
    capture: bool,
    /// What the answer says of itself, read only when wanted (for spans).
    meta: Option<AnswerMeta>,
    /// The usage of a stored answer served again: a body passed through unchanged is not
    /// read again for it.
    known_usage: Option<Usage>,
}

/// Finish reasons an answer's [`AnswerMeta`] keeps at most.
const MAX_FINISH_REASONS: usize = 8;

/// What a provider's answer says of itself: its id and why each choice finished, as the
/// provider names them (OpenAI's `finish_reason`, Anthropic's `stop_reason`, Gemini's
/// `finishReason`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AnswerMeta {
    pub id: Option<String>,
    pub finish_reasons: Vec<String>,
}

impl AnswerMeta {
    /// Reads one stream event's data; only an event that may name what is still missing
    /// is parsed.
    fn event(&mut self, data: &str) {
        let may_tell = self.id.is_none()
            || ["finish_reason", "stop_reason", "finishReason"]
                .iter()
                .any(|key| names_a_value(data, key));
        if may_tell {
            self.read(data.as_bytes());
        }
    }

    /// Reads a whole body, or one event, of any provider's format; what is not JSON of
    /// the expected shape says nothing.
    fn read(&mut self, json: &[u8]) {
        let Ok(said) = serde_json::from_slice::<Said<'_>>(json) else {
            return;
        };
        if self.id.is_none() {
            let nested = |o: &'_ Option<WithId<'_>>| {
                o.as_ref()
                    .and_then(|o| Text::get(&o.id))
                    .map(str::to_string)
            };
            self.id = Text::get(&said.id)
                .map(str::to_string)
                .or_else(|| nested(&said.message))
                .or_else(|| nested(&said.response))
                .or_else(|| Text::get(&said.response_id).map(str::to_string))
                .filter(|id| !id.is_empty());
        }
        let choices = said.choices.as_ref().or(said.candidates.as_ref());
        let reasons = choices
            .into_iter()
            .flatten()
            .filter_map(|c| {
                Text::get(&c.finish_reason).or_else(|| Text::get(&c.gemini_finish_reason))
            })
            .chain(Text::get(&said.stop_reason))
            .chain(said.delta.as_ref().and_then(|d| Text::get(&d.stop_reason)));
        for reason in reasons {
            if self.finish_reasons.len() < MAX_FINISH_REASONS {
                self.finish_reasons.push(reason.to_string());
            }
        }
    }
}

impl Translation {
    /// The translation of an answer from an entry of `adapter`'s format, whose stream
    /// starts in `state`, for a door's `encoder`.
    pub fn new(adapter: Adapter, state: StreamState, encoder: Encoder, served: &str) -> Self {
        Self {
            adapter,
            state,
            encoder,
            served: served.to_string(),
            storing: false,
            note: None,
            body: Body::Unread,
            answer: None,
            unsent: BytesMut::new(),
            capture: false,
            meta: None,
            known_usage: None,
        }
    }

    /// The same, for a stored answer whose usage is already known: a body passed through
    /// unchanged is then not read for it, unless it is read anyway (a span's id and
    /// finish reasons, or content to capture).
    pub fn knowing_usage(mut self, usage: Usage) -> Self {
        self.known_usage = Some(usage);
        self
    }

    /// Reads what the answer says of itself ([`Self::answer_meta`]), for spans.
    pub fn read_meta(&mut self) {
        self.meta.get_or_insert_with(AnswerMeta::default);
    }

    /// The answer's id and finish reasons, when [`Self::read_meta`] asked for them.
    pub fn answer_meta(&self) -> Option<&AnswerMeta> {
        self.meta.as_ref()
    }

    /// Keeps the answer's text even from a body passed through unread (for spans that
    /// capture content).
    pub fn capture_content(&mut self, capture: bool) {
        self.capture = capture;
    }

    /// The same, keeping the finished answer for storing.
    pub fn storing(mut self, storing: bool) -> Self {
        self.storing = storing;
        self
    }

    /// The same, with what the door changed in the request.
    pub fn with_note(mut self, note: Option<Arc<str>>) -> Self {
        self.note = note;
        self
    }

    /// How the provider's stream is read during the hold before the first token.
    pub fn classifier(&self) -> Classify {
        self.encoder.classifier(self.adapter)
    }

    pub fn note(&self) -> Option<Arc<str>> {
        self.note.clone()
    }

    /// Whether the client has received the answer's proper end: the provider's own end
    /// event, passed on unchanged (`[DONE]`, `message_stop`, `response.completed`) — a
    /// client may hang up then, before the provider closes its stream.
    pub fn client_has_end(&self) -> bool {
        let passed_on = match self.encoder {
            Encoder::Chat => !self.adapter.translates(),
            Encoder::AnthropicRaw | Encoder::ResponsesRaw(_) => true,
            Encoder::Messages(_) | Encoder::Responses(_) => false,
        };
        passed_on
            && matches!(self.body, Body::Events(_))
            && self.state.finished
            && !self.state.errored
    }

    /// Whether OpenAI's own Responses answer passes through unchanged (its stream cannot
    /// be rebuilt from a chat completion).
    pub fn passes_responses(&self) -> bool {
        matches!(self.encoder, Encoder::ResponsesRaw(_))
    }

    /// How the answer's body is read, from its status and content type; a stream's events
    /// longer than `max_event_bytes` break it.
    pub fn begin(&mut self, status: u16, content_type: &str, max_event_bytes: usize) -> Shape {
        let (body, shape) = if status < 300 && content_type.starts_with("text/event-stream") {
            (
                Body::Events(Framer::with_limit(max_event_bytes)),
                Shape::Stream,
            )
        } else if self.encoder.rewrites_whole_body(self.adapter) {
            (
                Body::Whole {
                    status,
                    kept: Kept::default(),
                },
                Shape::Whole,
            )
        } else {
            (Body::Passed(Kept::default()), Shape::Pass)
        };
        self.body = body;
        shape
    }

    /// One chunk of the provider's answer in; what the client receives now out.
    pub fn push(&mut self, chunk: Bytes) -> Result<Bytes, Break> {
        match &mut self.body {
            Body::Events(framer) => {
                let events = framer.push(&chunk).map_err(|_| Break::EventTooLarge)?;
                let mut out = BytesMut::new();
                for event in events {
                    if let (Some(meta), Some(data)) = (&mut self.meta, event.data.as_deref()) {
                        meta.event(data);
                    }
                    self.encoder
                        .event(self.adapter, &mut self.state, &event, &mut out);
                }
                Ok(out.freeze())
            }
            Body::Passed(kept) => {
                if kept.fits(&chunk) {
                    kept.push(chunk.clone());
                }
                Ok(chunk)
            }
            Body::Whole { kept, .. } => {
                if !kept.fits(&chunk) {
                    return Err(Break::Midstream);
                }
                kept.push(chunk);
                Ok(Bytes::new())
            }
            Body::Unread => Ok(chunk),
        }
    }

    /// The provider's answer ended: what the client still receives (a rewritten body,
    /// in whole), or how the answer broke. A finished answer to store is then
    /// [`Self::take_answer`], to be stored before this is sent.
    pub fn finish(&mut self) -> Result<Bytes, Break> {
        match &mut self.body {
            Body::Events(framer) => {
                let mut out = BytesMut::new();
                if let Some(rest) = framer.finish() {
                    self.encoder
                        .event(self.adapter, &mut self.state, &rest, &mut out);
                }
                match self
                    .encoder
                    .finish(self.adapter, &mut self.state, self.storing, &mut out)
                {
                    Ok(answer) => {
                        self.answer = answer;
                        Ok(out.freeze())
                    }
                    Err(kind) => {
                        self.unsent = out;
                        Err(kind)
                    }
                }
            }
            Body::Passed(kept) => {
                if let Some(usage) = self
                    .known_usage
                    .filter(|_| self.meta.is_none() && !self.capture)
                {
                    *kept = Kept::default();
                    (self.state.usage, self.state.content) = (Some(usage), Generated::default());
                    return Ok(Bytes::new());
                }
                let body = kept.take();
                // A span that wants the answer's id and finish reasons gets them from
                // the same reading as the usage, for the common chat answer.
                let chat = match (&mut self.meta, self.adapter) {
                    (Some(meta), Adapter::OpenAi) => crate::openai::decode_chat_with_meta(&body)
                        .map(|(usage, id, reasons)| {
                            meta.id = id.filter(|id| !id.is_empty());
                            meta.finish_reasons = reasons;
                            meta.finish_reasons.truncate(MAX_FINISH_REASONS);
                            usage
                        }),
                    _ => None,
                };
                if let Some(usage) = chat {
                    (self.state.usage, self.state.content) = (Some(usage), Generated::default());
                } else {
                    read_whole(&mut self.meta, &body);
                    let decoded = self.adapter.decode_response(&body, &self.served);
                    (self.state.usage, self.state.content) = decoded.usage_and_content();
                }
                if self.capture && self.state.content.is_empty() && self.adapter == Adapter::OpenAi
                {
                    self.state.content = crate::openai::content_of(&body);
                }
                Ok(Bytes::new())
            }
            Body::Whole { status, kept } => {
                let body = kept.take();
                read_whole(&mut self.meta, &body);
                let whole =
                    self.encoder
                        .whole(self.adapter, *status, body, &self.served, self.storing);
                self.state.usage = whole.usage;
                self.state.content = whole.content;
                self.answer = whole.answer;
                Ok(whole.body)
            }
            Body::Unread => Ok(Bytes::new()),
        }
    }

    /// The end of a stream that broke after the commit: what finishing still produced,
    /// then the door's error event (unless the provider's own was already passed on).
    /// Never the stream's proper end.
    pub fn broken(&mut self, kind: Break) -> Bytes {
        let mut out = std::mem::take(&mut self.unsent);
        if let Some(event) = self.encoder.broken(&self.state, kind) {
            out.extend_from_slice(&event);
        }
        out.freeze()
    }

    /// The finished answer to store, once (the Responses door, when storing).
    pub fn take_answer(&mut self) -> Option<Answer> {
        self.answer.take()
    }

    /// The usage the provider reported so far.
    pub fn usage(&self) -> Option<Usage> {
        self.state.usage
    }

    /// The text generated so far, for an estimate when no usage came.
    pub fn content(&self) -> &Generated {
        &self.state.content
    }

    /// What the provider's stream has shown so far.
    pub fn state(&self) -> &StreamState {
        &self.state
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_known_usage_spares_reading_a_passed_body_unless_it_is_read_anyway() {
        // The body says 3 + 2; the usage given says 7 + 5: which one is reported shows
        // whether the body was read.
        let body = Bytes::from_static(
            br#"{"id":"c","choices":[{"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":2}}"#,
        );
        let known = Usage {
            prompt_tokens: 7,
            completion_tokens: 5,
            ..Default::default()
        };
        let pass = |t: Translation| {
            let mut t = t;
            assert_eq!(t.begin(200, "application/json", 1 << 20), Shape::Pass);
            assert_eq!(t.push(body.clone()).unwrap(), body);
            assert!(t.finish().unwrap().is_empty());
            t
        };
        let new = || {
            Translation::new(
                Adapter::OpenAi,
                StreamState::passthrough("m"),
                Encoder::Chat,
                "m",
            )
        };
        assert_eq!(pass(new().knowing_usage(known)).usage(), Some(known));
        let read = pass(new()).usage().unwrap();
        assert_eq!((read.prompt_tokens, read.completion_tokens), (3, 2));
        // A span that wants the answer's id reads the body, and its usage with it.
        let mut meta = new().knowing_usage(known);
        meta.read_meta();
        let meta = pass(meta);
        assert_eq!(meta.usage().unwrap().prompt_tokens, 3);
        assert_eq!(meta.answer_meta().unwrap().id.as_deref(), Some("c"));
    }

    #[test]
    fn a_chat_answer_read_in_one_pass_says_what_the_general_reading_says() {
        let bodies: [&[u8]; 4] = [
            br#"{"id":"chatcmpl-1","choices":[{"index":0,"message":{"content":"a\"b"},"finish_reason":"stop"},{"finish_reason":null},{"finish_reason":"length"}],"usage":{"prompt_tokens":3,"completion_tokens":2,"prompt_tokens_details":{"cached_tokens":1}}}"#,
            br#"{"id":"","choices":[],"usage":{"prompt_tokens":1}}"#,
            br#"{"choices":[{"finish_reason":"tool_calls"}],"usage":{}}"#,
            br#"{"id":"x","choices":[{"finish_reason":"stop"}],"usage":{"prompt_tokens":1}}"#,
        ];
        for body in bodies {
            let (usage, id, reasons) = crate::openai::decode_chat_with_meta(body).unwrap();
            let mut general = AnswerMeta::default();
            general.read(body);
            assert_eq!(id.filter(|i| !i.is_empty()), general.id);
            assert_eq!(reasons, general.finish_reasons);
            assert_eq!(Some(usage), crate::openai::decode_response(body).0);
        }
        // Not a chat answer with usage: the general reading.
        for body in [
            &br#"{"id":"x","choices":[]}"#[..],
            br#"{"id":1,"choices":[],"usage":{}}"#,
        ] {
            assert!(crate::openai::decode_chat_with_meta(body).is_none());
        }
    }

    #[test]
    fn answer_meta_reads_each_format_and_skips_null_reasons() {
        let mut m = AnswerMeta::default();
        m.event(
            r#"{"id":"chatcmpl-1","choices":[{"delta":{"content":"Hi"},"finish_reason":null}]}"#,
        );
        assert!(!names_a_value(
            r#"{"choices":[{"finish_reason": null}]}"#,
            "finish_reason"
        ));
        m.event(r#"{"id":"chatcmpl-1","choices":[{"delta":{},"finish_reason":"stop"}]}"#);
        assert_eq!(m.id.as_deref(), Some("chatcmpl-1"));
        assert_eq!(m.finish_reasons, ["stop"]);
        let mut a = AnswerMeta::default();
        a.event(r#"{"type":"message_start","message":{"id":"msg_1"}}"#);
        a.event(r#"{"type":"message_delta","delta":{"stop_reason":"end_turn"}}"#);
        assert_eq!(
            (a.id.as_deref(), a.finish_reasons.as_slice()),
            (Some("msg_1"), &["end_turn".to_string()][..])
        );
        let mut g = AnswerMeta::default();
        g.read(br#"{"responseId": "r1", "candidates": [{"finishReason": "STOP", "content": {"parts": [{"text": "a \"quoted\" word"}]}}]}"#);
        assert_eq!(g.finish_reasons, ["STOP"]);
        assert_eq!(g.id.as_deref(), Some("r1"));
        // A number where a string belongs, and a message id with an escape: read as such.
        let mut o = AnswerMeta::default();
        o.read(br#"{"id": 7, "message": {"id": "msg_\u0031"}, "stop_reason": "max_tokens"}"#);
        assert_eq!(o.id.as_deref(), Some("msg_1"));
        assert_eq!(o.finish_reasons, ["max_tokens"]);
        let mut r = AnswerMeta::default();
        r.read(br#"{"type":"response.completed","response":{"id":"resp_1","output":[]}}"#);
        assert_eq!(r.id.as_deref(), Some("resp_1"));
        r.read(b"not json");
        assert_eq!(r.id.as_deref(), Some("resp_1"));
    }
    use crate::fixtures::{ANTHROPIC_STREAM, OPENAI_STREAM};

    fn chat(adapter: Adapter) -> Translation {
        let state = StreamState {
            meta: chunk::Meta::new("m"),
            ..Default::default()
        };
        Translation::new(adapter, state, Encoder::Chat, "m")
    }

    #[test]
    fn a_stream_without_its_end_breaks_with_the_doors_error_event() {
        let cut = &ANTHROPIC_STREAM[..ANTHROPIC_STREAM.find("event: message_stop").unwrap()];
        let mut t = chat(Adapter::Anthropic);
        assert_eq!(t.begin(200, "text/event-stream", 1 << 20), Shape::Stream);
        let out = t.push(Bytes::copy_from_slice(cut.as_bytes())).unwrap();
        assert!(!out.is_empty());
        assert_eq!(t.finish(), Err(Break::Midstream));
        let end = String::from_utf8(t.broken(Break::Midstream).to_vec()).unwrap();
        assert!(
            end.contains("\"code\":\"upstream_error_midstream\""),
            "{end}"
        );
        assert!(!end.contains("[DONE]"));
        assert_eq!(t.usage().map(|u| u.prompt_tokens), Some(35));
    }

    #[test]
    fn the_client_has_the_end_once_the_providers_end_passed_unchanged() {
        let mut t = chat(Adapter::OpenAi);
        t.begin(200, "text/event-stream", 1 << 20);
        let done = OPENAI_STREAM.find("data: [DONE]").unwrap();
        t.push(Bytes::copy_from_slice(&OPENAI_STREAM.as_bytes()[..done]))
            .unwrap();
        assert!(!t.client_has_end());
        t.push(Bytes::copy_from_slice(&OPENAI_STREAM.as_bytes()[done..]))
            .unwrap();
        assert!(t.client_has_end());
        // Translated, the door's end is written only once the provider's stream closed.
        let mut t = chat(Adapter::Anthropic);
        t.begin(200, "text/event-stream", 1 << 20);
        t.push(Bytes::copy_from_slice(ANTHROPIC_STREAM.as_bytes()))
            .unwrap();
        assert!(!t.client_has_end());
    }

    #[test]
    fn an_event_past_the_limit_breaks_the_stream() {
        let mut t = chat(Adapter::OpenAi);
        t.begin(200, "text/event-stream; charset=utf-8", 16);
        assert_eq!(
            t.push(Bytes::from_static(b"data: {\"choices\": []")),
            Err(Break::EventTooLarge)
        );
        let end = String::from_utf8(t.broken(Break::EventTooLarge).to_vec()).unwrap();
        assert!(end.contains("upstream_event_too_large"));
    }

    #[test]
    fn a_body_passes_as_it_comes_and_is_read_for_its_usage() {
        let mut t = chat(Adapter::OpenAi);
        assert_eq!(t.begin(200, "application/json", 1 << 20), Shape::Pass);
        let body = br#"{"choices":[{"message":{"content":"hi"}}],"usage":{"prompt_tokens":3,"completion_tokens":1}}"#;
        let (a, b) = body.split_at(20);
        assert_eq!(t.push(Bytes::from_static(a)).unwrap(), a);
        assert_eq!(t.push(Bytes::from_static(b)).unwrap(), b);
        assert!(t.usage().is_none());
        assert!(t.finish().unwrap().is_empty());
        assert_eq!(t.usage().map(|u| u.completion_tokens), Some(1));
    }

    #[test]
    fn a_body_to_rewrite_is_read_whole() {
        let mut t = chat(Adapter::Anthropic);
        assert_eq!(t.begin(200, "application/json", 1 << 20), Shape::Whole);
        let body = br#"{"id":"msg_1","content":[{"type":"text","text":"Hi"}],"stop_reason":"end_turn","usage":{"input_tokens":4,"output_tokens":2}}"#;
        assert!(t.push(Bytes::from_static(body)).unwrap().is_empty());
        let out: Value = serde_json::from_slice(&t.finish().unwrap()).unwrap();
        assert_eq!(out["choices"][0]["message"]["content"], "Hi");
        assert_eq!(t.usage().map(|u| u.prompt_tokens), Some(4));
        // An error answer is rewritten in the door's error shape.
        let mut t = chat(Adapter::Anthropic);
        assert_eq!(t.begin(529, "application/json", 1 << 20), Shape::Whole);
        t.push(Bytes::from_static(
            br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
        ))
        .unwrap();
        let out: Value = serde_json::from_slice(&t.finish().unwrap()).unwrap();
        assert_eq!(out["error"]["code"], "overloaded_error");
    }

    #[test]
    fn an_openai_stream_passes_without_the_usage_chunk_nobody_asked_for() {
        let mut t = chat(Adapter::OpenAi);
        t.begin(200, "text/event-stream", 1 << 20);
        let mut out = t
            .push(Bytes::from_static(OPENAI_STREAM.as_bytes()))
            .unwrap()
            .to_vec();
        out.extend_from_slice(&t.finish().unwrap());
        let usage_chunk = OPENAI_STREAM
            .find("data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"choices\":[],")
            .unwrap();
        let done = OPENAI_STREAM.find("data: [DONE]").unwrap();
        let expected = [&OPENAI_STREAM[..usage_chunk], &OPENAI_STREAM[done..]].concat();
        assert_eq!(String::from_utf8(out).unwrap(), expected);
        assert_eq!(t.usage().map(|u| u.prompt_tokens), Some(5));
    }
}

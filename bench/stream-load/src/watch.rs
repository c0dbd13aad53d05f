//! What a client sees in one streamed answer: SSE events framed from arbitrary byte
//! splits, and for each wire dialect when the first real content arrives (not the
//! role-only preamble), whether usage came, and whether the stream ended properly.
//!
//! Only the few fields that decide this are decoded, borrowed from the event's bytes:
//! at thousands of concurrent streams the client shares a core with the upstream, and
//! must stay cheap per event.

use std::borrow::Cow;

use clap::ValueEnum;
use serde::Deserialize;

/// The wire format of the streamed answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Dialect {
    /// OpenAI chat completions: `data: {chunk}` events, usage in a chunk of its own
    /// (asked with `stream_options.include_usage`), then `data: [DONE]`.
    Openai,
    /// Anthropic Messages: named events, `content_block_delta` for content, usage in
    /// `message_delta`, ends with `message_stop`.
    Anthropic,
    /// Gemini `streamGenerateContent?alt=sse`: `data: {chunk}` with `usageMetadata`,
    /// the last chunk carries `finishReason`; no terminator event.
    Gemini,
}

/// Where a stream stands after the events seen so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Seen {
    /// An event carried content a user would see (text, tool call, refusal).
    pub content: bool,
    /// An event carried the answer's usage.
    pub usage: bool,
    /// The dialect's end of stream (`[DONE]`, `message_stop`, a `finishReason`).
    pub done: bool,
    /// An error event.
    pub error: bool,
    /// Bytes that could not be read as an event of the dialect.
    pub garbled: bool,
    /// Events with data received (comments and keep-alives not counted).
    pub events: usize,
}

/// Longest event kept while waiting for its end; a longer one marks the stream garbled.
const MAX_EVENT_BYTES: usize = 1024 * 1024;

/// Frames SSE events from the bytes of a body and folds them into [`Seen`].
#[derive(Debug)]
pub struct Watch {
    dialect: Dialect,
    buf: Vec<u8>,
    seen: Seen,
}

impl Watch {
    pub fn new(dialect: Dialect) -> Self {
        Watch {
            dialect,
            buf: Vec::new(),
            seen: Seen::default(),
        }
    }

    pub fn seen(&self) -> Seen {
        self.seen
    }

    /// Takes the next bytes of the body; returns whether this chunk brought the first
    /// content of the stream.
    pub fn push(&mut self, bytes: &[u8]) -> bool {
        let before = self.seen.content;
        self.buf.extend_from_slice(bytes);
        let mut start = 0;
        while let Some((len, sep)) = event_end(&self.buf[start..]) {
            let event = self.buf[start..start + len].to_vec();
            start += len + sep;
            self.event(&event);
        }
        self.buf.drain(..start);
        if self.buf.len() > MAX_EVENT_BYTES {
            self.seen.garbled = true;
            self.buf.clear();
        }
        !before && self.seen.content
    }

    /// The body ended: an event left without its blank line still counts.
    pub fn finish(&mut self) -> Seen {
        if !self.buf.iter().all(u8::is_ascii_whitespace) {
            let event = std::mem::take(&mut self.buf);
            self.event(&event);
        }
        self.seen
    }

    fn event(&mut self, event: &[u8]) {
        let mut name: &[u8] = b"";
        let mut data: Vec<u8> = Vec::new();
        for line in event.split(|b| *b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if let Some(rest) = line.strip_prefix(b"data:") {
                if !data.is_empty() {
                    data.push(b'\n');
                }
                data.extend_from_slice(rest.strip_prefix(b" ").unwrap_or(rest));
            } else if let Some(rest) = line.strip_prefix(b"event:") {
                name = rest.strip_prefix(b" ").unwrap_or(rest);
            }
        }
        if data.is_empty() {
            return; // comments, keep-alives
        }
        let seen = &mut self.seen;
        seen.events += 1;
        match self.dialect {
            Dialect::Openai => openai(seen, &data),
            Dialect::Anthropic => anthropic(seen, name, &data),
            Dialect::Gemini => gemini(seen, &data),
        }
    }
}

/// Length of the first complete event in `buf` and of the blank line that ends it.
fn event_end(buf: &[u8]) -> Option<(usize, usize)> {
    let mut i = 0;
    while i < buf.len() {
        if buf[i] == b'\n' {
            match buf.get(i + 1) {
                Some(b'\n') => return Some((i, 2)),
                Some(b'\r') if buf.get(i + 2) == Some(&b'\n') => return Some((i, 3)),
                _ => {}
            }
        }
        i += 1;
    }
    None
}

fn non_empty(text: &Option<Cow<'_, str>>) -> bool {
    text.as_deref().is_some_and(|t| !t.is_empty())
}

#[derive(Deserialize)]
struct OpenaiChunk<'a> {
    #[serde(default, borrow)]
    choices: Vec<OpenaiChoice<'a>>,
    #[serde(default)]
    usage: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    error: Option<serde::de::IgnoredAny>,
}

#[derive(Deserialize)]
struct OpenaiChoice<'a> {
    #[serde(default, borrow)]
    delta: Option<OpenaiDelta<'a>>,
    #[serde(default)]
    finish_reason: Option<serde::de::IgnoredAny>,
}

#[derive(Deserialize)]
struct OpenaiDelta<'a> {
    #[serde(default, borrow)]
    content: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    refusal: Option<Cow<'a, str>>,
    #[serde(default)]
    tool_calls: Option<serde::de::IgnoredAny>,
}

fn openai(seen: &mut Seen, data: &[u8]) {
    if data == b"[DONE]" {
        seen.done = true;
        return;
    }
    let Ok(chunk) = serde_json::from_slice::<OpenaiChunk<'_>>(data) else {
        seen.garbled = true;
        return;
    };
    seen.error |= chunk.error.is_some();
    seen.usage |= chunk.usage.is_some();
    for choice in &chunk.choices {
        if let Some(delta) = &choice.delta {
            seen.content |= non_empty(&delta.content)
                || non_empty(&delta.refusal)
                || delta.tool_calls.is_some();
        }
        // A finish chunk is content too: an answer may be empty.
        seen.content |= choice.finish_reason.is_some();
    }
}

#[derive(Deserialize)]
struct AnthropicEvent<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default, borrow)]
    delta: Option<AnthropicDelta<'a>>,
    #[serde(default)]
    usage: Option<serde::de::IgnoredAny>,
}

#[derive(Deserialize)]
struct AnthropicDelta<'a> {
    #[serde(default, borrow)]
    text: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    partial_json: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    thinking: Option<Cow<'a, str>>,
    #[serde(default)]
    stop_reason: Option<serde::de::IgnoredAny>,
}

fn anthropic(seen: &mut Seen, name: &[u8], data: &[u8]) {
    let Ok(event) = serde_json::from_slice::<AnthropicEvent<'_>>(data) else {
        seen.garbled = true;
        return;
    };
    let kind = if name.is_empty() {
        event.kind.as_bytes()
    } else {
        name
    };
    match kind {
        b"content_block_delta" => {
            if let Some(delta) = &event.delta {
                seen.content |= non_empty(&delta.text)
                    || non_empty(&delta.partial_json)
                    || non_empty(&delta.thinking);
            }
        }
        b"content_block_start" => {}
        b"message_delta" => {
            seen.usage |= event.usage.is_some();
            seen.content |= event
                .delta
                .as_ref()
                .is_some_and(|d| d.stop_reason.is_some());
        }
        b"message_stop" => seen.done = true,
        b"error" => seen.error = true,
        _ => {}
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GeminiChunk<'a> {
    #[serde(default, borrow)]
    candidates: Vec<GeminiCandidate<'a>>,
    #[serde(default)]
    usage_metadata: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    error: Option<serde::de::IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GeminiCandidate<'a> {
    #[serde(default, borrow)]
    content: Option<GeminiContent<'a>>,
    #[serde(default)]
    finish_reason: Option<serde::de::IgnoredAny>,
}

#[derive(Deserialize)]
struct GeminiContent<'a> {
    #[serde(default, borrow)]
    parts: Vec<GeminiPart<'a>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GeminiPart<'a> {
    #[serde(default, borrow)]
    text: Option<Cow<'a, str>>,
    #[serde(default)]
    function_call: Option<serde::de::IgnoredAny>,
}

fn gemini(seen: &mut Seen, data: &[u8]) {
    let Ok(chunk) = serde_json::from_slice::<GeminiChunk<'_>>(data) else {
        seen.garbled = true;
        return;
    };
    seen.error |= chunk.error.is_some();
    seen.usage |= chunk.usage_metadata.is_some();
    for candidate in &chunk.candidates {
        if let Some(content) = &candidate.content {
            seen.content |= content
                .parts
                .iter()
                .any(|p| non_empty(&p.text) || p.function_call.is_some());
        }
        if candidate.finish_reason.is_some() {
            seen.content = true;
            seen.done = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPENAI: &str = concat!(
        "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\",\"refusal\":null},\"finish_reason\":null}],\"usage\":null}\n\n",
        "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\\\"lo\"},\"finish_reason\":null}],\"usage\":null}\n\n",
        "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":null}\n\n",
        "data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":1,\"total_tokens\":4}}\n\n",
        "data: [DONE]\n\n",
    );

    /// The chunk (by index of its first byte) that brought the first content, and the end state.
    fn run(dialect: Dialect, text: &str, cuts: &[usize]) -> (Option<usize>, Seen) {
        let mut watch = Watch::new(dialect);
        let mut first = None;
        let mut from = 0;
        for &cut in cuts.iter().chain(std::iter::once(&text.len())) {
            if watch.push(&text.as_bytes()[from..cut]) && first.is_none() {
                first = Some(from);
            }
            from = cut;
        }
        (first, watch.finish())
    }

    #[test]
    fn openai_role_chunk_is_not_content_and_every_split_agrees() {
        let whole = run(Dialect::Openai, OPENAI, &[]);
        assert_eq!(
            whole.1,
            Seen {
                content: true,
                usage: true,
                done: true,
                events: 5,
                ..Seen::default()
            }
        );
        // The role chunk alone (with its empty content) is not the first token.
        let role_end = OPENAI.find("\n\n").unwrap() + 2;
        let (first, _) = run(Dialect::Openai, OPENAI, &[role_end]);
        assert_eq!(first, Some(role_end));
        for a in 0..OPENAI.len() {
            for b in [a, (a + 7).min(OPENAI.len())] {
                assert_eq!(
                    run(Dialect::Openai, OPENAI, &[a, b]).1,
                    whole.1,
                    "cut at {a}/{b}"
                );
            }
        }
    }

    #[test]
    fn openai_without_usage_or_done_says_so() {
        let cut = OPENAI.find("data: {\"id\":\"c\",\"choices\":[],").unwrap();
        let (_, seen) = run(Dialect::Openai, &OPENAI[..cut], &[]);
        assert!(seen.content && !seen.usage && !seen.done);
        let error = "data: {\"error\":{\"message\":\"boom\",\"type\":\"server_error\"}}\n\n";
        assert!(run(Dialect::Openai, error, &[]).1.error);
        assert!(run(Dialect::Openai, "data: {nope\n\n", &[]).1.garbled);
    }

    #[test]
    fn anthropic_events() {
        let text = concat!(
            "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":3}}}\n\n",
            "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
            "event: ping\ndata: {\"type\":\"ping\"}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\n",
            "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":1}}\n\n",
            "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
        );
        let at = text.find("event: content_block_delta").unwrap();
        let (first, seen) = run(Dialect::Anthropic, text, &[at]);
        assert_eq!(first, Some(at));
        assert_eq!(
            seen,
            Seen {
                content: true,
                usage: true,
                done: true,
                events: 6,
                ..Seen::default()
            }
        );
    }

    #[test]
    fn gemini_chunks_with_crlf() {
        let text = concat!(
            "data: {\"candidates\":[{\"content\":{\"role\":\"model\",\"parts\":[{\"text\":\"Hi\"}]},\"index\":0}],\"usageMetadata\":{\"promptTokenCount\":3}}\r\n\r\n",
            "data: {\"candidates\":[{\"content\":{\"role\":\"model\",\"parts\":[{\"text\":\"!\"}]},\"finishReason\":\"STOP\",\"index\":0}],\"usageMetadata\":{\"promptTokenCount\":3}}\r\n\r\n",
        );
        let (first, seen) = run(Dialect::Gemini, text, &[5]);
        assert_eq!(first, Some(5));
        assert_eq!(
            seen,
            Seen {
                content: true,
                usage: true,
                done: true,
                events: 2,
                ..Seen::default()
            }
        );
        let cut = text.find("\r\n\r\n").unwrap() + 4;
        assert!(!run(Dialect::Gemini, &text[..cut], &[]).1.done);
    }
}

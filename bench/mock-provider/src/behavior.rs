//! How the mock answers a request: the [`Behavior`] enum and its selection from a model name.
//!
//! The behaviours are independent of the wire format: each format module decides
//! how, say, a 429 or a cut stream looks on its wire.

use std::time::Duration;

/// What the mock does with one request.
///
/// Chosen by [`MockProvider::set_behavior`](crate::MockProvider::set_behavior) when an
/// override is set, otherwise by [`Behavior::from_model`] on the request's `model`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behavior {
    /// Deterministic success (JSON or SSE, as the request asks).
    Normal,
    /// An error response with this HTTP status, in the wire format's error shape.
    /// `429` also carries `retry-after: 1`. Model names `error-NNN` select it (any
    /// status from 100 to 999, so `error-529` gives Anthropic's overloaded error).
    Status(u16),
    /// Wait this long before sending the response headers, then succeed.
    /// Model names `slow-<ms>` select it (e.g. `slow-250`).
    Slow(Duration),
    /// Wait [`MockConfig::stall`](crate::MockConfig::stall) (60 s by default) before
    /// sending the response headers, then succeed. Model names containing `stall`
    /// (but not `stall-mid-stream`) select it.
    Stall,
    /// Send `200` and the response headers, then cut the connection before any body
    /// byte (for SSE: before any event). Model names containing `stream-fail-early`.
    StreamFailEarly,
    /// Send the headers and the beginning of the body, then cut the connection. For a
    /// stream the beginning ends after the second content piece: OpenAI's role chunk
    /// and two content chunks (never `[DONE]`); Anthropic's `message_start`,
    /// `content_block_start`, `ping` and two deltas; Gemini's first two chunks. A JSON
    /// body is cut after its first half. Model names containing `drop-mid-stream`.
    DropMidStream,
    /// Send the headers and the beginning of the body (as for
    /// [`Behavior::DropMidStream`]), wait [`MockConfig::stall`](crate::MockConfig::stall),
    /// then finish normally. Model names containing `stall-mid-stream`.
    StallMidStream,
    /// Send the headers and the beginning of the stream (as for
    /// [`Behavior::DropMidStream`]), then an error event in the wire format's shape, and
    /// end the stream cleanly without its usual terminator (no `[DONE]`, no
    /// `message_stop`). Requests that do not stream succeed normally. Model names
    /// containing `stream-error-event`.
    StreamErrorEvent,
    /// Send the headers and the stream's preamble only — what comes before the first
    /// content a user would see: OpenAI's role-only chunk; Anthropic's `message_start`,
    /// empty text block and `ping`; for Gemini a chunk with empty text — then cut the
    /// connection. Requests that do not stream succeed normally. Model names containing
    /// `drop-after-preamble`.
    DropAfterPreamble,
    /// Send the preamble (as for [`Behavior::DropAfterPreamble`]), wait
    /// [`MockConfig::stall`](crate::MockConfig::stall), then the rest of the stream.
    /// Model names containing `stall-after-preamble`.
    StallAfterPreamble,
    /// Send `200` with an event-stream content type, then `data: ` and 8 MiB of bytes
    /// that never end an event, then cut the connection. Requests that do not stream
    /// succeed normally. Model names containing `unframed-stream`.
    Unframed,
    /// Succeed without any usage, streaming or not: no OpenAI `usage` field (even when
    /// `stream_options.include_usage` is set), no Anthropic `usage` object, no Gemini
    /// `usageMetadata`. Model names containing `no-usage`.
    NoUsage,
}

impl Behavior {
    /// The behaviour named inside a model name, by substring match, or [`Behavior::Normal`].
    ///
    /// Recognised markers, checked in this order: `drop-after-preamble`,
    /// `stall-after-preamble`, `unframed-stream`, `stall-mid-stream`,
    /// `stream-fail-early`, `drop-mid-stream`, `stream-error-event`, `no-usage`,
    /// `error-NNN` (any three-digit status, e.g. `error-429`, `error-500`, `error-503`,
    /// `error-529`, `error-401`, `error-400`), `slow-<ms>` and `stall`. So `gpt-4o-error-429` answers 429 and `mock-slow-1500`
    /// waits 1.5 s before its headers.
    pub fn from_model(model: &str) -> Behavior {
        if model.contains("drop-after-preamble") {
            return Behavior::DropAfterPreamble;
        }
        if model.contains("stall-after-preamble") {
            return Behavior::StallAfterPreamble;
        }
        if model.contains("unframed-stream") {
            return Behavior::Unframed;
        }
        if model.contains("stall-mid-stream") {
            return Behavior::StallMidStream;
        }
        if model.contains("stream-fail-early") {
            return Behavior::StreamFailEarly;
        }
        if model.contains("drop-mid-stream") {
            return Behavior::DropMidStream;
        }
        if model.contains("stream-error-event") {
            return Behavior::StreamErrorEvent;
        }
        if model.contains("no-usage") {
            return Behavior::NoUsage;
        }
        if let Some(status) = number_after(model, "error-").and_then(|n| u16::try_from(n).ok()) {
            if (100..=999).contains(&status) {
                return Behavior::Status(status);
            }
        }
        if let Some(ms) = number_after(model, "slow-") {
            return Behavior::Slow(Duration::from_millis(ms));
        }
        if model.contains("stall") {
            return Behavior::Stall;
        }
        Behavior::Normal
    }

    /// Whether the response leaves out every `usage` field.
    pub fn omits_usage(self) -> bool {
        self == Behavior::NoUsage
    }
}

/// The decimal number right after the first `marker` in `text` that is followed by a digit.
fn number_after(text: &str, marker: &str) -> Option<u64> {
    text.match_indices(marker).find_map(|(at, _)| {
        let rest = &text[at + marker.len()..];
        let digits: &str = &rest[..rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len())];
        digits.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_names_select_behaviours() {
        let cases = [
            ("gpt-4o-mini", Behavior::Normal),
            ("error-429", Behavior::Status(429)),
            ("mock-error-500", Behavior::Status(500)),
            ("error-503-x", Behavior::Status(503)),
            ("error-401", Behavior::Status(401)),
            ("error-400", Behavior::Status(400)),
            ("error-", Behavior::Normal),
            ("slow-250", Behavior::Slow(Duration::from_millis(250))),
            (
                "mock-slow-x-slow-7",
                Behavior::Slow(Duration::from_millis(7)),
            ),
            ("stall", Behavior::Stall),
            ("stall-mid-stream", Behavior::StallMidStream),
            ("stream-fail-early", Behavior::StreamFailEarly),
            ("x-drop-mid-stream", Behavior::DropMidStream),
            ("no-usage", Behavior::NoUsage),
            ("claude-stream-error-event", Behavior::StreamErrorEvent),
            ("error-529", Behavior::Status(529)),
            ("gpt-drop-after-preamble", Behavior::DropAfterPreamble),
            ("stall-after-preamble", Behavior::StallAfterPreamble),
            ("x-unframed-stream", Behavior::Unframed),
        ];
        for (model, expected) in cases {
            assert_eq!(Behavior::from_model(model), expected, "{model}");
        }
    }
}

//! OpenAI's own Responses stream, passed through to the client unchanged: what each event
//! means for the hold before the first token, and what the gateway reads of it (usage,
//! its end, the final Response for storing).

use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, Value};

use super::usage_of;
use crate::lenient::{self, Leaf, Lenient, Raw};
use crate::messages::Typed;
use crate::sse::Event;
use crate::{Signal, StreamState};

/// What one event of OpenAI's own Responses stream (passed through) means for the hold:
/// the `response.created` / `in_progress` / item-added preamble is held; text, a function
/// call, a refusal or the end is content; `error` / `response.failed` is an error.
pub fn upstream_signal(event: &Event) -> Signal {
    let Some(data) = event.data.as_deref() else {
        return Signal::Preamble;
    };
    let Some(v) = lenient::document::<EventIn>(data.as_bytes()) else {
        return Signal::Content;
    };
    let item = v.item.get().and_then(|i| i.kind.as_str());
    match v.kind.as_str().or(event.event.as_deref()).unwrap_or("") {
        "response.created" | "response.in_progress" | "response.content_part.added" => {
            Signal::Preamble
        }
        "response.output_item.added" if item == Some("message") => Signal::Preamble,
        "response.output_item.added" if item == Some("reasoning") => Signal::Preamble,
        t if t.starts_with("response.reasoning") => Signal::Preamble,
        "error" | "response.failed" => Signal::Error,
        _ => Signal::Content,
    }
}

/// One event of OpenAI's own Responses stream, as the gateway reads it.
#[derive(Default, Deserialize)]
struct EventIn<'a> {
    #[serde(default, rename = "type", borrow)]
    kind: Leaf<'a>,
    #[serde(default, borrow)]
    sequence_number: Leaf<'a>,
    #[serde(default, borrow)]
    item: Lenient<Typed<'a>>,
    #[serde(default, borrow)]
    response: Raw<'a>,
    #[serde(default, borrow)]
    delta: Leaf<'a>,
}

/// Reads OpenAI's own Responses stream as it is passed through: its usage, its end, and
/// the final Response object (for storing).
#[derive(Debug, Default)]
pub struct Reader {
    /// The final Response object, once `response.completed` (or `.incomplete`) passed.
    pub last: Option<Value>,
    /// The last `sequence_number` seen, to number an error event after it.
    sequence: u64,
}

impl Reader {
    /// Reads one event into the stream's state.
    pub fn read(&mut self, state: &mut StreamState, event: &Event) {
        let Some(v) = event
            .data
            .as_deref()
            .and_then(|d| lenient::document::<EventIn>(d.as_bytes()))
        else {
            return;
        };
        if let Some(n) = v.sequence_number.as_u64() {
            self.sequence = n;
        }
        match v.kind.as_str().unwrap_or("") {
            "response.completed" | "response.incomplete" => {
                let response = v.response.value();
                state.usage = usage_of(&response);
                state.finished = true;
                self.last = Some(response);
            }
            "response.failed" | "error" => state.errored = true,
            "response.output_text.delta" => {
                if let Some(d) = v.delta.as_str() {
                    state.content.push(d);
                }
            }
            _ => {}
        }
    }

    /// The `error` event that ends a broken stream, numbered after the last event.
    pub fn error_event(&self, message: &str, kind: &str) -> Bytes {
        let event = json!({"type": "error", "code": kind, "message": message,
                           "param": null, "sequence_number": self.sequence + 1});
        Bytes::from(format!("event: error\ndata: {event}\n\n"))
    }
}

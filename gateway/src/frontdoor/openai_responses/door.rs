//! The Responses door around the pipeline: the request prepared once (after the stored
//! conversation it continues), built per entry (passed through to OpenAI itself unless it
//! continues a stored conversation, converted for the others), and the answer's encoders,
//! which hand a finished answer over for storing.

use bytes::{Bytes, BytesMut};
use perpetuo_core::provider::ProviderKind;
use serde_json::{json, Value};

use super::store::{Continued, Pending, ToStore};
use super::{
    assistant_from_output, chat_from, from_completion, input_items, input_messages, response_id,
    upstream_signal, usage_of, Echo, StreamEncoder,
};
use crate::frontdoor::{
    pivot, reencode, reencode_finish, whole_as_chat, Built, Encoder, Finished, Inbound, Prepared,
    Whole,
};
use crate::providers::{self, Adapter, BrokenStream, StreamState, Unsupported};
use crate::routing::Entry;
use crate::sse::Event;
use crate::upstream::Classify;

/// Whether the answer to `request` is stored (`store`, true unless it says false).
pub fn storing(request: &Value) -> bool {
    request.get("store") != Some(&Value::Bool(false))
}

/// The request converted to the chat shape after the stored conversation it continues,
/// and what to store.
pub fn prepare(request: &Value, continued: Continued) -> Prepared {
    let input = input_messages(request);
    let to_store = storing(request).then(|| ToStore {
        input_items: Value::Array(input_items(request)),
        // A request only OpenAI can take (built-in tools) is still stored; its turn then
        // holds what can be expressed as chat: its answer. System messages are left out:
        // later turns do not replay them.
        turn: match &input {
            Ok(input) => input
                .iter()
                .filter(|m| m["role"] != "system")
                .cloned()
                .collect(),
            Err(_) => Vec::new(),
        },
        previous: continued.parent,
    });
    let chat = input.and_then(|input| chat_from(request, &continued.history, input));
    Prepared {
        pivot: pivot(chat),
        response_id: Some(response_id()),
        to_store,
        ..Prepared::default()
    }
}

pub fn build(inbound: &Inbound<'_>, entry: &Entry, served: &str) -> Result<Built, Unsupported> {
    let adapter = Adapter::for_kind(entry.kind);
    let prepared = inbound.prepared;
    if entry.kind == ProviderKind::Openai
        && inbound.call.request.get("previous_response_id").is_none()
    {
        let request = providers::openai::responses_request(
            &entry.upstream.path_prefix,
            entry.key.expose(),
            &inbound.call,
            served,
        )?;
        return Ok(Built {
            request,
            state: StreamState::passthrough(served),
            encoder: Box::new(Passthrough {
                store: prepared.to_store.clone(),
                last: None,
                sequence: 0,
            }),
        });
    }
    let (request, state) = inbound.pivot_request(adapter, entry, served)?;
    let id = prepared.response_id.clone().unwrap_or_else(response_id);
    let echo = Echo::new(id, inbound.call.request, served);
    Ok(Built {
        request,
        state,
        encoder: Box::new(Converted {
            events: StreamEncoder::new(echo.clone()),
            echo,
            store: prepared.to_store.clone(),
        }),
    })
}

/// OpenAI's own Responses answer, passed through; read for usage and for storing.
struct Passthrough {
    store: Option<ToStore>,
    /// The final Response object, once `response.completed` (or `.incomplete`) passed.
    last: Option<Value>,
    /// The last `sequence_number` seen, to number an error event after it.
    sequence: u64,
}

impl Passthrough {
    fn pending(&self, response: Value) -> Option<Pending> {
        let to_store = self.store.clone()?;
        Some(Pending {
            to_store,
            message: assistant_from_output(&response),
            response,
        })
    }
}

impl Encoder for Passthrough {
    fn classifier(&self, _adapter: Adapter) -> Classify {
        upstream_signal
    }

    fn rewrites_whole_body(&self, _adapter: Adapter) -> bool {
        true
    }

    fn event(
        &mut self,
        _adapter: Adapter,
        state: &mut StreamState,
        event: &Event,
        out: &mut BytesMut,
    ) {
        out.extend_from_slice(&event.raw);
        let Some(v) = event
            .data
            .as_deref()
            .and_then(|d| serde_json::from_str::<Value>(d).ok())
        else {
            return;
        };
        if let Some(n) = v["sequence_number"].as_u64() {
            self.sequence = n;
        }
        match v["type"].as_str().unwrap_or("") {
            "response.completed" | "response.incomplete" => {
                state.usage = usage_of(&v["response"]);
                state.finished = true;
                self.last = Some(v["response"].clone());
            }
            "response.failed" | "error" => state.errored = true,
            "response.output_text.delta" => {
                if let Some(d) = v["delta"].as_str() {
                    state.content.push(d);
                }
            }
            _ => {}
        }
    }

    fn finish(
        &mut self,
        _adapter: Adapter,
        state: &mut StreamState,
    ) -> Result<Finished, BrokenStream> {
        if !state.finished || state.errored {
            return Err(BrokenStream);
        }
        let store = self.last.take().and_then(|response| self.pending(response));
        Ok(Finished {
            tail: Vec::new(),
            store,
        })
    }

    fn broken(&mut self, state: &StreamState, message: &str, kind: &str) -> Option<Bytes> {
        if state.errored {
            return None;
        }
        let event = json!({"type": "error", "code": kind, "message": message,
                           "param": null, "sequence_number": self.sequence + 1});
        Some(Bytes::from(format!("event: error\ndata: {event}\n\n")))
    }

    fn whole(&mut self, adapter: Adapter, status: u16, body: Bytes, served: &str) -> Whole {
        if status >= 300 {
            return whole_as_chat(adapter, status, body, served);
        }
        let response: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let decoded = adapter.decode_response(&body, served);
        Whole {
            usage: usage_of(&response),
            content: decoded.content,
            store: self.pending(response),
            body,
        }
    }
}

/// The adapter's OpenAI chat answer encoded as a Response object or the Responses event
/// sequence.
struct Converted {
    events: StreamEncoder,
    echo: Echo,
    store: Option<ToStore>,
}

impl Encoder for Converted {
    fn rewrites_whole_body(&self, _adapter: Adapter) -> bool {
        true
    }

    fn event(
        &mut self,
        adapter: Adapter,
        state: &mut StreamState,
        event: &Event,
        out: &mut BytesMut,
    ) {
        reencode(adapter, state, event, out, &mut self.events);
    }

    fn finish(
        &mut self,
        adapter: Adapter,
        state: &mut StreamState,
    ) -> Result<Finished, BrokenStream> {
        let mut tail = reencode_finish(adapter, state, &mut self.events)?;
        if !self.events.finished() {
            return Err(BrokenStream);
        }
        let mut store = None;
        // Stored before the client hears it is complete, so a follow-up naming it as
        // `previous_response_id` finds it.
        if let Some((closing, response, message)) = self.events.complete() {
            tail.extend(closing);
            tail.push(self.events.close(&response));
            store = self.store.clone().map(|to_store| Pending {
                to_store,
                response,
                message,
            });
        }
        Ok(Finished { tail, store })
    }

    fn broken(&mut self, _state: &StreamState, message: &str, _kind: &str) -> Option<Bytes> {
        (!self.events.errored).then(|| Bytes::from(self.events.failed(message).concat()))
    }

    fn whole(&mut self, adapter: Adapter, status: u16, body: Bytes, served: &str) -> Whole {
        let mut whole = whole_as_chat(adapter, status, body, served);
        if status < 300 {
            let completion: Value = serde_json::from_slice(&whole.body).unwrap_or(Value::Null);
            let (response, message) =
                from_completion(&completion, &self.echo, whole.usage.as_ref());
            whole.body = Bytes::from(response.to_string());
            whole.store = self.store.clone().map(|to_store| Pending {
                to_store,
                response,
                message,
            });
        }
        whole
    }
}

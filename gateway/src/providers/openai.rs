//! OpenAI wire format (also every OpenAI-compatible server): the request passes through
//! with the served model name, and streams ask for the usage chunk, which is hidden again
//! from a client that did not ask for it.

use bytes::Bytes;
use serde_json::{json, Value};

use super::{EventOutput, Route, StreamState, UpstreamRequest, Usage};
use crate::sse::Event;

pub fn path(prefix: &str, route: Route) -> String {
    match route {
        Route::Chat => format!("{prefix}/chat/completions"),
        Route::Embeddings => format!("{prefix}/embeddings"),
    }
}

/// Builds the upstream request; returns it and whether the client asked for usage chunks.
pub fn build_request(
    prefix: &str,
    key: &str,
    route: Route,
    request: &Value,
    served_model: &str,
    stream: bool,
) -> Result<(UpstreamRequest, bool), serde_json::Error> {
    let mut body = request.clone();
    let mut wants_usage = false;
    if let Some(obj) = body.as_object_mut() {
        obj.insert("model".into(), Value::String(served_model.to_string()));
        if stream {
            wants_usage = obj
                .get("stream_options")
                .and_then(|o| o.get("include_usage"))
                .and_then(Value::as_bool)
                .unwrap_or(false);
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
    let body = Bytes::from(serde_json::to_vec(&body)?);
    let accept = if stream {
        "text/event-stream"
    } else {
        "application/json"
    };
    Ok((
        UpstreamRequest {
            path: path(prefix, route),
            headers: vec![
                ("authorization", format!("Bearer {key}")),
                ("content-type", "application/json".into()),
                ("accept", accept.into()),
            ],
            body,
        },
        wants_usage,
    ))
}

pub fn parse_usage(v: &Value) -> Option<Usage> {
    let u = v.get("usage").filter(|u| u.is_object())?;
    let n = |k: &str| u.get(k).and_then(Value::as_u64).unwrap_or(0);
    let prompt = n("prompt_tokens");
    let completion = n("completion_tokens");
    let cached = u
        .get("prompt_tokens_details")
        .and_then(|d| d.get("cached_tokens"))
        .and_then(Value::as_u64)
        .unwrap_or(0);
    Some(Usage {
        prompt_tokens: prompt,
        completion_tokens: completion,
        cached_tokens: cached,
        cache_write_tokens: 0,
    })
}

/// Usage and generated characters of a whole (non-stream) response body.
pub fn decode_response(body: &[u8]) -> (Option<Usage>, usize) {
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return (None, 0);
    };
    let chars = v
        .get("choices")
        .and_then(Value::as_array)
        .map(|cs| {
            cs.iter()
                .filter_map(|c| c.get("message")?.get("content")?.as_str())
                .map(|s| s.chars().count())
                .sum()
        })
        .unwrap_or(0);
    (parse_usage(&v), chars)
}

pub fn decode_event(state: &mut StreamState, event: &Event) -> EventOutput {
    let Some(data) = event.data.as_deref() else {
        return EventOutput::Forward(event.raw.clone());
    };
    if data.trim() == "[DONE]" {
        state.saw_done = true;
        return EventOutput::Forward(event.raw.clone());
    }
    let Ok(v) = serde_json::from_str::<Value>(data) else {
        return EventOutput::Forward(event.raw.clone());
    };
    let choices = v.get("choices").and_then(Value::as_array);
    if let Some(cs) = choices {
        for c in cs {
            if let Some(s) = c
                .get("delta")
                .and_then(|d| d.get("content"))
                .and_then(Value::as_str)
            {
                state.content_chars += s.chars().count();
            }
        }
    }
    if let Some(u) = parse_usage(&v) {
        state.usage = Some(u);
        if !state.client_wants_usage && choices.is_some_and(|c| c.is_empty()) {
            return EventOutput::Drop;
        }
    }
    EventOutput::Forward(event.raw.clone())
}

/// Characters of the prompt, for estimating usage when the provider sends none.
pub fn prompt_chars(request: &Value) -> usize {
    let text_len = |v: &Value| -> usize {
        match v {
            Value::String(s) => s.chars().count(),
            Value::Array(parts) => parts
                .iter()
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .map(|s| s.chars().count())
                .sum(),
            _ => 0,
        }
    };
    if let Some(msgs) = request.get("messages").and_then(Value::as_array) {
        return msgs
            .iter()
            .map(|m| 4 + m.get("content").map_or(0, text_len))
            .sum();
    }
    request.get("input").map_or(0, text_len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sse::Framer;

    #[test]
    fn stream_requests_ask_for_usage() {
        let req = json!({"model": "a", "stream": true, "messages": []});
        let (up, wants) = build_request("/v1", "sk", Route::Chat, &req, "b", true).unwrap();
        let body: Value = serde_json::from_slice(&up.body).unwrap();
        assert_eq!(body["model"], "b");
        assert_eq!(body["stream_options"]["include_usage"], true);
        assert!(!wants);
        assert_eq!(up.path, "/v1/chat/completions");
        let req = json!({"model": "a", "stream": true, "stream_options": {"include_usage": true}});
        assert!(
            build_request("", "sk", Route::Chat, &req, "a", true)
                .unwrap()
                .1
        );
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
            let out: Vec<EventOutput> = Framer::new()
                .push(stream.as_bytes())
                .iter()
                .map(|e| decode_event(&mut st, e))
                .collect();
            assert_eq!(
                out.iter().filter(|o| **o == EventOutput::Drop).count(),
                usize::from(!wants)
            );
            assert_eq!(st.usage.unwrap().prompt_tokens, 3);
            assert_eq!(st.content_chars, 2);
            assert!(st.saw_done);
        }
    }
}

//! What serving a stored answer again needs beyond a live translation: the same answer in
//! the other shape (a stream's chat chunks assembled into one `chat.completion`, a whole
//! `chat.completion` written as its chunks), and a fresh identity for the provider's
//! answer (its id and creation time, rewritten in the stored bytes before they are
//! translated, so every door's encoder sees a new answer).

use std::collections::BTreeMap;

use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::sse::Framer;

/// One `chat.completion.chunk`, as far as assembling needs it.
#[derive(Deserialize)]
struct Chunk {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    created: Option<i64>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    system_fingerprint: Option<String>,
    #[serde(default)]
    choices: Vec<ChunkChoice>,
    #[serde(default)]
    usage: Option<Value>,
}

#[derive(Deserialize)]
struct ChunkChoice {
    #[serde(default)]
    index: usize,
    #[serde(default)]
    delta: Delta,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize, Default)]
struct Delta {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    reasoning_content: Option<String>,
    #[serde(default)]
    refusal: Option<String>,
    #[serde(default)]
    tool_calls: Vec<ToolCallDelta>,
}

#[derive(Deserialize)]
struct ToolCallDelta {
    #[serde(default)]
    index: usize,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    function: Option<FunctionDelta>,
}

#[derive(Deserialize)]
struct FunctionDelta {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    arguments: Option<String>,
}

/// One choice being assembled.
#[derive(Default)]
struct Assembled {
    content: Option<String>,
    reasoning: Option<String>,
    refusal: Option<String>,
    tool_calls: BTreeMap<usize, (String, String, String)>,
    finish_reason: Option<String>,
}

fn append(to: &mut Option<String>, piece: Option<String>) {
    if let Some(p) = piece {
        to.get_or_insert_with(String::new).push_str(&p);
    }
}

/// The `chat.completion` a stream of OpenAI chat events adds up to (`None` when the
/// stream holds no chunk).
pub fn completion_from_chunks(stream: &[u8]) -> Option<Bytes> {
    let mut framer = Framer::new();
    let mut events = framer.push(stream).ok()?;
    events.extend(framer.finish());
    let (mut id, mut created, mut model, mut fingerprint, mut usage) =
        (None, None, None, None, None);
    let mut choices: BTreeMap<usize, Assembled> = BTreeMap::new();
    let mut seen = false;
    for event in events {
        let Some(data) = event.data.as_deref().filter(|d| *d != "[DONE]") else {
            continue;
        };
        let Ok(chunk) = serde_json::from_str::<Chunk>(data) else {
            continue;
        };
        seen = true;
        id = id.or(chunk.id);
        created = created.or(chunk.created);
        model = model.or(chunk.model);
        fingerprint = fingerprint.or(chunk.system_fingerprint);
        usage = chunk.usage.filter(|u| !u.is_null()).or(usage);
        for c in chunk.choices {
            let a = choices.entry(c.index).or_default();
            append(&mut a.content, c.delta.content);
            append(&mut a.reasoning, c.delta.reasoning_content);
            append(&mut a.refusal, c.delta.refusal);
            for t in c.delta.tool_calls {
                let call = a.tool_calls.entry(t.index).or_default();
                if let Some(tid) = t.id {
                    call.0 = tid;
                }
                if let Some(f) = t.function {
                    call.1.push_str(&f.name.unwrap_or_default());
                    call.2.push_str(&f.arguments.unwrap_or_default());
                }
            }
            if c.finish_reason.is_some() {
                a.finish_reason = c.finish_reason;
            }
        }
    }
    if !seen {
        return None;
    }
    let choices: Vec<Value> = choices
        .into_iter()
        .map(|(index, a)| {
            let mut message =
                json!({"role": "assistant", "content": a.content, "refusal": a.refusal});
            if let Some(r) = a.reasoning {
                message["reasoning_content"] = Value::String(r);
            }
            if !a.tool_calls.is_empty() {
                message["tool_calls"] = a
                    .tool_calls
                    .into_values()
                    .map(|(id, name, arguments)| {
                        json!({"id": id, "type": "function",
                               "function": {"name": name, "arguments": arguments}})
                    })
                    .collect();
            }
            json!({"index": index, "message": message, "logprobs": null,
                   "finish_reason": a.finish_reason})
        })
        .collect();
    let mut out = json!({
        "id": id.unwrap_or_default(),
        "object": "chat.completion",
        "created": created.unwrap_or_default(),
        "model": model.unwrap_or_default(),
        "choices": choices,
    });
    if let Some(f) = fingerprint {
        out["system_fingerprint"] = Value::String(f);
    }
    if let Some(u) = usage {
        out["usage"] = u;
    }
    Some(Bytes::from(out.to_string()))
}

/// A whole `chat.completion`, as far as writing its chunks needs it.
#[derive(Deserialize)]
struct Completion {
    #[serde(default)]
    id: String,
    #[serde(default)]
    created: i64,
    #[serde(default)]
    model: String,
    #[serde(default)]
    system_fingerprint: Option<String>,
    #[serde(default)]
    choices: Vec<CompletionChoice>,
    #[serde(default)]
    usage: Option<Value>,
}

#[derive(Deserialize)]
struct CompletionChoice {
    #[serde(default)]
    index: usize,
    #[serde(default)]
    message: Message,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize, Default)]
struct Message {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    reasoning_content: Option<String>,
    #[serde(default)]
    refusal: Option<String>,
    #[serde(default)]
    tool_calls: Vec<ToolCall>,
}

#[derive(Deserialize, Serialize)]
struct ToolCall {
    #[serde(default)]
    id: String,
    #[serde(default)]
    function: Function,
}

#[derive(Deserialize, Serialize, Default)]
struct Function {
    #[serde(default)]
    name: String,
    #[serde(default)]
    arguments: String,
}

/// A whole `chat.completion` written as the stream of chunks that adds up to it: per
/// choice, its role, its content in one piece, its tool calls, its finish; then the usage
/// chunk and `[DONE]` (`None` when the body is not a completion).
pub fn chunks_from_completion(body: &[u8]) -> Option<Bytes> {
    let c: Completion = serde_json::from_slice(body).ok()?;
    let mut out = BytesMut::new();
    let mut chunk = |choices: Value, usage: Option<&Value>| {
        let mut v = json!({"id": c.id, "object": "chat.completion.chunk", "created": c.created,
                           "model": c.model, "choices": choices});
        if let Some(f) = &c.system_fingerprint {
            v["system_fingerprint"] = Value::String(f.clone());
        }
        if let Some(u) = usage {
            v["usage"] = u.clone();
        }
        out.extend_from_slice(format!("data: {v}\n\n").as_bytes());
    };
    let choice = |index: usize, delta: Value, finish: Option<&str>| json!([{"index": index, "delta": delta, "logprobs": null, "finish_reason": finish}]);
    for ch in &c.choices {
        let m = &ch.message;
        chunk(
            choice(
                ch.index,
                json!({"role": "assistant", "content": "", "refusal": null}),
                None,
            ),
            None,
        );
        if let Some(r) = m.reasoning_content.as_deref().filter(|r| !r.is_empty()) {
            chunk(
                choice(ch.index, json!({"reasoning_content": r}), None),
                None,
            );
        }
        if let Some(text) = m.content.as_deref().filter(|t| !t.is_empty()) {
            chunk(choice(ch.index, json!({"content": text}), None), None);
        }
        if let Some(r) = m.refusal.as_deref().filter(|r| !r.is_empty()) {
            chunk(choice(ch.index, json!({"refusal": r}), None), None);
        }
        for (i, t) in m.tool_calls.iter().enumerate() {
            let call = json!([{"index": i, "id": t.id, "type": "function",
                               "function": {"name": t.function.name,
                                            "arguments": t.function.arguments}}]);
            chunk(choice(ch.index, json!({"tool_calls": call}), None), None);
        }
        let finish = ch.finish_reason.as_deref().unwrap_or("stop");
        chunk(choice(ch.index, json!({}), Some(finish)), None);
    }
    if let Some(u) = &c.usage {
        chunk(json!([]), Some(u));
    }
    out.extend_from_slice(b"data: [DONE]\n\n");
    Some(out.freeze())
}

/// The identity of a provider's answer: its id and creation time, where it states them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    pub id: Option<String>,
    pub created: Option<i64>,
}

/// The fields that carry an answer's identity in each format: a chat completion or chunk
/// and Anthropic's and Responses' bodies (`id`, `created`), Anthropic's `message_start`
/// (`message.id`), Responses' events (`response.id`, `response.created_at`), Gemini
/// (`responseId`).
#[derive(Deserialize)]
struct Named {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    created: Option<i64>,
    #[serde(default, rename = "responseId")]
    response_id: Option<String>,
    #[serde(default)]
    message: Option<Box<Named>>,
    #[serde(default)]
    response: Option<Box<Named>>,
}

impl Named {
    fn identity(self) -> Identity {
        let inner = self.message.or(self.response).map(|n| n.identity());
        match inner {
            Some(i) if i.id.is_some() => i,
            _ => Identity {
                id: self.id.or(self.response_id),
                created: self.created,
            },
        }
    }
}

impl Identity {
    /// The identity stated by the first event of a stream, or by a whole body.
    pub fn of(answer: &[u8], streamed: bool) -> Identity {
        let first = if streamed {
            let mut framer = Framer::new();
            let events = framer.push(answer).unwrap_or_default();
            events
                .into_iter()
                .chain(framer.finish())
                .find_map(|e| e.data.filter(|d| d.starts_with('{')))
                .map(String::into_bytes)
        } else {
            Some(answer.to_vec())
        };
        first
            .and_then(|d| serde_json::from_slice::<Named>(&d).ok())
            .map(Named::identity)
            .unwrap_or_default()
    }

    /// A new identity of the same shape: the id keeps its prefix (`chatcmpl-`, `msg_`,
    /// `resp_`…) with new random characters; the time is `now`.
    pub fn fresh(&self, now: i64) -> Identity {
        let id = self.id.as_ref().map(|old| {
            let cut = old.rfind(['-', '_']).map_or(0, |i| i + 1);
            // A v7 id's last characters are random; its first ones are the time.
            let mut buf = [0u8; 32];
            let unique = uuid::Uuid::now_v7().simple().encode_lower(&mut buf);
            let n = (old.len() - cut).clamp(8, 32);
            format!("{}{}", &old[..cut], &unique[32 - n..])
        });
        Identity {
            id,
            created: self.created.map(|_| now),
        }
    }

    /// `raw` with this identity's id and creation time replaced by `to`'s, wherever
    /// they appear as a JSON value (`"id"` as a string, `"created":N`).
    pub fn rewrite(&self, raw: &Bytes, to: &Identity) -> Bytes {
        self.rewriter(to).apply(raw)
    }

    /// What [`Self::rewrite`] does, prepared once for the pieces of one answer.
    pub fn rewriter(&self, to: &Identity) -> Rewriter {
        let mut pairs = Vec::with_capacity(2);
        if let (Some(a), Some(b)) = (&self.id, &to.id) {
            pairs.push((format!("\"{a}\""), format!("\"{b}\"")));
        }
        if let (Some(a), Some(b)) = (self.created, to.created) {
            pairs.push((format!("\"created\":{a}"), format!("\"created\":{b}")));
        }
        Rewriter {
            pairs: pairs
                .into_iter()
                .map(|(from, to)| (from.into_bytes(), to.into_bytes()))
                .collect(),
        }
    }
}

/// An answer's old identity replaced by a new one, in each of its pieces. Every text it
/// replaces begins with a quote, so one pass over a piece's quotes finds them all.
pub struct Rewriter {
    pairs: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Rewriter {
    /// `raw` with every occurrence of the old identity replaced (`raw` itself, shared, when
    /// it holds none).
    pub fn apply(&self, raw: &Bytes) -> Bytes {
        let mut out: Option<Vec<u8>> = None;
        let mut last = 0;
        for at in memchr::memchr_iter(b'"', raw) {
            if at < last {
                continue;
            }
            let rest = &raw[at..];
            let Some((from, to)) = self.pairs.iter().find(|(from, _)| rest.starts_with(from))
            else {
                continue;
            };
            let out = out.get_or_insert_with(|| Vec::with_capacity(raw.len() + 16));
            out.extend_from_slice(&raw[last..at]);
            out.extend_from_slice(to);
            last = at + from.len();
        }
        match out {
            Some(mut out) => {
                out.extend_from_slice(&raw[last..]);
                Bytes::from(out)
            }
            None => raw.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{ANTHROPIC_STREAM, OPENAI_STREAM};

    #[test]
    fn a_stream_adds_up_to_its_completion_and_back() {
        let body = completion_from_chunks(OPENAI_STREAM.as_bytes()).unwrap();
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["object"], "chat.completion");
        assert_eq!(v["id"], "c1");
        let text = v["choices"][0]["message"]["content"].as_str().unwrap();
        assert!(!text.is_empty());
        assert!(v["usage"]["prompt_tokens"].as_u64().is_some());
        // Written as chunks again, it adds up to the same completion.
        let again = chunks_from_completion(&body).unwrap();
        assert!(again.ends_with(b"data: [DONE]\n\n"));
        let back: Value = serde_json::from_slice(&completion_from_chunks(&again).unwrap()).unwrap();
        assert_eq!(back["choices"], v["choices"]);
        assert_eq!(back["usage"], v["usage"]);
    }

    #[test]
    fn tool_calls_are_assembled_from_their_argument_deltas() {
        let stream = concat!(
            "data: {\"id\":\"c9\",\"created\":5,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"tool_calls\":[{\"index\":0,\"id\":\"call_1\",\"type\":\"function\",\"function\":{\"name\":\"get\",\"arguments\":\"\"}}]}}]}\n\n",
            "data: {\"id\":\"c9\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"a\\\"\"}}]}}]}\n\n",
            "data: {\"id\":\"c9\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\":1}\"}}]},\"finish_reason\":\"tool_calls\"}]}\n\n",
            "data: [DONE]\n\n",
        );
        let v: Value =
            serde_json::from_slice(&completion_from_chunks(stream.as_bytes()).unwrap()).unwrap();
        let call = &v["choices"][0]["message"]["tool_calls"][0];
        assert_eq!(call["id"], "call_1");
        assert_eq!(call["function"]["name"], "get");
        assert_eq!(call["function"]["arguments"], "{\"a\":1}");
        assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
    }

    #[test]
    fn an_answer_gets_a_fresh_identity_of_the_same_shape() {
        let anthropic = Identity::of(ANTHROPIC_STREAM.as_bytes(), true);
        assert!(anthropic
            .id
            .as_deref()
            .is_some_and(|i| i.starts_with("msg_")));
        let openai = Identity::of(OPENAI_STREAM.as_bytes(), true);
        assert_eq!(openai.id.as_deref(), Some("c1"));
        let body =
            Bytes::from_static(br#"{"id":"chatcmpl-abc123","created":17,"x":"chatcmpl-abc123x"}"#);
        let old = Identity::of(&body, false);
        let new = old.fresh(99);
        assert!(new.id.as_deref().unwrap().starts_with("chatcmpl-"));
        assert_ne!(new.id, old.id);
        let out = old.rewrite(&body, &new);
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["id"].as_str(), new.id.as_deref());
        assert_eq!(v["created"], 99);
        // Only the value itself, never a longer string that starts the same.
        assert_eq!(v["x"], "chatcmpl-abc123x");
        // Every occurrence in every piece of a stream; a piece without any is itself.
        let rewriter = old.rewriter(&new);
        let event = Bytes::from_static(
            b"data: {\"id\":\"chatcmpl-abc123\",\"created\":17,\"choices\":[]}\n\ndata: {\"created\":17,\"id\":\"chatcmpl-abc123\"}\n\n",
        );
        let out = String::from_utf8(rewriter.apply(&event).to_vec()).unwrap();
        let new_id = format!("\"{}\"", new.id.as_deref().unwrap());
        assert_eq!(out.matches(&new_id).count(), 2);
        assert_eq!(out.matches("\"created\":99").count(), 2);
        assert!(!out.contains("abc123") && !out.contains(":17"));
        let done = Bytes::from_static(b"data: [DONE]\n\n");
        assert_eq!(rewriter.apply(&done).as_ptr(), done.as_ptr());
    }
}

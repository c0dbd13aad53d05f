//! Translator tests: fixed streams and bodies per provider, and properties — arbitrary
//! bytes never panic, and any split of a valid stream gives the unsplit output.

use bytes::Bytes;
use proptest::prelude::*;
use serde_json::{json, Value};

use super::fixtures::{ANTHROPIC_STREAM, GEMINI_STREAM, OPENAI_STREAM};
use super::*;
use crate::sse::Framer;
use crate::translation::{Encoder, Shape, Translation};

fn state(wants_usage: bool) -> StreamState {
    StreamState {
        client_wants_usage: wants_usage,
        meta: chunk::Meta {
            id: "chatcmpl-test".into(),
            model: "m".into(),
            created: 1,
        },
        ..Default::default()
    }
}

/// Feeds `parts` through a chat door's translation; returns the client's bytes, the
/// final state and whether the stream ended properly.
fn run(adapter: Adapter, parts: &[&[u8]], wants_usage: bool) -> (Vec<u8>, StreamState, bool) {
    let mut t = Translation::new(adapter, state(wants_usage), Encoder::Chat, "m");
    assert_eq!(t.begin(200, "text/event-stream", 1 << 20), Shape::Stream);
    let mut out = Vec::new();
    for p in parts {
        out.extend_from_slice(&t.push(Bytes::copy_from_slice(p)).unwrap());
    }
    let ok = match t.finish() {
        Ok(tail) => {
            out.extend_from_slice(&tail);
            true
        }
        Err(_) => false,
    };
    (out, t.state().clone(), ok)
}

/// A request's bytes, as the translators read them.
fn bytes(request: &Value) -> Vec<u8> {
    request.to_string().into_bytes()
}

fn events(out: &[u8]) -> Vec<Value> {
    String::from_utf8(out.to_vec())
        .unwrap()
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap())
        .collect()
}

#[test]
fn anthropic_stream_becomes_openai_chunks() {
    let (out, st, ok) = run(Adapter::Anthropic, &[ANTHROPIC_STREAM.as_bytes()], true);
    assert!(ok);
    let text = String::from_utf8(out.clone()).unwrap();
    assert!(text.ends_with("data: [DONE]\n\n"));
    let ev = events(&out);
    assert_eq!(ev[0]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(ev[0]["object"], "chat.completion.chunk");
    let content: String = ev
        .iter()
        .filter_map(|e| e["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(content, "Héllo 🌍");
    let calls: Vec<&Value> = ev
        .iter()
        .filter_map(|e| e["choices"][0]["delta"].get("tool_calls"))
        .collect();
    assert_eq!(calls[0][0]["id"], "toolu_1");
    assert_eq!(calls[0][0]["function"]["name"], "get_weather");
    let args: String = calls
        .iter()
        .filter_map(|c| c[0]["function"]["arguments"].as_str())
        .collect();
    assert_eq!(
        serde_json::from_str::<Value>(&args).unwrap(),
        json!({"location": "Paris"})
    );
    let finish: Vec<&str> = ev
        .iter()
        .filter_map(|e| e["choices"][0]["finish_reason"].as_str())
        .collect();
    assert_eq!(finish, vec!["tool_calls"]);
    let usage = ev.last().unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["prompt_tokens"], 35);
    assert_eq!(usage["usage"]["completion_tokens"], 15);
    assert_eq!(usage["usage"]["prompt_tokens_details"]["cached_tokens"], 4);
    let u = st.usage.unwrap();
    assert_eq!((u.cached_tokens, u.cache_write_tokens), (4, 6));
    // Without include_usage the usage chunk is left out.
    let (out, _, _) = run(Adapter::Anthropic, &[ANTHROPIC_STREAM.as_bytes()], false);
    assert!(events(&out).iter().all(|e| e.get("usage").is_none()));
}

#[test]
fn anthropic_stream_without_message_stop_or_with_an_error_is_broken() {
    let cut = &ANTHROPIC_STREAM[..ANTHROPIC_STREAM.find("event: message_delta").unwrap()];
    assert!(!run(Adapter::Anthropic, &[cut.as_bytes()], false).2);
    let with_error = format!(
        "{cut}event: error\ndata: {{\"type\":\"error\",\"error\":{{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}}}\n\n"
    );
    let (out, st, ok) = run(Adapter::Anthropic, &[with_error.as_bytes()], false);
    assert!(!ok && st.errored);
    assert_eq!(
        events(&out).last().unwrap()["error"]["message"],
        "Overloaded"
    );
}

#[test]
fn gemini_stream_becomes_openai_chunks() {
    let (out, st, ok) = run(Adapter::Gemini, &[GEMINI_STREAM.as_bytes()], true);
    assert!(ok);
    let ev = events(&out);
    let content: String = ev
        .iter()
        .filter_map(|e| e["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(content, "Hello ✓");
    let call = ev
        .iter()
        .find_map(|e| e["choices"][0]["delta"].get("tool_calls"))
        .unwrap();
    assert_eq!(call[0]["function"]["name"], "get_weather");
    assert_eq!(call[0]["index"], 0);
    let finish: Vec<&str> = ev
        .iter()
        .filter_map(|e| e["choices"][0]["finish_reason"].as_str())
        .collect();
    assert_eq!(finish, vec!["tool_calls"]);
    let u = st.usage.unwrap();
    assert_eq!(
        (u.prompt_tokens, u.completion_tokens, u.cached_tokens),
        (9, 3, 4)
    );
    assert!(String::from_utf8(out)
        .unwrap()
        .ends_with("data: [DONE]\n\n"));
    let cut = &GEMINI_STREAM[..GEMINI_STREAM.rfind("data: ").unwrap()];
    assert!(
        !run(Adapter::Gemini, &[cut.as_bytes()], false).2,
        "no finishReason: broken"
    );
}

#[test]
fn anthropic_request_translation() {
    let req = json!({
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": [{"type": "text", "text": "Use metric units."}]},
            {"role": "user", "content": "Weather?"},
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"location\":\"Paris\"}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}
        ],
        "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}],
        "tool_choice": "required",
        "stop": "END",
        "temperature": 0.2,
        "max_completion_tokens": 100
    });
    let body = anthropic::translate_request(&bytes(&req), "claude-3-5-haiku-latest", true).unwrap();
    assert_eq!(body["model"], "claude-3-5-haiku-latest");
    assert_eq!(body["system"], "Be brief.\n\nUse metric units.");
    assert_eq!(body["max_tokens"], 100);
    assert_eq!(body["stop_sequences"], json!(["END"]));
    assert_eq!(body["tool_choice"], json!({"type": "any"}));
    assert_eq!(body["tools"][0]["input_schema"], json!({"type": "object"}));
    assert_eq!(body["stream"], true);
    let msgs = body["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 3, "consecutive user messages merged: {msgs:?}");
    assert_eq!(
        msgs[0]["content"][1]["source"],
        json!({"type": "base64", "media_type": "image/png", "data": "AAAA"})
    );
    assert_eq!(
        msgs[1]["content"][0],
        json!({"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"location": "Paris"}})
    );
    assert_eq!(msgs[2]["content"][0]["type"], "tool_result");
    let no_max = anthropic::translate_request(
        &bytes(&json!({"messages": [{"role": "user", "content": "x"}]})),
        "c",
        false,
    )
    .unwrap();
    assert_eq!(no_max["max_tokens"], anthropic::DEFAULT_MAX_TOKENS);
    assert!(
        anthropic::translate_request(&bytes(&json!({"n": 2, "messages": []})), "c", false).is_err()
    );
    let audio = json!({"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "x", "format": "wav"}}]}]});
    assert!(anthropic::translate_request(&bytes(&audio), "c", false).is_err());
}

#[test]
fn a_cache_key_marks_the_stable_prefix_for_anthropic() {
    let req = json!({
        "prompt_cache_key": "conv-1",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Weather?"},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}
        ],
        "tools": [{"type": "function", "function": {"name": "a"}}, {"type": "function", "function": {"name": "get_weather"}}]
    });
    let body = anthropic::translate_request(&bytes(&req), "c", false).unwrap();
    let mark = json!({"type": "ephemeral"});
    assert_eq!(
        body["system"],
        json!([{"type": "text", "text": "Be brief.", "cache_control": mark}])
    );
    assert!(body["tools"][0].get("cache_control").is_none());
    assert_eq!(body["tools"][1]["cache_control"], mark);
    let last = &body["messages"][2]["content"][0];
    assert_eq!(last["type"], "tool_result");
    assert_eq!(last["cache_control"], mark);
    assert!(body["messages"][0]["content"][0]
        .get("cache_control")
        .is_none());
    // Without the key nothing is marked.
    let mut plain = req.clone();
    plain.as_object_mut().unwrap().remove("prompt_cache_key");
    let body = anthropic::translate_request(&bytes(&plain), "c", false).unwrap();
    assert_eq!(body["system"], "Be brief.");
    assert!(!body.to_string().contains("cache_control"));
}

#[test]
fn gemini_request_translation() {
    let req = json!({
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "What is this?"}, {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]},
            {"role": "assistant", "tool_calls": [{"id": "call_0", "type": "function", "function": {"name": "lookup", "arguments": "{\"q\":\"cat\"}"}}]},
            {"role": "tool", "tool_call_id": "call_0", "content": "{\"answer\":\"a cat\"}"}
        ],
        "tools": [{"type": "function", "function": {"name": "lookup", "description": "d", "parameters": {"type": "object"}}}],
        "max_tokens": 50, "top_p": 0.9
    });
    let body = gemini::translate_request(&bytes(&req)).unwrap();
    assert_eq!(
        body["systemInstruction"],
        json!({"parts": [{"text": "Be brief."}]})
    );
    assert_eq!(
        body["generationConfig"],
        json!({"maxOutputTokens": 50, "topP": 0.9})
    );
    assert_eq!(
        body["contents"][0]["parts"][1],
        json!({"fileData": {"mimeType": "image/png", "fileUri": "https://example.com/cat.png"}})
    );
    assert_eq!(body["contents"][1]["role"], "model");
    assert_eq!(
        body["contents"][1]["parts"][0]["functionCall"],
        json!({"name": "lookup", "args": {"q": "cat"}})
    );
    assert_eq!(
        body["contents"][2]["parts"][0]["functionResponse"],
        json!({"name": "lookup", "response": {"answer": "a cat"}})
    );
    assert_eq!(
        body["tools"][0]["functionDeclarations"][0]["parametersJsonSchema"],
        json!({"type": "object"})
    );
    assert_eq!(
        body["tools"][0]["functionDeclarations"][0]["name"],
        "lookup"
    );
    let audio = json!({"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "x", "format": "wav"}}]}]});
    assert_eq!(
        gemini::translate_request(&bytes(&audio)).unwrap_err().0,
        "audio input is not supported for gemini providers"
    );
    let orphan = json!({"messages": [{"role": "tool", "tool_call_id": "nope", "content": "x"}]});
    assert!(gemini::translate_request(&bytes(&orphan)).is_err());
}

#[test]
fn non_stream_bodies_and_errors() {
    let a = br#"{"id":"msg_9","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[{"type":"text","text":"Hi"},{"type":"tool_use","id":"toolu_9","name":"f","input":{"x":1}}],"stop_reason":"tool_use","usage":{"input_tokens":10,"output_tokens":3,"cache_read_input_tokens":2,"cache_creation_input_tokens":0}}"#;
    let d = Adapter::Anthropic.decode_response(a, "claude-sonnet-4-5");
    let v: Value = serde_json::from_slice(&d.body.unwrap()).unwrap();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["id"], "msg_9");
    assert_eq!(v["choices"][0]["message"]["content"], "Hi");
    assert_eq!(
        v["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"],
        "{\"x\":1}"
    );
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(v["usage"]["prompt_tokens"], 12);
    assert_eq!(d.usage.unwrap().cached_tokens, 2);

    let g = br#"{"candidates":[{"finishReason":"SAFETY","index":0,"safetyRatings":[{"category":"HARM_CATEGORY_DANGEROUS_CONTENT","probability":"HIGH","blocked":true}]}],"usageMetadata":{"promptTokenCount":7,"totalTokenCount":7}}"#;
    let d = Adapter::Gemini.decode_response(g, "gemini-2.5-flash");
    let v: Value = serde_json::from_slice(&d.body.unwrap()).unwrap();
    assert_eq!(v["choices"][0]["finish_reason"], "content_filter");
    assert_eq!(v["choices"][0]["message"]["content"], "");
    assert_eq!(d.usage.unwrap().prompt_tokens, 7);

    let e: Value = serde_json::from_slice(
        &Adapter::Anthropic
            .error_body(
                529,
                br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
            )
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        e["error"],
        json!({"message": "Overloaded", "type": "server_error", "code": "overloaded_error", "param": null})
    );
    let e: Value = serde_json::from_slice(
        &Adapter::Gemini
            .error_body(
                400,
                br#"{"error":{"code":400,"message":"bad","status":"INVALID_ARGUMENT"}}"#,
            )
            .unwrap(),
    )
    .unwrap();
    assert_eq!(e["error"]["type"], "invalid_request_error");
    assert_eq!(e["error"]["code"], "INVALID_ARGUMENT");
}

/// The signal of every event of a stream, in order.
fn signals(adapter: Adapter, stream: &str) -> Vec<Signal> {
    let mut framer = Framer::new();
    let mut events = framer.push(stream.as_bytes()).unwrap();
    events.extend(framer.finish());
    events.iter().map(|e| adapter.signal(e)).collect()
}

#[test]
fn the_first_token_is_the_first_thing_a_user_would_see() {
    use Signal::{Content, Error, Preamble};
    // Role-only chunk first, then text.
    assert_eq!(
        signals(Adapter::OpenAi, OPENAI_STREAM)[..2],
        [Preamble, Content]
    );
    // message_start, empty text block and ping, then the first text delta.
    assert_eq!(
        signals(Adapter::Anthropic, ANTHROPIC_STREAM)[..4],
        [Preamble, Preamble, Preamble, Content]
    );
    assert_eq!(signals(Adapter::Gemini, GEMINI_STREAM)[0], Content);
    let one = |adapter: Adapter, data: Value| signals(adapter, &format!("data: {data}\n\n"))[0];
    let openai = [
        (
            json!({"choices": [{"delta": {"role": "assistant", "content": null}}]}),
            Preamble,
        ),
        (
            json!({"choices": [{"delta": {"role": "assistant"}, "finish_reason": null}]}),
            Preamble,
        ),
        (
            json!({"choices": [{"delta": {"tool_calls": [{"index": 0, "function": {"name": "f"}}]}}]}),
            Content,
        ),
        (json!({"choices": [{"delta": {"refusal": "no"}}]}), Content),
        (
            json!({"choices": [{"delta": {}, "finish_reason": "stop"}]}),
            Content,
        ),
        (
            json!({"choices": [], "usage": {"prompt_tokens": 1}}),
            Content,
        ),
        (json!({"error": {"message": "overloaded"}}), Error),
    ];
    for (data, want) in openai {
        assert_eq!(one(Adapter::OpenAi, data.clone()), want, "{data}");
    }
    assert_eq!(
        signals(Adapter::OpenAi, ": keep-alive\n\ndata: [DONE]\n\n"),
        [Preamble, Content]
    );
    let anthropic = [
        (
            json!({"type": "content_block_start", "content_block": {"type": "thinking", "thinking": ""}}),
            Preamble,
        ),
        (
            json!({"type": "content_block_delta", "delta": {"type": "thinking_delta", "thinking": "hmm"}}),
            Preamble,
        ),
        (
            json!({"type": "content_block_start", "content_block": {"type": "tool_use", "name": "f"}}),
            Content,
        ),
        (
            json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}}),
            Content,
        ),
        (
            json!({"type": "error", "error": {"type": "overloaded_error"}}),
            Error,
        ),
    ];
    for (data, want) in anthropic {
        assert_eq!(one(Adapter::Anthropic, data.clone()), want, "{data}");
    }
    let gemini = [
        (
            json!({"candidates": [{"content": {"role": "model", "parts": [{"text": ""}]}}]}),
            Preamble,
        ),
        (
            json!({"candidates": [{"content": {"parts": [{"text": "plan", "thought": true}]}}]}),
            Preamble,
        ),
        (json!({"usageMetadata": {"promptTokenCount": 3}}), Preamble),
        (json!({"candidates": [{"finishReason": "SAFETY"}]}), Content),
        (
            json!({"promptFeedback": {"blockReason": "SAFETY"}}),
            Content,
        ),
        (json!({"error": {"code": 503}}), Error),
    ];
    for (data, want) in gemini {
        assert_eq!(one(Adapter::Gemini, data.clone()), want, "{data}");
    }
}

#[test]
fn a_gemini_model_name_stays_one_path_segment() {
    let req = json!({"messages": [{"role": "user", "content": "hi"}]});
    for (model, path) in [
        (
            "gemini-2.5-flash",
            "/v1beta/models/gemini-2.5-flash:generateContent",
        ),
        (
            "../../files?x=1#",
            "/v1beta/models/..%2F..%2Ffiles%3Fx%3D1%23:generateContent",
        ),
        ("a b:c/d", "/v1beta/models/a%20b%3Ac%2Fd:generateContent"),
    ] {
        let up = gemini::build_request("/v1beta", "k", &bytes(&req), model, false).unwrap();
        assert_eq!(up.path, path);
    }
}

fn split_at(bytes: &[u8], mut cuts: Vec<usize>) -> Vec<&[u8]> {
    cuts.iter_mut().for_each(|c| *c %= bytes.len() + 1);
    cuts.sort_unstable();
    let mut parts = Vec::new();
    let mut prev = 0;
    for c in cuts {
        parts.push(&bytes[prev..c]);
        prev = c;
    }
    parts.push(&bytes[prev..]);
    parts
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn any_split_gives_the_unsplit_output(cuts in proptest::collection::vec(0usize..4096, 0..12), wants in any::<bool>()) {
        for (adapter, stream) in [(Adapter::Anthropic, ANTHROPIC_STREAM), (Adapter::Gemini, GEMINI_STREAM), (Adapter::OpenAi, OPENAI_STREAM)] {
            let whole = run(adapter, &[stream.as_bytes()], wants);
            let parts = split_at(stream.as_bytes(), cuts.clone());
            let split = run(adapter, &parts, wants);
            prop_assert_eq!(&whole.0, &split.0);
            prop_assert_eq!(whole.1.usage, split.1.usage);
            prop_assert_eq!(whole.2, split.2);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..8)) {
        for adapter in [Adapter::Anthropic, Adapter::Gemini, Adapter::OpenAi] {
            let parts: Vec<&[u8]> = chunks.iter().map(Vec::as_slice).collect();
            let _ = run(adapter, &parts, true);
            let joined: Vec<u8> = chunks.concat();
            let _ = adapter.decode_response(&joined, "m");
            let _ = adapter.error_body(500, &joined);
        }
    }

    #[test]
    fn arbitrary_json_events_never_panic(kind in "[a-z_]{0,20}", index in any::<u64>(), text in ".{0,40}") {
        let payloads = [
            json!({"type": kind, "index": index, "delta": {"type": "text_delta", "text": text}}),
            json!({"type": "content_block_delta", "index": index, "delta": {"type": "input_json_delta", "partial_json": text}}),
            json!({"type": "message_start", "message": {"usage": {"input_tokens": index}}}),
            json!({"candidates": [{"content": {"parts": [{"text": text}, {"functionCall": {"name": kind}}]}, "finishReason": kind}]}),
            json!({"choices": [{"delta": {"content": text}}], "usage": {"prompt_tokens": index}}),
        ];
        for adapter in [Adapter::Anthropic, Adapter::Gemini, Adapter::OpenAi] {
            let mut st = state(true);
            for p in &payloads {
                let raw = format!("data: {p}\n\n");
                for ev in Framer::new().push(raw.as_bytes()).unwrap() {
                    let _ = adapter.decode_event(&mut st, &ev);
                }
            }
            let _ = adapter.finish_stream(&mut st);
        }
    }

    /// Usage numbers from a provider are untrusted: whatever they are (huge, negative,
    /// fractional, strings), decoding never panics and the counted usage stays within
    /// the per-request clamp, so a cost and a log row can always be made of it (the
    /// cost of the clamp's largest counts is checked with the pricing, in core).
    #[test]
    fn hostile_usage_numbers_are_contained(
        a in prop_oneof![any::<u64>().prop_map(|n| json!(n)), any::<i64>().prop_map(|n| json!(n)), any::<f64>().prop_map(|n| json!(n)), ".{0,5}".prop_map(|s| json!(s))],
        b in any::<u64>(),
        c in prop_oneof![Just(u64::MAX), any::<u64>()],
    ) {
        let bodies = [
            (Adapter::OpenAi, json!({"choices": [], "usage": {"prompt_tokens": a, "completion_tokens": b, "prompt_tokens_details": {"cached_tokens": c}}})),
            (Adapter::Anthropic, json!({"type": "message", "content": [], "usage": {"input_tokens": c, "cache_creation_input_tokens": b, "cache_read_input_tokens": c, "output_tokens": a}})),
            (Adapter::Gemini, json!({"candidates": [], "usageMetadata": {"promptTokenCount": b, "candidatesTokenCount": c, "thoughtsTokenCount": c, "cachedContentTokenCount": a}})),
        ];
        for (adapter, body) in bodies {
            let decoded = adapter.decode_response(body.to_string().as_bytes(), "gpt-4o");
            let streamed = {
                let mut st = state(true);
                let raw = format!("data: {body}\n\n");
                for ev in Framer::new().push(raw.as_bytes()).unwrap() {
                    let _ = adapter.decode_event(&mut st, &ev);
                }
                st.usage
            };
            for usage in [decoded.usage, streamed].into_iter().flatten() {
                let u = usage.clamped();
                for n in [u.prompt_tokens, u.completion_tokens, u.cached_tokens, u.cache_write_tokens] {
                    prop_assert!(n <= MAX_TOKENS_PER_REQUEST);
                }
                let _ = u.to_openai();
            }
        }
    }

    /// The typed reading of an OpenAI answer's usage gives what the lenient reading of the
    /// whole answer gives, whatever the counts hold (numbers, floats, strings, null,
    /// nothing).
    #[test]
    fn typed_usage_reading_matches_the_lenient_one(
        counts in proptest::collection::vec(prop_oneof![
            any::<u64>().prop_map(|n| Some(json!(n))),
            any::<i64>().prop_map(|n| Some(json!(n))),
            any::<f64>().prop_map(|n| Some(json!(n))),
            ".{0,3}".prop_map(|s| Some(json!(s))),
            Just(Some(Value::Null)),
            Just(None),
        ], 3),
        usage_null in any::<bool>(),
    ) {
        let mut usage = serde_json::Map::new();
        for (name, v) in ["prompt_tokens", "completion_tokens"].iter().zip(&counts) {
            if let Some(v) = v {
                usage.insert((*name).into(), v.clone());
            }
        }
        if let Some(c) = &counts[2] {
            usage.insert("prompt_tokens_details".into(), json!({"cached_tokens": c}));
        }
        let usage = if usage_null { Value::Null } else { Value::Object(usage) };
        let body = json!({"choices": [{"message": {"content": "hi"}}], "usage": usage});
        let raw = body.to_string();
        let (typed, _) = openai::decode_response(raw.as_bytes());
        prop_assert_eq!(typed, openai::parse_usage(&body));
    }

    #[test]
    fn arbitrary_requests_never_panic(role in "(system|user|assistant|tool|x)", text in ".{0,30}", args in ".{0,30}") {
        let req = json!({"messages": [
            {"role": role, "content": text, "tool_call_id": "c", "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": args}}]},
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": text}}]}
        ]});
        let _ = anthropic::translate_request(&bytes(&req), "m", true);
        let _ = gemini::translate_request(&bytes(&req));
    }
}

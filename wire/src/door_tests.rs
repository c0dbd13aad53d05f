//! Front-door encoders over real provider streams: any split of a provider's stream gives
//! the same Messages and Responses event sequences as the unsplit stream.

use bytes::Bytes;
use proptest::prelude::*;
use serde_json::Value;

use crate::anthropic::messages as anthropic_messages;
use crate::fixtures::{ANTHROPIC_STREAM, GEMINI_STREAM, OPENAI_STREAM};
use crate::openai::chunk;
use crate::openai::responses as openai_responses;
use crate::sse::Framer;
use crate::translation::{Encoder, Translation};
use crate::{Adapter, StreamState};

/// The event payloads of an encoded stream, with the ids and times each run makes anew
/// taken out.
fn normalized(out: &[Bytes]) -> Vec<Value> {
    fn strip(v: &mut Value) {
        match v {
            Value::Object(o) => {
                for k in ["id", "item_id", "call_id", "created_at"] {
                    o.remove(k);
                }
                o.values_mut().for_each(strip);
            }
            Value::Array(a) => a.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let joined: Vec<u8> = out.concat();
    let mut events = Framer::new().push(&joined).unwrap();
    events.extend(Framer::new().finish());
    events
        .iter()
        .map(|e| {
            let mut v: Value = serde_json::from_str(e.data.as_deref().unwrap_or("null")).unwrap();
            strip(&mut v);
            v
        })
        .collect()
}

#[derive(Debug, Clone, Copy)]
enum Door {
    Messages,
    Responses,
}

/// A provider stream, cut into `parts`, through its adapter and a door's encoder.
fn encode(adapter: Adapter, door: Door, parts: &[&[u8]]) -> Vec<Value> {
    let state = StreamState {
        client_wants_usage: true,
        meta: chunk::Meta::new("m"),
        ..Default::default()
    };
    let encoder = match door {
        Door::Messages => Encoder::Messages(anthropic_messages::StreamEncoder::new("m")),
        Door::Responses => {
            let echo = openai_responses::Echo::new("resp_1".into(), b"null", "m");
            Encoder::Responses(openai_responses::StreamEncoder::new(echo))
        }
    };
    let mut t = Translation::new(adapter, state, encoder, "m");
    t.begin(200, "text/event-stream", 1 << 20);
    let mut out: Vec<Bytes> = Vec::new();
    for p in parts {
        out.push(t.push(Bytes::copy_from_slice(p)).unwrap());
    }
    out.push(t.finish().unwrap());
    normalized(&out)
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

#[test]
fn each_provider_stream_ends_properly_through_each_door() {
    for (adapter, stream) in [
        (Adapter::OpenAi, OPENAI_STREAM),
        (Adapter::Anthropic, ANTHROPIC_STREAM),
        (Adapter::Gemini, GEMINI_STREAM),
    ] {
        let messages = encode(adapter, Door::Messages, &[stream.as_bytes()]);
        assert_eq!(
            messages.last().unwrap()["type"],
            "message_stop",
            "{adapter:?}"
        );
        let responses = encode(adapter, Door::Responses, &[stream.as_bytes()]);
        assert_eq!(
            responses.last().unwrap()["type"],
            "response.completed",
            "{adapter:?}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn any_split_gives_the_same_door_events(cuts in proptest::collection::vec(0usize..4096, 0..10)) {
        for (adapter, stream) in [
            (Adapter::OpenAi, OPENAI_STREAM),
            (Adapter::Anthropic, ANTHROPIC_STREAM),
            (Adapter::Gemini, GEMINI_STREAM),
        ] {
            for door in [Door::Messages, Door::Responses] {
                let whole = encode(adapter, door, &[stream.as_bytes()]);
                let split = encode(adapter, door, &split_at(stream.as_bytes(), cuts.clone()));
                prop_assert_eq!(split, whole, "{:?} {:?}", adapter, door);
            }
        }
    }
}

//! Saved inputs — cases that once broke, or nearly broke, a parser — run as ordinary
//! tests: every file under `tests/fixtures/saved-inputs/` goes through the component its
//! folder names. Add a file when a property test or a report finds a new case.

use std::path::{Path, PathBuf};

use crate::validate;
use perpetuo_wire::sse::Framer;
use perpetuo_wire::{Adapter, StreamState, MAX_TOKENS_PER_REQUEST};

fn files(folder: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/saved-inputs")
        .join(folder);
    let mut out: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no saved inputs in {}", dir.display());
    out
}

const ADAPTERS: [Adapter; 3] = [Adapter::OpenAi, Adapter::Anthropic, Adapter::Gemini];

/// Streams: framed at every split into a small framer, decoded by every adapter; nothing
/// panics, nothing is lost, the framer stays within its limit, usage stays clamped.
#[test]
fn streams() {
    for path in files("stream") {
        let bytes = std::fs::read(&path).unwrap();
        for cut in 1..bytes.len().min(64) {
            let mut framer = Framer::with_limit(1024);
            let mut seen = 0;
            let mut refused = false;
            for chunk in bytes.chunks(cut) {
                match framer.push(chunk) {
                    Ok(events) => {
                        seen += events.iter().map(|e| e.raw.len()).sum::<usize>();
                        assert!(framer.pending() <= 1024);
                    }
                    Err(_) => {
                        refused = true;
                        break;
                    }
                }
            }
            if !refused {
                seen += framer.finish().map_or(0, |e| e.raw.len());
                assert!(bytes.len() - seen <= 4, "{}: bytes lost", path.display());
            }
        }
        let mut events = Framer::new().push(&bytes).unwrap();
        events.extend(Framer::new().finish());
        for adapter in ADAPTERS {
            let mut state = StreamState::default();
            for e in &events {
                let _ = adapter.decode_event(&mut state, e);
                let _ = adapter.signal(e);
            }
            let _ = adapter.finish_stream(&mut state);
            if let Some(u) = state.usage {
                let u = u.clamped();
                assert!(u.prompt_tokens <= MAX_TOKENS_PER_REQUEST);
                let _ = u.to_openai();
            }
        }
    }
}

/// Whole bodies with hostile usage: decoded by every adapter without panic or overflow.
#[test]
fn usage_bodies() {
    for path in files("usage") {
        let body = std::fs::read(&path).unwrap();
        for adapter in ADAPTERS {
            let decoded = adapter.decode_response(&body, "m");
            if let Some(u) = decoded.usage.map(|u| u.clamped()) {
                for n in [
                    u.prompt_tokens,
                    u.completion_tokens,
                    u.cached_tokens,
                    u.cache_write_tokens,
                ] {
                    assert!(n <= MAX_TOKENS_PER_REQUEST, "{}", path.display());
                }
            }
        }
    }
}

/// Request bodies: `refused-*` fail validation (depth or model name), `accepted-*` pass.
#[test]
fn request_bodies() {
    for path in files("request") {
        let body = std::fs::read(&path).unwrap();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let passes = !validate::nests_deeper_than(&body, validate::MAX_JSON_DEPTH)
            && serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.get("model").and_then(|m| m.as_str()).map(str::to_string))
                .is_some_and(|m| validate::model_name(&m).is_ok());
        assert_eq!(passes, name.starts_with("accepted-"), "{name}");
    }
}

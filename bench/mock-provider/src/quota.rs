//! Per-key rate limits as providers report them: with [`MockConfig::rate_limit`]
//! (crate::MockConfig::rate_limit) set, every answer to a request that carries a key
//! (`Authorization: Bearer …` or `x-api-key`) reports what that key has left in its
//! current window — OpenAI's `x-ratelimit-{limit,remaining,reset}-{requests,tokens}` on
//! OpenAI's and Gemini's paths, Anthropic's `anthropic-ratelimit-{requests,tokens}-*` on
//! `/v1/messages` — and a request past the key's quota is refused with a 429 in the
//! path's error shape, with `retry-after` (whole seconds) and the same headers.
//!
//! A key's window starts at its first request and lasts [`RateLimit::window`]; tokens
//! are counted as the request body's bytes / 4.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::Response;

use crate::server::Shared;

/// Every key's quota per window (each key has its own), with overrides per key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimit {
    /// Requests a key may make per window.
    pub requests: u64,
    /// Tokens a key may use per window.
    pub tokens: u64,
    pub window: Duration,
    /// Keys with a requests quota of their own: `(key, requests per window)`.
    pub per_key: Vec<(String, u64)>,
}

impl RateLimit {
    fn requests_for(&self, key: &str) -> u64 {
        self.per_key
            .iter()
            .find(|(k, _)| k == key)
            .map_or(self.requests, |(_, n)| *n)
    }
}

/// One key's current window.
#[derive(Debug, Clone, Copy)]
struct Window {
    start: Instant,
    requests: u64,
    tokens: u64,
}

/// The windows of every key seen (at most [`MAX_KEYS`], then they start again), and how
/// many requests were refused.
#[derive(Debug, Default)]
pub(crate) struct Windows(Mutex<HashMap<String, Window>>, std::sync::atomic::AtomicU64);

const MAX_KEYS: usize = 100_000;

/// What a key had left when its request was counted.
struct Left {
    requests_limit: u64,
    requests: u64,
    tokens_limit: u64,
    tokens: u64,
    reset: Duration,
    refused: bool,
}

impl Windows {
    /// Requests refused for their key's quota so far.
    pub(crate) fn refused(&self) -> u64 {
        self.1.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub(crate) fn clear(&self) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    fn count(&self, limit: &RateLimit, key: &str, tokens: u64) -> Left {
        let mut windows = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if windows.len() >= MAX_KEYS && !windows.contains_key(key) {
            windows.clear();
        }
        let now = Instant::now();
        let w = windows.entry(key.to_owned()).or_insert(Window {
            start: now,
            requests: 0,
            tokens: 0,
        });
        if now.duration_since(w.start) >= limit.window {
            *w = Window {
                start: now,
                requests: 0,
                tokens: 0,
            };
        }
        let requests_limit = limit.requests_for(key);
        let refused = w.requests >= requests_limit || w.tokens + tokens > limit.tokens;
        if refused {
            self.1.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        } else {
            w.requests += 1;
            w.tokens += tokens;
        }
        Left {
            requests_limit,
            requests: requests_limit.saturating_sub(w.requests),
            tokens_limit: limit.tokens,
            tokens: limit.tokens.saturating_sub(w.tokens),
            reset: limit.window.saturating_sub(now.duration_since(w.start)),
            refused,
        }
    }
}

/// The key a request carries, if any.
fn key_of(headers: &HeaderMap) -> Option<String> {
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let api_key = headers.get("x-api-key").and_then(|v| v.to_str().ok());
    bearer.or(api_key).map(str::to_owned)
}

/// Counts the request against its key's window and writes what is left on the answer;
/// refuses it with a 429 when the key is out.
pub(crate) async fn layer(
    State(shared): State<Arc<Shared>>,
    request: Request,
    next: Next,
) -> Response {
    let limit = shared.rate_limit();
    let key = key_of(request.headers());
    let (Some(limit), Some(key)) = (limit, key) else {
        return next.run(request).await;
    };
    let anthropic = request.uri().path().starts_with("/v1/messages");
    let (parts, body) = request.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 64 * 1024 * 1024).await else {
        return Response::builder()
            .status(StatusCode::PAYLOAD_TOO_LARGE)
            .body(Body::empty())
            .unwrap_or_default();
    };
    let left = shared
        .windows
        .count(&limit, &key, (bytes.len() as u64).div_ceil(4));
    let mut response = if left.refused {
        if anthropic {
            crate::anthropic::status_error(429, "")
        } else {
            crate::openai::status_error(429, "")
        }
    } else {
        next.run(Request::from_parts(parts, Body::from(bytes)))
            .await
    };
    write_headers(response.headers_mut(), &left, anthropic);
    response
}

fn write_headers(h: &mut HeaderMap, left: &Left, anthropic: bool) {
    let mut set = |name: String, value: String| {
        if let (Ok(name), Ok(value)) = (HeaderName::try_from(name), HeaderValue::try_from(value)) {
            h.insert(name, value);
        }
    };
    if left.refused {
        set(
            "retry-after".into(),
            left.reset.as_secs_f64().ceil().max(1.0).to_string(),
        );
    }
    if anthropic {
        let at = SystemTime::now() + left.reset;
        let stamp = rfc3339(at);
        for (what, limit, remaining) in [
            ("requests", left.requests_limit, left.requests),
            ("tokens", left.tokens_limit, left.tokens),
        ] {
            set(
                format!("anthropic-ratelimit-{what}-limit"),
                limit.to_string(),
            );
            set(
                format!("anthropic-ratelimit-{what}-remaining"),
                remaining.to_string(),
            );
            set(format!("anthropic-ratelimit-{what}-reset"), stamp.clone());
        }
    } else {
        let reset = format!("{}ms", left.reset.as_millis());
        for (what, limit, remaining) in [
            ("requests", left.requests_limit, left.requests),
            ("tokens", left.tokens_limit, left.tokens),
        ] {
            set(format!("x-ratelimit-limit-{what}"), limit.to_string());
            set(
                format!("x-ratelimit-remaining-{what}"),
                remaining.to_string(),
            );
            set(format!("x-ratelimit-reset-{what}"), reset.clone());
        }
    }
}

/// `2026-01-01T00:00:02.5Z`: an RFC 3339 timestamp, as Anthropic writes resets.
fn rfc3339(t: SystemTime) -> String {
    time::OffsetDateTime::from(t)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_767_225_602_500);
        assert_eq!(rfc3339(t), "2026-01-01T00:00:02.5Z");
    }

    #[test]
    fn a_key_is_refused_past_its_quota_until_its_window_ends() {
        let limit = RateLimit {
            requests: 2,
            tokens: 1_000,
            window: Duration::from_secs(60),
            per_key: vec![("one".into(), 1)],
        };
        let w = Windows::default();
        assert!(!w.count(&limit, "a", 10).refused);
        let left = w.count(&limit, "a", 10);
        assert_eq!((left.requests, left.tokens, left.refused), (0, 980, false));
        assert!(w.count(&limit, "a", 10).refused);
        assert!(!w.count(&limit, "one", 10).refused);
        assert!(w.count(&limit, "one", 10).refused);
        assert!(
            w.count(&limit, "b", 2_000).refused,
            "more tokens than the window has"
        );
    }
}

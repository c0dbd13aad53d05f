//! What a key may do and what a request is expected to use: the key's and its
//! workspace's limits, the estimate a request is admitted on, and the refusals, in the
//! documented order (model allowed, priced, concurrency, RPM, TPM, budget).

use perpetuo_core::db::limits::Limits;
use perpetuo_core::pricing::{Pricing, TokenCounts};
use serde_json::Value;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::errors::{ErrorKind, GatewayError};
pub use perpetuo_core::policy::{Policy, Seed};
use perpetuo_wire::lazy_json::{LazyJson, Numbers};

/// Completion tokens assumed for a request that sets no completion cap.
pub const DEFAULT_COMPLETION_ESTIMATE: u64 = 256;

/// Prompt tokens counted for each image a request carries (a large image at the
/// providers' highest detail; an image's own bytes are not counted as text).
pub const IMAGE_TOKEN_ESTIMATE: u64 = 1_600;

/// The largest integer a number sent to Redis may hold: Lua reads numbers as doubles,
/// exact only below 2^53.
pub const MAX_EXACT: i64 = (1 << 53) - 1;

/// The scopes of `policy` with limits, `first` (the key's, or an entry's quota) first
/// (locks and Redis keys are always taken in this order), with their limits and seeds.
pub(super) fn scopes(
    policy: &Policy,
    first: Scope,
    workspace_id: Uuid,
) -> impl Iterator<Item = (Scope, &Limits, Option<Seed>)> {
    [
        (first, &policy.key, policy.key_seed),
        (
            Scope::Workspace(workspace_id),
            &policy.workspace,
            policy.workspace_seed,
        ),
    ]
    .into_iter()
    .filter(|(_, limits, _)| !limits.is_empty())
}

/// The part of `policy` a reservation made after a cache miss checks: tokens per minute
/// and budgets (the request was counted toward concurrency and RPM before its lookup).
pub(super) fn reserving(policy: &Policy) -> Policy {
    let part = |l: &Limits| Limits {
        rpm: None,
        concurrency: None,
        ..*l
    };
    Policy {
        key: part(&policy.key),
        workspace: part(&policy.workspace),
        allowed_models: Vec::new(),
        key_seed: policy.key_seed,
        workspace_seed: policy.workspace_seed,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Scope {
    Key(Uuid),
    Workspace(Uuid),
    /// A provider entry's own quota.
    Entry(Uuid),
}

impl Scope {
    pub(super) fn label(self) -> &'static str {
        match self {
            Scope::Key(_) => "key",
            Scope::Workspace(_) => "workspace",
            Scope::Entry(_) => "entry",
        }
    }

    fn noun(self) -> &'static str {
        match self {
            Scope::Key(_) => "API key",
            Scope::Workspace(_) => "workspace",
            Scope::Entry(_) => "provider entry",
        }
    }
}

/// One request's estimate: tokens and cost, each below [`MAX_EXACT`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Estimate {
    pub tokens: u64,
    pub cost_nusd: i64,
}

impl Estimate {
    /// Prompt tokens from the body size (about four bytes a token, an image's inline
    /// bytes left out) plus [`IMAGE_TOKEN_ESTIMATE`] per image; completion tokens from the
    /// request's cap (or [`DEFAULT_COMPLETION_ESTIMATE`]) times the choices asked for;
    /// the cost at `model`'s price (none: 0). The body is read as a tree only when its
    /// bytes may hold an image ([`may_hold_images`]).
    pub fn of(
        request: &LazyJson,
        numbers: Numbers,
        model: Option<&str>,
        pricing: &Pricing,
    ) -> Self {
        let images = if may_hold_images(request.raw()) {
            Images::in_request(request)
        } else {
            Images::default()
        };
        Self::from_parts(request.raw().len(), images, numbers, model, pricing)
    }

    fn from_parts(
        body_len: usize,
        images: Images,
        numbers: Numbers,
        model: Option<&str>,
        pricing: &Pricing,
    ) -> Self {
        let text_bytes = body_len.saturating_sub(images.inline_bytes);
        let prompt = (text_bytes / 4) as u64 + images.count.saturating_mul(IMAGE_TOKEN_ESTIMATE);
        let completion = numbers
            .completion_cap
            .unwrap_or(DEFAULT_COMPLETION_ESTIMATE)
            .saturating_mul(numbers.choices.max(1));
        let counts = TokenCounts {
            prompt_tokens: prompt,
            completion_tokens: completion,
            cached_tokens: 0,
            cache_write_tokens: 0,
        };
        let cost = model
            .and_then(|m| pricing.cost_nusd(m, &counts))
            .unwrap_or(0);
        Self {
            tokens: prompt.saturating_add(completion).min(MAX_EXACT as u64),
            cost_nusd: cost.clamp(0, MAX_EXACT),
        }
    }
}

/// Whether a body's bytes may hold an image part: every image part's `type` names
/// `image` (`image_url`, `input_image`, `image`), unless a string is written with `\u`
/// escapes, which may spell anything.
fn may_hold_images(raw: &[u8]) -> bool {
    memchr::memmem::find(raw, b"image").is_some() || memchr::memmem::find(raw, b"\\u").is_some()
}

/// The images of a request, in any front door's shape.
#[derive(Debug, Default, PartialEq, Eq)]
struct Images {
    count: u64,
    /// Bytes of images sent inline (base64 data), already part of the body's size.
    inline_bytes: usize,
}

impl Images {
    fn in_request(v: &Value) -> Self {
        let mut found = Images::default();
        found.walk(v, 0);
        found
    }

    /// Chat `image_url` parts, Responses `input_image` items and Messages `image` blocks;
    /// the depth is bounded by the body's own nesting limit.
    fn walk(&mut self, v: &Value, depth: usize) {
        if depth > crate::validate::MAX_JSON_DEPTH {
            return;
        }
        match v {
            Value::Array(items) => items.iter().for_each(|i| self.walk(i, depth + 1)),
            Value::Object(o) => {
                match o.get("type").and_then(Value::as_str) {
                    Some("image_url") => {
                        self.count += 1;
                        self.inline_bytes += inline(o.get("image_url").and_then(|u| u.get("url")));
                        return;
                    }
                    Some("input_image") => {
                        self.count += 1;
                        self.inline_bytes += inline(o.get("image_url"));
                        return;
                    }
                    Some("image") => {
                        self.count += 1;
                        self.inline_bytes += inline(o.get("source").and_then(|s| s.get("data")));
                        return;
                    }
                    _ => {}
                }
                o.values().for_each(|x| self.walk(x, depth + 1));
            }
            _ => {}
        }
    }
}

/// Length of an inline image's data: a `data:` URL or bare base64.
fn inline(v: Option<&Value>) -> usize {
    match v.and_then(Value::as_str) {
        Some(s) if s.starts_with("http://") || s.starts_with("https://") => 0,
        Some(s) => s.len(),
        None => 0,
    }
}

/// Which limit refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Concurrency,
    Rpm,
    Tpm,
    Budget,
}

impl Kind {
    /// From the shared store's answer code.
    pub(super) fn from_code(code: i64) -> Self {
        match code {
            1 => Kind::Concurrency,
            2 => Kind::Rpm,
            3 => Kind::Tpm,
            _ => Kind::Budget,
        }
    }
}

/// A refused request: the client's error, the log row's `error_kind` and `Retry-After`.
pub(super) struct Refusal {
    pub(super) error: GatewayError,
    pub(super) kind: ErrorKind,
    pub(super) retry_after_s: Option<u64>,
}

impl Refusal {
    pub(super) fn model_not_allowed(model: &str) -> Self {
        Refusal {
            error: GatewayError::model_not_allowed(model),
            kind: ErrorKind::ModelNotAllowed,
            retry_after_s: None,
        }
    }

    pub(super) fn model_not_priced(model: &str) -> Self {
        Refusal {
            error: GatewayError::model_not_priced(model),
            kind: ErrorKind::ModelNotPriced,
            retry_after_s: None,
        }
    }

    /// The `perpetuo_limit_refusals_total` label of the limit.
    pub(super) fn kind_label(&self) -> &'static str {
        self.kind.limit_label().unwrap_or("model")
    }
}

/// The clock a limit window is read from.
#[derive(Debug, Clone, Copy)]
pub(super) struct Now {
    pub(super) ms: i64,
    pub(super) minute: i64,
    pub(super) at: OffsetDateTime,
}

impl Now {
    pub(super) fn get() -> Self {
        let at = perpetuo_core::clock::now_utc();
        let ms = i64::try_from(at.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX);
        Self {
            ms,
            minute: ms.div_euclid(60_000),
            at,
        }
    }

    pub(super) fn minute_reset_ms(&self) -> u64 {
        u64::try_from(60_000 - self.ms.rem_euclid(60_000)).unwrap_or(60_000)
    }
}

/// Used counts of one scope, as the checks read them.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Used {
    pub(super) inflight: u64,
    pub(super) requests: u64,
    pub(super) tokens: u64,
    pub(super) spent_nusd: i64,
    pub(super) reserved_nusd: i64,
}

/// The first limit of `scope` the request would break, in the documented order.
pub(super) fn refuse(
    scope: Scope,
    limits: &Limits,
    c: Used,
    estimate: Estimate,
    now: &Now,
) -> Option<Refusal> {
    let kind = if limits
        .concurrency
        .is_some_and(|m| c.inflight >= u64::from(m))
    {
        Kind::Concurrency
    } else if limits.rpm.is_some_and(|m| c.requests >= u64::from(m)) {
        Kind::Rpm
    // The first request of a minute always passes, or one larger than the whole limit
    // could never be served.
    } else if limits
        .tpm
        .is_some_and(|m| c.tokens > 0 && c.tokens.saturating_add(estimate.tokens) > u64::from(m))
    {
        Kind::Tpm
    } else if limits.budget_nusd.is_some_and(|budget| {
        let committed = c.spent_nusd.saturating_add(c.reserved_nusd);
        c.spent_nusd >= budget || committed.saturating_add(estimate.cost_nusd) > budget
    }) {
        Kind::Budget
    } else {
        return None;
    };
    Some(refusal(kind, scope, limits, now))
}

pub(super) fn refusal(kind: Kind, scope: Scope, limits: &Limits, now: &Now) -> Refusal {
    let retry_minute = now.minute_reset_ms().div_ceil(1000).max(1);
    let limit = |v: Option<u32>| u64::from(v.unwrap_or(0));
    let (error, kind, retry_after_s) = match kind {
        Kind::Concurrency => (
            GatewayError::limit_exceeded(
                "concurrent requests",
                scope.noun(),
                limit(limits.concurrency),
                1,
            ),
            ErrorKind::ConcurrencyLimit,
            Some(1),
        ),
        Kind::Rpm => (
            GatewayError::limit_exceeded(
                "requests per minute (RPM)",
                scope.noun(),
                limit(limits.rpm),
                retry_minute,
            ),
            ErrorKind::RateLimitRpm,
            Some(retry_minute),
        ),
        Kind::Tpm => (
            GatewayError::limit_exceeded(
                "tokens per minute (TPM)",
                scope.noun(),
                limit(limits.tpm),
                retry_minute,
            ),
            ErrorKind::RateLimitTpm,
            Some(retry_minute),
        ),
        Kind::Budget => {
            let end = limits.budget_period.end(now.at);
            let wait = (end - now.at).whole_seconds().max(1);
            (
                GatewayError::budget_exhausted(scope.noun(), limits.budget_period.as_str()),
                ErrorKind::BudgetExceeded,
                u64::try_from(wait).ok(),
            )
        }
    };
    Refusal {
        error,
        kind,
        retry_after_s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use serde_json::json;

    fn numbers(cap: Option<u64>, choices: u64) -> Numbers {
        Numbers {
            completion_cap: cap,
            choices,
        }
    }

    #[test]
    fn the_estimate_counts_choices_and_images_not_their_bytes() {
        let pricing = Pricing::embedded().unwrap();
        let text = lazy(json!({"messages": [{"role": "user", "content": "hi"}]}));
        let len = text.raw().len();
        let plain = Estimate::of(&text, numbers(Some(100), 1), None, &pricing);
        assert_eq!(plain.tokens, (len / 4) as u64 + 100);
        let four = Estimate::of(&text, numbers(Some(100), 4), None, &pricing);
        assert_eq!(four.tokens, (len / 4) as u64 + 400);

        let data = format!("data:image/png;base64,{}", "A".repeat(400_000));
        let chat = json!({"messages": [{"role": "user", "content": [
            {"type": "text", "text": "what is this?"},
            {"type": "image_url", "image_url": {"url": data}},
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}
        ]}]});
        let chat = lazy(chat);
        let len = chat.raw().len();
        let e = Estimate::of(&chat, numbers(None, 1), None, &pricing);
        let text_tokens = ((len - data.len()) / 4) as u64;
        assert_eq!(
            e.tokens,
            text_tokens + 2 * IMAGE_TOKEN_ESTIMATE + DEFAULT_COMPLETION_ESTIMATE
        );
        let messages = json!({"messages": [{"role": "user", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "QUJD"}}
        ]}]});
        let responses = json!({"input": [{"role": "user", "content": [
            {"type": "input_image", "image_url": "https://example.com/a.png"}
        ]}]});
        for body in [messages, responses] {
            assert_eq!(Images::in_request(&body).count, 1, "{body}");
        }
        // A type spelled with escapes is still read.
        let escaped = LazyJson::read(Bytes::from_static(
            br#"{"input": [{"type": "input_\u0069mage", "\u0069mage_url": "https://a.example/b.png"}]}"#,
        ))
        .unwrap();
        assert!(!escaped.raw().windows(5).any(|w| w == b"image"));
        let e = Estimate::of(&escaped, numbers(Some(0), 1), None, &pricing);
        assert_eq!(
            e.tokens,
            (escaped.raw().len() / 4) as u64 + IMAGE_TOKEN_ESTIMATE
        );
    }

    fn lazy(v: serde_json::Value) -> LazyJson {
        LazyJson::read(Bytes::from(v.to_string())).unwrap()
    }

    #[test]
    fn estimates_stay_exact_in_lua() {
        let pricing = Pricing::embedded().unwrap();
        let e = Estimate::from_parts(
            usize::MAX,
            Images::default(),
            numbers(Some(u64::MAX), u64::MAX),
            Some("gpt-4o"),
            &pricing,
        );
        assert!(e.tokens <= MAX_EXACT as u64);
        assert!((0..=MAX_EXACT).contains(&e.cost_nusd));
    }
}

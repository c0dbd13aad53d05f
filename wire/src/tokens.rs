//! Token estimates for providers that report no usage: OpenAI's o200k tokenizer
//! (tiktoken's published vocabulary, embedded in the binary), loaded once — by
//! [`preload`] at a server's start, else on first use.

use std::sync::LazyLock;

use serde_json::Value;
use tiktoken_rs::CoreBPE;

static BPE: LazyLock<Option<CoreBPE>> = LazyLock::new(|| tiktoken_rs::o200k_base().ok());

/// Loads the tokenizer now. Loading takes from tens of milliseconds to a second of CPU,
/// and whoever needs it first waits for it: a server calls this on a thread of its own at
/// start, so that no request's thread (and every request queued behind it) pays for it.
pub fn preload() {
    LazyLock::force(&BPE);
}

/// Bytes of text tokenized exactly per estimate. Estimates run when a request ends
/// (on the proxy's threads), so their cost is bounded: past this, tokens are
/// extrapolated from the tokenized part's tokens per byte.
pub const EXACT_BYTES: usize = 32 * 1024;

/// Tokens of several texts, tokenizing at most [`EXACT_BYTES`] of them in all.
#[derive(Debug)]
struct Budget {
    left: usize,
    tokens: u64,
    sampled_bytes: u64,
    rest_bytes: u64,
}

impl Budget {
    fn new() -> Self {
        Self {
            left: EXACT_BYTES,
            tokens: 0,
            sampled_bytes: 0,
            rest_bytes: 0,
        }
    }

    fn add(&mut self, text: &str) {
        let mut cut = self.left.min(text.len());
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        let (exact, rest) = text.split_at(cut);
        if !exact.is_empty() {
            self.tokens += match BPE.as_ref() {
                Some(bpe) => bpe.encode_ordinary(exact).len() as u64,
                None => super::estimate_tokens(exact.chars().count()),
            };
            self.sampled_bytes += exact.len() as u64;
            self.left -= exact.len();
        }
        self.rest_bytes += rest.len() as u64;
    }

    fn total(&self) -> u64 {
        if self.rest_bytes == 0 {
            return self.tokens;
        }
        let extra = if self.sampled_bytes == 0 || self.tokens == 0 {
            self.rest_bytes.div_ceil(4)
        } else {
            // rest × tokens / sampled, in u128 so no count can overflow.
            let scaled = u128::from(self.rest_bytes) * u128::from(self.tokens)
                / u128::from(self.sampled_bytes);
            u64::try_from(scaled).unwrap_or(u64::MAX)
        };
        self.tokens.saturating_add(extra)
    }
}

/// Tokens in `text`: exact up to [`EXACT_BYTES`], extrapolated beyond; ≈ 4 characters
/// per token if the vocabulary is missing.
pub fn count(text: &str) -> u64 {
    let mut budget = Budget::new();
    budget.add(text);
    budget.total()
}

/// Prompt tokens of an OpenAI-format request, counted the way OpenAI documents for chat
/// (3 per message plus its content, plus 3 for the reply's priming), with one
/// tokenizing budget for the whole request.
pub fn prompt(request: &Value) -> u64 {
    let mut budget = Budget::new();
    if let Some(messages) = request.get("messages").and_then(Value::as_array) {
        for m in messages {
            budget.add(&super::messages::content_text(m.get("content")));
        }
        return budget.total().saturating_add(3 * messages.len() as u64 + 3);
    }
    match request.get("input") {
        Some(Value::String(s)) => budget.add(s),
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .for_each(|s| budget.add(s)),
        _ => {}
    }
    budget.total()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_with_the_tokenizer() {
        assert_eq!(count("hello world"), 2);
        assert_eq!(count(""), 0);
        let req = serde_json::json!({"messages": [{"role": "user", "content": "hello world"}]});
        assert_eq!(prompt(&req), 3 + 2 + 3);
    }

    #[test]
    fn long_texts_are_extrapolated_from_a_bounded_sample() {
        let text = "The quick brown fox jumps over the lazy dog, again and again. ".repeat(4000);
        assert!(text.len() > 4 * EXACT_BYTES);
        let exact = BPE.as_ref().unwrap().encode_ordinary(&text).len() as u64;
        let estimate = count(&text);
        let error = estimate.abs_diff(exact) as f64 / exact as f64;
        assert!(error < 0.05, "estimate {estimate}, exact {exact}");
        // The budget is shared by every message of a request.
        let messages: Vec<Value> = (0..50)
            .map(|_| serde_json::json!({"role": "user", "content": text.clone()}))
            .collect();
        let total = prompt(&serde_json::json!({ "messages": messages }));
        let expected = 50 * exact + 3 * 50 + 3;
        assert!(total.abs_diff(expected) as f64 / (expected as f64) < 0.05);
        // Multi-byte characters at the sample's edge are not split.
        assert!(count(&"é".repeat(EXACT_BYTES)) > 0);
    }
}

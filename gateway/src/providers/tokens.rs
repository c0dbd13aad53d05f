//! Token estimates for providers that report no usage: OpenAI's o200k tokenizer
//! (tiktoken's published vocabulary, embedded in the binary), loaded once on first use.

use std::sync::LazyLock;

use serde_json::Value;
use tiktoken_rs::CoreBPE;

static BPE: LazyLock<Option<CoreBPE>> = LazyLock::new(|| tiktoken_rs::o200k_base().ok());

/// Tokens in `text`; falls back to ≈ 4 characters per token if the vocabulary is missing.
pub fn count(text: &str) -> u64 {
    match BPE.as_ref() {
        Some(bpe) => bpe.encode_ordinary(text).len() as u64,
        None => super::estimate_tokens(text.chars().count()),
    }
}

/// Prompt tokens of an OpenAI-format request, counted the way OpenAI documents for chat
/// (3 per message plus its content, plus 3 for the reply's priming).
pub fn prompt(request: &Value) -> u64 {
    if let Some(messages) = request.get("messages").and_then(Value::as_array) {
        let per_message: u64 = messages
            .iter()
            .map(|m| 3 + count(&super::messages::content_text(m.get("content"))))
            .sum();
        return per_message + 3;
    }
    match request.get("input") {
        Some(Value::String(s)) => count(s),
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).map(count).sum(),
        _ => 0,
    }
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
}

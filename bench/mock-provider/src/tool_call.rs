//! The scripted tool-calling exchange the OpenAI, Anthropic and Gemini formats play:
//! asked with tools, the mock calls the first one with `{"location":"Paris"}`; given the
//! result, it answers [`TOOL_RESULT_REPLY`].

use serde_json::{json, Value};

/// The short text block Anthropic answers before its `tool_use` block.
pub const TOOL_CALL_PREAMBLE: &str = "Let me check.";

/// The reply once the request carries a tool result.
pub const TOOL_RESULT_REPLY: &str = "It is sunny in Paris.";

/// The `id` of Anthropic's `tool_use` block.
pub const TOOL_USE_ID: &str = "toolu_mock_1";

/// The tool arguments as compact JSON: `{"location":"Paris"}`.
pub const TOOL_CALL_ARGUMENTS: &str = r#"{"location":"Paris"}"#;

/// [`TOOL_CALL_ARGUMENTS`] in the pieces Anthropic streams as `input_json_delta`s and
/// OpenAI as `tool_calls[0].function.arguments` deltas.
pub const TOOL_CALL_ARGUMENT_PIECES: [&str; 4] = [r#"{"loc"#, r#"ation""#, r#":"Pa"#, r#"ris"}"#];

/// The tool arguments as a JSON value.
pub fn tool_call_arguments() -> Value {
    json!({"location": "Paris"})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argument_pieces_rejoin_to_the_arguments() {
        assert_eq!(TOOL_CALL_ARGUMENT_PIECES.concat(), TOOL_CALL_ARGUMENTS);
        let parsed: Value = serde_json::from_str(TOOL_CALL_ARGUMENTS).unwrap();
        assert_eq!(parsed, tool_call_arguments());
    }
}

//! Checks on what a client sends before anything of it reaches a provider, a log row or a
//! URL: how deep its JSON nests and what a model name may contain. Pure functions, so
//! they can be tested on any input.

/// Deepest nesting of arrays and objects a request body may have. Real chat requests
/// stay below 20 (tool schemas included); the translators recurse over the body.
pub const MAX_JSON_DEPTH: usize = 64;

/// Longest model name accepted, in bytes. Providers' names are far shorter.
pub const MAX_MODEL_BYTES: usize = 256;

/// Why a model name is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadModel {
    Empty,
    TooLong,
    ControlCharacter,
}

impl BadModel {
    pub fn message(self) -> String {
        match self {
            BadModel::Empty => "The request must name a `model`.".into(),
            BadModel::TooLong => {
                format!("The `model` name is longer than {MAX_MODEL_BYTES} bytes.")
            }
            BadModel::ControlCharacter => "The `model` name contains a control character.".into(),
        }
    }
}

/// A model name fit for routing, a provider URL and a log row.
pub fn model_name(model: &str) -> Result<&str, BadModel> {
    if model.is_empty() {
        return Err(BadModel::Empty);
    }
    if model.len() > MAX_MODEL_BYTES {
        return Err(BadModel::TooLong);
    }
    if model.chars().any(char::is_control) {
        return Err(BadModel::ControlCharacter);
    }
    Ok(model)
}

/// Whether the JSON text nests arrays and objects deeper than `max`. A linear scan that
/// skips strings; it does not validate the JSON (the parser does that next).
pub fn nests_deeper_than(json: &[u8], max: usize) -> bool {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in json {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn model_names() {
        assert_eq!(model_name("gpt-4o"), Ok("gpt-4o"));
        assert_eq!(
            model_name("meta-llama/Llama-3.1-8B"),
            Ok("meta-llama/Llama-3.1-8B")
        );
        assert_eq!(model_name(""), Err(BadModel::Empty));
        assert_eq!(model_name("gpt\u{0}-4o"), Err(BadModel::ControlCharacter));
        assert_eq!(model_name("gpt\r\nx: y"), Err(BadModel::ControlCharacter));
        assert_eq!(model_name("a\u{85}"), Err(BadModel::ControlCharacter));
        assert_eq!(
            model_name(&"m".repeat(MAX_MODEL_BYTES)).map(str::len),
            Ok(MAX_MODEL_BYTES)
        );
        assert_eq!(
            model_name(&"m".repeat(MAX_MODEL_BYTES + 1)),
            Err(BadModel::TooLong)
        );
    }

    #[test]
    fn depth() {
        let nested = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        assert!(!nests_deeper_than(nested(64).as_bytes(), 64));
        assert!(nests_deeper_than(nested(65).as_bytes(), 64));
        // Brackets inside strings, escaped quotes included, do not count.
        let s = format!(
            r#"{{"a":"{}\"{}","b":[1]}}"#,
            "[".repeat(100),
            "{".repeat(100)
        );
        assert!(!nests_deeper_than(s.as_bytes(), 2));
        assert!(nests_deeper_than(br#"{"a":{"b":{"c":1}}}"#, 2));
    }

    /// A value nested exactly `depth` levels deep.
    fn nested_value(depth: usize, leaf: &str) -> serde_json::Value {
        (0..depth).fold(serde_json::json!(leaf), |v, i| {
            if i % 2 == 0 {
                serde_json::json!([v])
            } else {
                serde_json::json!({ "k\"[{": v })
            }
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// The scan agrees with the real nesting of any serialized value, whatever its
        /// strings hold.
        #[test]
        fn scan_matches_real_depth(depth in 0usize..90, leaf in ".{0,12}", max in 1usize..80) {
            let text = nested_value(depth, &leaf).to_string();
            prop_assert_eq!(nests_deeper_than(text.as_bytes(), max), depth > max);
        }

        /// Any accepted model name is short and free of control characters; nothing panics.
        #[test]
        fn accepted_models_are_clean(model in "\\PC{0,300}|.{0,10}[\\x00-\\x1f].{0,10}") {
            if let Ok(m) = model_name(&model) {
                prop_assert!(!m.is_empty() && m.len() <= MAX_MODEL_BYTES);
                prop_assert!(!m.chars().any(char::is_control));
            }
        }
    }
}

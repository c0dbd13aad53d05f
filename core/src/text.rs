//! Checks for short texts that are stored and shown again — names, model names — some of
//! which reach HTTP headers (the gateway sends an entry's name in `x-perpetuo-provider`)
//! and URLs (Gemini model names): no control characters (CR, LF, NUL…, which PostgreSQL
//! also refuses in `text`), no invisible format characters (zero-width, bidirectional
//! overrides, BOM), no line or paragraph separators, no private-use characters.

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TextError {
    #[error("must not be empty")]
    Empty,
    #[error("must be at most {0} characters")]
    TooLong(usize),
    #[error("must contain only printable characters (no control characters)")]
    Unprintable,
}

/// Whether `c` may not appear in a name.
pub fn is_unprintable(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{00AD}'
            | '\u{0600}'..='\u{0605}'
            | '\u{061C}'
            | '\u{06DD}'
            | '\u{070F}'
            | '\u{0890}'..='\u{0891}'
            | '\u{08E2}'
            | '\u{180E}'
            | '\u{200B}'..='\u{200F}'
            | '\u{2028}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{206F}'
            | '\u{E000}'..='\u{F8FF}'
            | '\u{FEFF}'
            | '\u{FFF9}'..='\u{FFFB}'
            | '\u{110BD}'
            | '\u{110CD}'
            | '\u{13430}'..='\u{1343F}'
            | '\u{1BCA0}'..='\u{1BCA3}'
            | '\u{1D173}'..='\u{1D17A}'
            | '\u{E0001}'
            | '\u{E0020}'..='\u{E007F}'
            | '\u{F0000}'..='\u{10FFFF}')
}

/// A name of 1 to `max` characters, all printable. Callers trim first.
pub fn check_name(s: &str, max: usize) -> Result<(), TextError> {
    if s.is_empty() {
        Err(TextError::Empty)
    } else if s.chars().count() > max {
        Err(TextError::TooLong(max))
    } else if s.chars().any(is_unprintable) {
        Err(TextError::Unprintable)
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_bounded_and_printable() {
        assert_eq!(check_name("Mistral – prod ü 日本", 100), Ok(()));
        assert_eq!(check_name("", 100), Err(TextError::Empty));
        assert_eq!(check_name("abc", 2), Err(TextError::TooLong(2)));
        assert_eq!(check_name("ééé", 3), Ok(()), "characters, not bytes");
        for bad in [
            "a\r\nb",
            "a\0",
            "a\tb",
            "a\u{7f}",
            "a\u{85}",
            "a\u{200b}",
            "a\u{202e}",
            "a\u{2028}",
            "a\u{feff}",
            "a\u{e000}",
        ] {
            assert_eq!(check_name(bad, 100), Err(TextError::Unprintable), "{bad:?}");
        }
    }
}

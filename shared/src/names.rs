//! Names people give things (jobs, SSH keys, API keys): shown back in lists, in the dashboard
//! and in other people's terminals, so they must be visible text. Control characters and
//! Unicode *format* characters (bidi overrides such as U+202E, zero-width spaces and joiners,
//! the BOM) are refused: they can make a name display as something it is not.

use crate::error::ApiError;
use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};

/// Longest name, in characters.
pub const MAX_NAME_CHARS: usize = 64;

/// Whether `c` would be invisible or reorder the text around it.
pub fn is_invisible(c: char) -> bool {
    c.is_control()
        || matches!(
            c.general_category(),
            GeneralCategory::Format
                | GeneralCategory::LineSeparator
                | GeneralCategory::ParagraphSeparator
                | GeneralCategory::Surrogate
                | GeneralCategory::PrivateUse
                | GeneralCategory::Unassigned
        )
}

/// A trimmed, non-empty name of at most [`MAX_NAME_CHARS`] visible characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisplayName(String);

impl DisplayName {
    /// Parses the value of request field `field`.
    pub fn parse(field: &str, value: &str) -> Result<DisplayName, ApiError> {
        let name = value.trim();
        if name.is_empty() {
            return Err(ApiError::validation(
                field,
                format!("{field} must not be empty"),
            ));
        }
        if name.chars().count() > MAX_NAME_CHARS {
            return Err(ApiError::validation(
                field,
                format!("{field} must be at most {MAX_NAME_CHARS} characters"),
            ));
        }
        if let Some(c) = name.chars().find(|&c| is_invisible(c)) {
            return Err(ApiError::validation(
                field,
                format!(
                    "{field} must not contain control or invisible formatting characters (found U+{:04X})",
                    c as u32
                ),
            ));
        }
        Ok(DisplayName(name.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn visible_names_pass_trimmed() {
        for ok in [
            "my-laptop-key",
            "  spaced  ",
            "Ünïcödé 名前 🚀",
            "a b\u{00A0}c",
        ] {
            assert_eq!(DisplayName::parse("name", ok).unwrap().as_str(), ok.trim());
        }
        let max = "x".repeat(MAX_NAME_CHARS);
        assert!(DisplayName::parse("name", &max).is_ok());
    }

    #[test]
    fn invisible_and_control_characters_are_refused_with_their_code_point() {
        for (bad, code) in [
            ("evil\u{202E}gpj.exe", "U+202E"), // right-to-left override
            ("zero\u{200B}width", "U+200B"),   // zero-width space
            ("join\u{200D}er", "U+200D"),      // zero-width joiner
            ("bom\u{FEFF}x", "U+FEFF"),
            ("iso\u{2066}late", "U+2066"),
            ("tab\there", "U+0009"),
            ("nul\0x", "U+0000"),
            ("del\u{7F}x", "U+007F"),
            ("line\u{2028}sep", "U+2028"),
            ("tag\u{E0041}x", "U+E0041"),
            ("private\u{E000}use", "U+E000"),
        ] {
            match DisplayName::parse("name", bad) {
                Err(ApiError::Validation { field, message }) => {
                    assert_eq!(field, "name");
                    assert!(message.contains(code), "{bad:?}: {message}");
                }
                other => panic!("{bad:?} was accepted: {other:?}"),
            }
        }
    }

    #[test]
    fn empty_and_long_names_are_refused() {
        assert!(DisplayName::parse("name", "   ").is_err());
        assert!(DisplayName::parse("name", &"x".repeat(MAX_NAME_CHARS + 1)).is_err());
    }
}

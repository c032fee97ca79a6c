//! Checks on user-supplied metadata before anything is written.
//!
//! Names go through `accel_core::name::validate_name`; this module bounds the
//! free-form fields (tags, properties, description, format, labels) so the
//! database never holds control characters that would garble a terminal, or
//! keys that the `key=value` tag filter syntax could not express.

use crate::error::{RegistryError, Result};
use std::collections::BTreeMap;

/// Longest tag or property key, in bytes.
pub(crate) const MAX_KEY_LEN: usize = 128;
/// Longest tag value, in bytes.
pub(crate) const MAX_TAG_VALUE_LEN: usize = 1024;
/// Longest property value, in bytes.
pub(crate) const MAX_PROPERTY_VALUE_LEN: usize = 4096;
/// Longest description, in bytes.
pub(crate) const MAX_DESCRIPTION_LEN: usize = 4096;
/// Longest single label, in bytes.
pub(crate) const MAX_LABEL_LEN: usize = 1024;

fn bad(msg: String) -> RegistryError {
    RegistryError::InvalidArgument(msg)
}

/// Checks tags (`what` = "tag") or properties (`what` = "property"): keys are
/// 1..=128 bytes without `=` or control characters; values are bounded and
/// have no control characters.
pub(crate) fn key_values(
    what: &str,
    map: &BTreeMap<String, String>,
    max_value: usize,
) -> Result<()> {
    for (k, v) in map {
        if k.is_empty() {
            return Err(bad(format!("{what} key must not be empty")));
        }
        if k.len() > MAX_KEY_LEN {
            return Err(bad(format!(
                "{what} key {k:?} is longer than {MAX_KEY_LEN} bytes"
            )));
        }
        if k.chars().any(|c| c.is_control() || c == '=') {
            return Err(bad(format!(
                "{what} key {k:?} must not contain '=' or control characters"
            )));
        }
        if v.len() > max_value {
            return Err(bad(format!(
                "{what} {k:?} has a value longer than {max_value} bytes"
            )));
        }
        if v.chars().any(char::is_control) {
            return Err(bad(format!(
                "{what} {k:?} has a value with control characters"
            )));
        }
    }
    Ok(())
}

/// Checks a description: bounded, and no control characters other than
/// newline and tab.
pub(crate) fn description(d: &str) -> Result<()> {
    if d.len() > MAX_DESCRIPTION_LEN {
        return Err(bad(format!(
            "description is longer than {MAX_DESCRIPTION_LEN} bytes"
        )));
    }
    if d.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return Err(bad(
            "description must not contain control characters other than newline and tab".into(),
        ));
    }
    Ok(())
}

/// Checks a format name such as `onnx` or `accel-plan`: 1..=32 bytes of
/// lower-case ASCII letters, digits and `-`.
pub(crate) fn format(f: &str) -> Result<()> {
    if f.is_empty()
        || f.len() > 32
        || !f
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(bad(format!(
            "format {f:?} must be 1 to 32 lower-case letters, digits or '-' (e.g. \"onnx\")"
        )));
    }
    Ok(())
}

/// Checks labels and returns the blob text: one label per line, each line
/// ending in `\n`.
pub(crate) fn labels_text(labels: &[String]) -> Result<String> {
    if labels.is_empty() {
        return Err(bad("labels list is empty; pass no labels instead".into()));
    }
    let mut text = String::new();
    for (i, l) in labels.iter().enumerate() {
        if l.len() > MAX_LABEL_LEN {
            return Err(bad(format!(
                "label {i} is longer than {MAX_LABEL_LEN} bytes"
            )));
        }
        if l.chars().any(char::is_control) {
            return Err(bad(format!(
                "label {i} ({l:?}) must not contain newlines or control characters"
            )));
        }
        text.push_str(l);
        text.push('\n');
    }
    Ok(text)
}

/// Splits a labels blob back into labels.
pub(crate) fn parse_labels(text: &str) -> Vec<String> {
    text.split_terminator('\n').map(str::to_string).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(k: &str, v: &str) -> BTreeMap<String, String> {
        BTreeMap::from([(k.to_string(), v.to_string())])
    }

    #[test]
    fn keys_and_values_are_bounded_and_clean() {
        key_values("tag", &one("env", "prod"), MAX_TAG_VALUE_LEN).unwrap();
        key_values("tag", &one("env", ""), MAX_TAG_VALUE_LEN).unwrap();
        for (k, v) in [
            ("", "x"),
            ("a=b", "x"),
            ("a\nb", "x"),
            ("k", "line\nbreak"),
            ("k", "\u{7}"),
        ] {
            assert!(
                key_values("tag", &one(k, v), MAX_TAG_VALUE_LEN).is_err(),
                "{k:?}={v:?}"
            );
        }
        let long_key = "k".repeat(MAX_KEY_LEN + 1);
        let err = key_values("tag", &one(&long_key, "v"), 10).unwrap_err();
        assert!(err.to_string().contains("longer than 128 bytes"), "{err}");
        let err = key_values("property", &one("k", &"v".repeat(11)), 10).unwrap_err();
        assert_eq!(
            err.to_string(),
            "property \"k\" has a value longer than 10 bytes"
        );
    }

    #[test]
    fn formats_and_descriptions() {
        format("onnx").unwrap();
        format("accel-plan").unwrap();
        for f in ["", "ONNX", "a b", "a/b", &"x".repeat(33)] {
            assert!(format(f).is_err(), "{f:?}");
        }
        description("two\nlines\tand tab").unwrap();
        assert!(description("bell\u{7}").is_err());
        assert!(description(&"d".repeat(MAX_DESCRIPTION_LEN + 1)).is_err());
    }

    #[test]
    fn labels_round_trip_and_refuse_newlines() {
        let labels = vec!["cat".to_string(), String::new(), "hot dog".to_string()];
        let text = labels_text(&labels).unwrap();
        assert_eq!(text, "cat\n\nhot dog\n");
        assert_eq!(parse_labels(&text), labels);
        assert!(labels_text(&["a\nb".to_string()]).is_err());
        assert!(labels_text(&["a\rb".to_string()]).is_err());
        assert!(labels_text(&[]).is_err());
    }
}

//! Checks on user-supplied metadata before anything is written.
//!
//! Names go through `accel_core::name::validate_name`; this module bounds the
//! free-form fields (tags, properties, description, format, labels, reports,
//! operation texts) so the
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
/// Longest stored JSON document (a model report, an operation's arguments or
/// result), serialized, in bytes: 1 MiB.
pub(crate) const MAX_JSON_LEN: usize = 1 << 20;

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

/// Checks a model report and returns it serialized: a JSON object of at most
/// [`MAX_JSON_LEN`] bytes.
pub(crate) fn report(r: &serde_json::Value) -> Result<String> {
    if !r.is_object() {
        return Err(bad(format!(
            "a report must be a JSON object, not {}",
            json_type(r)
        )));
    }
    json_text("report", r)
}

/// Serializes a JSON document to store, refusing one over [`MAX_JSON_LEN`]
/// bytes; `what` names it in the error.
pub(crate) fn json_text(what: &str, v: &serde_json::Value) -> Result<String> {
    let text =
        serde_json::to_string(v).map_err(|e| bad(format!("{what} cannot be serialized: {e}")))?;
    if text.len() > MAX_JSON_LEN {
        return Err(bad(format!(
            "{what} is {} bytes serialized, more than the {MAX_JSON_LEN} allowed",
            text.len()
        )));
    }
    Ok(text)
}

/// The JSON type of a value, for messages.
fn json_type(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// Makes free text safe to store and print: control characters other than
/// newline and tab become U+FFFD, and text over `max` bytes is cut at a
/// character boundary and ends in `…`. Used for operation progress and error
/// messages, which come from failures and must not be refused.
pub(crate) fn clean_text(s: &str, max: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max));
    for c in s.chars() {
        let c = if c.is_control() && c != '\n' && c != '\t' {
            char::REPLACEMENT_CHARACTER
        } else {
            c
        };
        if out.len() + c.len_utf8() > max {
            while out.len() + '…'.len_utf8() > max {
                out.pop();
            }
            out.push('…');
            break;
        }
        out.push(c);
    }
    out
}

/// Checks a one-word value such as an OCI media type, an image reference, a
/// device name or a URI: 1..=`max` bytes of printable ASCII without spaces.
/// `what` names it in the error.
pub(crate) fn word(what: &str, s: &str, max: usize) -> Result<()> {
    if s.is_empty() || s.len() > max || !s.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad(format!(
            "{what} {s:?} must be 1 to {max} printable ASCII characters without spaces"
        )));
    }
    Ok(())
}

/// Checks an OCI content digest, `algorithm:encoded` (e.g.
/// `sha256:<64 hex digits>`), as the OCI image spec defines its grammar.
pub(crate) fn oci_digest(what: &str, s: &str) -> Result<()> {
    let ok = s.len() <= 256
        && s.split_once(':').is_some_and(|(alg, enc)| {
            let alg_ok = !alg.is_empty()
                && alg.split(['+', '.', '_', '-']).all(|part| {
                    !part.is_empty()
                        && part
                            .bytes()
                            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
                });
            let enc_ok = !enc.is_empty()
                && enc
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'=' | b'_' | b'-'));
            alg_ok && enc_ok
        });
    if !ok {
        return Err(bad(format!(
            "{what} {s:?} is not a digest like \"sha256:<64 hex digits>\""
        )));
    }
    Ok(())
}

/// Checks a state name such as `running`: 1..=32 bytes of lower-case ASCII
/// letters, digits, `-` and `_`.
pub(crate) fn state(s: &str) -> Result<()> {
    if s.is_empty()
        || s.len() > 32
        || !s
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
    {
        return Err(bad(format!(
            "state {s:?} must be 1 to 32 lower-case letters, digits, '-' or '_'"
        )));
    }
    Ok(())
}

/// Splits a labels blob back into labels.
pub(crate) fn parse_labels(text: &str) -> Vec<String> {
    text.split_terminator('\n').map(str::to_string).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_digests_and_states() {
        word(
            "media type",
            "application/vnd.oci.image.layer.v1.tar+gzip",
            255,
        )
        .unwrap();
        for w in ["", "a b", "tab\t", "é", &"x".repeat(11)] {
            assert!(word("device", w, 10).is_err(), "{w:?}");
        }
        let hex = "a".repeat(64);
        oci_digest("digest", &format!("sha256:{hex}")).unwrap();
        oci_digest(
            "digest",
            "multihash+base58:QmRZxt2b1FVZPNqd8hsiykDL3TdBDeTSPX9Kv46HmX4Gx8",
        )
        .unwrap();
        for d in [
            "",
            "sha256",
            "sha256:",
            ":abc",
            "SHA256:ab",
            "sha256:a/b",
            "sha256:a b",
        ] {
            assert!(oci_digest("digest", d).is_err(), "{d:?}");
        }
        state("running").unwrap();
        state("crash_loop-2").unwrap();
        for s in ["", "Running", "a b", &"s".repeat(33)] {
            assert!(state(s).is_err(), "{s:?}");
        }
    }

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

    #[test]
    fn reports_are_bounded_objects() {
        let ok = serde_json::json!({"candidates": [], "chosen": 0});
        assert_eq!(report(&ok).unwrap(), r#"{"candidates":[],"chosen":0}"#);
        for v in [
            serde_json::json!(null),
            serde_json::json!([1]),
            serde_json::json!("s"),
        ] {
            let err = report(&v).unwrap_err();
            assert!(err
                .to_string()
                .starts_with("a report must be a JSON object"));
        }
        // {"x":"…"} is 8 bytes plus the string.
        let fits = serde_json::json!({ "x": "a".repeat(MAX_JSON_LEN - 8) });
        assert_eq!(report(&fits).unwrap().len(), MAX_JSON_LEN);
        let over = serde_json::json!({ "x": "a".repeat(MAX_JSON_LEN - 7) });
        let err = report(&over).unwrap_err();
        assert_eq!(
            err.to_string(),
            "report is 1048577 bytes serialized, more than the 1048576 allowed"
        );
    }

    #[test]
    fn clean_text_replaces_controls_and_truncates() {
        assert_eq!(clean_text("a\tb\nc", 100), "a\tb\nc");
        assert_eq!(clean_text("red \u{1b}[31m", 100), "red \u{fffd}[31m");
        assert_eq!(clean_text("abcdef", 6), "abcdef");
        assert_eq!(clean_text("abcdefg", 6), "abc…");
        // Never splits a character.
        let t = clean_text("ééééé", 7);
        assert!(t.len() <= 7 && t.ends_with('…'), "{t}");
        assert_eq!(t, "éé…");
    }
}

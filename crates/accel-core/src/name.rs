//! Validation of user-chosen names and `NAME[:VERSION]` references.

use crate::error::CoreError;
use std::fmt;
use std::str::FromStr;

/// The longest accepted name, in bytes.
pub const MAX_NAME_LEN: usize = 128;

/// Checks a model, image or service name: 1..=128 bytes of ASCII letters,
/// digits, `-`, `_` and `.`, not starting with `.` or `-`. This rules out path
/// separators, whitespace, control characters, and the names `.` and `..`:
/// a valid name is always one harmless path component (inner dots, as in
/// `a..b`, are allowed: without a separator they cannot leave a directory).
pub fn validate_name(name: &str) -> Result<(), CoreError> {
    let bad = |reason| {
        Err(CoreError::Name {
            name: name.to_string(),
            reason,
        })
    };
    if name.is_empty() {
        return bad("empty");
    }
    if name.len() > MAX_NAME_LEN {
        return bad("longer than 128 bytes");
    }
    if name.starts_with('.') || name.starts_with('-') {
        return bad("must not start with '.' or '-'");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return bad("only ASCII letters, digits, '-', '_' and '.' are allowed");
    }
    Ok(())
}

/// A reference to a registered object: `name` (latest) or `name:version`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameRef {
    /// The object's name.
    pub name: String,
    /// A pinned version, or `None` for the latest.
    pub version: Option<u32>,
}

impl FromStr for NameRef {
    type Err = CoreError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, version) = match s.rsplit_once(':') {
            Some((n, v)) => {
                let v: u32 = v.parse().map_err(|_| CoreError::Name {
                    name: s.to_string(),
                    reason: "version after ':' must be a positive integer",
                })?;
                if v == 0 {
                    return Err(CoreError::Name {
                        name: s.to_string(),
                        reason: "versions start at 1",
                    });
                }
                (n, Some(v))
            }
            None => (s, None),
        };
        validate_name(name)?;
        Ok(NameRef {
            name: name.to_string(),
            version,
        })
    }
}

impl fmt::Display for NameRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.version {
            Some(v) => write!(f, "{}:{}", self.name, v),
            None => f.write_str(&self.name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_with_separators_or_traversal_are_refused() {
        for bad in [
            "", "a/b", "..", "../x", "a\\b", ".hidden", "-x", "a b", "a\0b",
        ] {
            assert!(validate_name(bad).is_err(), "{bad:?} accepted");
        }
        assert!(validate_name(&"a".repeat(129)).is_err());
        for good in ["resnet50", "ShuffleNet_v2.qdq", "a-b", &"a".repeat(128)] {
            validate_name(good).unwrap();
        }
    }

    #[test]
    fn refs_parse_latest_and_pinned() {
        let r: NameRef = "m".parse().unwrap();
        assert_eq!((r.name.as_str(), r.version), ("m", None));
        let r: NameRef = "m:3".parse().unwrap();
        assert_eq!((r.name.as_str(), r.version), ("m", Some(3)));
        assert!("m:0".parse::<NameRef>().is_err());
        assert!("m:x".parse::<NameRef>().is_err());
        assert!("a/b:1".parse::<NameRef>().is_err());
    }
}

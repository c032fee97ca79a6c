//! API keys: generated with the OS's random source, stored and held only as
//! sha256 hashes, compared in constant time, never logged.

use crate::error::ServeError;
use accel_core::ErrorKind;
use sha2::{Digest, Sha256};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;

/// A key as a client presents it. Its `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    /// Wraps a presented key.
    pub fn new(key: impl Into<String>) -> Self {
        ApiKey(key.into())
    }

    /// The key's sha256, as stored.
    pub fn hash(&self) -> KeyHash {
        KeyHash(Sha256::digest(self.0.as_bytes()).into())
    }

    /// The secret itself, for the one place that must print it (when it is
    /// generated) or send it (a client).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// A fresh key: 32 random bytes, URL-safe base64 without padding.
    pub fn generate() -> Result<ApiKey, ServeError> {
        use base64::Engine as _;
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes)
            .map_err(|e| ServeError::new(ErrorKind::Internal, format!("no random source: {e}")))?;
        Ok(ApiKey(
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes),
        ))
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

impl fmt::Display for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The sha256 of a key.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct KeyHash(pub [u8; 32]);

impl KeyHash {
    /// Lower-case hex, as the registry stores it.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses lower-case hex.
    pub fn from_hex(s: &str) -> Option<KeyHash> {
        let v = hex::decode(s).ok()?;
        Some(KeyHash(v.try_into().ok()?))
    }
}

impl fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyHash(<redacted>)")
    }
}

/// Where a service's stored key hashes come from (e.g. the registry), so
/// keys regenerated elsewhere take effect without a restart.
pub trait KeySource: Send + Sync {
    /// The current key hashes of `service`.
    fn key_hashes(&self, service: &str) -> Result<Vec<KeyHash>, String>;
}

/// How long stored keys are cached before the source is asked again.
pub const KEY_REFRESH: Duration = Duration::from_secs(1);

/// The keys one service accepts: fixed ones (from flags) and, when `auth`
/// is on, those of a [`KeySource`], re-read at most every [`KEY_REFRESH`].
pub struct ServiceKeys {
    service: String,
    fixed: Vec<KeyHash>,
    source: Option<Arc<dyn KeySource>>,
    cache: Mutex<Option<(Instant, Vec<KeyHash>)>>,
}

impl fmt::Debug for ServiceKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceKeys")
            .field("service", &self.service)
            .field("fixed", &self.fixed.len())
            .field("source", &self.source.is_some())
            .finish()
    }
}

impl ServiceKeys {
    /// Keys for `service`: `fixed` plus, if given, those from `source`.
    pub fn new(service: &str, fixed: &[ApiKey], source: Option<Arc<dyn KeySource>>) -> Self {
        ServiceKeys {
            service: service.to_string(),
            fixed: fixed.iter().map(ApiKey::hash).collect(),
            source,
            cache: Mutex::new(None),
        }
    }

    /// Whether the service needs a key at all.
    pub fn required(&self) -> bool {
        !self.fixed.is_empty() || self.source.is_some()
    }

    fn stored(&self) -> Result<Vec<KeyHash>, ServeError> {
        let Some(source) = &self.source else {
            return Ok(vec![]);
        };
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, keys)) = cache.as_ref() {
            if at.elapsed() < KEY_REFRESH {
                return Ok(keys.clone());
            }
        }
        let keys = source.key_hashes(&self.service).map_err(|e| {
            ServeError::new(
                ErrorKind::Unavailable,
                format!("cannot read the service's keys: {e}"),
            )
        })?;
        *cache = Some((Instant::now(), keys.clone()));
        Ok(keys)
    }

    /// Checks a presented key. Every stored hash is compared, in constant
    /// time, whatever matches first.
    pub fn check(&self, presented: Option<&ApiKey>) -> Result<(), ServeError> {
        if !self.required() {
            return Ok(());
        }
        let Some(key) = presented else {
            return Err(ServeError::new(
                ErrorKind::Unauthenticated,
                format!(
                    "service {:?} needs an API key (authorization: Bearer <key>)",
                    self.service
                ),
            ));
        };
        let hash = key.hash();
        let mut ok = subtle::Choice::from(0u8);
        for k in self.fixed.iter().chain(self.stored()?.iter()) {
            ok |= k.0.ct_eq(&hash.0);
        }
        if bool::from(ok) {
            Ok(())
        } else {
            Err(ServeError::new(
                ErrorKind::Unauthenticated,
                format!("wrong API key for service {:?}", self.service),
            ))
        }
    }
}

/// Extracts the key from an `authorization: Bearer <key>` header value.
pub fn bearer(value: &str) -> Option<ApiKey> {
    let (scheme, rest) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| ApiKey::new(rest.trim()))
        .filter(|k| !k.0.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed(Vec<KeyHash>);
    impl KeySource for Fixed {
        fn key_hashes(&self, _: &str) -> Result<Vec<KeyHash>, String> {
            Ok(self.0.clone())
        }
    }

    #[test]
    fn keys_are_redacted_in_debug_and_display() {
        let key = ApiKey::new("super-secret-value");
        let shown = format!("{key:?} {key} {:?}", key.hash());
        assert!(!shown.contains("super-secret"), "{shown}");
        let keys = ServiceKeys::new("svc", &[key], None);
        assert!(!format!("{keys:?}").contains("super-secret"));
    }

    #[test]
    fn missing_wrong_and_right_keys() {
        let good = ApiKey::generate().unwrap();
        assert_eq!(good.expose().len(), 43);
        let stored = ApiKey::generate().unwrap();
        let keys = ServiceKeys::new(
            "svc",
            std::slice::from_ref(&good),
            Some(Arc::new(Fixed(vec![stored.hash()]))),
        );
        assert_eq!(
            keys.check(None).unwrap_err().kind,
            ErrorKind::Unauthenticated
        );
        assert_eq!(
            keys.check(Some(&ApiKey::new("nope"))).unwrap_err().kind,
            ErrorKind::Unauthenticated
        );
        keys.check(Some(&good)).unwrap();
        keys.check(Some(&stored)).unwrap();
        ServiceKeys::new("open", &[], None).check(None).unwrap();
    }

    #[test]
    fn bearer_header_parsing() {
        assert_eq!(bearer("Bearer abc").unwrap().expose(), "abc");
        assert_eq!(bearer("bearer  abc ").unwrap().expose(), "abc");
        assert!(bearer("Basic abc").is_none());
        assert!(bearer("Bearer ").is_none());
        let h = ApiKey::new("k").hash();
        assert_eq!(KeyHash::from_hex(&h.to_hex()), Some(h));
    }
}

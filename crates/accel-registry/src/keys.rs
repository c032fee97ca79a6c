//! API keys of services. Only sha256 hashes are stored: a key is shown once,
//! when it is generated, and can never be read back.

use crate::blobs::is_valid_sha256;
use crate::error::{RegistryError, Result};
use crate::Registry;
use accel_core::name::validate_name;
use rusqlite::params;
use std::fmt;

/// The two key slots of a service, so one can be rotated while clients
/// still use the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeySlot {
    /// The primary key.
    Primary,
    /// The secondary key.
    Secondary,
}

impl KeySlot {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            KeySlot::Primary => "primary",
            KeySlot::Secondary => "secondary",
        }
    }

    fn parse(s: &str) -> Option<KeySlot> {
        match s {
            "primary" => Some(KeySlot::Primary),
            "secondary" => Some(KeySlot::Secondary),
            _ => None,
        }
    }
}

impl fmt::Display for KeySlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One stored key: its slot, the hash of the key, and when it was set.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ServiceKey {
    /// Which slot.
    pub slot: KeySlot,
    /// Lower-case hex sha256 of the key.
    pub sha256: String,
    /// RFC 3339 UTC.
    pub created: String,
}

impl Registry {
    /// Stores (replacing) the hash of a service's key in `slot`.
    pub fn set_service_key(&self, service: &str, slot: KeySlot, sha256: &str) -> Result<()> {
        validate_name(service).map_err(|e| RegistryError::InvalidArgument(e.to_string()))?;
        if !is_valid_sha256(sha256) {
            return Err(RegistryError::InvalidArgument(
                "a key hash must be 64 lower-case hex digits".into(),
            ));
        }
        self.conn().execute(
            "INSERT INTO service_keys (service, slot, sha256, created) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (service, slot) DO UPDATE SET sha256 = excluded.sha256, created = excluded.created",
            params![service, slot.as_str(), sha256, crate::register::now_rfc3339()],
        )?;
        Ok(())
    }

    /// The stored key hashes of a service (empty when it has none).
    pub fn service_keys(&self, service: &str) -> Result<Vec<ServiceKey>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT slot, sha256, created FROM service_keys WHERE service = ?1 ORDER BY slot",
        )?;
        let rows = stmt.query_map(params![service], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (slot, sha256, created) = row?;
            let slot = KeySlot::parse(&slot)
                .ok_or_else(|| RegistryError::DataLoss(format!("unknown key slot {slot:?}")))?;
            out.push(ServiceKey {
                slot,
                sha256,
                created,
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_replaced_per_slot_and_listed() {
        let home = tempfile::tempdir().unwrap();
        let reg = Registry::open(home.path()).unwrap();
        assert!(reg.service_keys("svc").unwrap().is_empty());
        let (a, b) = ("a".repeat(64), "b".repeat(64));
        reg.set_service_key("svc", KeySlot::Primary, &a).unwrap();
        reg.set_service_key("svc", KeySlot::Secondary, &b).unwrap();
        reg.set_service_key("svc", KeySlot::Primary, &b).unwrap();
        let keys = reg.service_keys("svc").unwrap();
        assert_eq!(keys.len(), 2);
        assert_eq!(
            (keys[0].slot, keys[0].sha256.as_str()),
            (KeySlot::Primary, b.as_str())
        );
        assert!(reg
            .set_service_key("svc", KeySlot::Primary, "nothex")
            .is_err());
        assert!(reg.set_service_key("../x", KeySlot::Primary, &a).is_err());
    }
}

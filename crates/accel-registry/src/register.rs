//! Registering a model: the atomic write path.
//!
//! The order of steps is what makes a crash at any point leave either the
//! old state or the new one, never half a model:
//!
//! 1. validate everything that can be validated without writing;
//! 2. for each blob (the model file, then the labels): commit an intent row
//!    (`pending`), stream the content into `<home>/tmp/<name>` while hashing
//!    it, fsync, record the hash in the intent row, rename the temp file to
//!    `blobs/sha256/<hex>` (or drop it when that blob exists) and fsync the
//!    blob directory;
//! 3. in ONE `BEGIN IMMEDIATE` transaction: assign version = max + 1 for the
//!    name, insert the model row, its tags, properties, blob references and
//!    report, and delete the intent rows.
//!
//! A crash before step 3 commits leaves only intent rows and their files;
//! `Registry::open` (see `recovery.rs`) rolls those back.
//!
//! # Test hook
//!
//! When the environment variable `ACCEL_TEST_CRASH_AT` equals one of
//! `after-intent`, `after-temp-write`, `after-blob-rename` (these three refer
//! to the model file's blob) or `before-commit` (inside the final
//! transaction), `register_model` calls `std::process::abort()` at that
//! point. It exists so crash-recovery tests can kill a real writer at each
//! step; it is never meant to be set in production.

use crate::blobs::{is_valid_sha256, BlobStore, Digested};
use crate::error::{RegistryError, Result};
use crate::models::{load_by_id, resolve_id, ModelRecord, NewModel};
use crate::recovery::{self, blob_referenced};
use crate::validate;
use crate::Registry;
use accel_core::name::validate_name;
use accel_core::spec::LabelsRef;
use rusqlite::{params, TransactionBehavior};
use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::Read;

/// The environment variable of the crash test hook (see the module docs).
pub const CRASH_ENV: &str = "ACCEL_TEST_CRASH_AT";

/// Test hook: aborts the process when `ACCEL_TEST_CRASH_AT` names `point`.
fn crash_point(point: &str) {
    if std::env::var_os(CRASH_ENV).is_some_and(|v| v == point) {
        std::process::abort();
    }
}

/// Role names in `model_blobs`.
const ROLE_MODEL: &str = "model";
const ROLE_LABELS: &str = "labels";

fn parent_error(e: RegistryError) -> RegistryError {
    match e {
        RegistryError::NotFound(m) => RegistryError::NotFound(format!("parent: {m}")),
        other => other,
    }
}

/// The current time as RFC 3339 UTC, whole seconds.
pub(crate) fn now_rfc3339() -> String {
    let now = time::OffsetDateTime::now_utc();
    let now = now.replace_nanosecond(0).unwrap_or(now);
    now.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| now.unix_timestamp().to_string())
}

impl Registry {
    /// Registers a new version of `new.name`: copies the model file (and the
    /// labels, if any) into the blob store, then records the model in one
    /// transaction. Versions start at 1 and are unique per name even with
    /// concurrent writers in other threads or processes.
    pub fn register_model(&self, new: NewModel) -> Result<ModelRecord> {
        validate_name(&new.name)?;
        validate::description(&new.description)?;
        validate::format(&new.format)?;
        validate::key_values("tag", &new.tags, validate::MAX_TAG_VALUE_LEN)?;
        validate::key_values(
            "property",
            &new.properties,
            validate::MAX_PROPERTY_VALUE_LEN,
        )?;
        new.spec.validate()?;
        let report_text = new.report.as_ref().map(validate::report).transpose()?;
        let labels_text = new
            .labels
            .as_deref()
            .map(validate::labels_text)
            .transpose()?;
        if let (None, Some(r)) = (&labels_text, &new.spec.labels) {
            if !is_valid_sha256(&r.sha256) {
                return Err(RegistryError::InvalidArgument(format!(
                    "spec labels refer to {:?}, which is not a sha256",
                    r.sha256
                )));
            }
        }
        let file_desc = format!("model file {}", new.model_file.display());
        let unreadable = |e: std::io::Error| {
            RegistryError::InvalidArgument(format!("cannot read {file_desc}: {e}"))
        };
        let meta = fs::metadata(&new.model_file).map_err(unreadable)?;
        if !meta.is_file() {
            return Err(RegistryError::InvalidArgument(format!(
                "{file_desc} is not a regular file"
            )));
        }
        if meta.len() == 0 {
            return Err(RegistryError::InvalidArgument(format!(
                "{file_desc} is empty"
            )));
        }
        let mut file = File::open(&new.model_file).map_err(unreadable)?;
        if let Some(p) = &new.parent {
            resolve_id(&self.conn(), p).map_err(parent_error)?;
        }

        let mut intents = Vec::new();
        let result = self.write_and_commit(
            &new,
            &mut file,
            &file_desc,
            labels_text,
            report_text,
            &mut intents,
        );
        if result.is_err() && !intents.is_empty() {
            self.abandon(&intents);
        }
        result
    }

    fn write_and_commit(
        &self,
        new: &NewModel,
        file: &mut File,
        file_desc: &str,
        labels_text: Option<String>,
        report_text: Option<String>,
        intents: &mut Vec<i64>,
    ) -> Result<ModelRecord> {
        let model = self.store_blob(file, file_desc, true, intents)?;
        let mut spec = new.spec.clone();
        let mut labels_sha = None;
        if let (Some(text), Some(labels)) = (&labels_text, &new.labels) {
            let d = self.store_blob(&mut text.as_bytes(), "labels", false, intents)?;
            spec.labels = Some(LabelsRef {
                sha256: d.sha256.clone(),
                count: labels.len(),
            });
            labels_sha = Some(d.sha256);
        }
        let spec_json = serde_json::to_string(&spec)
            .map_err(|e| RegistryError::InvalidArgument(format!("spec cannot be stored: {e}")))?;

        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let parent_id = match &new.parent {
            Some(p) => Some(resolve_id(&tx, p).map_err(parent_error)?),
            None => None,
        };
        if labels_sha.is_none() {
            if let Some(r) = &spec.labels {
                if !blob_referenced(&tx, &r.sha256)? || !self.store.path(&r.sha256).is_file() {
                    return Err(RegistryError::InvalidArgument(format!(
                        "spec labels refer to blob {}, which is not in the registry; pass the labels instead",
                        r.sha256
                    )));
                }
                labels_sha = Some(r.sha256.clone());
            }
        }
        for sha in std::iter::once(&model.sha256).chain(labels_sha.as_ref()) {
            if !self.store.path(sha).is_file() {
                return Err(RegistryError::DataLoss(format!(
                    "blob {sha} vanished before the registration of \"{}\" committed",
                    new.name
                )));
            }
        }
        let version: u32 = tx.query_row(
            "SELECT COALESCE(MAX(version), 0) + 1 FROM models WHERE name = ?1",
            [&new.name],
            |r| r.get(0),
        )?;
        tx.execute(
            "INSERT INTO models (name, version, description, format, sha256, size, created, parent_id, spec)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                new.name,
                version,
                new.description,
                new.format,
                model.sha256,
                i64::try_from(model.size).unwrap_or(i64::MAX),
                now_rfc3339(),
                parent_id,
                spec_json
            ],
        )
        .map_err(|e| match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::ConstraintViolation) => RegistryError::AlreadyExists(format!(
                "model \"{}:{version}\" already exists",
                new.name
            )),
            _ => e.into(),
        })?;
        let id = tx.last_insert_rowid();
        for (table, map) in [
            ("model_tags", &new.tags),
            ("model_properties", &new.properties),
        ] {
            let mut stmt = tx.prepare(&format!(
                "INSERT INTO {table} (model_id, key, value) VALUES (?1, ?2, ?3)"
            ))?;
            for (k, v) in map {
                stmt.execute(params![id, k, v])?;
            }
        }
        let mut stmt =
            tx.prepare("INSERT INTO model_blobs (model_id, sha256, role) VALUES (?1, ?2, ?3)")?;
        stmt.execute(params![id, model.sha256, ROLE_MODEL])?;
        if let Some(sha) = &labels_sha {
            stmt.execute(params![id, sha, ROLE_LABELS])?;
        }
        drop(stmt);
        if let Some(report) = &report_text {
            tx.execute(
                "INSERT INTO model_reports (model_id, report) VALUES (?1, ?2)",
                params![id, report],
            )?;
        }
        for intent in intents.iter() {
            tx.execute("DELETE FROM pending WHERE id = ?1", [intent])?;
        }
        crash_point("before-commit");
        tx.commit()?;
        intents.clear();
        load_by_id(&conn, id)
    }

    /// Writes one blob under an intent row (step 2 of the module docs).
    /// `hooks` enables the crash points (for the model file only).
    pub(crate) fn store_blob(
        &self,
        src: &mut dyn Read,
        desc: &str,
        hooks: bool,
        intents: &mut Vec<i64>,
    ) -> Result<Digested> {
        let tmp = BlobStore::new_temp_name();
        let id = recovery::begin_intent(&self.conn(), &tmp)?;
        intents.push(id);
        if hooks {
            crash_point("after-intent");
        }
        let d = self.store.write_temp(&tmp, src, desc)?;
        if hooks {
            crash_point("after-temp-write");
        }
        recovery::set_intent_sha(&self.conn(), id, &d.sha256)?;
        self.store.install(&tmp, &d.sha256)?;
        if hooks {
            crash_point("after-blob-rename");
        }
        Ok(d)
    }

    /// Rolls back this write's own intents after a failure (best
    /// effort: whatever is left is handled by the next recovery).
    pub(crate) fn abandon(&self, ids: &[i64]) {
        let attempt = || -> Result<()> {
            let mut conn = self.conn();
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let now = recovery::now_secs();
            let all = recovery::intents(&tx)?;
            let live_shas: BTreeSet<String> = all
                .iter()
                .filter(|i| !ids.contains(&i.id) && i.alive(now))
                .filter_map(|i| i.sha256.clone())
                .collect();
            for intent in all.iter().filter(|i| ids.contains(&i.id)) {
                recovery::roll_back(&tx, &self.store, intent, &live_shas)?;
            }
            tx.commit()?;
            Ok(())
        };
        if let Err(e) = attempt() {
            tracing::warn!("could not clean up after a failed registration: {e}");
        }
    }
}

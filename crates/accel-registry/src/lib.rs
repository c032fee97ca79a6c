//! The Accel model registry: model metadata in SQLite plus content-addressed
//! blobs on disk, written so that a crash never leaves half a model; also
//! the records of the OCI images built from models and of their deployments.
//!
//! Everything lives under one home directory (`$ACCEL_HOME`, resolved by the
//! caller):
//!
//! ```text
//! <home>/registry.db          SQLite, WAL mode: models, tags, properties,
//!                             blob references, reports, write intents,
//!                             service keys, long-running operations,
//!                             images, deployments
//! <home>/blobs/sha256/<hex>   model files, label lists and image blobs
//!                             (manifests, configs, layers), named by sha256
//! <home>/tmp/                 files being written
//! ```
//!
//! Any number of [`Registry`] values, in any number of threads and processes,
//! may use one home at once: writes serialize on SQLite's write lock and
//! versions are assigned inside the registering transaction.
//!
//! Module map: `error` (the error type), `db` (connection and schema),
//! `blobs` (the file store), `validate` (metadata checks), `models` (public
//! types and reads, model reports included), `register` (the atomic write
//! path and its crash test hook), `delete` (deletion in dependency order:
//! deployments, images, models; the parent rule),
//! `recovery` (write intents, crash recovery and the process liveness
//! check), `check` (consistency check and repair), `keys` (service API key
//! hashes), `operations` (long-running jobs such as `accel convert
//! --no-wait`, and how a job whose process vanished reads), `images` (OCI
//! image records and their blobs), `deployments` (deployment records and the
//! one-model-per-device rule).
#![deny(missing_docs)]

mod blobs;
mod check;
mod db;
mod delete;
mod deployments;
pub mod error;
mod images;
mod keys;
mod models;
mod operations;
mod recovery;
mod register;
mod validate;

pub use check::CheckReport;
pub use delete::{Deleted, Dependents};
pub use deployments::{DeploymentRecord, DeploymentUpdate, NewDeployment};
pub use error::RegistryError;
pub use images::{ImageBlob, ImageLocation, ImageRecord, NewImage};
pub use keys::{KeySlot, ServiceKey};
pub use models::{ModelFilter, ModelRecord, NewModel};
pub use operations::{OperationRecord, OperationStatus};
pub use register::CRASH_ENV;

use blobs::{is_valid_sha256, BlobStore};
use error::Result;
use rusqlite::{Connection, OptionalExtension};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

/// A handle on the registry under one home directory. `Send + Sync`: share
/// it between threads freely; each call takes the connection briefly (file
/// copies run without it).
#[derive(Debug)]
pub struct Registry {
    home: PathBuf,
    store: BlobStore,
    conn: Mutex<Connection>,
    /// What recovery did since the last `check` reported it.
    recovered: Mutex<Vec<String>>,
}

impl Registry {
    /// Opens the registry under `home`, creating the directories, the
    /// database and its schema as needed (schema migrations are tracked with
    /// `PRAGMA user_version`), then runs crash recovery: interrupted
    /// registrations of processes that are gone are rolled back and stray
    /// temp files removed. What recovery did is logged and reported by the
    /// next [`Registry::check`].
    pub fn open(home: &Path) -> Result<Registry> {
        std::fs::create_dir_all(home)
            .map_err(|e| RegistryError::io(format!("creating {}", home.display()), e))?;
        let store = BlobStore::new(home);
        store.create_dirs()?;
        let mut conn = db::open(&home.join("registry.db"))?;
        let recovered = recovery::recover(&mut conn, &store)?;
        Ok(Registry {
            home: home.to_path_buf(),
            store,
            conn: Mutex::new(conn),
            recovered: Mutex::new(recovered),
        })
    }

    /// The home directory this registry lives in.
    pub fn home(&self) -> &Path {
        &self.home
    }

    /// The path of the blob with this sha256 (lower-case hex, as in
    /// [`ModelRecord::sha256`]), whether or not it exists. The argument is
    /// not validated: pass hashes from records, not user input.
    pub fn blob_path(&self, sha256: &str) -> PathBuf {
        self.store.path(sha256)
    }

    /// Reads a whole blob and re-hashes it. A content mismatch is DataLoss
    /// naming the blob; a missing file is DataLoss when a model or an image
    /// uses the blob and NotFound otherwise; a malformed hash is
    /// InvalidArgument.
    pub fn read_blob_verified(&self, sha256: &str) -> Result<Vec<u8>> {
        if !is_valid_sha256(sha256) {
            return Err(RegistryError::InvalidArgument(format!(
                "{sha256:?} is not a sha256 (64 lower-case hex digits)"
            )));
        }
        if let Some(data) = self.store.read_verified(sha256)? {
            return Ok(data);
        }
        let user: Option<(String, String)> = self
            .conn()
            .query_row(
                "SELECT * FROM (
                     SELECT 'model', m.name || ':' || m.version FROM model_blobs b
                     JOIN models m ON m.id = b.model_id WHERE b.sha256 = ?1
                     ORDER BY m.name, m.version LIMIT 1)
                 UNION ALL SELECT * FROM (
                     SELECT 'image', i.name || ':' || i.version FROM image_blobs b
                     JOIN images i ON i.id = b.image_id WHERE b.sha256 = ?1
                     ORDER BY i.name, i.version LIMIT 1)
                 LIMIT 1",
                [sha256],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let path = self.store.path(sha256);
        Err(match user {
            Some((kind, reference)) => RegistryError::DataLoss(format!(
                "blob {sha256} of {kind} \"{reference}\" is missing ({})",
                path.display()
            )),
            None => RegistryError::NotFound(format!("no blob {sha256} in the registry")),
        })
    }

    /// The model's class labels, read (and verified) from its labels blob;
    /// `None` when the model has no labels.
    pub fn labels(&self, model: &ModelRecord) -> Result<Option<Vec<String>>> {
        let Some(r) = &model.spec.labels else {
            return Ok(None);
        };
        let data = self.read_blob_verified(&r.sha256)?;
        let text = String::from_utf8(data).map_err(|_| {
            RegistryError::DataLoss(format!(
                "labels blob {} of model \"{}\" is not UTF-8",
                r.sha256,
                model.reference()
            ))
        })?;
        let labels = validate::parse_labels(&text);
        if labels.len() != r.count {
            return Err(RegistryError::DataLoss(format!(
                "labels blob {} of model \"{}\" has {} labels, the spec says {}",
                r.sha256,
                model.reference(),
                labels.len(),
                r.count
            )));
        }
        Ok(Some(labels))
    }

    /// The connection; a panic elsewhere while holding it does not make it
    /// unusable (an open transaction was rolled back when it was dropped).
    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What recovery did, not yet reported.
    fn recovered(&self) -> MutexGuard<'_, Vec<String>> {
        self.recovered.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Registry>();
    }

    #[test]
    fn open_creates_the_layout() {
        let home = tempfile::tempdir().unwrap();
        let home = home.path().join("nested");
        let reg = Registry::open(&home).unwrap();
        assert_eq!(reg.home(), home);
        assert!(home.join("registry.db").is_file());
        assert!(home.join("blobs/sha256").is_dir());
        assert!(home.join("tmp").is_dir());
        assert_eq!(reg.blob_path("ab"), home.join("blobs/sha256/ab"));
        let err = reg.read_blob_verified("../x").unwrap_err();
        assert!(matches!(err, RegistryError::InvalidArgument(_)), "{err}");
    }
}

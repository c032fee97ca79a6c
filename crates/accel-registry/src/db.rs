//! The SQLite database: connection settings and schema migrations.
//!
//! The database is the source of truth for which models exist and which
//! blobs they use. It runs in WAL mode with `synchronous = FULL`, so a
//! committed registration survives a crash or power loss, and with a 10 s busy
//! timeout, so concurrent writers (threads or processes) queue instead of
//! failing. The schema version lives in `PRAGMA user_version`; each entry of
//! [`MIGRATIONS`] moves it up by one, inside one transaction.

use crate::error::{RegistryError, Result};
use rusqlite::{Connection, TransactionBehavior};
use std::path::Path;
use std::time::Duration;

/// How long a statement waits for another writer before failing.
pub(crate) const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Schema migrations; entry `i` takes `user_version` from `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    // 1: models, their tags, properties and blob references, and write intents.
    "CREATE TABLE models (
        id          INTEGER PRIMARY KEY,
        name        TEXT NOT NULL,
        version     INTEGER NOT NULL CHECK (version >= 1),
        description TEXT NOT NULL,
        format      TEXT NOT NULL,
        sha256      TEXT NOT NULL,
        size        INTEGER NOT NULL,
        created     TEXT NOT NULL,
        parent_id   INTEGER REFERENCES models(id) ON DELETE RESTRICT,
        spec        TEXT NOT NULL,
        UNIQUE (name, version)
    );
    CREATE INDEX models_parent ON models(parent_id);
    CREATE TABLE model_tags (
        model_id INTEGER NOT NULL REFERENCES models(id) ON DELETE CASCADE,
        key      TEXT NOT NULL,
        value    TEXT NOT NULL,
        PRIMARY KEY (model_id, key)
    ) WITHOUT ROWID;
    CREATE INDEX model_tags_key ON model_tags(key, value);
    CREATE TABLE model_properties (
        model_id INTEGER NOT NULL REFERENCES models(id) ON DELETE CASCADE,
        key      TEXT NOT NULL,
        value    TEXT NOT NULL,
        PRIMARY KEY (model_id, key)
    ) WITHOUT ROWID;
    CREATE TABLE model_blobs (
        model_id INTEGER NOT NULL REFERENCES models(id) ON DELETE CASCADE,
        sha256   TEXT NOT NULL,
        role     TEXT NOT NULL CHECK (role IN ('model', 'labels')),
        PRIMARY KEY (model_id, role)
    ) WITHOUT ROWID;
    CREATE INDEX model_blobs_sha256 ON model_blobs(sha256);
    CREATE TABLE pending (
        id       INTEGER PRIMARY KEY,
        pid      INTEGER NOT NULL,
        started  INTEGER NOT NULL,
        sha256   TEXT,
        tmp_path TEXT NOT NULL UNIQUE
    );",
    // 2: API keys of services, stored as sha256 hashes only.
    "CREATE TABLE service_keys (
        service TEXT NOT NULL,
        slot    TEXT NOT NULL CHECK (slot IN ('primary', 'secondary')),
        sha256  TEXT NOT NULL,
        created TEXT NOT NULL,
        PRIMARY KEY (service, slot)
    ) WITHOUT ROWID;",
    // 3: conversion reports (JSON objects, too large for properties), one per
    // model at most, deleted with the model.
    "CREATE TABLE model_reports (
        model_id INTEGER PRIMARY KEY REFERENCES models(id) ON DELETE CASCADE,
        report   TEXT NOT NULL CHECK (json_valid(report))
    );",
    // 4: long-running operations (`accel convert --no-wait`), see operations.rs.
    // `started`/`finished` are RFC 3339 UTC like `models.created`; `finished`
    // is NULL while running and for runs whose process vanished.
    "CREATE TABLE operations (
        id       TEXT PRIMARY KEY,
        kind     TEXT NOT NULL CHECK (kind IN ('convert')),
        args     TEXT NOT NULL CHECK (json_valid(args)),
        status   TEXT NOT NULL CHECK (status IN ('running', 'succeeded', 'failed')),
        pid      INTEGER NOT NULL CHECK (pid >= 0),
        started  TEXT NOT NULL,
        finished TEXT,
        progress TEXT,
        result   TEXT CHECK (result IS NULL OR json_valid(result)),
        error    TEXT
    );",
    // 5: OCI images built from a model, see images.rs. Their blobs live in
    // the same content-addressed store as model blobs (`image_blobs` refers to
    // them by sha256, like `model_blobs`). `pid` is the builder process while
    // `state` is 'building'; `manifest_digest` is set when it succeeded.
    "CREATE TABLE images (
        id              INTEGER PRIMARY KEY,
        name            TEXT NOT NULL,
        version         INTEGER NOT NULL CHECK (version >= 1),
        model_id        INTEGER NOT NULL REFERENCES models(id) ON DELETE RESTRICT,
        state           TEXT NOT NULL CHECK (state IN ('building', 'succeeded', 'failed')),
        description     TEXT NOT NULL,
        created         TEXT NOT NULL,
        finished        TEXT,
        manifest_digest TEXT,
        size            INTEGER NOT NULL DEFAULT 0 CHECK (size >= 0),
        build_log       TEXT NOT NULL DEFAULT '',
        pid             INTEGER NOT NULL CHECK (pid >= 0),
        UNIQUE (name, version)
    );
    CREATE INDEX images_model ON images(model_id);
    CREATE TABLE image_tags (
        image_id INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
        key      TEXT NOT NULL,
        value    TEXT NOT NULL,
        PRIMARY KEY (image_id, key)
    ) WITHOUT ROWID;
    CREATE TABLE image_blobs (
        image_id   INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
        sha256     TEXT NOT NULL,
        media_type TEXT NOT NULL,
        role       TEXT NOT NULL CHECK (role IN ('manifest', 'config', 'layer', 'index')),
        size       INTEGER NOT NULL CHECK (size >= 0),
        UNIQUE (image_id, sha256, role)
    );
    CREATE INDEX image_blobs_sha256 ON image_blobs(sha256);
    CREATE TABLE image_locations (
        image_id  INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
        reference TEXT NOT NULL,
        digest    TEXT NOT NULL,
        pushed    TEXT NOT NULL,
        PRIMARY KEY (image_id, reference)
    );",
    // 6: deployments of images (`accel services`), see deployments.rs. A
    // local deployment holding a device holds it alone.
    "CREATE TABLE deployments (
        id          INTEGER PRIMARY KEY,
        name        TEXT NOT NULL UNIQUE,
        target      TEXT NOT NULL CHECK (target IN ('local', 'kubernetes')),
        image_id    INTEGER NOT NULL REFERENCES images(id) ON DELETE RESTRICT,
        state       TEXT NOT NULL,
        device      TEXT,
        port        INTEGER CHECK (port IS NULL OR port BETWEEN 0 AND 65535),
        pid         INTEGER CHECK (pid IS NULL OR pid >= 0),
        scoring_uri TEXT,
        config      TEXT NOT NULL CHECK (json_valid(config)),
        created     TEXT NOT NULL,
        updated     TEXT NOT NULL
    );
    CREATE INDEX deployments_image ON deployments(image_id);
    CREATE UNIQUE INDEX deployments_local_device ON deployments(device)
        WHERE target = 'local' AND device IS NOT NULL;",
];

/// Opens (creating if needed) the database at `path`, configures the
/// connection and brings the schema up to date.
pub(crate) fn open(path: &Path) -> Result<Connection> {
    let mut conn = Connection::open(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    let mode: String =
        conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(RegistryError::FailedPrecondition(format!(
            "{} cannot use WAL journaling (got {mode:?}); is it on a network file system?",
            path.display()
        )));
    }
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    migrate(&mut conn, path)?;
    Ok(conn)
}

/// Applies the migrations this database lacks. Concurrent openers serialize
/// on the write lock and re-read the version inside the transaction.
fn migrate(conn: &mut Connection, path: &Path) -> Result<()> {
    let current: usize = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if current == MIGRATIONS.len() {
        return Ok(());
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let current: usize = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if current > MIGRATIONS.len() {
        return Err(RegistryError::FailedPrecondition(format!(
            "{} has schema version {current}, newer than this build knows ({}); upgrade accel",
            path.display(),
            MIGRATIONS.len()
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current) {
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", i + 1)?;
    }
    tx.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opening_twice_is_idempotent_and_uses_wal() {
        let home = tempfile::tempdir().unwrap();
        let path = home.path().join("registry.db");
        drop(open(&path).unwrap());
        let conn = open(&path).unwrap();
        let v: usize = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, MIGRATIONS.len());
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        let fk: i64 = conn
            .query_row("PRAGMA foreign_keys", [], |r| r.get(0))
            .unwrap();
        assert_eq!(fk, 1);
    }

    fn schema(conn: &Connection) -> Vec<(String, String, Option<String>)> {
        let mut stmt = conn
            .prepare("SELECT type, name, sql FROM sqlite_master ORDER BY name")
            .unwrap();
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap();
        rows.collect::<rusqlite::Result<_>>().unwrap()
    }

    /// The upgrade test in tests/registry/reports.rs starts from a frozen
    /// copy of the version-2 schema; it must be what migrations 1 and 2 make.
    #[test]
    fn the_frozen_version_2_schema_matches_the_migrations() {
        let frozen = Connection::open_in_memory().unwrap();
        frozen
            .execute_batch(include_str!("../tests/registry/schema_v2.sql"))
            .unwrap();
        let migrated = Connection::open_in_memory().unwrap();
        for sql in &MIGRATIONS[..2] {
            migrated.execute_batch(sql).unwrap();
        }
        assert_eq!(schema(&frozen), schema(&migrated));
    }

    /// The upgrade test in tests/registry/images.rs starts from a frozen
    /// copy of the version-4 schema; it must be what migrations 1 to 4 make.
    #[test]
    fn the_frozen_version_4_schema_matches_the_migrations() {
        let frozen = Connection::open_in_memory().unwrap();
        frozen
            .execute_batch(include_str!("../tests/registry/schema_v4.sql"))
            .unwrap();
        let migrated = Connection::open_in_memory().unwrap();
        for sql in &MIGRATIONS[..4] {
            migrated.execute_batch(sql).unwrap();
        }
        assert_eq!(schema(&frozen), schema(&migrated));
    }

    #[test]
    fn upgrading_step_by_step_reaches_the_latest_version() {
        let home = tempfile::tempdir().unwrap();
        let path = home.path().join("registry.db");
        for (version, sql) in MIGRATIONS.iter().enumerate() {
            let mut conn = Connection::open(&path).unwrap();
            let tx = conn.transaction().unwrap();
            tx.execute_batch(sql).unwrap();
            tx.pragma_update(None, "user_version", version + 1).unwrap();
            tx.commit().unwrap();
            drop(conn);
            // Opening a database at any version brings it to the latest.
            let copy = home.path().join(format!("v{}.db", version + 1));
            std::fs::copy(&path, &copy).unwrap();
            let upgraded = open(&copy).unwrap();
            let v: usize = upgraded
                .query_row("PRAGMA user_version", [], |r| r.get(0))
                .unwrap();
            assert_eq!(v, MIGRATIONS.len());
            let fresh = open(&home.path().join(format!("fresh{version}.db"))).unwrap();
            assert_eq!(schema(&upgraded), schema(&fresh));
        }
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let home = tempfile::tempdir().unwrap();
        let path = home.path().join("registry.db");
        let conn = open(&path).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
        drop(conn);
        let err = open(&path).unwrap_err();
        assert!(matches!(err, RegistryError::FailedPrecondition(_)));
        assert!(err.to_string().contains("schema version 99"), "{err}");
    }
}

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

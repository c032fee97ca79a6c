//! Long-running operations (`accel convert --no-wait`): one row of
//! `operations` per job, written by the process doing the work and read by
//! anyone who asks how it is going.
//!
//! A job is created `running` with the pid of the process that does (or will
//! do) the work; that process may hand it to a child with
//! [`Registry::set_operation_pid`], reports progress with
//! [`Registry::set_operation_progress`] and ends it, exactly once, with
//! [`Registry::finish_operation`].
//!
//! # Jobs whose process vanished
//!
//! A process killed mid-job cannot finish its row. Such a row is *computed on
//! read*: every read ([`Registry::operation`], [`Registry::operations`]) shows
//! a `running` row whose pid is no longer alive (see `recovery::pid_alive`:
//! no `/proc/<pid>`, or a zombie) as [`OperationStatus::Failed`] with the
//! error [`VANISHED`] and no `finished` time (when it ended is unknown).
//! Reads never write. [`Registry::check`] reports such rows and
//! `check(true)` stores that outcome, so that a later reuse of the pid by an
//! unrelated process cannot make the job look alive again. Until then a reused
//! pid reads as alive, and where there is no `/proc` (not Linux) every
//! `running` row reads as running.
//!
//! The writers ([`Registry::set_operation_pid`],
//! [`Registry::set_operation_progress`], [`Registry::finish_operation`]) go
//! by the stored status only: their caller is the process doing the work, so
//! a job whose recorded pid is stale (its creator exited before handing the
//! pid on) can still report and finish.

use crate::error::{RegistryError, Result};
use crate::recovery::pid_alive;
use crate::register::now_rfc3339;
use crate::validate;
use crate::Registry;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use serde::{Deserialize, Serialize};
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

/// The error of a job whose process ended without finishing it.
pub(crate) const VANISHED: &str = "the process ended without finishing";

/// The kinds of operation the schema allows.
const KINDS: &[&str] = &["convert"];

/// Longest stored progress line, in bytes (longer ones are cut).
const MAX_PROGRESS_LEN: usize = 4096;
/// Longest stored error message, in bytes (longer ones are cut).
const MAX_ERROR_LEN: usize = 64 * 1024;

/// Where an operation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OperationStatus {
    /// Its process is working on it.
    Running,
    /// It finished and has a result.
    Succeeded,
    /// It finished with an error, or its process ended without finishing.
    Failed,
}

impl OperationStatus {
    /// The stored name: `running`, `succeeded` or `failed`.
    pub fn as_str(self) -> &'static str {
        match self {
            OperationStatus::Running => "running",
            OperationStatus::Succeeded => "succeeded",
            OperationStatus::Failed => "failed",
        }
    }

    fn parse(s: &str) -> Option<OperationStatus> {
        match s {
            "running" => Some(OperationStatus::Running),
            "succeeded" => Some(OperationStatus::Succeeded),
            "failed" => Some(OperationStatus::Failed),
            _ => None,
        }
    }
}

impl std::fmt::Display for OperationStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One long-running operation, as read (see the module docs for how a job
/// whose process vanished reads).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OperationRecord {
    /// `<kind>-<12 lower-case hex digits>`, e.g. `convert-3f9a0c1b2d4e`.
    pub id: String,
    /// What it does: `convert`.
    pub kind: String,
    /// What it was asked to do (kind-specific JSON).
    pub args: serde_json::Value,
    /// Where it stands.
    pub status: OperationStatus,
    /// The process doing the work.
    pub pid: u32,
    /// When it was created, RFC 3339 UTC with second precision.
    pub started: String,
    /// When it finished; `None` while running, and for a job whose process
    /// ended without finishing it.
    pub finished: Option<String>,
    /// The last progress line its process reported.
    pub progress: Option<String>,
    /// What it produced (kind-specific JSON), when it succeeded.
    pub result: Option<serde_json::Value>,
    /// Why it failed, when it failed.
    pub error: Option<String>,
}

/// Columns read by [`read_row`], in order.
const SELECT: &str = "SELECT id, kind, args, status, pid, started, finished, progress, result, \
     error FROM operations";

/// A stored row, before its JSON is parsed and liveness is applied.
struct Row {
    id: String,
    kind: String,
    args: String,
    status: String,
    pid: i64,
    started: String,
    finished: Option<String>,
    progress: Option<String>,
    result: Option<String>,
    error: Option<String>,
}

fn read_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
    Ok(Row {
        id: r.get(0)?,
        kind: r.get(1)?,
        args: r.get(2)?,
        status: r.get(3)?,
        pid: r.get(4)?,
        started: r.get(5)?,
        finished: r.get(6)?,
        progress: r.get(7)?,
        result: r.get(8)?,
        error: r.get(9)?,
    })
}

impl Row {
    /// The stored status.
    fn stored_status(&self) -> Result<OperationStatus> {
        OperationStatus::parse(&self.status).ok_or_else(|| {
            RegistryError::DataLoss(format!(
                "operation {:?} has an unknown stored status {:?}",
                self.id, self.status
            ))
        })
    }

    /// The record as read: a `running` row whose process is gone reads as
    /// failed.
    fn into_record(self) -> Result<OperationRecord> {
        let mut status = self.stored_status()?;
        let mut error = self.error;
        if status == OperationStatus::Running && !pid_alive(self.pid) {
            status = OperationStatus::Failed;
            error = Some(VANISHED.to_string());
        }
        let json = |what: &str, text: &str| {
            serde_json::from_str::<serde_json::Value>(text).map_err(|e| {
                RegistryError::DataLoss(format!(
                    "operation {:?} has unreadable stored {what}: {e}",
                    self.id
                ))
            })
        };
        Ok(OperationRecord {
            args: json("args", &self.args)?,
            result: self
                .result
                .as_deref()
                .map(|t| json("result", t))
                .transpose()?,
            pid: u32::try_from(self.pid).unwrap_or(0),
            status,
            error,
            id: self.id,
            kind: self.kind,
            started: self.started,
            finished: self.finished,
            progress: self.progress,
        })
    }
}

fn not_found(id: &str) -> RegistryError {
    RegistryError::NotFound(format!("no operation {id:?}"))
}

/// The stored row of `id`, or NotFound naming it.
fn load(conn: &Connection, id: &str) -> Result<Row> {
    conn.query_row(&format!("{SELECT} WHERE id = ?1"), [id], read_row)
        .optional()?
        .ok_or_else(|| not_found(id))
}

/// Loads `id` inside the caller's write transaction and refuses (with
/// FailedPrecondition) unless it is stored as running; `doing` says what was
/// refused.
fn load_running(conn: &Connection, id: &str, doing: &str) -> Result<Row> {
    let row = load(conn, id)?;
    let status = row.stored_status()?;
    if status != OperationStatus::Running {
        return Err(RegistryError::FailedPrecondition(format!(
            "cannot {doing} operation {id:?}: it already finished ({status})"
        )));
    }
    Ok(row)
}

/// A fresh operation id: `<kind>-` and 12 hex digits of a sha256 over a
/// randomly keyed hash (std's `RandomState` is seeded from the OS), the pid,
/// the time in nanoseconds and a per-process counter.
fn new_id(kind: &str) -> String {
    use sha2::{Digest, Sha256};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut keyed = std::collections::hash_map::RandomState::new().build_hasher();
    keyed.write_u64(n);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let mut h = Sha256::new();
    h.update(keyed.finish().to_le_bytes());
    h.update(std::process::id().to_le_bytes());
    h.update(nanos.to_le_bytes());
    h.update(n.to_le_bytes());
    let digest = h.finalize();
    format!("{kind}-{}", hex::encode(&digest[..6]))
}

impl Registry {
    /// Records a new `running` operation of `kind` (`convert`) with its
    /// arguments (JSON, at most 1 MiB serialized) and the pid of the process
    /// that does the work. Returns it, with a fresh unique id.
    pub fn create_operation(
        &self,
        kind: &str,
        args: &serde_json::Value,
        pid: u32,
    ) -> Result<OperationRecord> {
        if !KINDS.contains(&kind) {
            return Err(RegistryError::InvalidArgument(format!(
                "unknown operation kind {kind:?} (known: {})",
                KINDS.join(", ")
            )));
        }
        let args_text = validate::json_text("operation arguments", args)?;
        let started = now_rfc3339();
        let conn = self.conn();
        // Ids are random: retry the (astronomically unlikely) collision.
        for _ in 0..8 {
            let id = new_id(kind);
            let inserted = conn.execute(
                "INSERT INTO operations (id, kind, args, status, pid, started)
                 VALUES (?1, ?2, ?3, 'running', ?4, ?5) ON CONFLICT (id) DO NOTHING",
                params![id, kind, args_text, i64::from(pid), started],
            )?;
            if inserted == 1 {
                return load(&conn, &id)?.into_record();
            }
        }
        Err(RegistryError::AlreadyExists(
            "could not find a free operation id".into(),
        ))
    }

    /// Records that process `pid` now does the work of running operation
    /// `id`. NotFound for an unknown id; FailedPrecondition once it finished.
    pub fn set_operation_pid(&self, id: &str, pid: u32) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        load_running(&tx, id, "set the pid of")?;
        tx.execute(
            "UPDATE operations SET pid = ?1 WHERE id = ?2",
            params![i64::from(pid), id],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Replaces the progress line of running operation `id`. Control
    /// characters other than newline and tab are replaced and text over 4096
    /// bytes is cut, so progress is never refused. NotFound for an unknown id;
    /// FailedPrecondition once it finished.
    pub fn set_operation_progress(&self, id: &str, progress: &str) -> Result<()> {
        let progress = validate::clean_text(progress, MAX_PROGRESS_LEN);
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        load_running(&tx, id, "report progress of")?;
        tx.execute(
            "UPDATE operations SET progress = ?1 WHERE id = ?2",
            params![progress, id],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Ends running operation `id`: `Ok(result)` (JSON, at most 1 MiB
    /// serialized, else InvalidArgument and nothing changes) makes it
    /// succeeded, `Err(message)` failed (the message is cleaned like progress
    /// and cut at 64 KiB). Returns the finished record. NotFound for an
    /// unknown id; FailedPrecondition when it already finished (finishing
    /// twice, or after `check(true)` marked it failed).
    pub fn finish_operation(
        &self,
        id: &str,
        outcome: std::result::Result<serde_json::Value, String>,
    ) -> Result<OperationRecord> {
        let (status, result, error) = match outcome {
            Ok(v) => (
                OperationStatus::Succeeded,
                Some(validate::json_text("operation result", &v)?),
                None,
            ),
            Err(e) => (
                OperationStatus::Failed,
                None,
                Some(validate::clean_text(&e, MAX_ERROR_LEN)),
            ),
        };
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        load_running(&tx, id, "finish")?;
        tx.execute(
            "UPDATE operations SET status = ?1, finished = ?2, result = ?3, error = ?4
             WHERE id = ?5",
            params![status.as_str(), now_rfc3339(), result, error, id],
        )?;
        let row = load(&tx, id)?;
        tx.commit()?;
        row.into_record()
    }

    /// The operation `id` (NotFound naming it when there is none).
    pub fn operation(&self, id: &str) -> Result<OperationRecord> {
        load(&self.conn(), id)?.into_record()
    }

    /// All operations, newest first.
    pub fn operations(&self) -> Result<Vec<OperationRecord>> {
        let rows: Vec<Row> = {
            let conn = self.conn();
            let mut stmt = conn.prepare(&format!("{SELECT} ORDER BY started DESC, rowid DESC"))?;
            let rows = stmt.query_map([], read_row)?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        rows.into_iter().map(Row::into_record).collect()
    }

    /// Deletes the record of a finished operation (or of one whose process
    /// vanished). Refused with FailedPrecondition while it is running;
    /// NotFound for an unknown id.
    pub fn delete_operation(&self, id: &str) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let record = load(&tx, id)?.into_record()?;
        if record.status == OperationStatus::Running {
            return Err(RegistryError::FailedPrecondition(format!(
                "operation {id:?} is still running (pid {}); wait for it to finish",
                record.pid
            )));
        }
        tx.execute("DELETE FROM operations WHERE id = ?1", [id])?;
        tx.commit()?;
        Ok(())
    }
}

/// The ids of `running` rows whose process is gone (for `check`), oldest
/// first.
pub(crate) fn vanished(conn: &Connection) -> Result<Vec<String>> {
    let mut stmt = conn.prepare(
        "SELECT id, pid FROM operations WHERE status = 'running' ORDER BY started, rowid",
    )?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
    let mut out = Vec::new();
    for row in rows {
        let (id, pid) = row?;
        if !pid_alive(pid) {
            out.push(id);
        }
    }
    Ok(out)
}

/// Stores the failure of a `running` row whose process is gone (for
/// `check(true)`); `finished` stays unknown.
pub(crate) fn mark_vanished(conn: &Connection, id: &str) -> Result<()> {
    conn.execute(
        "UPDATE operations SET status = 'failed', error = ?1 WHERE id = ?2 AND status = 'running'",
        params![VANISHED, id],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_kind_and_twelve_hex_digits_and_differ() {
        let ids: std::collections::BTreeSet<String> =
            (0..1000).map(|_| new_id("convert")).collect();
        assert_eq!(ids.len(), 1000);
        for id in &ids {
            let hex = id.strip_prefix("convert-").unwrap();
            assert_eq!(hex.len(), 12, "{id}");
            assert!(
                hex.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
                "{id}"
            );
        }
    }

    #[test]
    fn statuses_round_trip() {
        for s in [
            OperationStatus::Running,
            OperationStatus::Succeeded,
            OperationStatus::Failed,
        ] {
            assert_eq!(OperationStatus::parse(s.as_str()), Some(s));
            assert_eq!(
                serde_json::to_value(s).unwrap(),
                serde_json::json!(s.as_str())
            );
            assert_eq!(s.to_string(), s.as_str());
        }
        assert_eq!(OperationStatus::parse("Running"), None);
    }
}

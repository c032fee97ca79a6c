//! Write intents and crash recovery.
//!
//! Before a registration writes any file it commits an intent row to the
//! `pending` table (its pid, start time, temp-file name and, once known, the
//! blob's sha256); the transaction that inserts the model deletes that row.
//! A row that outlives its writer therefore marks exactly the debris a crash
//! left: a temp file and possibly a blob nobody references. [`recover`] runs
//! when a registry is opened and removes that debris, so the store holds the
//! state from before the interrupted registration, never half a model.
//!
//! A writer is considered dead when [`pid_alive`] says its process is gone
//! (no `/proc/<pid>`, or a zombie) or its row is older than
//! [`MAX_INTENT_AGE_SECS`] (which also covers pid reuse). Where there is no
//! `/proc` (not Linux) only the age rule applies. Writers in
//! another pid namespace sharing the same home would look dead: don't share a
//! home across containers while writing to it.

use crate::blobs::BlobStore;
use crate::error::Result;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use std::collections::BTreeSet;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

/// Age after which an intent row counts as abandoned even if its pid exists.
pub(crate) const MAX_INTENT_AGE_SECS: i64 = 3600;

/// Seconds since the Unix epoch.
pub(crate) fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Whether the writer of an intent row started at `started` by `pid` may
/// still be running.
pub(crate) fn writer_alive(pid: i64, started: i64, now: i64) -> bool {
    if now - started > MAX_INTENT_AGE_SECS {
        return false;
    }
    pid_alive(pid)
}

/// Whether process `pid` may still be running: false when `/proc/<pid>` is
/// gone or the process is a zombie (it exited, its parent has not reaped it
/// yet). Without `/proc` (not Linux) this cannot be told: true. A pid reused
/// by an unrelated process reads as alive.
pub(crate) fn pid_alive(pid: i64) -> bool {
    if !Path::new("/proc/self").exists() {
        return true;
    }
    if pid <= 0 {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // "<pid> (<comm>) <state> ...": comm may contain ')' and spaces.
        Ok(stat) => !matches!(
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.trim_start().chars().next()),
            Some('Z' | 'X')
        ),
        Err(_) => Path::new(&format!("/proc/{pid}")).exists(),
    }
}

/// One row of the `pending` table.
#[derive(Debug, Clone)]
pub(crate) struct Intent {
    /// Row id.
    pub id: i64,
    /// Process that wrote it.
    pub pid: i64,
    /// When it was written (Unix seconds).
    pub started: i64,
    /// The blob's hash, once the temp file is complete.
    pub sha256: Option<String>,
    /// Temp-file name under `<home>/tmp/`.
    pub tmp_path: String,
}

impl Intent {
    /// Whether its writer may still be running.
    pub fn alive(&self, now: i64) -> bool {
        writer_alive(self.pid, self.started, now)
    }
}

/// Commits a new intent row for this process and temp file; returns its id.
pub(crate) fn begin_intent(conn: &Connection, tmp_name: &str) -> Result<i64> {
    conn.execute(
        "INSERT INTO pending (pid, started, sha256, tmp_path) VALUES (?1, ?2, NULL, ?3)",
        params![i64::from(std::process::id()), now_secs(), tmp_name],
    )?;
    Ok(conn.last_insert_rowid())
}

/// Records the hash of the blob an intent is about to install. Must be
/// committed before the blob is renamed into place (or found to exist), so
/// that nothing removes that blob while this writer still needs it.
pub(crate) fn set_intent_sha(conn: &Connection, id: i64, sha256: &str) -> Result<()> {
    conn.execute(
        "UPDATE pending SET sha256 = ?1 WHERE id = ?2",
        params![sha256, id],
    )?;
    Ok(())
}

/// All intent rows.
pub(crate) fn intents(conn: &Connection) -> Result<Vec<Intent>> {
    let mut stmt =
        conn.prepare("SELECT id, pid, started, sha256, tmp_path FROM pending ORDER BY id")?;
    let rows = stmt.query_map([], |r| {
        Ok(Intent {
            id: r.get(0)?,
            pid: r.get(1)?,
            started: r.get(2)?,
            sha256: r.get(3)?,
            tmp_path: r.get(4)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Whether any model or image references this blob.
pub(crate) fn blob_referenced(conn: &Connection, sha256: &str) -> Result<bool> {
    Ok(conn
        .query_row(
            "SELECT 1 FROM model_blobs WHERE sha256 = ?1
             UNION ALL SELECT 1 FROM image_blobs WHERE sha256 = ?1 LIMIT 1",
            [sha256],
            |_| Ok(()),
        )
        .optional()?
        .is_some())
}

/// Undoes one intent inside the caller's write transaction: removes its temp
/// file, its blob when no model, no image and no other live intent uses it, and the
/// row. Returns a one-line account of what was removed.
pub(crate) fn roll_back(
    conn: &Connection,
    store: &BlobStore,
    intent: &Intent,
    live_shas: &BTreeSet<String>,
) -> Result<String> {
    let mut done = Vec::new();
    if store.remove_temp(&intent.tmp_path)? {
        done.push(format!("removed temp file tmp/{}", intent.tmp_path));
    }
    if let Some(sha) = &intent.sha256 {
        if !live_shas.contains(sha) && !blob_referenced(conn, sha)? && store.remove(sha)? {
            done.push(format!("removed unreferenced blob {sha}"));
        }
    }
    conn.execute("DELETE FROM pending WHERE id = ?1", [intent.id])?;
    if done.is_empty() {
        done.push("nothing to remove".into());
    }
    Ok(format!(
        "rolled back an interrupted registration by pid {}: {}",
        intent.pid,
        done.join(", ")
    ))
}

/// Rolls back the intents of dead writers and removes temp files no live
/// intent owns. Runs under the database write lock, so no writer can start
/// or finish meanwhile. Returns one line per action.
pub(crate) fn recover(conn: &mut Connection, store: &BlobStore) -> Result<Vec<String>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let now = now_secs();
    let all = intents(&tx)?;
    let (live, dead): (Vec<_>, Vec<_>) = all.into_iter().partition(|i| i.alive(now));
    let live_shas: BTreeSet<String> = live.iter().filter_map(|i| i.sha256.clone()).collect();
    let live_tmps: BTreeSet<&str> = live.iter().map(|i| i.tmp_path.as_str()).collect();
    let mut report = Vec::new();
    for intent in &dead {
        report.push(roll_back(&tx, store, intent, &live_shas)?);
    }
    // A temp file is created only after its intent row is committed, so
    // under the write lock every temp file of a live writer has a live row.
    for name in store.list_temp()? {
        if !live_tmps.contains(name.as_str()) && store.remove_temp(&name)? {
            report.push(format!("removed stale temp file tmp/{name}"));
        }
    }
    tx.commit()?;
    for line in &report {
        tracing::warn!("registry recovery: {line}");
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn setup() -> (tempfile::TempDir, Connection, BlobStore) {
        let home = tempfile::tempdir().unwrap();
        let store = BlobStore::new(home.path());
        store.create_dirs().unwrap();
        let conn = crate::db::open(&home.path().join("registry.db")).unwrap();
        (home, conn, store)
    }

    /// A pid that certainly belonged to a process that has exited (and been
    /// reaped) a moment ago.
    fn dead_pid() -> i64 {
        let mut child = std::process::Command::new("sh")
            .args(["-c", "exit 0"])
            .spawn()
            .unwrap();
        let pid = child.id();
        child.wait().unwrap();
        i64::from(pid)
    }

    const SHA: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

    #[test]
    fn dead_writers_debris_is_removed_and_live_writers_is_kept() {
        let (_home, mut conn, store) = setup();
        let dead = dead_pid();
        assert!(!writer_alive(dead, now_secs(), now_secs()));
        // A dead writer that had installed its blob and left a temp file.
        fs::write(store.path(SHA), b"abc").unwrap();
        fs::write(store.temp_path("dead.part"), b"partial").unwrap();
        conn.execute(
            "INSERT INTO pending (pid, started, sha256, tmp_path) VALUES (?1, ?2, ?3, 'dead.part')",
            params![dead, now_secs(), SHA],
        )
        .unwrap();
        // A live writer (this process) mid-copy.
        let live = begin_intent(&conn, "live.part").unwrap();
        fs::write(store.temp_path("live.part"), b"in flight").unwrap();
        // A temp file nobody owns.
        fs::write(store.temp_path("stray.part"), b"?").unwrap();

        let report = recover(&mut conn, &store).unwrap();
        assert_eq!(
            report,
            vec![
                format!(
                    "rolled back an interrupted registration by pid {dead}: removed temp file \
                     tmp/dead.part, removed unreferenced blob {SHA}"
                ),
                "removed stale temp file tmp/stray.part".to_string(),
            ]
        );
        assert!(!store.path(SHA).exists());
        assert_eq!(store.list_temp().unwrap(), vec!["live.part".to_string()]);
        let left: Vec<i64> = intents(&conn).unwrap().iter().map(|i| i.id).collect();
        assert_eq!(left, vec![live]);
        // Nothing more to do on a second pass.
        assert!(recover(&mut conn, &store).unwrap().is_empty());
    }

    #[test]
    fn zombies_and_missing_pids_are_dead() {
        assert!(pid_alive(i64::from(std::process::id())));
        assert!(!pid_alive(dead_pid()));
        assert!(!pid_alive(0));
        assert!(!pid_alive(-1));
        if Path::new("/proc/self").exists() {
            // Exited but not yet reaped.
            let mut child = std::process::Command::new("sh")
                .args(["-c", "exit 0"])
                .spawn()
                .unwrap();
            let pid = i64::from(child.id());
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while pid_alive(pid) && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            assert!(!pid_alive(pid), "a zombie reads as alive");
            child.wait().unwrap();
        }
    }

    #[test]
    fn old_intents_count_as_dead_and_keep_blobs_a_live_writer_needs() {
        let (_home, mut conn, store) = setup();
        let me = i64::from(std::process::id());
        let old = now_secs() - MAX_INTENT_AGE_SECS - 10;
        assert!(!writer_alive(me, old, now_secs()));
        assert!(writer_alive(me, now_secs(), now_secs()));
        fs::write(store.path(SHA), b"abc").unwrap();
        conn.execute(
            "INSERT INTO pending (pid, started, sha256, tmp_path) VALUES (?1, ?2, ?3, 'old.part')",
            params![me, old, SHA],
        )
        .unwrap();
        let live = begin_intent(&conn, "new.part").unwrap();
        set_intent_sha(&conn, live, SHA).unwrap();
        let report = recover(&mut conn, &store).unwrap();
        assert_eq!(
            report,
            vec![format!(
                "rolled back an interrupted registration by pid {me}: nothing to remove"
            )]
        );
        assert!(store.path(SHA).exists(), "a live writer's blob was removed");
    }
}

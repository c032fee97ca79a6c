//! Deleting models, with the parent/dependent rule.
//!
//! A model another model was converted from (its parent) cannot be deleted
//! alone: the dependents would point at nothing. Deletion is refused, naming
//! the dependents, unless `force` asks to delete them too (recursively).
//! All rows go in one transaction. Blob files are removed after that commit,
//! each only when no remaining model and no in-flight registration uses it;
//! a crash between the commit and the file removal leaves an orphan blob,
//! which `Registry::check(true)` (`accel check --repair`) removes.

use crate::error::{RegistryError, Result};
use crate::models::{load_by_id, resolve_id, ModelRecord};
use crate::recovery::blob_referenced;
use crate::Registry;
use accel_core::name::{validate_name, NameRef};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior};
use std::collections::BTreeSet;

fn quoted(refs: &[String]) -> String {
    refs.iter()
        .map(|r| format!("\"{r}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

fn reference(conn: &Connection, id: i64) -> Result<String> {
    Ok(conn.query_row(
        "SELECT name || ':' || version FROM models WHERE id = ?1",
        [id],
        |r| r.get(0),
    )?)
}

fn children(conn: &Connection, id: i64) -> Result<Vec<i64>> {
    let mut stmt = conn.prepare_cached("SELECT id FROM models WHERE parent_id = ?1 ORDER BY id")?;
    let rows = stmt.query_map([id], |r| r.get(0))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// The refusal message: which targets are parents of which other models.
fn refusal(
    conn: &Connection,
    targets: &BTreeSet<i64>,
    dependents: &BTreeSet<i64>,
) -> Result<RegistryError> {
    let mut parents = Vec::new();
    let mut direct = Vec::new();
    for &t in targets {
        let kids: Vec<i64> = children(conn, t)?
            .into_iter()
            .filter(|c| !targets.contains(c))
            .collect();
        if !kids.is_empty() {
            parents.push(reference(conn, t)?);
            for k in kids {
                let r = reference(conn, k)?;
                if !direct.contains(&r) {
                    direct.push(r);
                }
            }
        }
    }
    let indirect = dependents.len() - direct.len();
    let subject = if parents.len() == 1 {
        format!("model {} is the parent of", quoted(&parents))
    } else {
        format!("models {} are the parents of", quoted(&parents))
    };
    let more = match indirect {
        0 => String::new(),
        1 => " (and 1 model derived from those)".to_string(),
        n => format!(" (and {n} models derived from those)"),
    };
    let action = if targets.len() == 1 && dependents.len() == 1 {
        "use --force to delete both"
    } else {
        "use --force to delete them too"
    };
    Ok(RegistryError::FailedPrecondition(format!(
        "{subject} {}{more}; {action}",
        quoted(&direct)
    )))
}

impl Registry {
    /// Deletes `name:version`, or every version of `name` when the reference
    /// has no version. Refused (FailedPrecondition, naming the dependents)
    /// when other models have a deleted model as parent, unless `force`, which
    /// deletes those dependents too, recursively. Returns every deleted
    /// model, ordered by name and version.
    ///
    /// Rows are deleted in one transaction; blob files are removed after it
    /// commits, each only if nothing uses it any more. A crash in between
    /// leaves orphan blobs that `check(true)` removes.
    pub fn delete_model(&self, r: &NameRef, force: bool) -> Result<Vec<ModelRecord>> {
        validate_name(&r.name)?;
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let targets: BTreeSet<i64> = match r.version {
            Some(_) => BTreeSet::from([resolve_id(&tx, r)?]),
            None => {
                let mut stmt = tx.prepare("SELECT id FROM models WHERE name = ?1")?;
                let ids = stmt.query_map([&r.name], |row| row.get(0))?;
                let ids: BTreeSet<i64> = ids.collect::<rusqlite::Result<_>>()?;
                if ids.is_empty() {
                    return Err(RegistryError::NotFound(format!(
                        "no model named \"{}\"",
                        r.name
                    )));
                }
                ids
            }
        };
        let mut dependents = BTreeSet::new();
        let mut frontier: Vec<i64> = targets.iter().copied().collect();
        while let Some(id) = frontier.pop() {
            for child in children(&tx, id)? {
                if !targets.contains(&child) && dependents.insert(child) {
                    frontier.push(child);
                }
            }
        }
        if !dependents.is_empty() && !force {
            return Err(refusal(&tx, &targets, &dependents)?);
        }
        let doomed: BTreeSet<i64> = targets.union(&dependents).copied().collect();
        let mut deleted = Vec::with_capacity(doomed.len());
        let mut shas = BTreeSet::new();
        {
            let mut blobs = tx.prepare("SELECT sha256 FROM model_blobs WHERE model_id = ?1")?;
            for &id in &doomed {
                deleted.push(load_by_id(&tx, id)?);
                let rows = blobs.query_map([id], |row| row.get::<_, String>(0))?;
                for sha in rows {
                    shas.insert(sha?);
                }
            }
        }
        // A dependent is always registered after its parent, so deleting in
        // descending id order never leaves a dangling parent reference.
        for &id in doomed.iter().rev() {
            tx.execute("DELETE FROM models WHERE id = ?1", [id])?;
        }
        tx.commit()?;

        // Remove the blob files nothing uses any more, under the write lock
        // so no registration can start relying on one meanwhile.
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        for sha in &shas {
            let in_flight = tx
                .query_row(
                    "SELECT 1 FROM pending WHERE sha256 = ?1 LIMIT 1",
                    [sha],
                    |_| Ok(()),
                )
                .optional()?
                .is_some();
            if !in_flight && !blob_referenced(&tx, sha)? {
                self.store.remove(sha)?;
            }
        }
        tx.commit()?;
        deleted.sort_by(|a, b| (&a.name, a.version).cmp(&(&b.name, b.version)));
        Ok(deleted)
    }
}

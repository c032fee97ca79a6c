//! Consistency check and repair of the database against the blob store.
//!
//! Crashes between a commit and a file removal, disks that flip bits, and
//! people deleting files by hand all leave the two halves of the registry
//! disagreeing. `check` finds every kind of disagreement; with `repair` it
//! removes what is safe to remove (orphan blobs, stale temp files) and
//! reports what cannot be repaired (missing or corrupt blobs). Blobs count
//! as used when a model or an image refers to them. It also reports
//! operations stored as running, and images stored as building, whose
//! process is gone; repair stores them as failed (see `operations.rs` and
//! `images.rs`), which dereferences the blobs of such images (removed in the
//! same repair when nothing else uses them).
//!
//! Model reports need no check of their own: `model_reports` rows are
//! deleted with their model (`ON DELETE CASCADE`, foreign keys are on in
//! every connection) and the schema refuses text that is not JSON.

use crate::blobs::is_valid_sha256;
use crate::error::Result;
use crate::images;
use crate::operations;
use crate::recovery::{self, now_secs};
use crate::Registry;
use rusqlite::TransactionBehavior;
use serde::Serialize;
use std::collections::BTreeSet;

/// What [`Registry::check`] found (and, with repair, did).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CheckReport {
    /// Files in `blobs/sha256/` that no model or image uses and no write in
    /// progress is writing (removed when `repaired`).
    pub orphan_blobs: Vec<String>,
    /// Blobs a model or an image uses whose file is gone (cannot be
    /// repaired).
    pub missing_blobs: Vec<String>,
    /// Blobs whose content no longer hashes to their name (cannot be repaired).
    pub corrupt_blobs: Vec<String>,
    /// Files in `tmp/` that no registration in progress owns (removed when
    /// `repaired`).
    pub stale_temp_files: Vec<String>,
    /// Ids of operations stored as running whose process is gone; they read
    /// as failed ("the process ended without finishing"), and are stored so
    /// when `repaired`.
    pub dead_operations: Vec<String>,
    /// Images (`name:version`) stored as building whose builder process is
    /// gone; they read as failed, and are stored so (their blobs
    /// dereferenced) when `repaired`.
    pub dead_image_builds: Vec<String>,
    /// What crash recovery rolled back since the previous check: when the
    /// registry was opened, and (with repair) just now.
    pub recovered: Vec<String>,
    /// Whether repair was requested and performed.
    pub repaired: bool,
}

impl CheckReport {
    /// True when no problem remains: nothing missing or corrupt, and no
    /// orphans, stale temp files, dead operations or dead image builds unless
    /// they were just repaired. `recovered` does not count: recovery already fixed those.
    pub fn is_clean(&self) -> bool {
        self.missing_blobs.is_empty()
            && self.corrupt_blobs.is_empty()
            && (self.repaired
                || (self.orphan_blobs.is_empty()
                    && self.stale_temp_files.is_empty()
                    && self.dead_operations.is_empty()
                    && self.dead_image_builds.is_empty()))
    }
}

impl Registry {
    /// Compares the database with the blob store and re-hashes every blob a
    /// model or an image uses. With `repair`, first runs crash recovery
    /// again, then stores dead operations and dead image builds as failed
    /// (dereferencing the blobs of those images) and removes orphan blobs and
    /// stale temp files. Missing and corrupt blobs are only reported. Also
    /// reports (once) what recovery did at `open`.
    pub fn check(&self, repair: bool) -> Result<CheckReport> {
        let mut report = CheckReport {
            repaired: repair,
            ..CheckReport::default()
        };
        let mut recovered = std::mem::take(&mut *self.recovered());
        if repair {
            recovered.extend(recovery::recover(&mut self.conn(), &self.store)?);
        }
        report.recovered = recovered;

        let referenced: BTreeSet<String> = {
            let mut conn = self.conn();
            // Under the write lock so no registration or deletion moves files
            // while the listing is compared with the rows.
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let dead_images = images::vanished(&tx)?;
            if repair {
                // First, so that their blobs count as orphans below.
                for (id, _) in &dead_images {
                    images::mark_vanished(&tx, *id)?;
                }
            }
            report.dead_image_builds = dead_images.into_iter().map(|(_, r)| r).collect();
            let referenced: BTreeSet<String> = {
                let mut stmt = tx.prepare(
                    "SELECT sha256 FROM model_blobs UNION SELECT sha256 FROM image_blobs",
                )?;
                let rows = stmt.query_map([], |r| r.get(0))?;
                rows.collect::<rusqlite::Result<_>>()?
            };
            let now = now_secs();
            let live: Vec<_> = recovery::intents(&tx)?
                .into_iter()
                .filter(|i| i.alive(now))
                .collect();
            let live_shas: BTreeSet<&str> =
                live.iter().filter_map(|i| i.sha256.as_deref()).collect();
            let live_tmps: BTreeSet<&str> = live.iter().map(|i| i.tmp_path.as_str()).collect();
            let files: BTreeSet<String> = self.store.list()?.into_iter().collect();
            for f in &files {
                let used = is_valid_sha256(f) && referenced.contains(f);
                if !used && !live_shas.contains(f.as_str()) {
                    report.orphan_blobs.push(f.clone());
                }
            }
            report.missing_blobs = referenced.difference(&files).cloned().collect();
            for t in self.store.list_temp()? {
                if !live_tmps.contains(t.as_str()) {
                    report.stale_temp_files.push(t);
                }
            }
            report.dead_operations = operations::vanished(&tx)?;
            if repair {
                for id in &report.dead_operations {
                    operations::mark_vanished(&tx, id)?;
                }
                for f in &report.orphan_blobs {
                    self.store.remove(f)?;
                }
                for t in &report.stale_temp_files {
                    self.store.remove_temp(t)?;
                }
            }
            tx.commit()?;
            referenced
        };

        // Hashing can take long: done without holding the lock. A blob
        // deleted meanwhile reads as missing and is skipped.
        for sha in &referenced {
            if let Some(d) = self.store.hash(sha)? {
                if &d.sha256 != sha {
                    report.corrupt_blobs.push(sha.clone());
                }
            }
        }
        Ok(report)
    }
}

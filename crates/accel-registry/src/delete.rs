//! Deleting models and images, in dependency order.
//!
//! What depends on what: a model converted from another (its parent), an
//! image built from a model, a deployment running an image. Nothing is
//! deleted from under its dependents: deleting a model that is the parent of
//! other models or is used by an image, or an image used by a deployment, is
//! refused with a message naming the dependents, unless `force` asks to
//! delete them too (recursively: deployment records, then images, then
//! models). [`Registry::dependents_of_model`] and
//! [`Registry::dependents_of_image`] say up front what a forced delete
//! would take, so that the caller can stop the deployments first (the
//! registry only deletes their records).
//!
//! All rows go in one transaction. Blob files are removed after that commit,
//! each only when no remaining model or image and no in-flight write uses
//! it; a crash between the commit and the file removal leaves an orphan
//! blob, which `Registry::check(true)` (`accel check --repair`) removes.

use crate::deployments::{self, DeploymentRecord};
use crate::error::{RegistryError, Result};
use crate::images::{self, ImageRecord, BUILDING};
use crate::models::{load_by_id, resolve_id, ModelRecord};
use crate::recovery::{blob_referenced, pid_alive};
use crate::Registry;
use accel_core::name::{validate_name, NameRef};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// What depends on a model or an image, i.e. what a forced delete of it
/// would delete too ([`Registry::dependents_of_model`],
/// [`Registry::dependents_of_image`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Dependents {
    /// Models derived from it, recursively, as `name:version`, ordered by
    /// name and version.
    pub models: Vec<String>,
    /// Images built from it or from those models, as `name:version`,
    /// ordered by name and version.
    pub images: Vec<String>,
    /// Deployments running those images, ordered by name: stop them before
    /// a forced delete.
    pub deployments: Vec<DeploymentRecord>,
}

impl Dependents {
    /// True when nothing depends on it.
    pub fn is_empty(&self) -> bool {
        self.models.is_empty() && self.images.is_empty() && self.deployments.is_empty()
    }
}

/// What [`Registry::delete_model`] deleted, in the order it went:
/// deployment records, images, models; each list ordered by name (and
/// version).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Deleted {
    /// Deployment records deleted (what they ran was not stopped by the
    /// registry).
    pub deployments: Vec<DeploymentRecord>,
    /// Images deleted.
    pub images: Vec<ImageRecord>,
    /// Models deleted.
    pub models: Vec<ModelRecord>,
}

impl Deleted {
    /// One line per deleted thing, deployments first: `deployment NAME`,
    /// `image NAME:VERSION`, `model NAME:VERSION`.
    pub fn references(&self) -> Vec<String> {
        let deployments = self
            .deployments
            .iter()
            .map(|d| format!("deployment {}", d.name));
        let images = self
            .images
            .iter()
            .map(|i| format!("image {}", i.reference()));
        let models = self
            .models
            .iter()
            .map(|m| format!("model {}", m.reference()));
        deployments.chain(images).chain(models).collect()
    }
}

/// What goes with a set of targets.
#[derive(Debug, Default)]
struct Cascade {
    /// Models derived from the target models (not targets themselves).
    models: BTreeSet<i64>,
    /// Images built from the target or derived models (not targets
    /// themselves).
    images: BTreeSet<i64>,
    /// Deployments of the target or cascaded images.
    deployments: BTreeSet<i64>,
}

impl Cascade {
    fn is_empty(&self) -> bool {
        self.models.is_empty() && self.images.is_empty() && self.deployments.is_empty()
    }

    fn len(&self) -> usize {
        self.models.len() + self.images.len() + self.deployments.len()
    }
}

fn quoted(refs: &[String]) -> String {
    refs.iter()
        .map(|r| format!("\"{r}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `name:version` of model `id`.
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

/// The first part of the refusal message: which targets are parents of
/// which other models.
fn parents_part(
    conn: &Connection,
    targets: &BTreeSet<i64>,
    dependents: &BTreeSet<i64>,
) -> Result<String> {
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
    Ok(format!("{subject} {}{more}", quoted(&direct)))
}

/// `name:version` of image `id`.
fn image_reference(conn: &Connection, id: i64) -> Result<String> {
    Ok(conn.query_row(
        "SELECT name || ':' || version FROM images WHERE id = ?1",
        [id],
        |r| r.get(0),
    )?)
}

/// Row ids of the query's single column, bound to one parameter.
fn ids(conn: &Connection, sql: &str, param: &dyn rusqlite::ToSql) -> Result<BTreeSet<i64>> {
    let mut stmt = conn.prepare_cached(sql)?;
    let rows = stmt.query_map([param], |r| r.get(0))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// The models a delete targets: one version, or every version of the name.
fn model_targets(conn: &Connection, r: &NameRef) -> Result<BTreeSet<i64>> {
    validate_name(&r.name)?;
    if r.version.is_some() {
        return Ok(BTreeSet::from([resolve_id(conn, r)?]));
    }
    let targets = ids(conn, "SELECT id FROM models WHERE name = ?1", &r.name)?;
    if targets.is_empty() {
        return Err(RegistryError::NotFound(format!(
            "no model named \"{}\"",
            r.name
        )));
    }
    Ok(targets)
}

/// The images a delete targets: one version, or every version of the name.
fn image_targets(conn: &Connection, r: &NameRef) -> Result<BTreeSet<i64>> {
    validate_name(&r.name)?;
    if r.version.is_some() {
        return Ok(BTreeSet::from([images::resolve_id(conn, r)?]));
    }
    let targets = ids(conn, "SELECT id FROM images WHERE name = ?1", &r.name)?;
    if targets.is_empty() {
        return Err(RegistryError::NotFound(format!(
            "no image named \"{}\"",
            r.name
        )));
    }
    Ok(targets)
}

/// The deployments of image `id`.
fn deployments_of(conn: &Connection, image: i64) -> Result<BTreeSet<i64>> {
    ids(
        conn,
        "SELECT id FROM deployments WHERE image_id = ?1",
        &image,
    )
}

/// What deleting the target models takes with it.
fn model_cascade(conn: &Connection, targets: &BTreeSet<i64>) -> Result<Cascade> {
    let mut cascade = Cascade::default();
    let mut frontier: Vec<i64> = targets.iter().copied().collect();
    while let Some(id) = frontier.pop() {
        for child in children(conn, id)? {
            if !targets.contains(&child) && cascade.models.insert(child) {
                frontier.push(child);
            }
        }
    }
    for &model in targets.iter().chain(&cascade.models) {
        cascade.images.extend(ids(
            conn,
            "SELECT id FROM images WHERE model_id = ?1",
            &model,
        )?);
    }
    for &image in &cascade.images {
        cascade.deployments.extend(deployments_of(conn, image)?);
    }
    Ok(cascade)
}

/// What deleting the target images takes with it.
fn image_cascade(conn: &Connection, targets: &BTreeSet<i64>) -> Result<Cascade> {
    let mut cascade = Cascade::default();
    for &image in targets {
        cascade.deployments.extend(deployments_of(conn, image)?);
    }
    Ok(cascade)
}

/// `name:version` of each model or image id (`table`), ordered by name and
/// version.
fn sorted_refs(conn: &Connection, table: &str, ids: &BTreeSet<i64>) -> Result<Vec<String>> {
    let mut stmt =
        conn.prepare_cached(&format!("SELECT name, version FROM {table} WHERE id = ?1"))?;
    let mut refs: Vec<(String, u32)> = Vec::with_capacity(ids.len());
    for id in ids {
        refs.push(stmt.query_row([id], |r| Ok((r.get(0)?, r.get(1)?)))?);
    }
    refs.sort();
    Ok(refs.into_iter().map(|(n, v)| format!("{n}:{v}")).collect())
}

/// The deployment records with these ids, ordered by name.
fn deployment_records(conn: &Connection, ids: &BTreeSet<i64>) -> Result<Vec<DeploymentRecord>> {
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        out.extend(
            deployments::load(conn, "WHERE d.id = ?1", &[id])?
                .into_iter()
                .map(|(_, d)| d),
        );
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Names of deployments, quoted, ordered by name.
fn deployment_names(conn: &Connection, ids: &BTreeSet<i64>) -> Result<Vec<String>> {
    Ok(deployment_records(conn, ids)?
        .into_iter()
        .map(|d| d.name)
        .collect())
}

/// `"d"` → `deployment "d"`, several → `deployments "a", "b"`.
fn deployments_phrase(names: &[String]) -> String {
    let noun = if names.len() == 1 {
        "deployment"
    } else {
        "deployments"
    };
    format!("{noun} {}", quoted(names))
}

/// The images, each followed by the deployments that run it:
/// `image "a:1" (deployment "svc")`, `images "a:1", "b:1" (deployments "x", "y")`.
fn images_phrase(conn: &Connection, images: &BTreeSet<i64>) -> Result<String> {
    let mut entries: Vec<((String, u32), String)> = Vec::new();
    for &id in images {
        let (name, version): (String, u32) = conn.query_row(
            "SELECT name, version FROM images WHERE id = ?1",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let mut entry = format!("\"{name}:{version}\"");
        let deps = deployment_names(conn, &deployments_of(conn, id)?)?;
        if !deps.is_empty() {
            entry.push_str(&format!(" ({})", deployments_phrase(&deps)));
        }
        entries.push(((name, version), entry));
    }
    entries.sort();
    let noun = if entries.len() == 1 {
        "image"
    } else {
        "images"
    };
    let list: Vec<String> = entries.into_iter().map(|(_, e)| e).collect();
    Ok(format!("{noun} {}", list.join(", ")))
}

/// The action that ends a refusal: `both` for one target and one dependent.
fn force_hint(targets: usize, dependents: usize) -> &'static str {
    if targets == 1 && dependents == 1 {
        "use --force to delete both"
    } else {
        "use --force to delete them too"
    }
}

/// The refusal to delete models that others depend on, naming the derived
/// models, the images (and their deployments).
fn model_refusal(
    conn: &Connection,
    targets: &BTreeSet<i64>,
    cascade: &Cascade,
) -> Result<RegistryError> {
    let mut parts = Vec::new();
    if !cascade.models.is_empty() {
        parts.push(parents_part(conn, targets, &cascade.models)?);
    }
    if !cascade.images.is_empty() {
        let images = images_phrase(conn, &cascade.images)?;
        if cascade.models.is_empty() {
            // Every image is built from a target: name those targets.
            let mut used = BTreeSet::new();
            for &image in &cascade.images {
                used.insert(conn.query_row(
                    "SELECT model_id FROM images WHERE id = ?1",
                    [image],
                    |r| r.get::<_, i64>(0),
                )?);
            }
            let used = sorted_refs(conn, "models", &used)?;
            let subject = if used.len() == 1 {
                format!("model {} is used by", quoted(&used))
            } else {
                format!("models {} are used by", quoted(&used))
            };
            parts.push(format!("{subject} {images}"));
        } else {
            parts.push(format!("these models are used by {images}"));
        }
    }
    Ok(RegistryError::FailedPrecondition(format!(
        "{}; {}",
        parts.join("; "),
        force_hint(targets.len(), cascade.len())
    )))
}

/// The refusal to delete images that deployments use, or that a live
/// process is still building; `None` when there is no reason to refuse.
fn image_refusal(
    conn: &Connection,
    targets: &BTreeSet<i64>,
    cascade: &Cascade,
) -> Result<Option<RegistryError>> {
    if !cascade.deployments.is_empty() {
        let mut used = BTreeSet::new();
        for &image in targets {
            if !deployments_of(conn, image)?.is_empty() {
                used.insert(image);
            }
        }
        let used = sorted_refs(conn, "images", &used)?;
        let subject = if used.len() == 1 {
            format!("image {} is used by", quoted(&used))
        } else {
            format!("images {} are used by", quoted(&used))
        };
        let deps = deployment_names(conn, &cascade.deployments)?;
        return Ok(Some(RegistryError::FailedPrecondition(format!(
            "{subject} {}; {}",
            deployments_phrase(&deps),
            force_hint(targets.len(), cascade.len())
        ))));
    }
    for &image in targets {
        let (state, pid): (String, i64) = conn.query_row(
            "SELECT state, pid FROM images WHERE id = ?1",
            [image],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        if state == BUILDING && pid_alive(pid) {
            return Ok(Some(RegistryError::FailedPrecondition(format!(
                "image \"{}\" is being built by process {pid}; use --force to delete it anyway",
                image_reference(conn, image)?
            ))));
        }
    }
    Ok(None)
}

/// The dependents as reported by `dependents_of_*`.
fn dependents(conn: &Connection, cascade: &Cascade) -> Result<Dependents> {
    Ok(Dependents {
        models: sorted_refs(conn, "models", &cascade.models)?,
        images: sorted_refs(conn, "images", &cascade.images)?,
        deployments: deployment_records(conn, &cascade.deployments)?,
    })
}

/// Deletes the rows of these deployments, images and models (in that
/// order, inside the caller's write transaction); returns their records and
/// the hashes of the blobs they used.
fn delete_rows(
    conn: &Connection,
    models: &BTreeSet<i64>,
    images: &BTreeSet<i64>,
    deployments: &BTreeSet<i64>,
) -> Result<(Deleted, BTreeSet<String>)> {
    let mut deleted = Deleted {
        deployments: deployment_records(conn, deployments)?,
        ..Deleted::default()
    };
    let mut shas = BTreeSet::new();
    for &id in images {
        deleted.images.push(images::load_by_id(conn, id)?);
        shas.extend(ids_text(
            conn,
            "SELECT sha256 FROM image_blobs WHERE image_id = ?1",
            id,
        )?);
    }
    for &id in models {
        deleted.models.push(load_by_id(conn, id)?);
        shas.extend(ids_text(
            conn,
            "SELECT sha256 FROM model_blobs WHERE model_id = ?1",
            id,
        )?);
    }
    for &id in deployments {
        conn.execute("DELETE FROM deployments WHERE id = ?1", [id])?;
    }
    for &id in images {
        conn.execute("DELETE FROM images WHERE id = ?1", [id])?;
    }
    // A dependent is always registered after its parent, so deleting in
    // descending id order never leaves a dangling parent reference.
    for &id in models.iter().rev() {
        conn.execute("DELETE FROM models WHERE id = ?1", [id])?;
    }
    deleted
        .images
        .sort_by(|a, b| (&a.name, a.version).cmp(&(&b.name, b.version)));
    deleted
        .models
        .sort_by(|a, b| (&a.name, a.version).cmp(&(&b.name, b.version)));
    Ok((deleted, shas))
}

/// The text column of the query, bound to one row id.
fn ids_text(conn: &Connection, sql: &str, id: i64) -> Result<BTreeSet<String>> {
    let mut stmt = conn.prepare_cached(sql)?;
    let rows = stmt.query_map([id], |r| r.get(0))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

impl Registry {
    /// Deletes `name:version`, or every version of `name` when the reference
    /// has no version. Refused (FailedPrecondition, naming the dependents)
    /// when other models have a deleted model as parent or images are built
    /// from one (the message names the images' deployments too), unless
    /// `force`, which deletes those too, recursively: the records of the
    /// deployments (stopping what they run is the caller's job, first: see
    /// [`Registry::dependents_of_model`]), the images, the derived models.
    /// Returns everything deleted.
    ///
    /// Rows are deleted in one transaction; blob files are removed after it
    /// commits, each only if nothing uses it any more. A crash in between
    /// leaves orphan blobs that `check(true)` removes.
    pub fn delete_model(&self, r: &NameRef, force: bool) -> Result<Deleted> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let targets = model_targets(&tx, r)?;
        let cascade = model_cascade(&tx, &targets)?;
        if !cascade.is_empty() && !force {
            return Err(model_refusal(&tx, &targets, &cascade)?);
        }
        let models: BTreeSet<i64> = targets.union(&cascade.models).copied().collect();
        let (deleted, shas) = delete_rows(&tx, &models, &cascade.images, &cascade.deployments)?;
        tx.commit()?;
        self.remove_unused_blobs(&mut conn, &shas)?;
        Ok(deleted)
    }

    /// Deletes image `name:version`, or every version of `name` when the
    /// reference has no version. Refused (FailedPrecondition, naming them)
    /// when deployments use it, or while a live process is still building
    /// it, unless `force`, which deletes the deployment records too
    /// (stopping what they run is the caller's job, first: see
    /// [`Registry::dependents_of_image`]). Returns what was deleted, as
    /// [`Deleted::references`] words it: `deployment NAME` lines first, then
    /// `image NAME:VERSION`. Blob files go as with [`Registry::delete_model`].
    pub fn delete_image(&self, r: &NameRef, force: bool) -> Result<Vec<String>> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let targets = image_targets(&tx, r)?;
        let cascade = image_cascade(&tx, &targets)?;
        if !force {
            if let Some(refusal) = image_refusal(&tx, &targets, &cascade)? {
                return Err(refusal);
            }
        }
        let (deleted, shas) = delete_rows(&tx, &BTreeSet::new(), &targets, &cascade.deployments)?;
        tx.commit()?;
        self.remove_unused_blobs(&mut conn, &shas)?;
        Ok(deleted.references())
    }

    /// What [`Registry::delete_model`] with `force` would delete besides the
    /// model(s) `r` names (a reference without version means every version,
    /// as there): derived models, images built from them, deployments of
    /// those images. NotFound like `delete_model`.
    pub fn dependents_of_model(&self, r: &NameRef) -> Result<Dependents> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let targets = model_targets(&tx, r)?;
        dependents(&tx, &model_cascade(&tx, &targets)?)
    }

    /// What [`Registry::delete_image`] with `force` would delete besides the
    /// image(s) `r` names (a reference without version means every version):
    /// the deployments using them. NotFound like `delete_image`.
    pub fn dependents_of_image(&self, r: &NameRef) -> Result<Dependents> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let targets = image_targets(&tx, r)?;
        dependents(&tx, &image_cascade(&tx, &targets)?)
    }

    /// Removes the blob files among `shas` that no model, no image and no
    /// write in progress uses any more, under the write lock so that no
    /// write can start relying on one meanwhile.
    pub(crate) fn remove_unused_blobs(
        &self,
        conn: &mut Connection,
        shas: &BTreeSet<String>,
    ) -> Result<()> {
        if shas.is_empty() {
            return Ok(());
        }
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        for sha in shas {
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
        Ok(())
    }
}

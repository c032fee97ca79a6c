//! Image records: OCI images built from a model (`accel images`).
//!
//! An image is one row of `images` (name, version, the model it packages,
//! its state, the manifest digest once built, the build log) plus its rows in
//! `image_tags`, `image_blobs` (the manifest, config, layers and indexes, by
//! sha256) and `image_locations` (where it was pushed). Its blobs live in the
//! same content-addressed store as model blobs, so a layer shared by two
//! images, or a blob equal to a model file, is stored once; a blob file is
//! removed only when no model and no image refers to it any more.
//!
//! # Building
//!
//! [`Registry::begin_image`] assigns the version and records the image as
//! `building`, with the pid of the calling process as its builder. The
//! builder adds blobs with [`Registry::put_image_blob`] /
//! [`Registry::put_image_blob_file`], each written crash-safely like a model
//! file (write intent, temp file, rename; see `register.rs`) and referenced
//! from the image in the same transaction that retires the intent, so a crash
//! never leaves a blob that nothing accounts for. [`Registry::finish_image`]
//! ends the build: succeeded (the manifest blob must be there) or failed (its
//! blobs are dereferenced and removed when nothing else uses them).
//!
//! # Builds whose process vanished
//!
//! Like an operation (see `operations.rs`), a `building` row whose builder
//! pid is no longer alive *reads* as `failed`, its build log saying
//! [`BUILD_VANISHED`]; reads never write. [`Registry::check`] reports such
//! images and `check(true)` stores that outcome and dereferences their blobs.

use crate::blobs::is_valid_sha256;
use crate::error::{RegistryError, Result};
use crate::models;
use crate::recovery::pid_alive;
use crate::register::now_rfc3339;
use crate::validate;
use crate::Registry;
use accel_core::name::{validate_name, NameRef};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::Read;
use std::path::Path;

/// The build log line of an image whose builder ended without finishing it.
pub(crate) const BUILD_VANISHED: &str = "the build process ended without finishing";

/// The blob roles the schema allows.
const ROLES: &[&str] = &["manifest", "config", "layer", "index"];

/// Stored states.
pub(crate) const BUILDING: &str = "building";
pub(crate) const SUCCEEDED: &str = "succeeded";
pub(crate) const FAILED: &str = "failed";

/// Longest stored build log, in bytes (longer ones are cut).
const MAX_BUILD_LOG_LEN: usize = 1 << 20;
/// Longest media type, in bytes (RFC 6838 allows 127 + 1 + 127).
const MAX_MEDIA_TYPE_LEN: usize = 255;
/// Longest pushed reference, in bytes.
const MAX_REFERENCE_LEN: usize = 1024;

/// What [`Registry::begin_image`] needs to start building an image.
#[derive(Debug, Clone)]
pub struct NewImage {
    /// The image's name (same rules as model names). The version is
    /// assigned: one more than the highest existing version of this name.
    pub name: String,
    /// The model it packages; must exist. Without a version: the latest.
    pub model: NameRef,
    /// Free text, at most 4096 bytes; newlines and tabs allowed.
    pub description: String,
    /// Key/value tags (same rules as model tags).
    pub tags: BTreeMap<String, String>,
}

/// An image, as read (see the module docs for how a build whose process
/// vanished reads).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// The image's name.
    pub name: String,
    /// Its version, from 1.
    pub version: u32,
    /// The model it packages, as `name:version`.
    pub model: String,
    /// `building`, `succeeded` or `failed`.
    pub state: String,
    /// Free text.
    pub description: String,
    /// Key/value tags.
    pub tags: BTreeMap<String, String>,
    /// When the build began, RFC 3339 UTC with second precision.
    pub created: String,
    /// When the build ended; `None` while building, and for a build whose
    /// process ended without finishing it.
    pub finished: Option<String>,
    /// The manifest's digest, `sha256:<hex>`, once succeeded.
    pub manifest_digest: Option<String>,
    /// Total size of its distinct blobs, in bytes.
    pub size: u64,
    /// What the build said; for a failed build it ends with the error.
    pub build_log: String,
    /// Its blobs, in the order they were added.
    pub blobs: Vec<ImageBlob>,
    /// Where it was pushed, oldest push first.
    pub locations: Vec<ImageLocation>,
}

impl ImageRecord {
    /// `name:version`.
    pub fn reference(&self) -> String {
        format!("{}:{}", self.name, self.version)
    }
}

/// One blob of an image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageBlob {
    /// Lower-case hex sha256 (its name in the blob store; the OCI digest is
    /// `sha256:` followed by this).
    pub sha256: String,
    /// Its OCI media type.
    pub media_type: String,
    /// `manifest`, `config`, `layer` or `index`.
    pub role: String,
    /// Its length in bytes.
    pub size: u64,
}

/// One push of an image to a registry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageLocation {
    /// Where it was pushed, e.g. `registry.example:5000/team/resnet:1`.
    pub reference: String,
    /// The manifest digest the registry reported.
    pub digest: String,
    /// When, RFC 3339 UTC.
    pub pushed: String,
}

/// Columns read by [`load`], in order.
const SELECT: &str = "SELECT i.id, i.name, i.version, m.name || ':' || m.version, i.state, \
     i.description, i.created, i.finished, i.manifest_digest, i.size, i.build_log, i.pid \
     FROM images i JOIN models m ON m.id = i.model_id";

/// An image row before its lists are filled and liveness is applied.
struct Row {
    id: i64,
    name: String,
    version: u32,
    model: String,
    state: String,
    description: String,
    created: String,
    finished: Option<String>,
    manifest_digest: Option<String>,
    size: i64,
    build_log: String,
    pid: i64,
}

/// Loads the images matching `where_sql` (appended to the select; may
/// reference `i.` and `m.`), with their tags, blobs and locations.
pub(crate) fn load(
    conn: &Connection,
    where_sql: &str,
    args: &[&dyn rusqlite::ToSql],
) -> Result<Vec<(i64, ImageRecord)>> {
    let sql = format!("{SELECT} {where_sql}");
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt.query_map(args, |r| {
        Ok(Row {
            id: r.get(0)?,
            name: r.get(1)?,
            version: r.get(2)?,
            model: r.get(3)?,
            state: r.get(4)?,
            description: r.get(5)?,
            created: r.get(6)?,
            finished: r.get(7)?,
            manifest_digest: r.get(8)?,
            size: r.get(9)?,
            build_log: r.get(10)?,
            pid: r.get(11)?,
        })
    })?;
    let rows: Vec<Row> = rows.collect::<rusqlite::Result<_>>()?;
    rows.into_iter().map(|row| finish_row(conn, row)).collect()
}

fn finish_row(conn: &Connection, row: Row) -> Result<(i64, ImageRecord)> {
    let tags = {
        let mut stmt =
            conn.prepare_cached("SELECT key, value FROM image_tags WHERE image_id = ?1")?;
        let rows = stmt.query_map([row.id], |r| Ok((r.get(0)?, r.get(1)?)))?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    let blobs = {
        let mut stmt = conn.prepare_cached(
            "SELECT sha256, media_type, role, size FROM image_blobs WHERE image_id = ?1 ORDER BY rowid",
        )?;
        let rows = stmt.query_map([row.id], |r| {
            Ok(ImageBlob {
                sha256: r.get(0)?,
                media_type: r.get(1)?,
                role: r.get(2)?,
                size: u64::try_from(r.get::<_, i64>(3)?).unwrap_or(0),
            })
        })?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    let locations = {
        let mut stmt = conn.prepare_cached(
            "SELECT reference, digest, pushed FROM image_locations WHERE image_id = ?1
             ORDER BY pushed, rowid",
        )?;
        let rows = stmt.query_map([row.id], |r| {
            Ok(ImageLocation {
                reference: r.get(0)?,
                digest: r.get(1)?,
                pushed: r.get(2)?,
            })
        })?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    let (state, build_log) = if row.state == BUILDING && !pid_alive(row.pid) {
        (
            FAILED.to_string(),
            with_line(&row.build_log, BUILD_VANISHED),
        )
    } else {
        (row.state, row.build_log)
    };
    let record = ImageRecord {
        name: row.name,
        version: row.version,
        model: row.model,
        state,
        description: row.description,
        tags,
        created: row.created,
        finished: row.finished,
        manifest_digest: row.manifest_digest,
        size: u64::try_from(row.size).unwrap_or(0),
        build_log,
        blobs,
        locations,
    };
    Ok((row.id, record))
}

/// `log` with `line` appended on a line of its own.
fn with_line(log: &str, line: &str) -> String {
    if log.is_empty() {
        line.to_string()
    } else if log.ends_with('\n') {
        format!("{log}{line}")
    } else {
        format!("{log}\n{line}")
    }
}

/// The row id a reference points at, or NotFound naming what is missing:
/// `no image named "foo"` or `image "foo" has no version 7 (latest is 3)`.
pub(crate) fn resolve_id(conn: &Connection, r: &NameRef) -> Result<i64> {
    validate_name(&r.name)?;
    let latest: Option<(i64, u32)> = conn
        .query_row(
            "SELECT id, version FROM images WHERE name = ?1 ORDER BY version DESC LIMIT 1",
            [&r.name],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .optional()?;
    let Some((latest_id, latest_version)) = latest else {
        return Err(RegistryError::NotFound(format!(
            "no image named \"{}\"",
            r.name
        )));
    };
    let Some(v) = r.version else {
        return Ok(latest_id);
    };
    conn.query_row(
        "SELECT id FROM images WHERE name = ?1 AND version = ?2",
        params![r.name, v],
        |row| row.get(0),
    )
    .optional()?
    .ok_or_else(|| {
        RegistryError::NotFound(format!(
            "image \"{}\" has no version {v} (latest is {latest_version})",
            r.name
        ))
    })
}

/// The record with this row id.
pub(crate) fn load_by_id(conn: &Connection, id: i64) -> Result<ImageRecord> {
    load(conn, "WHERE i.id = ?1", &[&id])?
        .pop()
        .map(|(_, rec)| rec)
        .ok_or_else(|| RegistryError::NotFound(format!("no image with row id {id}")))
}

/// The stored row id, state and builder pid of the image a record names,
/// for the writers. NotFound when it was deleted meanwhile.
fn stored(conn: &Connection, image: &ImageRecord) -> Result<(i64, String, i64)> {
    conn.query_row(
        "SELECT id, state, pid FROM images WHERE name = ?1 AND version = ?2",
        params![image.name, image.version],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )
    .optional()?
    .ok_or_else(|| {
        RegistryError::NotFound(format!("image \"{}\" does not exist", image.reference()))
    })
}

/// Like [`stored`], and refuses (FailedPrecondition) unless the stored state
/// is building; `doing` says what was refused.
fn stored_building(conn: &Connection, image: &ImageRecord, doing: &str) -> Result<i64> {
    let (id, state, _) = stored(conn, image)?;
    if state != BUILDING {
        return Err(RegistryError::FailedPrecondition(format!(
            "cannot {doing} image \"{}\": its build already ended ({state})",
            image.reference()
        )));
    }
    Ok(id)
}

/// How a state reads in a refusal: `image "x:1" is still building`.
pub(crate) fn state_phrase(state: &str) -> String {
    match state {
        BUILDING => "is still building".into(),
        FAILED => "failed to build".into(),
        other => format!("is {other}"),
    }
}

/// Recomputes the stored size of an image: the sum over its distinct blobs.
fn update_size(conn: &Connection, id: i64) -> Result<()> {
    conn.execute(
        "UPDATE images SET size = (SELECT COALESCE(SUM(size), 0) FROM
             (SELECT DISTINCT sha256, size FROM image_blobs WHERE image_id = ?1))
         WHERE id = ?1",
        [id],
    )?;
    Ok(())
}

/// Removes an image's blob rows (the files are the caller's business);
/// returns their hashes.
fn dereference_blobs(conn: &Connection, id: i64) -> Result<BTreeSet<String>> {
    let shas: BTreeSet<String> = {
        let mut stmt = conn.prepare("SELECT sha256 FROM image_blobs WHERE image_id = ?1")?;
        let rows = stmt.query_map([id], |r| r.get(0))?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    conn.execute("DELETE FROM image_blobs WHERE image_id = ?1", [id])?;
    update_size(conn, id)?;
    Ok(shas)
}

/// The images stored as building whose builder is gone (for `check`), as
/// `(row id, name:version)`, oldest first.
pub(crate) fn vanished(conn: &Connection) -> Result<Vec<(i64, String)>> {
    let mut stmt = conn.prepare(
        "SELECT id, name || ':' || version, pid FROM images WHERE state = 'building' ORDER BY id",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, i64>(2)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (id, reference, pid) = row?;
        if !pid_alive(pid) {
            out.push((id, reference));
        }
    }
    Ok(out)
}

/// Stores the failure of a building image whose builder is gone (for
/// `check(true)`) and drops its blob rows; `finished` stays unknown. Returns
/// the hashes it referred to.
pub(crate) fn mark_vanished(conn: &Connection, id: i64) -> Result<BTreeSet<String>> {
    let shas = dereference_blobs(conn, id)?;
    let log: String = conn.query_row("SELECT build_log FROM images WHERE id = ?1", [id], |r| {
        r.get(0)
    })?;
    conn.execute(
        "UPDATE images SET state = 'failed', build_log = ?1 WHERE id = ?2 AND state = 'building'",
        params![with_line(&log, BUILD_VANISHED), id],
    )?;
    Ok(shas)
}

fn check_role(role: &str) -> Result<()> {
    if !ROLES.contains(&role) {
        return Err(RegistryError::InvalidArgument(format!(
            "unknown image blob role {role:?} (known: {})",
            ROLES.join(", ")
        )));
    }
    Ok(())
}

impl Registry {
    /// Records a new version of `new.name` as `building`, built by the
    /// calling process from `new.model` (NotFound naming the model when it
    /// does not exist). Versions start at 1 and are unique per name.
    pub fn begin_image(&self, new: &NewImage) -> Result<ImageRecord> {
        validate_name(&new.name)?;
        validate::description(&new.description)?;
        validate::key_values("tag", &new.tags, validate::MAX_TAG_VALUE_LEN)?;
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let model_id = models::resolve_id(&tx, &new.model)?;
        let version: u32 = tx.query_row(
            "SELECT COALESCE(MAX(version), 0) + 1 FROM images WHERE name = ?1",
            [&new.name],
            |r| r.get(0),
        )?;
        tx.execute(
            "INSERT INTO images (name, version, model_id, state, description, created, pid)
             VALUES (?1, ?2, ?3, 'building', ?4, ?5, ?6)",
            params![
                new.name,
                version,
                model_id,
                new.description,
                now_rfc3339(),
                i64::from(std::process::id())
            ],
        )?;
        let id = tx.last_insert_rowid();
        {
            let mut stmt =
                tx.prepare("INSERT INTO image_tags (image_id, key, value) VALUES (?1, ?2, ?3)")?;
            for (k, v) in &new.tags {
                stmt.execute(params![id, k, v])?;
            }
        }
        let record = load_by_id(&tx, id)?;
        tx.commit()?;
        Ok(record)
    }

    /// Stores `bytes` as a blob of the building `image` with its OCI media
    /// type and role (`manifest`, `config`, `layer` or `index`); returns its
    /// sha256 (lower-case hex). Crash-safe like a model file, and referenced
    /// from the image as soon as it returns. Putting the same content with
    /// the same role again changes nothing. FailedPrecondition once the
    /// build ended; NotFound when the image was deleted.
    pub fn put_image_blob(
        &self,
        image: &ImageRecord,
        bytes: &[u8],
        media_type: &str,
        role: &str,
    ) -> Result<String> {
        let desc = format!("{role} blob of image \"{}\"", image.reference());
        self.put_image_source(image, &mut &bytes[..], &desc, media_type, role)
    }

    /// Like [`Registry::put_image_blob`], streaming the content of the file
    /// at `path` (for big layers).
    pub fn put_image_blob_file(
        &self,
        image: &ImageRecord,
        path: &Path,
        media_type: &str,
        role: &str,
    ) -> Result<String> {
        let desc = format!("{}", path.display());
        let unreadable =
            |e: std::io::Error| RegistryError::InvalidArgument(format!("cannot read {desc}: {e}"));
        let meta = fs::metadata(path).map_err(unreadable)?;
        if !meta.is_file() {
            return Err(RegistryError::InvalidArgument(format!(
                "{desc} is not a regular file"
            )));
        }
        let mut file = File::open(path).map_err(unreadable)?;
        self.put_image_source(image, &mut file, &desc, media_type, role)
    }

    fn put_image_source(
        &self,
        image: &ImageRecord,
        src: &mut dyn Read,
        desc: &str,
        media_type: &str,
        role: &str,
    ) -> Result<String> {
        check_role(role)?;
        validate::word("media type", media_type, MAX_MEDIA_TYPE_LEN)?;
        // Fail before writing anything when the build already ended.
        stored_building(&self.conn(), image, "add a blob to")?;
        let mut intents = Vec::new();
        let result = (|| -> Result<String> {
            let d = self.store_blob(src, desc, false, &mut intents)?;
            let mut conn = self.conn();
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let id = stored_building(&tx, image, "add a blob to")?;
            if !self.store.path(&d.sha256).is_file() {
                return Err(RegistryError::DataLoss(format!(
                    "blob {} vanished before it was added to image \"{}\"",
                    d.sha256,
                    image.reference()
                )));
            }
            tx.execute(
                "INSERT INTO image_blobs (image_id, sha256, media_type, role, size)
                 VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (image_id, sha256, role) DO NOTHING",
                params![
                    id,
                    d.sha256,
                    media_type,
                    role,
                    i64::try_from(d.size).unwrap_or(i64::MAX)
                ],
            )?;
            update_size(&tx, id)?;
            for intent in intents.iter() {
                tx.execute("DELETE FROM pending WHERE id = ?1", [intent])?;
            }
            tx.commit()?;
            intents.clear();
            Ok(d.sha256)
        })();
        if result.is_err() && !intents.is_empty() {
            self.abandon(&intents);
        }
        result
    }

    /// Ends the build of `image`. `Ok(digest)` (`sha256:<hex>` of a blob put
    /// with role `manifest`, else FailedPrecondition) makes it succeeded;
    /// `Err(message)` makes it failed, appends `build failed: <message>` to
    /// the log and dereferences its blobs (their files go when nothing else
    /// uses them). The log is cleaned of control characters and cut at
    /// 1 MiB. Returns the finished record. FailedPrecondition when the build
    /// already ended (finishing twice, or after `check(true)` marked it
    /// failed); NotFound when the image was deleted.
    pub fn finish_image(
        &self,
        image: &ImageRecord,
        outcome: std::result::Result<String, String>,
        build_log: &str,
    ) -> Result<ImageRecord> {
        match outcome {
            Ok(digest) => {
                let hex = digest
                    .strip_prefix("sha256:")
                    .filter(|h| is_valid_sha256(h))
                    .ok_or_else(|| {
                        RegistryError::InvalidArgument(format!(
                            "manifest digest {digest:?} is not \"sha256:\" and 64 lower-case hex digits"
                        ))
                    })?;
                let log = validate::clean_text(build_log, MAX_BUILD_LOG_LEN);
                let mut conn = self.conn();
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let id = stored_building(&tx, image, "finish")?;
                let has_manifest = tx
                    .query_row(
                        "SELECT 1 FROM image_blobs WHERE image_id = ?1 AND sha256 = ?2
                         AND role = 'manifest'",
                        params![id, hex],
                        |_| Ok(()),
                    )
                    .optional()?
                    .is_some();
                if !has_manifest {
                    return Err(RegistryError::FailedPrecondition(format!(
                        "image \"{}\" has no manifest blob {digest}; put the manifest (role \"manifest\") first",
                        image.reference()
                    )));
                }
                let shas: Vec<String> = {
                    let mut stmt =
                        tx.prepare("SELECT DISTINCT sha256 FROM image_blobs WHERE image_id = ?1")?;
                    let rows = stmt.query_map([id], |r| r.get(0))?;
                    rows.collect::<rusqlite::Result<_>>()?
                };
                for sha in &shas {
                    if !self.store.path(sha).is_file() {
                        return Err(RegistryError::DataLoss(format!(
                            "blob {sha} of image \"{}\" is missing ({})",
                            image.reference(),
                            self.store.path(sha).display()
                        )));
                    }
                }
                update_size(&tx, id)?;
                tx.execute(
                    "UPDATE images SET state = 'succeeded', finished = ?1, manifest_digest = ?2,
                     build_log = ?3 WHERE id = ?4",
                    params![now_rfc3339(), digest, log, id],
                )?;
                let record = load_by_id(&tx, id)?;
                tx.commit()?;
                Ok(record)
            }
            Err(error) => {
                let log = with_line(build_log, &format!("build failed: {error}"));
                let log = validate::clean_text(&log, MAX_BUILD_LOG_LEN);
                let mut conn = self.conn();
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let id = stored_building(&tx, image, "finish")?;
                let shas = dereference_blobs(&tx, id)?;
                tx.execute(
                    "UPDATE images SET state = 'failed', finished = ?1, build_log = ?2
                     WHERE id = ?3",
                    params![now_rfc3339(), log, id],
                )?;
                let record = load_by_id(&tx, id)?;
                tx.commit()?;
                self.remove_unused_blobs(&mut conn, &shas)?;
                Ok(record)
            }
        }
    }

    /// The image a reference names; a reference without version means the
    /// highest version. NotFound names what is missing.
    pub fn get_image(&self, r: &NameRef) -> Result<ImageRecord> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let id = resolve_id(&tx, r)?;
        load_by_id(&tx, id)
    }

    /// All images, or all versions of `name`, ordered by name, then version.
    pub fn list_images(&self, name: Option<&str>) -> Result<Vec<ImageRecord>> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let rows = match name {
            Some(n) => {
                validate_name(n)?;
                load(&tx, "WHERE i.name = ?1 ORDER BY i.name, i.version", &[&n])?
            }
            None => load(&tx, "ORDER BY i.name, i.version", &[])?,
        };
        Ok(rows.into_iter().map(|(_, r)| r).collect())
    }

    /// Records that the succeeded `image` was pushed to `reference` (e.g.
    /// `registry.example/team/resnet:1`), where the registry reported the
    /// manifest `digest` (`algorithm:hex`). Pushing to the same reference
    /// again replaces that entry. FailedPrecondition unless the image
    /// succeeded; NotFound when it was deleted.
    pub fn add_image_location(
        &self,
        image: &ImageRecord,
        reference: &str,
        digest: &str,
    ) -> Result<()> {
        validate::word("image reference", reference, MAX_REFERENCE_LEN)?;
        validate::oci_digest("digest", digest)?;
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let (id, state, _) = stored(&tx, image)?;
        if state != SUCCEEDED {
            return Err(RegistryError::FailedPrecondition(format!(
                "image \"{}\" {}; only a succeeded image can be pushed",
                image.reference(),
                state_phrase(&state)
            )));
        }
        tx.execute(
            "INSERT INTO image_locations (image_id, reference, digest, pushed)
             VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (image_id, reference) DO UPDATE SET
                 digest = excluded.digest, pushed = excluded.pushed",
            params![id, reference, digest, now_rfc3339()],
        )?;
        tx.commit()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_appended_on_their_own_line() {
        assert_eq!(with_line("", "x"), "x");
        assert_eq!(with_line("a", "x"), "a\nx");
        assert_eq!(with_line("a\n", "x"), "a\nx");
    }

    #[test]
    fn roles_are_checked() {
        for role in ROLES {
            check_role(role).unwrap();
        }
        let err = check_role("Layer").unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown image blob role \"Layer\" (known: manifest, config, layer, index)"
        );
    }
}

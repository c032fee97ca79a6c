//! Model records: the public types and the queries that read them.
//!
//! A model is one row of `models` (name, version, format, the model blob's
//! hash and size, the pipeline spec as JSON, an optional parent) plus its
//! rows in `model_tags`, `model_properties`, `model_blobs` and (at most one)
//! `model_reports`. Writing lives in `register.rs` and `delete.rs`; this
//! module turns rows back into [`ModelRecord`]s and resolves
//! `name[:version]` references.

use crate::error::{RegistryError, Result};
use crate::Registry;
use accel_core::name::{validate_name, NameRef};
use accel_core::spec::PipelineSpec;
use rusqlite::{Connection, OptionalExtension};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// What [`Registry::register_model`] needs to register a model.
#[derive(Debug, Clone)]
pub struct NewModel {
    /// The model's name (see `accel_core::name::validate_name`). The version
    /// is assigned: one more than the highest existing version of this name.
    pub name: String,
    /// The model file, copied (streamed and hashed) into the blob store.
    pub model_file: PathBuf,
    /// Free text, at most 4096 bytes; newlines and tabs allowed.
    pub description: String,
    /// Searchable key/value tags (keys 1..=128 bytes without `=`, values at
    /// most 1024 bytes; no control characters).
    pub tags: BTreeMap<String, String>,
    /// Descriptive key/value properties (values up to 4096 bytes).
    pub properties: BTreeMap<String, String>,
    /// The file format: `onnx` now, `accel-plan` later.
    pub format: String,
    /// The model this one was converted from; must exist. A reference
    /// without version means its latest version at registration time.
    pub parent: Option<NameRef>,
    /// The pipeline, stored as JSON. Its `labels` field is replaced when
    /// `labels` is given; otherwise, if set, it must name a labels blob
    /// already in the registry (e.g. copied from the parent's spec).
    pub spec: PipelineSpec,
    /// Class labels, stored as a blob (one per line); the stored
    /// `spec.labels` becomes `LabelsRef { sha256, count }`.
    pub labels: Option<Vec<String>>,
    /// A report to keep with the model (e.g. what `accel convert` measured
    /// and chose): a JSON object of at most 1 MiB serialized, stored in the
    /// same transaction as the model and deleted with it.
    pub report: Option<serde_json::Value>,
}

/// A registered model, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelRecord {
    /// The model's name.
    pub name: String,
    /// Its version, from 1.
    pub version: u32,
    /// Free text.
    pub description: String,
    /// Searchable key/value tags.
    pub tags: BTreeMap<String, String>,
    /// Descriptive key/value properties.
    pub properties: BTreeMap<String, String>,
    /// File format, e.g. `onnx`.
    pub format: String,
    /// sha256 of the model file (its blob name).
    pub sha256: String,
    /// Size of the model file in bytes.
    pub size: u64,
    /// When it was registered, RFC 3339 UTC with second precision.
    pub created: String,
    /// The model it was converted from, as `name:version`.
    pub parent: Option<String>,
    /// The pipeline, with `labels` pointing at the labels blob if any.
    pub spec: PipelineSpec,
    /// The report registered with the model (a JSON object), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<serde_json::Value>,
}

impl ModelRecord {
    /// `name:version`.
    pub fn reference(&self) -> String {
        format!("{}:{}", self.name, self.version)
    }
}

/// Which models [`Registry::list_models`] returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModelFilter {
    /// Only versions of this exact name.
    pub name: Option<String>,
    /// Each entry must match: `(key, Some(value))` means the tag `key` has
    /// exactly `value`; `(key, None)` means the tag `key` is present.
    pub tags: Vec<(String, Option<String>)>,
    /// Keep only the highest version of each name among the models that
    /// match the other conditions.
    pub latest_only: bool,
}

/// Columns read by [`load`], in order.
const SELECT: &str = "SELECT m.id, m.name, m.version, m.description, m.format, m.sha256, \
     m.size, m.created, p.name, p.version, m.spec, rep.report \
     FROM models m LEFT JOIN models p ON p.id = m.parent_id \
     LEFT JOIN model_reports rep ON rep.model_id = m.id";

/// A model row before its spec is parsed and its maps are filled.
struct Row {
    id: i64,
    name: String,
    version: u32,
    description: String,
    format: String,
    sha256: String,
    size: i64,
    created: String,
    parent: Option<(String, u32)>,
    spec: String,
    report: Option<String>,
}

/// Loads the models matching `where_sql` (appended to the select; may
/// reference `m.`), with their tags and properties.
pub(crate) fn load(
    conn: &Connection,
    where_sql: &str,
    args: &[&dyn rusqlite::ToSql],
) -> Result<Vec<(i64, ModelRecord)>> {
    let sql = format!("{SELECT} {where_sql}");
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt.query_map(args, |r| {
        let parent_name: Option<String> = r.get(8)?;
        let parent_version: Option<u32> = r.get(9)?;
        Ok(Row {
            id: r.get(0)?,
            name: r.get(1)?,
            version: r.get(2)?,
            description: r.get(3)?,
            format: r.get(4)?,
            sha256: r.get(5)?,
            size: r.get(6)?,
            created: r.get(7)?,
            parent: parent_name.zip(parent_version),
            spec: r.get(10)?,
            report: r.get(11)?,
        })
    })?;
    let rows: Vec<Row> = rows.collect::<rusqlite::Result<_>>()?;
    rows.into_iter().map(|row| finish(conn, row)).collect()
}

fn finish(conn: &Connection, row: Row) -> Result<(i64, ModelRecord)> {
    let spec: PipelineSpec = serde_json::from_str(&row.spec).map_err(|e| {
        RegistryError::DataLoss(format!(
            "model \"{}:{}\" has an unreadable stored spec: {e}",
            row.name, row.version
        ))
    })?;
    let report = row
        .report
        .as_deref()
        .map(serde_json::from_str::<serde_json::Value>)
        .transpose()
        .map_err(|e| {
            RegistryError::DataLoss(format!(
                "model \"{}:{}\" has an unreadable stored report: {e}",
                row.name, row.version
            ))
        })?;
    let record = ModelRecord {
        tags: key_values(conn, "model_tags", row.id)?,
        properties: key_values(conn, "model_properties", row.id)?,
        name: row.name,
        version: row.version,
        description: row.description,
        format: row.format,
        sha256: row.sha256,
        size: u64::try_from(row.size).unwrap_or(0),
        created: row.created,
        parent: row.parent.map(|(n, v)| format!("{n}:{v}")),
        spec,
        report,
    };
    Ok((row.id, record))
}

fn key_values(conn: &Connection, table: &str, id: i64) -> Result<BTreeMap<String, String>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT key, value FROM {table} WHERE model_id = ?1"
    ))?;
    let rows = stmt.query_map([id], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// The row id a reference points at, or NotFound naming what is missing:
/// `no model named "foo"` or `model "foo" has no version 7 (latest is 3)`.
pub(crate) fn resolve_id(conn: &Connection, r: &NameRef) -> Result<i64> {
    validate_name(&r.name)?;
    let latest: Option<(i64, u32)> = conn
        .query_row(
            "SELECT id, version FROM models WHERE name = ?1 ORDER BY version DESC LIMIT 1",
            [&r.name],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .optional()?;
    let Some((latest_id, latest_version)) = latest else {
        return Err(RegistryError::NotFound(format!(
            "no model named \"{}\"",
            r.name
        )));
    };
    let Some(v) = r.version else {
        return Ok(latest_id);
    };
    conn.query_row(
        "SELECT id FROM models WHERE name = ?1 AND version = ?2",
        rusqlite::params![r.name, v],
        |row| row.get(0),
    )
    .optional()?
    .ok_or_else(|| {
        RegistryError::NotFound(format!(
            "model \"{}\" has no version {v} (latest is {latest_version})",
            r.name
        ))
    })
}

/// The record with this row id.
pub(crate) fn load_by_id(conn: &Connection, id: i64) -> Result<ModelRecord> {
    load(conn, "WHERE m.id = ?1", &[&id])?
        .pop()
        .map(|(_, rec)| rec)
        .ok_or_else(|| RegistryError::NotFound(format!("no model with row id {id}")))
}

impl Registry {
    /// The model a reference names; a reference without version means the
    /// highest version.
    pub fn get_model(&self, r: &NameRef) -> Result<ModelRecord> {
        let mut conn = self.conn();
        // One read transaction, so the row and its tags come from one snapshot.
        let tx = conn.transaction()?;
        let id = resolve_id(&tx, r)?;
        load_by_id(&tx, id)
    }

    /// The models matching `filter`, ordered by name, then version.
    pub fn list_models(&self, filter: &ModelFilter) -> Result<Vec<ModelRecord>> {
        let mut where_sql = String::from("WHERE 1 = 1");
        let mut args: Vec<&str> = Vec::new();
        if let Some(name) = &filter.name {
            validate_name(name)?;
            where_sql.push_str(" AND m.name = ?");
            args.push(name);
        }
        for (key, value) in &filter.tags {
            where_sql.push_str(
                " AND EXISTS (SELECT 1 FROM model_tags t WHERE t.model_id = m.id AND t.key = ?",
            );
            args.push(key);
            if let Some(v) = value {
                where_sql.push_str(" AND t.value = ?");
                args.push(v);
            }
            where_sql.push(')');
        }
        where_sql.push_str(" ORDER BY m.name, m.version");
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let sql_args: Vec<&dyn rusqlite::ToSql> =
            args.iter().map(|a| a as &dyn rusqlite::ToSql).collect();
        let mut records: Vec<ModelRecord> = load(&tx, &where_sql, &sql_args)?
            .into_iter()
            .map(|(_, r)| r)
            .collect();
        drop(tx);
        if filter.latest_only {
            // Sorted by name then version: keep the last of each run of names.
            let mut latest: Vec<ModelRecord> = Vec::with_capacity(records.len());
            for rec in records.drain(..) {
                match latest.last_mut() {
                    Some(last) if last.name == rec.name => *last = rec,
                    _ => latest.push(rec),
                }
            }
            records = latest;
        }
        Ok(records)
    }
}

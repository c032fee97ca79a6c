//! Model bundles: one model in a plain directory that `accel serve --bundle`
//! loads without a registry (OCI image layers, read-only root filesystems).
//!
//! ```text
//! <dir>/model.json   the ModelRecord, as `accel models show --json` prints it
//! <dir>/model.onnx   the model blob (an ONNX model, or a plan: `format` says which)
//! <dir>/labels.txt   the labels blob, one label per line (only with labels)
//! ```
//!
//! The files are the registry's own bytes: `model.onnx` hashes to
//! `record.sha256` and `labels.txt` to `record.spec.labels.sha256`, so a
//! bundle is checked with nothing but itself. The same record always gives
//! the same bytes (reproducible image layers).

use accel_registry::{ModelRecord, Registry};
use anyhow::{bail, Context};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The record, as JSON.
pub const MODEL_JSON: &str = "model.json";
/// The model blob.
pub const MODEL_FILE: &str = "model.onnx";
/// The labels, one per line (only when the model has labels).
pub const LABELS_FILE: &str = "labels.txt";

/// A bundle read back.
#[derive(Debug)]
pub struct Bundle {
    /// The record from `model.json`.
    pub record: ModelRecord,
    /// The bytes of `model.onnx`.
    pub model: Vec<u8>,
    /// The labels from `labels.txt`, when the record has labels.
    pub labels: Option<Vec<String>>,
}

/// Writes the bundle of `record` into `dir` (created if needed): same record,
/// same bytes (pretty JSON with a trailing newline, the blobs verbatim). A
/// stale `labels.txt` is removed when the model has no labels. Returns the
/// files written, sorted.
pub fn write_bundle(
    registry: &Registry,
    record: &ModelRecord,
    dir: &Path,
) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut json = serde_json::to_string_pretty(record)?;
    json.push('\n');
    let model = registry.read_blob_verified(&record.sha256)?;
    let labels = match &record.spec.labels {
        Some(l) => Some(registry.read_blob_verified(&l.sha256)?),
        None => None,
    };
    let mut written = vec![
        write_file(dir, MODEL_JSON, json.as_bytes())?,
        write_file(dir, MODEL_FILE, &model)?,
    ];
    match labels {
        Some(l) => written.push(write_file(dir, LABELS_FILE, &l)?),
        None => match std::fs::remove_file(dir.join(LABELS_FILE)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e)
                    .with_context(|| format!("cannot remove {}", dir.join(LABELS_FILE).display()))
            }
            _ => {}
        },
    }
    written.sort();
    Ok(written)
}

/// Writes `dir/name` through a temporary file renamed into place: a reader
/// never sees half a file.
fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> anyhow::Result<PathBuf> {
    let path = dir.join(name);
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .tempfile_in(dir)
        .with_context(|| format!("cannot write in {}", dir.display()))?;
    tmp.write_all(bytes)
        .and_then(|()| tmp.as_file().sync_all())
        .with_context(|| format!("cannot write {}", path.display()))?;
    // Readable by every user of an image (tempfile creates 0600).
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    tmp.persist(&path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

/// Reads the bundle in `dir`: the record, the model bytes (their sha256
/// checked against the record: a mismatch is an error naming the file) and
/// the labels (checked against the record's spec).
pub fn read_bundle(dir: &Path) -> anyhow::Result<Bundle> {
    let bundle = read_unverified(dir)?;
    let digest = hex::encode(Sha256::digest(&bundle.model));
    if digest != bundle.record.sha256 {
        return Err(corrupt_model(dir, &bundle.record, &digest));
    }
    Ok(bundle)
}

/// Reads the bundle in `dir` with every check but the model's sha256 (the
/// caller hashes the bytes, e.g. while an engine compiles them, and reports
/// a mismatch with [`corrupt_model`]).
pub(crate) fn read_unverified(dir: &Path) -> anyhow::Result<Bundle> {
    if !dir.is_dir() {
        bail!("{} is not a model bundle directory", dir.display());
    }
    let json_path = dir.join(MODEL_JSON);
    let json = std::fs::read(&json_path)
        .with_context(|| format!("{} is not a model bundle", dir.display()))?;
    let record: ModelRecord = serde_json::from_slice(&json)
        .with_context(|| format!("{} is not a model record", json_path.display()))?;
    check_record(&record)
        .with_context(|| format!("{} is not a model record", json_path.display()))?;
    let model_path = dir.join(MODEL_FILE);
    let model = std::fs::read(&model_path)
        .with_context(|| format!("cannot read {}", model_path.display()))?;
    if model.len() as u64 != record.size {
        bail!(
            "{} is corrupt: {} bytes, {MODEL_JSON} says {}",
            model_path.display(),
            model.len(),
            record.size
        );
    }
    let labels = match &record.spec.labels {
        None => None,
        Some(r) => {
            let path = dir.join(LABELS_FILE);
            let data =
                std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
            let digest = hex::encode(Sha256::digest(&data));
            if digest != r.sha256 {
                bail!(
                    "{} is corrupt: its sha256 is {digest}, {MODEL_JSON} says {}",
                    path.display(),
                    r.sha256
                );
            }
            let text = String::from_utf8(data)
                .with_context(|| format!("{} is not UTF-8", path.display()))?;
            // As the registry stores them: one label per line.
            let labels: Vec<String> = text.split_terminator('\n').map(str::to_string).collect();
            if labels.len() != r.count {
                bail!(
                    "{} has {} labels, {MODEL_JSON} says {}",
                    path.display(),
                    labels.len(),
                    r.count
                );
            }
            Some(labels)
        }
    };
    Ok(Bundle {
        record,
        model,
        labels,
    })
}

/// A bundle is input: its record's strings must be what the registry would
/// have written before any of them is used. The model's sha256 names a file
/// (the optimized-model cache's `<sha256>-<engine>-<cpu>.onnx`), so a
/// "hash" such as `../../x` would be a path out of `ACCEL_HOME`; the name
/// becomes the service name.
fn check_record(record: &ModelRecord) -> anyhow::Result<()> {
    let is_sha256 =
        |s: &str| s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    accel_core::name::validate_name(&record.name)?;
    if !is_sha256(&record.sha256) {
        bail!("sha256 {:?} is not 64 lower-case hex digits", record.sha256);
    }
    if let Some(labels) = &record.spec.labels {
        if !is_sha256(&labels.sha256) {
            bail!(
                "labels sha256 {:?} is not 64 lower-case hex digits",
                labels.sha256
            );
        }
    }
    Ok(())
}

/// The error for a `model.onnx` whose sha256 is `digest`, not the record's.
pub(crate) fn corrupt_model(dir: &Path, record: &ModelRecord, digest: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "{} is corrupt: its sha256 is {digest}, {MODEL_JSON} says {} ({})",
        dir.join(MODEL_FILE).display(),
        record.sha256,
        record.reference()
    )
}

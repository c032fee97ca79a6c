//! Reproducible tar (+ gzip) writing: fixed times, owners and names; entries
//! in byte order of their paths; gzip header without time or file name.

use super::digest_from_hasher;
use super::spec::FileSource;
use crate::DeployError;
use flate2::write::GzEncoder;
use flate2::{Compression, GzBuilder};
use oci_spec::image::Digest;
use sha2::{Digest as _, Sha256};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::Path;

/// Every entry's modification time: the epoch. A constant (not the image's
/// creation time) so that an unchanged layer keeps its digest.
pub(crate) const ENTRY_MTIME: u64 = 0;

/// gzip level of layers. Fixed: the compressed digest depends on it.
const GZIP_LEVEL: u32 = 6;

/// A `Write` that hashes and counts what goes through it.
pub(crate) struct HashWriter<W> {
    inner: W,
    hasher: Sha256,
    count: u64,
}

impl<W: Write> HashWriter<W> {
    pub(crate) fn new(inner: W) -> Self {
        HashWriter {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    /// The inner writer, the sha256 digest and the byte count.
    pub(crate) fn finish(self) -> (W, Digest, u64) {
        (self.inner, digest_from_hasher(self.hasher), self.count)
    }
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A reader that yields exactly `remaining` bytes or fails: a host file that
/// shrinks while it is archived must not produce a corrupt tar.
pub(crate) struct ExactReader<R> {
    inner: R,
    remaining: u64,
    what: String,
}

impl<R: Read> ExactReader<R> {
    pub(crate) fn new(inner: R, size: u64, what: impl Into<String>) -> Self {
        ExactReader {
            inner,
            remaining: size,
            what: what.into(),
        }
    }
}

impl<R: Read> Read for ExactReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 {
            return Ok(0);
        }
        let max = buf
            .len()
            .min(self.remaining.min(usize::MAX as u64) as usize);
        let n = self.inner.read(&mut buf[..max])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{} ended {} bytes early", self.what, self.remaining),
            ));
        }
        self.remaining -= n as u64;
        Ok(n)
    }
}

/// One entry to archive, its path relative (no leading `/`).
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub(crate) path: String,
    pub(crate) source: FileSource,
    pub(crate) mode: u32,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
}

/// What [`write_layer`] produced.
#[derive(Debug)]
pub(crate) struct LayerFile {
    /// sha256 of the gzip'd bytes (the blob digest).
    pub(crate) digest: Digest,
    /// Size of the gzip'd bytes.
    pub(crate) size: u64,
    /// sha256 of the uncompressed tar (the DiffID).
    pub(crate) diff_id: Digest,
    /// Size of the uncompressed tar.
    pub(crate) tar_size: u64,
}

/// Writes `entries` (sorted here by path) as a gzip'd tar to `out`.
/// `names` gives the owner name of a uid or gid (uname/gname fields);
/// unknown ids get an empty name.
pub(crate) fn write_layer(
    mut entries: Vec<Entry>,
    names: &BTreeMap<u32, String>,
    group_names: &BTreeMap<u32, String>,
    out: &Path,
) -> Result<LayerFile, DeployError> {
    entries.sort_by(|a, b| a.path.as_bytes().cmp(b.path.as_bytes()));
    let io_err = |e: io::Error| DeployError::io(format!("writing layer {}", out.display()), e);
    let file = File::create(out).map_err(io_err)?;
    let compressed = HashWriter::new(BufWriter::with_capacity(1 << 20, file));
    let gz: GzEncoder<_> = GzBuilder::new()
        .mtime(0)
        .operating_system(255)
        .write(compressed, Compression::new(GZIP_LEVEL));
    let mut builder = tar::Builder::new(HashWriter::new(gz));
    for entry in &entries {
        append_entry(&mut builder, entry, names, group_names)?;
    }
    let uncompressed = builder.into_inner().map_err(io_err)?;
    let (gz, diff_id, tar_size) = uncompressed.finish();
    let compressed = gz.finish().map_err(io_err)?;
    let (mut buffered, digest, size) = compressed.finish();
    buffered.flush().map_err(io_err)?;
    buffered
        .into_inner()
        .map_err(|e| io_err(e.into_error()))?
        .sync_all()
        .map_err(io_err)?;
    Ok(LayerFile {
        digest,
        size,
        diff_id,
        tar_size,
    })
}

/// A header with every field that is not the entry's own fixed.
pub(crate) fn fixed_header(
    kind: tar::EntryType,
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    uname: &str,
    gname: &str,
) -> Result<tar::Header, DeployError> {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_uid(u64::from(uid));
    header.set_gid(u64::from(gid));
    header.set_mtime(ENTRY_MTIME);
    header.set_size(size);
    let name_err = |e: io::Error| DeployError::InvalidArgument(format!("owner name: {e}"));
    header.set_username(uname).map_err(name_err)?;
    header.set_groupname(gname).map_err(name_err)?;
    Ok(header)
}

fn append_entry<W: Write>(
    builder: &mut tar::Builder<W>,
    entry: &Entry,
    names: &BTreeMap<u32, String>,
    group_names: &BTreeMap<u32, String>,
) -> Result<(), DeployError> {
    let uname = names.get(&entry.uid).map(String::as_str).unwrap_or("");
    let gname = group_names
        .get(&entry.gid)
        .map(String::as_str)
        .unwrap_or("");
    let header =
        |kind, mode, size| fixed_header(kind, mode, entry.uid, entry.gid, size, uname, gname);
    let path = entry.path.as_str();
    let io_err = |e: io::Error| DeployError::io(format!("archiving /{path}"), e);
    match &entry.source {
        FileSource::Bytes(bytes) => {
            let mut h = header(tar::EntryType::Regular, entry.mode, bytes.len() as u64)?;
            builder
                .append_data(&mut h, path, bytes.as_slice())
                .map_err(io_err)?;
        }
        FileSource::HostFile(host) => {
            let what = format!("{} (for /{path})", host.display());
            let file =
                File::open(host).map_err(|e| DeployError::io(format!("opening {what}"), e))?;
            let meta = file
                .metadata()
                .map_err(|e| DeployError::io(format!("reading {what}"), e))?;
            if !meta.is_file() {
                return Err(DeployError::InvalidArgument(format!(
                    "{what} is not a regular file"
                )));
            }
            let mut h = header(tar::EntryType::Regular, entry.mode, meta.len())?;
            let reader = ExactReader::new(file, meta.len(), what);
            builder.append_data(&mut h, path, reader).map_err(io_err)?;
        }
        FileSource::Directory => {
            let mut h = header(tar::EntryType::Directory, entry.mode, 0)?;
            builder
                .append_data(&mut h, path, io::empty())
                .map_err(io_err)?;
        }
        FileSource::Symlink(target) => {
            let mut h = header(tar::EntryType::Symlink, 0o777, 0)?;
            builder.append_link(&mut h, path, target).map_err(io_err)?;
        }
    }
    Ok(())
}

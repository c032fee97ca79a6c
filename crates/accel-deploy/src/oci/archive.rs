//! Image archives: a tar of an OCI image layout, and `docker save`'s format.

use super::blobs::{index_json, tagged, BlobSource};
use super::tarball::{fixed_header, ExactReader, HashWriter};
use super::{canonical_json, check_bytes, read_manifest, sha256_hex};
use crate::DeployError;
use oci_spec::image::{Descriptor, Digest, ImageConfiguration, MediaType};
use sha2::{Digest as _, Sha256};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::Path;

/// Writes the image whose manifest is `manifest` (blobs read from `source`)
/// as a tar of an OCI image layout to `out`: `oci-layout`, `index.json`
/// (the manifest tagged `ref_name`) and `blobs/sha256/…`. What `skopeo
/// inspect oci-archive:OUT` and `podman load -i OUT` read. The archive is
/// reproducible (fixed times and owners, sorted entries) and is written
/// through a temporary file: `out` is the complete archive or untouched.
/// Every blob is checked against its descriptor on the way.
pub fn export_oci_archive(
    source: &dyn BlobSource,
    manifest: &Descriptor,
    ref_name: &str,
    out: &Path,
) -> Result<(), DeployError> {
    super::blobs::check_ref_name(ref_name)?;
    let (manifest_bytes, parsed) = read_manifest(source, manifest)?;
    let config_bytes = source.read_blob(parsed.config().digest())?;
    check_bytes(&config_bytes, parsed.config())?;
    let index = index_json(&[tagged(manifest, ref_name)])?;

    let mut archive = Archive::create(out)?;
    archive.bytes("oci-layout", b"{\"imageLayoutVersion\":\"1.0.0\"}")?;
    archive.bytes("index.json", &index)?;
    archive.dir("blobs")?;
    archive.dir("blobs/sha256")?;
    // Each blob once, in digest order.
    let mut blobs: BTreeMap<String, Blob<'_>> = BTreeMap::new();
    blobs.insert(
        sha256_hex(manifest.digest())?.to_string(),
        Blob::Bytes(&manifest_bytes),
    );
    blobs.insert(
        sha256_hex(parsed.config().digest())?.to_string(),
        Blob::Bytes(&config_bytes),
    );
    for layer in parsed.layers() {
        blobs
            .entry(sha256_hex(layer.digest())?.to_string())
            .or_insert(Blob::Stored(layer));
    }
    for (hex, blob) in blobs {
        let path = format!("blobs/sha256/{hex}");
        match blob {
            Blob::Bytes(bytes) => archive.bytes(&path, bytes)?,
            Blob::Stored(descriptor) => {
                let reader = source.open_blob(descriptor.digest())?;
                archive.verified(&path, reader, descriptor.size(), descriptor.digest())?;
            }
        }
    }
    archive.finish()
}

enum Blob<'a> {
    Bytes(&'a [u8]),
    Stored(&'a Descriptor),
}

/// Writes the image whose manifest is `manifest` in `docker save`'s format
/// (`manifest.json`, the configuration, uncompressed layer tars,
/// `repositories`), what `docker load` and `podman load` read, named
/// `repo_tags` (`accel/resnet:3`, `registry.example:5000/accel/resnet:3`;
/// without a tag, `:latest`). Layers are decompressed and checked against
/// the configuration's `diff_ids`; the docker-format image id is the
/// configuration digest, which is unchanged.
pub fn export_docker_archive(
    source: &dyn BlobSource,
    manifest: &Descriptor,
    repo_tags: &[String],
    out: &Path,
) -> Result<(), DeployError> {
    let repo_tags: Vec<(String, String)> = repo_tags
        .iter()
        .map(|t| split_repo_tag(t))
        .collect::<Result<_, _>>()?;
    let (_, parsed) = read_manifest(source, manifest)?;
    let config_bytes = source.read_blob(parsed.config().digest())?;
    check_bytes(&config_bytes, parsed.config())?;
    let config: ImageConfiguration = serde_json::from_slice(&config_bytes).map_err(|e| {
        DeployError::InvalidArgument(format!("image configuration is not valid: {e}"))
    })?;
    let diff_ids = config.rootfs().diff_ids();
    if diff_ids.len() != parsed.layers().len() {
        return Err(DeployError::InvalidArgument(format!(
            "the configuration lists {} layers, the manifest {}",
            diff_ids.len(),
            parsed.layers().len()
        )));
    }

    let scratch_parent = out.parent().filter(|p| !p.as_os_str().is_empty());
    let scratch = tempfile::Builder::new()
        .prefix(".accel-export-")
        .tempdir_in(scratch_parent.unwrap_or(Path::new(".")))
        .map_err(|e| DeployError::io("creating a scratch directory", e))?;
    let mut archive = Archive::create(out)?;
    archive.dir("blobs")?;
    archive.dir("blobs/sha256")?;
    let config_path = format!("blobs/sha256/{}", sha256_hex(parsed.config().digest())?);
    archive.bytes(&config_path, &config_bytes)?;
    let mut layer_paths = Vec::new();
    for (layer, diff_id) in parsed.layers().iter().zip(diff_ids) {
        let diff_id: Digest = diff_id
            .parse()
            .map_err(|e| DeployError::InvalidArgument(format!("invalid diff_id {diff_id}: {e}")))?;
        let path = format!("blobs/sha256/{}", sha256_hex(&diff_id)?);
        if layer_paths.contains(&path) {
            layer_paths.push(path);
            continue;
        }
        let tar_path = scratch.path().join(sha256_hex(&diff_id)?);
        let size = uncompress_layer(source, layer, &diff_id, &tar_path)?;
        let file = File::open(&tar_path)
            .map_err(|e| DeployError::io(format!("opening {}", tar_path.display()), e))?;
        archive.verified(&path, Box::new(file), size, &diff_id)?;
        std::fs::remove_file(&tar_path).ok();
        layer_paths.push(path);
    }
    let manifest_json = serde_json::json!([{
        "Config": config_path,
        "RepoTags": repo_tags.iter().map(|(r, t)| format!("{r}:{t}")).collect::<Vec<_>>(),
        "Layers": layer_paths,
    }]);
    archive.bytes("manifest.json", &canonical_json(&manifest_json)?)?;
    let top = layer_paths
        .last()
        .map(|p| p.trim_start_matches("blobs/sha256/").to_string())
        .unwrap_or_default();
    let mut repositories: BTreeMap<&str, BTreeMap<&str, &str>> = BTreeMap::new();
    for (repo, tag) in &repo_tags {
        repositories.entry(repo).or_default().insert(tag, &top);
    }
    archive.bytes("repositories", &canonical_json(&repositories)?)?;
    archive.finish()
}

/// `name[:tag]` → (name, tag), `latest` when there is no tag.
fn split_repo_tag(reference: &str) -> Result<(String, String), DeployError> {
    let last_slash = reference.rfind('/').map_or(0, |i| i + 1);
    let (repo, tag) = match reference[last_slash..].rfind(':') {
        Some(i) => (
            &reference[..last_slash + i],
            &reference[last_slash + i + 1..],
        ),
        None => (reference, "latest"),
    };
    let repo_ok = !repo.is_empty()
        && repo.split('/').all(|c| !c.is_empty())
        && repo
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-/:".contains(&b));
    let tag_ok = !tag.is_empty()
        && tag.len() <= 128
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if repo_ok && tag_ok && !reference.contains('@') {
        Ok((repo.to_string(), tag.to_string()))
    } else {
        Err(DeployError::InvalidArgument(format!(
            "{reference:?} is not a docker image name (lower-case repository, optional :tag)"
        )))
    }
}

/// Writes the uncompressed tar of `layer` to `to`, checking it against
/// `diff_id`; returns its size.
fn uncompress_layer(
    source: &dyn BlobSource,
    layer: &Descriptor,
    diff_id: &Digest,
    to: &Path,
) -> Result<u64, DeployError> {
    let digest = layer.digest();
    let blob = HashReader::new(source.open_blob(digest)?);
    let mut out =
        HashWriter::new(BufWriter::new(File::create(to).map_err(|e| {
            DeployError::io(format!("creating {}", to.display()), e)
        })?));
    let io_err = |e: io::Error| DeployError::io(format!("uncompressing layer {digest}"), e);
    let blob = match layer.media_type() {
        MediaType::ImageLayerGzip => {
            let mut gz = flate2::read::GzDecoder::new(blob);
            io::copy(&mut gz, &mut out).map_err(|e| match e.kind() {
                io::ErrorKind::InvalidInput
                | io::ErrorKind::InvalidData
                | io::ErrorKind::UnexpectedEof => DeployError::FailedPrecondition(format!(
                    "layer {digest} is not a valid gzip stream: {e}"
                )),
                _ => io_err(e),
            })?;
            gz.into_inner()
        }
        MediaType::ImageLayer => {
            let mut blob = blob;
            io::copy(&mut blob, &mut out).map_err(io_err)?;
            blob
        }
        other => {
            return Err(DeployError::InvalidArgument(format!(
                "layer {digest} is {other}: only tar and tar+gzip layers can be exported"
            )))
        }
    };
    let (compressed_digest, compressed_size) = blob.finish();
    if &compressed_digest != digest || compressed_size != layer.size() {
        return Err(DeployError::FailedPrecondition(format!(
            "layer {digest} does not match its descriptor (read {compressed_size} bytes, {compressed_digest})"
        )));
    }
    let (mut writer, actual, size) = out.finish();
    writer.flush().map_err(io_err)?;
    if &actual != diff_id {
        return Err(DeployError::FailedPrecondition(format!(
            "layer {digest} uncompresses to {actual}, the configuration says {diff_id}"
        )));
    }
    Ok(size)
}

/// A `Read` that hashes and counts what it reads.
struct HashReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
}

impl<R: Read> HashReader<R> {
    fn new(inner: R) -> Self {
        HashReader {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    /// Reads what is left (a gzip stream may end before its reader does)
    /// and returns the digest and size of everything.
    fn finish(mut self) -> (Digest, u64) {
        let _ = io::copy(&mut self, &mut io::sink());
        (super::digest_from_hasher(self.hasher), self.count)
    }
}

impl<R: Read> Read for HashReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

/// A reproducible tar written to a temporary file beside its destination.
struct Archive<'a> {
    builder: tar::Builder<BufWriter<tempfile::NamedTempFile>>,
    out: &'a Path,
}

impl<'a> Archive<'a> {
    fn create(out: &'a Path) -> Result<Self, DeployError> {
        let dir = out
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let tmp = tempfile::Builder::new()
            .prefix(".accel-archive-")
            .tempfile_in(dir)
            .map_err(|e| DeployError::io(format!("creating a file in {}", dir.display()), e))?;
        Ok(Archive {
            builder: tar::Builder::new(BufWriter::with_capacity(1 << 20, tmp)),
            out,
        })
    }

    fn io_err(&self, e: io::Error) -> DeployError {
        DeployError::io(format!("writing {}", self.out.display()), e)
    }

    fn dir(&mut self, path: &str) -> Result<(), DeployError> {
        let mut h = fixed_header(tar::EntryType::Directory, 0o755, 0, 0, 0, "", "")?;
        let r = self.builder.append_data(&mut h, path, io::empty());
        r.map_err(|e| self.io_err(e))
    }

    fn bytes(&mut self, path: &str, bytes: &[u8]) -> Result<(), DeployError> {
        let mut h = fixed_header(
            tar::EntryType::Regular,
            0o644,
            0,
            0,
            bytes.len() as u64,
            "",
            "",
        )?;
        let r = self.builder.append_data(&mut h, path, bytes);
        r.map_err(|e| self.io_err(e))
    }

    /// Appends `size` bytes from `reader`, failing unless they hash to `digest`.
    fn verified(
        &mut self,
        path: &str,
        reader: Box<dyn Read + Send>,
        size: u64,
        digest: &Digest,
    ) -> Result<(), DeployError> {
        let mut h = fixed_header(tar::EntryType::Regular, 0o644, 0, 0, size, "", "")?;
        let mut hashed = HashReader::new(ExactReader::new(reader, size, format!("blob {digest}")));
        let r = self.builder.append_data(&mut h, path, &mut hashed);
        r.map_err(|e| self.io_err(e))?;
        let (actual, _) = hashed.finish();
        if &actual != digest {
            return Err(DeployError::FailedPrecondition(format!(
                "blob {digest} has digest {actual}: the source is corrupt"
            )));
        }
        Ok(())
    }

    fn finish(self) -> Result<(), DeployError> {
        let out = self.out;
        let io_err = |e: io::Error| DeployError::io(format!("writing {}", out.display()), e);
        let buffered = self.builder.into_inner().map_err(io_err)?;
        let tmp = buffered.into_inner().map_err(|e| io_err(e.into_error()))?;
        {
            use std::os::unix::fs::PermissionsExt;
            let file = tmp.as_file();
            file.set_permissions(std::fs::Permissions::from_mode(0o644))
                .map_err(io_err)?;
            file.sync_all().map_err(io_err)?;
        }
        tmp.persist(out).map_err(|e| io_err(e.error))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_names_get_a_tag() {
        let split = |s: &str| split_repo_tag(s).unwrap();
        assert_eq!(split("accel/resnet:3"), ("accel/resnet".into(), "3".into()));
        assert_eq!(
            split("accel/resnet"),
            ("accel/resnet".into(), "latest".into())
        );
        assert_eq!(
            split("127.0.0.1:5000/accel/resnet"),
            ("127.0.0.1:5000/accel/resnet".into(), "latest".into())
        );
        assert_eq!(
            split("127.0.0.1:5000/accel/resnet:v1"),
            ("127.0.0.1:5000/accel/resnet".into(), "v1".into())
        );
        for bad in ["", "Accel/x", "x:", "a//b", "x@sha256:00"] {
            assert!(split_repo_tag(bad).is_err(), "{bad}");
        }
    }
}

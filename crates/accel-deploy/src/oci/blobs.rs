//! Where blobs go ([`BlobSink`]) and come from ([`BlobSource`]); an OCI
//! image layout directory is both ([`OciLayout`]).

use super::tarball::HashWriter;
use super::{canonical_json, check_bytes, sha256_hex, ANNOTATION_REF_NAME};
use crate::DeployError;
use oci_spec::image::{Descriptor, Digest, ImageIndex, MediaType};
use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// A blob's content handed to a [`BlobSink`].
#[derive(Debug, Clone, Copy)]
pub enum BlobData<'a> {
    /// In memory (manifests, configurations).
    Bytes(&'a [u8]),
    /// In a file (layers), which the sink copies or moves from.
    File(&'a Path),
}

impl BlobData<'_> {
    /// A reader over the content.
    pub fn reader(&self) -> Result<Box<dyn Read + Send + '_>, DeployError> {
        Ok(match self {
            BlobData::Bytes(bytes) => Box::new(*bytes),
            BlobData::File(path) => Box::new(
                File::open(path)
                    .map_err(|e| DeployError::io(format!("opening {}", path.display()), e))?,
            ),
        })
    }
}

/// Receives the blobs of a build: layers, then the configuration, then the
/// manifest (a sink may take the manifest as the point where the image is
/// complete). Implemented by [`OciLayout`]; Accel's registry blob store
/// (sha256-addressed) implements it in the CLI.
pub trait BlobSink {
    /// Stores `data`, whose media type, size and sha256 digest are
    /// `descriptor`'s. Storing a blob that is already there is not an error.
    fn put(&mut self, descriptor: &Descriptor, data: BlobData<'_>) -> Result<(), DeployError>;
}

/// Gives blobs back by digest: what [`push`](super::push) and the exports
/// read. [`BuiltImage`](super::BuiltImage) and [`OciLayout`] implement it;
/// so can Accel's registry blob store.
pub trait BlobSource: Send + Sync {
    /// A reader over the blob with `digest`; `DeployError::NotFound` when
    /// there is none.
    fn open_blob(&self, digest: &Digest) -> Result<Box<dyn Read + Send>, DeployError>;

    /// The whole blob in memory (for manifests and configurations).
    fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>, DeployError> {
        let mut bytes = Vec::new();
        self.open_blob(digest)?
            .read_to_end(&mut bytes)
            .map_err(|e| DeployError::io(format!("reading blob {digest}"), e))?;
        Ok(bytes)
    }
}

impl<T: BlobSource + ?Sized> BlobSource for &T {
    fn open_blob(&self, digest: &Digest) -> Result<Box<dyn Read + Send>, DeployError> {
        (**self).open_blob(digest)
    }
}

/// An OCI image layout directory (`oci-layout`, `index.json`,
/// `blobs/sha256/…`), as `skopeo` (`oci:DIR:TAG`) and `umoci`
/// (`--image DIR:TAG`) read it.
#[derive(Debug, Clone)]
pub struct OciLayout {
    root: PathBuf,
}

const OCI_LAYOUT_FILE: &str = "{\"imageLayoutVersion\":\"1.0.0\"}";

impl OciLayout {
    /// Opens the layout at `root`, creating the directory, `oci-layout`,
    /// an empty `index.json` and `blobs/sha256` where missing.
    pub fn create(root: impl Into<PathBuf>) -> Result<Self, DeployError> {
        let layout = OciLayout { root: root.into() };
        let blobs = layout.root.join("blobs").join("sha256");
        fs::create_dir_all(&blobs)
            .map_err(|e| DeployError::io(format!("creating {}", blobs.display()), e))?;
        let marker = layout.root.join("oci-layout");
        if !marker.exists() {
            write_atomically(&marker, OCI_LAYOUT_FILE.as_bytes())?;
        }
        if !layout.index_path().exists() {
            layout.write_index(&[])?;
        }
        Ok(layout)
    }

    /// Opens an existing layout, checking its `oci-layout` marker.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, DeployError> {
        let layout = OciLayout { root: root.into() };
        let marker = layout.root.join("oci-layout");
        let text = fs::read_to_string(&marker).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                DeployError::NotFound(format!(
                    "{} is not an OCI image layout",
                    layout.root.display()
                ))
            } else {
                DeployError::io(format!("reading {}", marker.display()), e)
            }
        })?;
        if !text.contains("imageLayoutVersion") {
            return Err(DeployError::InvalidArgument(format!(
                "{} is not an OCI layout marker",
                marker.display()
            )));
        }
        Ok(layout)
    }

    /// The layout directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the blob with `digest` lives (whether or not it is there).
    pub fn blob_path(&self, digest: &Digest) -> Result<PathBuf, DeployError> {
        Ok(self
            .root
            .join("blobs")
            .join("sha256")
            .join(sha256_hex(digest)?))
    }

    /// The manifests `index.json` lists, in order.
    pub fn manifests(&self) -> Result<Vec<Descriptor>, DeployError> {
        let path = self.index_path();
        let bytes = fs::read(&path)
            .map_err(|e| DeployError::io(format!("reading {}", path.display()), e))?;
        let index: ImageIndex = serde_json::from_slice(&bytes).map_err(|e| {
            DeployError::InvalidArgument(format!("{} is not an image index: {e}", path.display()))
        })?;
        Ok(index.manifests().clone())
    }

    /// The manifest tagged `ref_name` (`org.opencontainers.image.ref.name`).
    pub fn resolve(&self, ref_name: &str) -> Result<Descriptor, DeployError> {
        self.manifests()?
            .into_iter()
            .find(|d| ref_name_of(d) == Some(ref_name))
            .ok_or_else(|| {
                DeployError::NotFound(format!(
                    "no manifest tagged {ref_name:?} in {}",
                    self.root.display()
                ))
            })
    }

    /// Lists `manifest` in `index.json` under `ref_name`, replacing the
    /// manifest that had that name. The manifest blob must already be in
    /// the layout.
    pub fn tag(&mut self, manifest: &Descriptor, ref_name: &str) -> Result<(), DeployError> {
        check_ref_name(ref_name)?;
        let blob = self.blob_path(manifest.digest())?;
        if !blob.is_file() {
            return Err(DeployError::FailedPrecondition(format!(
                "manifest {} is not in the layout {}",
                manifest.digest(),
                self.root.display()
            )));
        }
        let mut manifests: Vec<Descriptor> = self
            .manifests()?
            .into_iter()
            .filter(|d| ref_name_of(d) != Some(ref_name))
            .collect();
        let mut entry = Descriptor::new(
            manifest.media_type().clone(),
            manifest.size(),
            manifest.digest().clone(),
        );
        entry.set_platform(manifest.platform().clone());
        let mut annotations = manifest.annotations().clone().unwrap_or_default();
        annotations.insert(ANNOTATION_REF_NAME.to_string(), ref_name.to_string());
        entry.set_annotations(Some(annotations));
        manifests.push(entry);
        self.write_index(&manifests)
    }

    fn index_path(&self) -> PathBuf {
        self.root.join("index.json")
    }

    fn write_index(&self, manifests: &[Descriptor]) -> Result<(), DeployError> {
        write_atomically(&self.index_path(), &index_json(manifests)?)
    }
}

/// `index.json` bytes listing `manifests`.
pub(crate) fn index_json(manifests: &[Descriptor]) -> Result<Vec<u8>, DeployError> {
    let mut index = ImageIndex::default();
    index.set_schema_version(2);
    index.set_media_type(Some(MediaType::ImageIndex));
    index.set_manifests(manifests.to_vec());
    canonical_json(&index)
}

/// A descriptor carrying `ref_name` as its `org.opencontainers.image.ref.name`.
pub(crate) fn tagged(manifest: &Descriptor, ref_name: &str) -> Descriptor {
    let mut entry = manifest.clone();
    let mut annotations: HashMap<String, String> = HashMap::new();
    annotations.insert(ANNOTATION_REF_NAME.to_string(), ref_name.to_string());
    entry.set_annotations(Some(annotations));
    entry
}

fn ref_name_of(descriptor: &Descriptor) -> Option<&str> {
    descriptor
        .annotations()
        .as_ref()?
        .get(ANNOTATION_REF_NAME)
        .map(String::as_str)
}

/// The OCI image layout's grammar for `org.opencontainers.image.ref.name`:
/// components of `[A-Za-z0-9]+` joined by `-._:@+` (or `--`), separated by `/`.
pub(crate) fn check_ref_name(ref_name: &str) -> Result<(), DeployError> {
    let component_ok = |c: &str| {
        let bytes = c.as_bytes();
        !bytes.is_empty()
            && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
            && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
            && bytes
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || b"-._:@+".contains(b))
            && !bytes.windows(2).any(|w| {
                !w[0].is_ascii_alphanumeric() && !w[1].is_ascii_alphanumeric() && w != b"--"
            })
    };
    if ref_name.split('/').all(component_ok) {
        Ok(())
    } else {
        Err(DeployError::InvalidArgument(format!(
            "{ref_name:?} is not a valid image reference name (letters and digits joined by -._:@+, / between components)"
        )))
    }
}

impl BlobSink for OciLayout {
    fn put(&mut self, descriptor: &Descriptor, data: BlobData<'_>) -> Result<(), DeployError> {
        let target = self.blob_path(descriptor.digest())?;
        if let Ok(meta) = fs::metadata(&target) {
            if meta.len() == descriptor.size() {
                return Ok(());
            }
        }
        if let BlobData::Bytes(bytes) = data {
            check_bytes(bytes, descriptor)?;
            return write_atomically(&target, bytes);
        }
        // Copy through a hash so that a wrong descriptor never lands.
        let dir = target.parent().expect("a blob path has a parent");
        let mut tmp = tempfile::NamedTempFile::new_in(dir)
            .map_err(|e| DeployError::io(format!("creating a file in {}", dir.display()), e))?;
        let mut hashed = HashWriter::new(tmp.as_file_mut());
        io::copy(&mut data.reader()?, &mut hashed)
            .map_err(|e| DeployError::io(format!("writing blob {}", descriptor.digest()), e))?;
        let (_, digest, size) = hashed.finish();
        if &digest != descriptor.digest() || size != descriptor.size() {
            return Err(DeployError::FailedPrecondition(format!(
                "blob content ({size} bytes, {digest}) does not match its descriptor ({} bytes, {})",
                descriptor.size(),
                descriptor.digest()
            )));
        }
        publish_mode(tmp.as_file()).map_err(|e| DeployError::io("syncing a blob", e))?;
        tmp.persist(&target)
            .map_err(|e| DeployError::io(format!("storing {}", target.display()), e.error))?;
        Ok(())
    }
}

impl BlobSource for OciLayout {
    fn open_blob(&self, digest: &Digest) -> Result<Box<dyn Read + Send>, DeployError> {
        let path = self.blob_path(digest)?;
        match File::open(&path) {
            Ok(file) => Ok(Box::new(file)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(DeployError::NotFound(format!(
                "blob {digest} is not in {}",
                self.root.display()
            ))),
            Err(e) => Err(DeployError::io(format!("opening {}", path.display()), e)),
        }
    }
}

/// Syncs a finished temporary file and makes it world-readable (0644, as
/// the files of a layout written by other tools), not the 0600 of a
/// temporary file.
fn publish_mode(file: &File) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    file.set_permissions(fs::Permissions::from_mode(0o644))?;
    file.sync_all()
}

/// Writes `bytes` to `path` through a temporary file and a rename.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), DeployError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let io_err = |e: io::Error| DeployError::io(format!("writing {}", path.display()), e);
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io_err)?;
    tmp.write_all(bytes).map_err(io_err)?;
    publish_mode(tmp.as_file()).map_err(io_err)?;
    tmp.persist(path).map_err(|e| io_err(e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ref_names_follow_the_layout_grammar() {
        for ok in [
            "latest",
            "1.0",
            "v1.2-rc.1",
            "accel/resnet:3",
            "a--b",
            "sha256:ab12",
        ] {
            assert!(check_ref_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-x", "x-", "a..b", "a/", "/a", "a b", "a_-b"] {
            assert!(check_ref_name(bad).is_err(), "{bad}");
        }
    }
}

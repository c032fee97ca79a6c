//! OCI images built in-process, without a container daemon.
//!
//! - [`ImageSpec`] says what goes into an image: files grouped in layers,
//!   entrypoint, environment, a non-root user, ports, labels, platform and
//!   the creation time (given, never read from the clock, so that builds are
//!   reproducible).
//! - [`build`] turns it into a [`BuiltImage`]: reproducible gzip'd tar
//!   layers (sorted entries, fixed mtime/owner names, gzip header without
//!   mtime or name) in temporary files, and the image configuration and
//!   manifest as canonical JSON (sorted keys). Building the same spec twice
//!   gives the same manifest digest; a layer whose files did not change
//!   keeps its digest across images, so pushes reuse it.
//! - Blobs leave a build through a [`BlobSink`] (Accel's registry blob store,
//!   or an [`OciLayout`] directory) and are read back through a
//!   [`BlobSource`] ([`BuiltImage`] and [`OciLayout`] are both).
//! - [`export_oci_archive`] writes a tar of an OCI image layout
//!   (`skopeo inspect oci-archive:FILE`), [`export_docker_archive`] the
//!   `docker save` format (`docker load`, `podman load`).
//! - [`push`] uploads an image over the OCI distribution API
//!   (`oci-client`: anonymous, basic or token auth), skipping the blobs the
//!   registry already has.
//! - [`shared_libraries`] lists what `ldd` says a binary needs, so the
//!   runtime layer can carry them (no base image).
//!
//! Layer order is the caller's: the base layer (`/etc/passwd`,
//! `/etc/group`, `/tmp`, the user's home) always comes first, then the
//! [`LayerSpec`]s in the order given; put the big and rarely-changing ones
//! (runtime, engine) before the model.

mod archive;
mod blobs;
mod build;
mod ldd;
mod push;
mod spec;
mod tarball;

pub use archive::{export_docker_archive, export_oci_archive};
pub use blobs::{BlobData, BlobSink, BlobSource, OciLayout};
pub use build::{build, build_in, BuiltBlob, BuiltImage, BuiltLayer};
pub use ldd::{parse_ldd_output, shared_libraries};
pub use push::{push, PushAuth, PushOptions, PushReport};
pub use spec::{FileEntry, FileSource, ImageSpec, ImageUser, LayerSpec, Platform};

/// The image-spec types this module reads and writes (re-exported so that
/// callers need not name the `oci-spec` crate).
pub use oci_spec::image::{Descriptor, Digest, ImageConfiguration, ImageManifest, MediaType};

use crate::DeployError;
use sha2::{Digest as _, Sha256};
use std::str::FromStr;

/// `org.opencontainers.image.ref.name`: the tag of a manifest in an image
/// layout's `index.json`.
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";
/// `org.opencontainers.image.created`, set from [`ImageSpec::created`].
pub const ANNOTATION_CREATED: &str = "org.opencontainers.image.created";
/// `org.opencontainers.image.title`.
pub const ANNOTATION_TITLE: &str = "org.opencontainers.image.title";
/// `org.opencontainers.image.version`.
pub const ANNOTATION_VERSION: &str = "org.opencontainers.image.version";
/// `org.opencontainers.image.description`.
pub const ANNOTATION_DESCRIPTION: &str = "org.opencontainers.image.description";

/// `sha256:<hex>` of `bytes` as an OCI digest.
pub fn sha256_digest(bytes: &[u8]) -> Digest {
    digest_from_hasher(Sha256::new_with_prefix(bytes))
}

pub(crate) fn digest_from_hasher(hasher: Sha256) -> Digest {
    let text = format!("sha256:{}", hex::encode(hasher.finalize()));
    Digest::from_str(&text).expect("a sha256 hex digest is a valid OCI digest")
}

/// The hex part of a sha256 digest, refusing any other algorithm (a path
/// component under `blobs/sha256/`, so it must be exactly 64 hex digits).
pub(crate) fn sha256_hex(digest: &Digest) -> Result<&str, DeployError> {
    let hex = digest.digest();
    if digest.algorithm().as_ref() != "sha256"
        || hex.len() != 64
        || !hex.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return Err(DeployError::InvalidArgument(format!(
            "unsupported digest {digest}: only sha256 blobs are handled"
        )));
    }
    Ok(hex)
}

/// Serializes `value` as compact JSON with every object's keys sorted, so
/// that the bytes (and the digest) do not depend on hash-map order (the
/// `oci-spec` types keep labels and annotations in `HashMap`s).
pub(crate) fn canonical_json<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, DeployError> {
    fn sort(value: &mut serde_json::Value) {
        match value {
            serde_json::Value::Object(map) => {
                map.sort_keys();
                map.values_mut().for_each(sort);
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(sort),
            _ => {}
        }
    }
    let mut value = serde_json::to_value(value)
        .map_err(|e| DeployError::InvalidArgument(format!("cannot serialize JSON: {e}")))?;
    sort(&mut value);
    serde_json::to_vec(&value)
        .map_err(|e| DeployError::InvalidArgument(format!("cannot serialize JSON: {e}")))
}

/// Reads and parses the image manifest `manifest` points at, checking its
/// digest and size.
pub(crate) fn read_manifest(
    source: &dyn BlobSource,
    manifest: &Descriptor,
) -> Result<(Vec<u8>, ImageManifest), DeployError> {
    if manifest.media_type() != &MediaType::ImageManifest {
        return Err(DeployError::InvalidArgument(format!(
            "{} is a {}, not an image manifest",
            manifest.digest(),
            manifest.media_type()
        )));
    }
    let bytes = source.read_blob(manifest.digest())?;
    check_bytes(&bytes, manifest)?;
    let parsed: ImageManifest = serde_json::from_slice(&bytes).map_err(|e| {
        DeployError::InvalidArgument(format!("manifest {} is not valid: {e}", manifest.digest()))
    })?;
    Ok((bytes, parsed))
}

/// Checks that `bytes` are what `descriptor` says (size and sha256).
pub(crate) fn check_bytes(bytes: &[u8], descriptor: &Descriptor) -> Result<(), DeployError> {
    let actual = sha256_digest(bytes);
    if bytes.len() as u64 != descriptor.size() || &actual != descriptor.digest() {
        return Err(DeployError::FailedPrecondition(format!(
            "blob {} does not match its descriptor: {} bytes with digest {actual}, expected {} bytes",
            descriptor.digest(),
            bytes.len(),
            descriptor.size()
        )));
    }
    Ok(())
}

//! From an [`ImageSpec`] to layers, configuration and manifest.

use super::blobs::{BlobData, BlobSink, BlobSource, OciLayout};
use super::spec::{FileSource, ImageSpec};
use super::tarball::{write_layer, Entry};
use super::{canonical_json, sha256_digest, ANNOTATION_CREATED};
use crate::DeployError;
use oci_spec::image::{
    Arch, Config, Descriptor, Digest, History, ImageConfiguration, ImageManifest,
    ImageManifestBuilder, MediaType, Os, RootFs,
};
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

/// A JSON blob of a build (configuration or manifest): its bytes and its
/// descriptor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltBlob {
    /// Media type, size and digest of `bytes`.
    pub descriptor: Descriptor,
    /// The exact bytes the digest is of.
    pub bytes: Vec<u8>,
}

/// A built layer: a gzip'd tar in a temporary file of its [`BuiltImage`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltLayer {
    /// The layer's name (`base`, then the [`LayerSpec`](super::LayerSpec) names).
    pub name: String,
    /// Media type (`application/vnd.oci.image.layer.v1.tar+gzip`), size
    /// and digest of the compressed file.
    pub descriptor: Descriptor,
    /// sha256 of the uncompressed tar (the configuration's `rootfs.diff_ids`).
    pub diff_id: Digest,
    /// Size of the uncompressed tar.
    pub uncompressed_size: u64,
    /// Number of tar entries (files, directories, links).
    pub entries: usize,
    /// The compressed bytes; the file lives as long as the [`BuiltImage`].
    pub path: PathBuf,
}

/// The result of [`build`]: every blob of the image, ready to be stored
/// ([`write_to`](Self::write_to)), exported or pushed (it is a
/// [`BlobSource`]).
#[derive(Debug)]
pub struct BuiltImage {
    /// The image manifest (`application/vnd.oci.image.manifest.v1+json`);
    /// its digest is the image's.
    pub manifest: BuiltBlob,
    /// The image configuration (`application/vnd.oci.image.config.v1+json`).
    pub config: BuiltBlob,
    /// The layers, bottom first (the base layer is `layers[0]`).
    pub layers: Vec<BuiltLayer>,
    /// One line per step, for the image's build log.
    pub log: Vec<String>,
    /// Holds the layer files.
    _dir: tempfile::TempDir,
}

impl BuiltImage {
    /// The manifest digest (what `skopeo inspect` calls the image digest).
    pub fn digest(&self) -> &Digest {
        self.manifest.descriptor.digest()
    }

    /// Hands every blob to `sink`: layers, configuration, manifest last.
    pub fn write_to(&self, sink: &mut dyn BlobSink) -> Result<(), DeployError> {
        for layer in &self.layers {
            sink.put(&layer.descriptor, BlobData::File(&layer.path))?;
        }
        sink.put(&self.config.descriptor, BlobData::Bytes(&self.config.bytes))?;
        sink.put(
            &self.manifest.descriptor,
            BlobData::Bytes(&self.manifest.bytes),
        )
    }

    /// Writes the image into the OCI layout at `dir` (created if needed)
    /// and tags it `ref_name` there.
    pub fn write_layout(&self, dir: &Path, ref_name: &str) -> Result<OciLayout, DeployError> {
        super::blobs::check_ref_name(ref_name)?;
        let mut layout = OciLayout::create(dir)?;
        self.write_to(&mut layout)?;
        layout.tag(&self.manifest.descriptor, ref_name)?;
        Ok(layout)
    }
}

impl BlobSource for BuiltImage {
    fn open_blob(&self, digest: &Digest) -> Result<Box<dyn Read + Send>, DeployError> {
        for blob in [&self.manifest, &self.config] {
            if blob.descriptor.digest() == digest {
                return Ok(Box::new(std::io::Cursor::new(blob.bytes.clone())));
            }
        }
        let layer = self
            .layers
            .iter()
            .find(|l| l.descriptor.digest() == digest)
            .ok_or_else(|| DeployError::NotFound(format!("blob {digest} is not in this image")))?;
        let file = File::open(&layer.path)
            .map_err(|e| DeployError::io(format!("opening {}", layer.path.display()), e))?;
        Ok(Box::new(file))
    }
}

/// Builds `spec` with its layer files in the system's temporary directory.
pub fn build(spec: &ImageSpec) -> Result<BuiltImage, DeployError> {
    build_in(spec, &std::env::temp_dir())
}

/// Builds `spec` with its layer files in a new directory under `scratch`
/// (removed when the [`BuiltImage`] is dropped). The same spec (and the
/// same file contents) gives the same digests, every time.
pub fn build_in(spec: &ImageSpec, scratch: &Path) -> Result<BuiltImage, DeployError> {
    spec.validate()?;
    let dir = tempfile::Builder::new()
        .prefix("accel-image-")
        .tempdir_in(scratch)
        .map_err(|e| {
            DeployError::io(format!("creating a directory in {}", scratch.display()), e)
        })?;
    let created = rfc3339(spec.created)?;
    let user = &spec.user;
    let names = BTreeMap::from([(0, "root".to_string()), (user.uid, user.name.clone())]);
    let groups = BTreeMap::from([(0, "root".to_string()), (user.gid, user.group.clone())]);

    let mut layer_specs = vec![("base".to_string(), base_entries(spec))];
    layer_specs.extend(
        spec.layers
            .iter()
            .filter(|l| !l.files.is_empty())
            .map(|l| (l.name.clone(), l.files.iter().map(to_entry).collect())),
    );

    // Directories declared so far: implicit parents in later layers take
    // their mode and owner rather than resetting them to root 0755.
    let mut declared: BTreeMap<String, (u32, u32, u32)> = BTreeMap::new();
    let mut layers = Vec::new();
    let mut log = Vec::new();
    for (index, (name, entries)) in layer_specs.into_iter().enumerate() {
        for e in &entries {
            if matches!(e.source, FileSource::Directory) {
                declared.insert(e.path.clone(), (e.mode, e.uid, e.gid));
            }
        }
        let entries = with_parents(entries, &declared, &name)?;
        let count = entries.len();
        let path = dir.path().join(format!("{index}-{name}.tar.gz"));
        let out = write_layer(entries, &names, &groups, &path)?;
        log.push(format!(
            "layer {name}: {count} entries, {} bytes tar, {} bytes gzip, {} (diff_id {})",
            out.tar_size, out.size, out.digest, out.diff_id
        ));
        layers.push(BuiltLayer {
            name,
            descriptor: Descriptor::new(MediaType::ImageLayerGzip, out.size, out.digest),
            diff_id: out.diff_id,
            uncompressed_size: out.tar_size,
            entries: count,
            path,
        });
    }

    let config_bytes = canonical_json(&configuration(spec, &layers, &created)?)?;
    let config = BuiltBlob {
        descriptor: Descriptor::new(
            MediaType::ImageConfig,
            config_bytes.len() as u64,
            sha256_digest(&config_bytes),
        ),
        bytes: config_bytes,
    };
    log.push(format!(
        "config: {} bytes, {}",
        config.bytes.len(),
        config.descriptor.digest()
    ));

    let mut manifest: ImageManifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(config.descriptor.clone())
        .layers(
            layers
                .iter()
                .map(|l| l.descriptor.clone())
                .collect::<Vec<_>>(),
        )
        .build()
        .map_err(|e| DeployError::InvalidArgument(format!("image manifest: {e}")))?;
    let annotations = manifest_annotations(spec, &created);
    if !annotations.is_empty() {
        manifest.set_annotations(Some(annotations));
    }
    let manifest_bytes = canonical_json(&manifest)?;
    let manifest = BuiltBlob {
        descriptor: Descriptor::new(
            MediaType::ImageManifest,
            manifest_bytes.len() as u64,
            sha256_digest(&manifest_bytes),
        ),
        bytes: manifest_bytes,
    };
    log.push(format!(
        "manifest: {} bytes, {}",
        manifest.bytes.len(),
        manifest.descriptor.digest()
    ));
    Ok(BuiltImage {
        manifest,
        config,
        layers,
        log,
        _dir: dir,
    })
}

fn rfc3339(seconds: i64) -> Result<String, DeployError> {
    let time = time::OffsetDateTime::from_unix_timestamp(seconds).map_err(|e| {
        DeployError::InvalidArgument(format!("creation time {seconds} is out of range: {e}"))
    })?;
    time.format(&time::format_description::well_known::Rfc3339)
        .map_err(|e| DeployError::InvalidArgument(format!("creation time {seconds}: {e}")))
}

fn to_entry(file: &super::FileEntry) -> Entry {
    Entry {
        path: file.path[1..].to_string(),
        source: file.source.clone(),
        mode: file.mode,
        uid: file.uid,
        gid: file.gid,
    }
}

/// `/etc/passwd`, `/etc/group`, `/tmp` (1777) and the user's home.
fn base_entries(spec: &ImageSpec) -> Vec<Entry> {
    let u = &spec.user;
    let passwd = format!(
        "root:x:0:0:root:/root:/sbin/nologin\n{name}:x:{uid}:{gid}:{name}:{home}:/sbin/nologin\n",
        name = u.name,
        uid = u.uid,
        gid = u.gid,
        home = u.home
    );
    let group = format!("root:x:0:\n{}:x:{}:\n", u.group, u.gid);
    let entry = |path: &str, source, mode, uid, gid| Entry {
        path: path.trim_start_matches('/').to_string(),
        source,
        mode,
        uid,
        gid,
    };
    let mut entries = vec![
        entry("/etc", FileSource::Directory, 0o755, 0, 0),
        entry(
            "/etc/passwd",
            FileSource::Bytes(passwd.into_bytes()),
            0o644,
            0,
            0,
        ),
        entry(
            "/etc/group",
            FileSource::Bytes(group.into_bytes()),
            0o644,
            0,
            0,
        ),
        entry("/tmp", FileSource::Directory, 0o1777, 0, 0),
    ];
    if u.home != "/tmp" && u.home != "/etc" {
        entries.push(entry(&u.home, FileSource::Directory, 0o755, u.uid, u.gid));
    }
    entries
}

/// Adds a directory entry for every missing parent of every entry.
fn with_parents(
    mut entries: Vec<Entry>,
    declared: &BTreeMap<String, (u32, u32, u32)>,
    layer: &str,
) -> Result<Vec<Entry>, DeployError> {
    let own: HashMap<String, bool> = entries
        .iter()
        .map(|e| (e.path.clone(), matches!(e.source, FileSource::Directory)))
        .collect();
    let mut parents: BTreeMap<String, Entry> = BTreeMap::new();
    for e in &entries {
        let mut path = e.path.as_str();
        while let Some((parent, _)) = path.rsplit_once('/') {
            path = parent;
            match own.get(parent) {
                Some(true) => continue,
                Some(false) => {
                    return Err(DeployError::InvalidArgument(format!(
                        "layer {layer:?}: /{parent} is a file and the parent of /{}",
                        e.path
                    )))
                }
                None => {}
            }
            let (mode, uid, gid) = declared.get(parent).copied().unwrap_or((0o755, 0, 0));
            parents.entry(parent.to_string()).or_insert(Entry {
                path: parent.to_string(),
                source: FileSource::Directory,
                mode,
                uid,
                gid,
            });
        }
    }
    entries.extend(parents.into_values());
    Ok(entries)
}

fn configuration(
    spec: &ImageSpec,
    layers: &[BuiltLayer],
    created: &str,
) -> Result<ImageConfiguration, DeployError> {
    let some_vec = |v: &Vec<String>| (!v.is_empty()).then(|| v.clone());
    let mut config = Config::default();
    config.set_user(Some(format!("{}:{}", spec.user.uid, spec.user.gid)));
    config.set_entrypoint(some_vec(&spec.entrypoint));
    config.set_cmd(some_vec(&spec.cmd));
    let env: Vec<String> = spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    config.set_env(some_vec(&env));
    config.set_working_dir(spec.working_dir.clone());
    config.set_exposed_ports(some_vec(&spec.normalized_ports()?));
    let labels = labels(spec, created);
    config.set_labels((!labels.is_empty()).then(|| labels.into_iter().collect()));

    let mut rootfs = RootFs::default();
    rootfs.set_diff_ids(layers.iter().map(|l| l.diff_id.to_string()).collect());
    let history = layers
        .iter()
        .map(|l| {
            let mut h = History::default();
            h.set_created(Some(created.to_string()));
            h.set_created_by(Some(format!("accel images create: {} layer", l.name)));
            h
        })
        .collect();

    let mut image = ImageConfiguration::default();
    image.set_created(Some(created.to_string()));
    image.set_architecture(Arch::from(spec.platform.architecture.as_str()));
    image.set_os(Os::from(spec.platform.os.as_str()));
    image.set_variant(spec.platform.variant.clone());
    image.set_config(Some(config));
    image.set_rootfs(rootfs);
    image.set_history(Some(history));
    Ok(image)
}

fn labels(spec: &ImageSpec, created: &str) -> BTreeMap<String, String> {
    let mut labels = spec.labels.clone();
    labels
        .entry(ANNOTATION_CREATED.to_string())
        .or_insert_with(|| created.to_string());
    labels
}

/// The `org.opencontainers.image.*` labels, then the spec's annotations.
fn manifest_annotations(spec: &ImageSpec, created: &str) -> HashMap<String, String> {
    let mut annotations: HashMap<String, String> = labels(spec, created)
        .into_iter()
        .filter(|(k, _)| k.starts_with("org.opencontainers.image."))
        .collect();
    annotations.extend(spec.annotations.clone());
    annotations
}

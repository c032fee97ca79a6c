//! `accel images create|list|show|delete|push|export`: OCI images that hold
//! the `accel` binary (with the shared libraries it needs), ONNX Runtime
//! when the model wants it, and the model as a bundle; built in this
//! process, without a container daemon, into the registry's blob store.

use super::models::parse_kv;
use crate::bundle::write_bundle;
use crate::context::GlobalArgs;
use crate::output::print_json;
use accel_core::name::NameRef;
use accel_deploy::oci::{
    self, BlobData, BlobSink, BlobSource, Descriptor, Digest, FileEntry, ImageSpec, ImageUser,
    LayerSpec, MediaType, PushAuth, PushOptions,
};
use accel_deploy::DeployError;
use accel_registry::{ImageRecord, ModelRecord, NewImage, Registry};
use anyhow::{bail, Context};
use clap::{Args, Subcommand, ValueEnum};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::PathBuf;
use std::str::FromStr;

/// Where the image's server listens (TF Serving's gRPC port, and the next).
pub const GRPC_PORT: u16 = 8500;
/// The image's HTTP port.
pub const HTTP_PORT: u16 = 8501;
/// The image's non-root user.
pub const IMAGE_UID: u32 = 10001;
/// Where the model bundle lives in the image.
pub const BUNDLE_DIR: &str = "/opt/accel/model";
const ENGINE_DIR: &str = "/opt/accel/lib";
const BINARY: &str = "/usr/local/bin/accel";

/// Image subcommands.
#[derive(Debug, Subcommand)]
pub enum ImagesCommand {
    /// Build an image of a model; prints NAME:VERSION.
    Create(CreateArgs),
    /// List images.
    List(ListArgs),
    /// Show one image (latest unless NAME:VERSION).
    Show(ShowArgs),
    /// Delete NAME:VERSION, or every version of NAME.
    Delete(DeleteArgs),
    /// Push an image to an OCI registry (distribution API).
    Push(PushArgs),
    /// Write an image to a tar file (OCI image layout, or docker save format).
    Export(ExportArgs),
}

/// `accel images create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Image name.
    pub name: String,
    /// The model (or plan) to package: NAME or NAME:VERSION.
    #[arg(long)]
    pub model: String,
    /// The service name the server answers to (default: the model's name).
    #[arg(long)]
    pub service: Option<String>,
    /// A tag `key=value` (repeatable).
    #[arg(long = "tag", value_parser = parse_kv)]
    pub tags: Vec<(String, String)>,
    /// Free-text description.
    #[arg(long, default_value = "")]
    pub description: String,
    /// JSON output (the image record).
    #[arg(long)]
    pub json: bool,
}

/// `accel images list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only this name.
    #[arg(long)]
    pub name: Option<String>,
    /// JSON output.
    #[arg(long)]
    pub json: bool,
}

/// `accel images show`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// NAME or NAME:VERSION.
    pub image: String,
    /// Print the build log too.
    #[arg(long)]
    pub log: bool,
    /// JSON output.
    #[arg(long)]
    pub json: bool,
}

/// `accel images delete`.
#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// NAME:VERSION, or NAME for every version.
    pub image: String,
    /// Also delete the deployments that use it (stopped first).
    #[arg(long)]
    pub force: bool,
    /// JSON output.
    #[arg(long)]
    pub json: bool,
}

/// `accel images push`.
#[derive(Debug, Args)]
pub struct PushArgs {
    /// NAME or NAME:VERSION.
    pub image: String,
    /// Destination: HOST[:PORT]/REPOSITORY:TAG.
    pub destination: String,
    /// User name for the registry (basic auth, or a token exchange).
    #[arg(long, env = "ACCEL_REGISTRY_USERNAME")]
    pub username: Option<String>,
    /// Password for the registry.
    #[arg(long, env = "ACCEL_REGISTRY_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    /// Speak plain HTTP (a registry on loopback or a trusted network).
    #[arg(long)]
    pub insecure: bool,
    /// JSON output.
    #[arg(long)]
    pub json: bool,
}

/// Archive formats.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ArchiveFormat {
    /// An OCI image layout in a tar (`skopeo inspect oci-archive:FILE`).
    Oci,
    /// `docker save` format (`docker load`, `podman load`).
    Docker,
}

/// `accel images export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// NAME or NAME:VERSION.
    pub image: String,
    /// The tar file to write.
    pub file: PathBuf,
    /// Archive format.
    #[arg(long, value_enum, default_value = "oci")]
    pub format: ArchiveFormat,
}

/// Dispatches an images subcommand.
pub fn run(global: &GlobalArgs, command: ImagesCommand) -> anyhow::Result<()> {
    match command {
        ImagesCommand::Create(a) => create(global, a),
        ImagesCommand::List(a) => list(global, a),
        ImagesCommand::Show(a) => show(global, a),
        ImagesCommand::Delete(a) => delete(global, a),
        ImagesCommand::Push(a) => push(global, a),
        ImagesCommand::Export(a) => export(global, a),
    }
}

/// Stores a build's blobs in the registry, referenced by the image.
struct RegistrySink<'a> {
    registry: &'a Registry,
    image: &'a ImageRecord,
}

fn role_of(media_type: &MediaType) -> &'static str {
    match media_type {
        MediaType::ImageManifest => "manifest",
        MediaType::ImageConfig => "config",
        MediaType::ImageIndex => "index",
        _ => "layer",
    }
}

impl BlobSink for RegistrySink<'_> {
    fn put(&mut self, descriptor: &Descriptor, data: BlobData<'_>) -> Result<(), DeployError> {
        let media = descriptor.media_type().to_string();
        let role = role_of(descriptor.media_type());
        let stored = match data {
            BlobData::Bytes(b) => self.registry.put_image_blob(self.image, b, &media, role),
            BlobData::File(p) => self
                .registry
                .put_image_blob_file(self.image, p, &media, role),
        }
        .map_err(|e| DeployError::FailedPrecondition(e.to_string()))?;
        if format!("sha256:{stored}") != descriptor.digest().to_string() {
            return Err(DeployError::FailedPrecondition(format!(
                "stored blob sha256:{stored} is not {}",
                descriptor.digest()
            )));
        }
        Ok(())
    }
}

/// Reads image blobs back from the registry's blob store.
struct RegistrySource<'a> {
    registry: &'a Registry,
}

impl BlobSource for RegistrySource<'_> {
    fn open_blob(&self, digest: &Digest) -> Result<Box<dyn Read + Send>, DeployError> {
        let hex = digest.to_string();
        let hex = hex.strip_prefix("sha256:").ok_or_else(|| {
            DeployError::InvalidArgument(format!("{digest} is not a sha256 digest"))
        })?;
        let path = self.registry.blob_path(hex);
        let file = std::fs::File::open(&path).map_err(|e| {
            DeployError::NotFound(format!("blob {digest} ({}): {e}", path.display()))
        })?;
        Ok(Box::new(file))
    }
}

/// The manifest descriptor of a built image.
fn manifest_descriptor(image: &ImageRecord) -> anyhow::Result<Descriptor> {
    if image.state != "succeeded" {
        bail!(
            "image {} is {}, not succeeded",
            image.reference(),
            image.state
        );
    }
    let blob = image
        .blobs
        .iter()
        .find(|b| b.role == "manifest")
        .with_context(|| format!("image {} has no manifest blob", image.reference()))?;
    let digest = Digest::from_str(&format!("sha256:{}", blob.sha256))
        .map_err(|e| anyhow::anyhow!("bad manifest digest: {e}"))?;
    Ok(Descriptor::new(MediaType::ImageManifest, blob.size, digest))
}

/// Seconds since the epoch of an RFC 3339 time (`YYYY-MM-DDTHH:MM:SSZ`).
fn epoch_of(rfc3339: &str) -> i64 {
    let parse = || -> Option<i64> {
        let (date, time) = rfc3339.trim_end_matches('Z').split_once('T')?;
        let mut d = date.split('-').map(|x| x.parse::<i64>());
        let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
        let mut t = time.split(':').map(|x| x.parse::<i64>());
        let (hh, mm, ss) = (t.next()?.ok()?, t.next()?.ok()?, t.next()?.ok()?);
        // Days from civil (Howard Hinnant's algorithm).
        let y = if m <= 2 { y - 1 } else { y };
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let mp = (m + 9) % 12;
        let doy = (153 * mp + 2) / 5 + day - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        let days = era * 146_097 + doe - 719_468;
        Some(days * 86_400 + hh * 3600 + mm * 60 + ss)
    };
    parse().unwrap_or(0)
}

/// Whether the model will run on ONNX Runtime in the image.
fn wants_onnxruntime(model: &ModelRecord) -> bool {
    match model.properties.get(super::convert::PLAN_ENGINE) {
        Some(engine) => engine == "onnxruntime",
        None => true,
    }
}

/// The ONNX Runtime library files to ship: the library discovery finds
/// here, and `libonnxruntime_providers_shared.so` beside it.
fn onnxruntime_files(global: &GlobalArgs) -> anyhow::Result<Option<(PathBuf, Vec<PathBuf>)>> {
    let found = accel_runtime::engine::onnxruntime::discover(&global.search_paths()?);
    let Some(lib) = found.into_iter().next() else {
        return Ok(None);
    };
    let mut files = vec![lib.path.clone()];
    if let Some(dir) = lib.path.parent() {
        let shared = dir.join("libonnxruntime_providers_shared.so");
        if shared.is_file() {
            files.push(shared);
        }
    }
    Ok(Some((lib.path, files)))
}

fn host_libs(binaries: &[PathBuf], skip: &BTreeSet<PathBuf>) -> anyhow::Result<Vec<FileEntry>> {
    let mut libs = BTreeSet::new();
    for b in binaries {
        for lib in oci::shared_libraries(b)? {
            if !skip.contains(&lib) {
                libs.insert(lib);
            }
        }
    }
    libs.into_iter()
        .map(|l| Ok(FileEntry::host_same_path(l)?))
        .collect()
}

/// What goes into the image of `model`.
fn image_spec(
    global: &GlobalArgs,
    image: &ImageRecord,
    model: &ModelRecord,
    service: &str,
    bundle_files: &[PathBuf],
) -> anyhow::Result<(ImageSpec, Vec<String>)> {
    let mut log = Vec::new();
    let exe = std::env::current_exe().context("locating the accel executable")?;
    let runtime_libs = host_libs(std::slice::from_ref(&exe), &BTreeSet::new())?;
    let runtime_paths: BTreeSet<PathBuf> = runtime_libs
        .iter()
        .filter_map(|f| match &f.source {
            oci::FileSource::HostFile(p) => Some(p.clone()),
            _ => None,
        })
        .collect();
    log.push(format!(
        "runtime: {} and {} shared libraries",
        exe.display(),
        runtime_libs.len()
    ));
    let runtime = LayerSpec::new("runtime")
        .file(FileEntry::host(BINARY, &exe, 0o755))
        .files(runtime_libs);
    let user = ImageUser::new("accel", IMAGE_UID, IMAGE_UID);
    let mut spec = ImageSpec::new(user, epoch_of(&model.created)).layer(runtime);
    if wants_onnxruntime(model) {
        match onnxruntime_files(global)? {
            Some((lib, files)) => {
                let name = lib
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or("libonnxruntime.so")
                    .to_string();
                let mut layer = LayerSpec::new("engine");
                for f in &files {
                    let file_name = f.file_name().and_then(|n| n.to_str()).unwrap_or("lib.so");
                    layer = layer.file(FileEntry::host(
                        format!("{ENGINE_DIR}/{file_name}"),
                        f,
                        0o755,
                    ));
                }
                layer = layer.files(host_libs(&files, &runtime_paths)?);
                log.push(format!("engine: onnxruntime from {}", lib.display()));
                spec = spec
                    .layer(layer)
                    .env_var("ORT_DYLIB_PATH", format!("{ENGINE_DIR}/{name}"));
            }
            None if model.format == "accel-plan" => bail!(
                "{} is a plan for onnxruntime, and no ONNX Runtime library is found here to put in the image (`accel engines install onnxruntime`)",
                model.reference()
            ),
            None => log.push("engine: ONNX Runtime not found here; the image runs tract".into()),
        }
    }
    let mut model_layer = LayerSpec::new("model");
    for f in bundle_files {
        let name = f.file_name().and_then(|n| n.to_str()).unwrap_or("file");
        model_layer = model_layer.file(FileEntry::host(format!("{BUNDLE_DIR}/{name}"), f, 0o644));
    }
    log.push(format!(
        "model: {} ({}, sha256 {})",
        model.reference(),
        model.format,
        model.sha256
    ));
    spec = spec.layer(model_layer);
    spec.entrypoint = vec![BINARY.to_string(), "serve".to_string()];
    spec.exposed_ports = vec![GRPC_PORT.to_string(), HTTP_PORT.to_string()];
    for (k, v) in [
        ("ACCEL_HOME", "/tmp/accel".to_string()),
        ("ACCEL_BUNDLES", BUNDLE_DIR.to_string()),
        ("ACCEL_SERVICES", service.to_string()),
        ("ACCEL_HOST", "0.0.0.0".to_string()),
        ("ACCEL_GRPC_PORT", GRPC_PORT.to_string()),
        ("ACCEL_HTTP_PORT", HTTP_PORT.to_string()),
    ] {
        spec = spec.env_var(k, v);
    }
    spec = spec
        .label("org.opencontainers.image.title", image.name.clone())
        .label(
            "org.opencontainers.image.version",
            image.version.to_string(),
        )
        .label(
            "org.opencontainers.image.description",
            if image.description.is_empty() {
                format!("accel serve {}", model.reference())
            } else {
                image.description.clone()
            },
        )
        .label("dev.accel.model", model.reference())
        .label("dev.accel.model.sha256", model.sha256.clone())
        .label("dev.accel.model.format", model.format.clone())
        .label("dev.accel.service", service.to_string());
    Ok((spec, log))
}

fn create(global: &GlobalArgs, a: CreateArgs) -> anyhow::Result<()> {
    accel_core::name::validate_name(&a.name)?;
    let registry = global.registry()?;
    let model_ref: NameRef = a.model.parse()?;
    let model = registry.get_model(&model_ref)?;
    let service = a.service.clone().unwrap_or_else(|| model.name.clone());
    accel_core::name::validate_name(&service)?;
    let image = registry.begin_image(&NewImage {
        name: a.name.clone(),
        model: NameRef {
            name: model.name.clone(),
            version: Some(model.version),
        },
        description: a.description.clone(),
        tags: a.tags.iter().cloned().collect::<BTreeMap<_, _>>(),
    })?;
    let mut log: Vec<String> = Vec::new();
    let outcome = (|| -> anyhow::Result<String> {
        let scratch = tempfile::tempdir().context("creating a scratch directory")?;
        let bundle = scratch.path().join("bundle");
        let files = write_bundle(&registry, &model, &bundle)?;
        let (spec, spec_log) = image_spec(global, &image, &model, &service, &files)?;
        log.extend(spec_log);
        let built = oci::build_in(&spec, scratch.path())?;
        log.extend(built.log.iter().cloned());
        built.write_to(&mut RegistrySink {
            registry: &registry,
            image: &image,
        })?;
        Ok(built.digest().to_string())
    })();
    let finished = match outcome {
        Ok(digest) => {
            log.push(format!("manifest {digest}"));
            registry.finish_image(&image, Ok(digest), &log.join("\n"))?
        }
        Err(e) => {
            let msg: Vec<String> = e.chain().map(|c| c.to_string()).collect();
            let _ = registry.finish_image(&image, Err(msg.join(": ")), &log.join("\n"));
            return Err(e.context(format!("building image {}", image.reference())));
        }
    };
    if a.json {
        print_json(&finished)
    } else {
        println!("{}", finished.reference());
        Ok(())
    }
}

fn list(global: &GlobalArgs, a: ListArgs) -> anyhow::Result<()> {
    let images = global.registry()?.list_images(a.name.as_deref())?;
    if a.json {
        return print_json(&images);
    }
    println!(
        "{:<28} {:>7} {:<10} {:<24} {:>12} {:<20} DIGEST",
        "NAME", "VERSION", "STATE", "MODEL", "SIZE", "CREATED"
    );
    for i in &images {
        println!(
            "{:<28} {:>7} {:<10} {:<24} {:>12} {:<20} {}",
            i.name,
            i.version,
            i.state,
            i.model,
            i.size,
            i.created,
            i.manifest_digest.as_deref().unwrap_or("-")
        );
    }
    Ok(())
}

fn show(global: &GlobalArgs, a: ShowArgs) -> anyhow::Result<()> {
    let image = global.registry()?.get_image(&a.image.parse()?)?;
    if a.json {
        return print_json(&image);
    }
    println!("image:       {}", image.reference());
    println!("state:       {}", image.state);
    println!("model:       {}", image.model);
    println!("description: {}", image.description);
    println!("created:     {}", image.created);
    if let Some(f) = &image.finished {
        println!("finished:    {f}");
    }
    if let Some(d) = &image.manifest_digest {
        println!("digest:      {d}");
    }
    println!("size:        {} bytes", image.size);
    for (k, v) in &image.tags {
        println!("tag:         {k}={v}");
    }
    for b in &image.blobs {
        println!(
            "blob:        {:<8} sha256:{} {:>12} {}",
            b.role, b.sha256, b.size, b.media_type
        );
    }
    for l in &image.locations {
        println!("pushed:      {} {} ({})", l.reference, l.digest, l.pushed);
    }
    if a.log {
        println!("build log:");
        for line in image.build_log.lines() {
            println!("  {line}");
        }
    }
    Ok(())
}

fn delete(global: &GlobalArgs, a: DeleteArgs) -> anyhow::Result<()> {
    let registry = global.registry()?;
    let r: NameRef = a.image.parse()?;
    if a.force {
        super::services::stop_dependents(global, &registry, &registry.dependents_of_image(&r)?)?;
    }
    let deleted = registry.delete_image(&r, a.force)?;
    if a.json {
        return print_json(&deleted);
    }
    for d in &deleted {
        println!("deleted {d}");
    }
    Ok(())
}

fn push(global: &GlobalArgs, a: PushArgs) -> anyhow::Result<()> {
    let registry = global.registry()?;
    let image = registry.get_image(&a.image.parse()?)?;
    let manifest = manifest_descriptor(&image)?;
    let auth = match (a.username, a.password) {
        (Some(username), Some(password)) => PushAuth::Basic { username, password },
        (None, None) => PushAuth::Anonymous,
        _ => bail!("--username and --password go together"),
    };
    let options = PushOptions {
        auth,
        insecure_http: a.insecure,
    };
    let source = RegistrySource {
        registry: &registry,
    };
    let report = crate::output::current_thread_runtime()?.block_on(oci::push(
        &source,
        &manifest,
        &a.destination,
        &options,
    ))?;
    registry.add_image_location(&image, &report.reference, report.digest.as_ref())?;
    if a.json {
        return print_json(&serde_json::json!({
            "image": image.reference(),
            "reference": report.reference,
            "digest": report.digest.to_string(),
            "uploaded": report.uploaded.len(),
            "skipped": report.skipped.len(),
            "uploaded_bytes": report.uploaded_bytes,
        }));
    }
    println!(
        "pushed {} to {} ({}): {} blobs uploaded ({} bytes), {} already there",
        image.reference(),
        report.reference,
        report.digest,
        report.uploaded.len(),
        report.uploaded_bytes,
        report.skipped.len()
    );
    Ok(())
}

fn export(global: &GlobalArgs, a: ExportArgs) -> anyhow::Result<()> {
    let registry = global.registry()?;
    let image = registry.get_image(&a.image.parse()?)?;
    let manifest = manifest_descriptor(&image)?;
    let source = RegistrySource {
        registry: &registry,
    };
    match a.format {
        ArchiveFormat::Oci => {
            oci::export_oci_archive(&source, &manifest, &image.version.to_string(), &a.file)?
        }
        ArchiveFormat::Docker => oci::export_docker_archive(
            &source,
            &manifest,
            &[format!("accel/{}:{}", image.name, image.version)],
            &a.file,
        )?,
    }
    println!("{}", a.file.display());
    Ok(())
}

//! OCI images against real tools: `skopeo` and `umoci` read what we build,
//! and Debian's `docker-registry` (the distribution registry v2) takes what
//! we push, on loopback. A missing tool fails the test with how to install it.

use accel_deploy::oci::{
    self, build_in, export_docker_archive, export_oci_archive, push, shared_libraries, BlobSource,
    BuiltImage, FileEntry, ImageSpec, ImageUser, LayerSpec, OciLayout, Platform, PushAuth,
    PushOptions,
};
use accel_deploy::DeployError;
use serde_json::Value;
use std::fs;
use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// 2024-01-02T03:04:05Z.
const CREATED: i64 = 1_704_164_645;

/// Fails (never skips) when `tool` is missing, saying how to install it.
fn require_tool(tool: &str, package: &str) {
    let found = Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    assert!(
        found,
        "`{tool}` is needed by this test and is not installed: \
         install it with `apt-get install -y {package}` (Debian/Ubuntu; .ci/run does)"
    );
}

/// Runs a command, failing the test with its output unless it succeeds.
fn run(cmd: &mut Command) -> String {
    let output = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        output.status.success(),
        "{cmd:?} failed ({}):\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// skopeo with a signature policy of our own (a host may have none).
fn skopeo(dir: &Path) -> Command {
    require_tool("skopeo", "skopeo");
    let policy = dir.join("policy.json");
    if !policy.exists() {
        fs::write(
            &policy,
            r#"{"default":[{"type":"insecureAcceptAnything"}]}"#,
        )
        .unwrap();
    }
    let mut cmd = Command::new("skopeo");
    cmd.arg("--policy").arg(policy);
    cmd
}

fn skopeo_json(dir: &Path, args: &[&str]) -> Value {
    let out = run(skopeo(dir).args(args));
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("skopeo {args:?} printed {out}: {e}"))
}

/// A small image: `/bin/true` as the "server" with the libraries `ldd`
/// lists, a model layer, labels, a non-root user.
fn tiny_spec(model: &[u8]) -> ImageSpec {
    let binary = Path::new("/bin/true");
    let libraries = shared_libraries(binary).expect("ldd /bin/true");
    assert!(!libraries.is_empty(), "/bin/true is expected to be dynamic");
    let runtime = LayerSpec::new("runtime")
        .file(FileEntry::host("/usr/local/bin/accel", binary, 0o755))
        .files(
            libraries
                .iter()
                .map(|l| FileEntry::host_same_path(l).unwrap()),
        );
    let model_layer = LayerSpec::new("model")
        .file(FileEntry::bytes(
            "/opt/accel/model/model.onnx",
            model,
            0o644,
        ))
        .file(FileEntry::bytes(
            "/opt/accel/service.toml",
            "[service]\nport = 8080\n",
            0o644,
        ))
        .file(FileEntry::symlink("/opt/accel/current", "model"));
    let mut spec = ImageSpec::new(ImageUser::new("accel", 10001, 10001), CREATED)
        .layer(runtime)
        .layer(LayerSpec::new("engine")) // no ONNX Runtime: left out
        .layer(model_layer)
        .label(oci::ANNOTATION_TITLE, "tiny")
        .label(oci::ANNOTATION_VERSION, "1")
        .label(oci::ANNOTATION_DESCRIPTION, "a test image\nwith two lines")
        .env_var("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env_var("ACCEL_HOME", "/opt/accel");
    spec.entrypoint = vec!["/usr/local/bin/accel".into()];
    spec.cmd = vec![
        "serve".into(),
        "--config".into(),
        "/opt/accel/service.toml".into(),
    ];
    spec.working_dir = Some("/opt/accel".into());
    spec.exposed_ports = vec!["8080".into(), "9090/tcp".into()];
    spec
}

/// `len` pseudo-random bytes (xorshift), the same every time.
fn noise(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn tiny_image(scratch: &Path) -> BuiltImage {
    build_in(&tiny_spec(b"fake model weights"), scratch).expect("build")
}

#[test]
fn oci_build_is_reproducible_and_layers_are_reused() {
    let a_dir = tempfile::tempdir().unwrap();
    let b_dir = tempfile::tempdir().unwrap();
    let a = tiny_image(a_dir.path());
    let b = tiny_image(b_dir.path());
    assert_eq!(a.digest(), b.digest());
    assert_eq!(a.manifest.bytes, b.manifest.bytes);
    assert_eq!(a.config.bytes, b.config.bytes);
    let names: Vec<&str> = a.layers.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(
        names,
        ["base", "runtime", "model"],
        "the empty engine layer is left out"
    );
    for (x, y) in a.layers.iter().zip(&b.layers) {
        assert_eq!(x.descriptor, y.descriptor);
        assert_eq!(fs::read(&x.path).unwrap(), fs::read(&y.path).unwrap());
    }
    // gzip header: no mtime, no file name (FLG = 0, MTIME = 0).
    let gz = fs::read(&a.layers[0].path).unwrap();
    assert_eq!(&gz[..2], b"\x1f\x8b");
    assert_eq!(gz[3], 0, "no FNAME/FEXTRA/FCOMMENT");
    assert_eq!(&gz[4..8], &[0, 0, 0, 0], "MTIME is 0");

    // Another model (and another creation time): base and runtime layers
    // keep their digests, so a push sends only the model layer and config.
    let mut spec = tiny_spec(b"other weights");
    spec.created += 3600;
    let c = build_in(&spec, a_dir.path()).unwrap();
    assert_ne!(c.digest(), a.digest());
    assert_eq!(c.layers[0].descriptor, a.layers[0].descriptor);
    assert_eq!(c.layers[1].descriptor, a.layers[1].descriptor);
    assert_ne!(c.layers[2].descriptor, a.layers[2].descriptor);
    assert!(
        a.log.iter().any(|l| l.starts_with("layer runtime:")),
        "{:?}",
        a.log
    );

    // The blobs a sink receives are the ones the manifest names.
    let layout_dir = tempfile::tempdir().unwrap();
    let layout = a.write_layout(layout_dir.path(), "1").unwrap();
    assert_eq!(layout.resolve("1").unwrap().digest(), a.digest());
    for layer in &a.layers {
        assert_eq!(
            layout.read_blob(layer.descriptor.digest()).unwrap(),
            fs::read(&layer.path).unwrap()
        );
    }
}

#[test]
fn oci_invalid_specs_are_refused() {
    let scratch = tempfile::tempdir().unwrap();
    let mut root = tiny_spec(b"m");
    root.user = ImageUser::new("accel", 0, 0);
    let mut relative = tiny_spec(b"m");
    relative.layers[0]
        .files
        .push(FileEntry::bytes("opt/x", "x", 0o644));
    let mut twice = tiny_spec(b"m");
    twice.layers[2]
        .files
        .push(FileEntry::bytes("/opt/accel/service.toml", "y", 0o644));
    let mut port = tiny_spec(b"m");
    port.exposed_ports = vec!["http".into()];
    for (what, spec) in [
        ("root", root),
        ("relative", relative),
        ("twice", twice),
        ("port", port),
    ] {
        match build_in(&spec, scratch.path()) {
            Err(DeployError::InvalidArgument(_)) => {}
            other => panic!("{what}: expected InvalidArgument, got {other:?}"),
        }
    }
}

#[test]
fn oci_corrupt_blobs_are_refused_on_export() {
    let work = tempfile::tempdir().unwrap();
    let image = tiny_image(work.path());
    let layout = image
        .write_layout(&work.path().join("layout"), "1")
        .unwrap();
    let model = &image.layers[2].descriptor;
    let blob = layout.blob_path(model.digest()).unwrap();
    let mut bytes = fs::read(&blob).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    fs::write(&blob, bytes).unwrap();
    let manifest = layout.resolve("1").unwrap();
    for docker in [false, true] {
        let out = work.path().join(format!("out-{docker}.tar"));
        let err = if docker {
            export_docker_archive(&layout, &manifest, &["a:1".to_string()], &out)
        } else {
            export_oci_archive(&layout, &manifest, "1", &out)
        }
        .unwrap_err();
        assert!(matches!(err, DeployError::FailedPrecondition(_)), "{err:?}");
        assert!(!out.exists(), "no partial archive is left");
    }
    // An unknown tag and a bad tag.
    assert!(matches!(layout.resolve("2"), Err(DeployError::NotFound(_))));
    let err = export_oci_archive(
        &image,
        &image.manifest.descriptor,
        "bad tag",
        &work.path().join("x.tar"),
    );
    assert!(matches!(err, Err(DeployError::InvalidArgument(_))));
}

#[test]
fn oci_layout_and_archive_pass_skopeo_and_umoci() {
    require_tool("umoci", "umoci");
    let work = tempfile::tempdir().unwrap();
    let image = tiny_image(work.path());
    let layout_dir = work.path().join("layout");
    let layout = image.write_layout(&layout_dir, "1").unwrap();
    let archive = work.path().join("image.tar");
    export_oci_archive(&image, &image.manifest.descriptor, "1", &archive).unwrap();

    // The archive is the same whether its blobs come from the build or the layout.
    let again = work.path().join("again.tar");
    export_oci_archive(&layout, &layout.resolve("1").unwrap(), "1", &again).unwrap();
    assert_eq!(fs::read(&archive).unwrap(), fs::read(&again).unwrap());

    let archive_ref = format!("oci-archive:{}", archive.display());
    let layout_ref = format!("oci:{}:1", layout_dir.display());
    for reference in [&archive_ref, &layout_ref] {
        let info = skopeo_json(work.path(), &["inspect", reference]);
        assert_eq!(
            info["Digest"],
            image.digest().to_string(),
            "{reference}: {info}"
        );
        assert_eq!(info["Architecture"], Platform::host().architecture);
        assert_eq!(info["Os"], "linux");
        assert_eq!(info["Labels"][oci::ANNOTATION_TITLE], "tiny");
        assert_eq!(info["Labels"][oci::ANNOTATION_VERSION], "1");
        assert_eq!(
            info["Labels"][oci::ANNOTATION_CREATED],
            "2024-01-02T03:04:05Z"
        );
        assert_eq!(info["Created"], "2024-01-02T03:04:05Z");
        assert_eq!(info["Layers"].as_array().unwrap().len(), image.layers.len());
        let raw = run(skopeo(work.path()).args(["inspect", "--raw", reference]));
        assert_eq!(
            raw.as_bytes(),
            image.manifest.bytes,
            "{reference}: manifest bytes"
        );
        let config = run(skopeo(work.path()).args(["inspect", "--config", "--raw", reference]));
        assert_eq!(
            config.as_bytes(),
            image.config.bytes,
            "{reference}: config bytes"
        );
    }

    // umoci unpacks it: files, user, entrypoint, environment.
    let bundle = work.path().join("bundle");
    run(Command::new("umoci")
        .args(["unpack", "--rootless", "--image"])
        .arg(format!("{}:1", layout_dir.display()))
        .arg(&bundle));
    let rootfs = bundle.join("rootfs");
    assert_eq!(
        fs::read(rootfs.join("usr/local/bin/accel")).unwrap(),
        fs::read("/bin/true").unwrap()
    );
    assert_eq!(
        fs::read(rootfs.join("opt/accel/model/model.onnx")).unwrap(),
        b"fake model weights"
    );
    assert_eq!(
        fs::read_link(rootfs.join("opt/accel/current")).unwrap(),
        Path::new("model")
    );
    let passwd = fs::read_to_string(rootfs.join("etc/passwd")).unwrap();
    assert!(
        passwd.contains("accel:x:10001:10001:accel:/home/accel:/sbin/nologin"),
        "{passwd}"
    );
    assert!(fs::read_to_string(rootfs.join("etc/group"))
        .unwrap()
        .contains("accel:x:10001:"));
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let tmp = fs::metadata(rootfs.join("tmp")).unwrap();
    assert!(tmp.is_dir());
    assert_eq!(tmp.permissions().mode() & 0o7777, 0o1777);
    let accel = fs::metadata(rootfs.join("usr/local/bin/accel")).unwrap();
    assert_eq!(accel.permissions().mode() & 0o777, 0o755);
    assert_eq!(accel.mtime(), 0);
    for library in shared_libraries(Path::new("/bin/true")).unwrap() {
        let inside = rootfs.join(library.strip_prefix("/").unwrap());
        assert!(
            inside.is_file(),
            "{} missing from the rootfs",
            inside.display()
        );
    }

    let config: Value =
        serde_json::from_slice(&fs::read(bundle.join("config.json")).unwrap()).unwrap();
    let process = &config["process"];
    assert_eq!(
        process["args"],
        serde_json::json!([
            "/usr/local/bin/accel",
            "serve",
            "--config",
            "/opt/accel/service.toml"
        ])
    );
    assert_eq!(process["cwd"], "/opt/accel");
    let env: Vec<&str> = process["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(env.contains(&"ACCEL_HOME=/opt/accel"), "{env:?}");
    // The image user, resolved by umoci through the image's /etc/passwd
    // (which also gives HOME).
    assert_eq!(process["user"]["uid"], 10001, "{process}");
    assert_eq!(process["user"]["gid"], 10001, "{process}");
    assert!(env.contains(&"HOME=/home/accel"), "{env:?}");
    let annotations = &config["annotations"];
    assert_eq!(annotations[oci::ANNOTATION_TITLE], "tiny");
    assert_eq!(annotations[oci::ANNOTATION_CREATED], "2024-01-02T03:04:05Z");
    assert_eq!(
        annotations["org.opencontainers.image.exposedPorts"],
        "8080/tcp,9090/tcp"
    );

    // The binary runs from the unpacked rootfs with the image's own loader
    // and libraries (no chroot needed): the runtime layer is self-contained.
    let libraries = shared_libraries(Path::new("/bin/true")).unwrap();
    let loader = libraries
        .iter()
        .find(|l| {
            l.to_string_lossy().contains("ld-linux") || l.to_string_lossy().contains("ld-musl")
        })
        .expect("a dynamic loader");
    let library_path: Vec<String> = libraries
        .iter()
        .filter_map(|l| l.parent())
        .map(|d| {
            rootfs
                .join(d.strip_prefix("/").unwrap())
                .display()
                .to_string()
        })
        .collect();
    run(Command::new(rootfs.join(loader.strip_prefix("/").unwrap()))
        .arg("--library-path")
        .arg(library_path.join(":"))
        .arg(rootfs.join("usr/local/bin/accel")));
}

#[test]
fn oci_image_config_has_user_entrypoint_and_ports() {
    let work = tempfile::tempdir().unwrap();
    let image = tiny_image(work.path());
    let config: Value = serde_json::from_slice(&image.config.bytes).unwrap();
    assert_eq!(config["config"]["User"], "10001:10001");
    assert_eq!(config["config"]["Entrypoint"][0], "/usr/local/bin/accel");
    assert_eq!(config["config"]["WorkingDir"], "/opt/accel");
    assert_eq!(
        config["config"]["ExposedPorts"],
        serde_json::json!({"8080/tcp": {}, "9090/tcp": {}})
    );
    assert_eq!(config["rootfs"]["diff_ids"].as_array().unwrap().len(), 3);
    assert_eq!(config["history"].as_array().unwrap().len(), 3);
    let manifest: Value = serde_json::from_slice(&image.manifest.bytes).unwrap();
    assert_eq!(manifest["annotations"][oci::ANNOTATION_TITLE], "tiny");
    assert_eq!(
        manifest["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
}

#[test]
fn oci_docker_archive_passes_skopeo() {
    let work = tempfile::tempdir().unwrap();
    let image = tiny_image(work.path());
    let archive = work.path().join("docker.tar");
    export_docker_archive(
        &image,
        &image.manifest.descriptor,
        &["accel/tiny:1".to_string()],
        &archive,
    )
    .unwrap();
    let reference = format!("docker-archive:{}", archive.display());
    let info = skopeo_json(work.path(), &["inspect", &reference]);
    assert_eq!(info["Labels"][oci::ANNOTATION_TITLE], "tiny", "{info}");
    assert_eq!(info["Architecture"], Platform::host().architecture);
    assert_eq!(info["Layers"].as_array().unwrap().len(), image.layers.len());
    // The configuration (docker's image id is its digest) is ours, byte for byte.
    let config = run(skopeo(work.path()).args(["inspect", "--config", "--raw", &reference]));
    assert_eq!(config.as_bytes(), image.config.bytes);
    // Layers are the uncompressed tars (digests = diff_ids).
    let docker_manifest = info["Layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect::<Vec<_>>();
    let diff_ids: Vec<String> = image.layers.iter().map(|l| l.diff_id.to_string()).collect();
    assert_eq!(docker_manifest, diff_ids);

    // manifest.json names the tag; a copy to an OCI layout keeps the files.
    let mut tar = tar::Archive::new(fs::File::open(&archive).unwrap());
    let mut manifest_json = String::new();
    for entry in tar.entries().unwrap() {
        let mut entry = entry.unwrap();
        if entry.path().unwrap() == Path::new("manifest.json") {
            entry.read_to_string(&mut manifest_json).unwrap();
        }
    }
    let manifest_json: Value = serde_json::from_str(&manifest_json).unwrap();
    assert_eq!(manifest_json[0]["RepoTags"][0], "accel/tiny:1");
    let copy = work.path().join("copy");
    run(skopeo(work.path())
        .arg("copy")
        .arg(&reference)
        .arg(format!("oci:{}:1", copy.display())));

    // A bad name is refused before anything is written.
    let err = export_docker_archive(
        &image,
        &image.manifest.descriptor,
        &["Not A Name".to_string()],
        &work.path().join("bad.tar"),
    )
    .unwrap_err();
    assert!(matches!(err, DeployError::InvalidArgument(_)), "{err}");
    assert!(!work.path().join("bad.tar").exists());
}

/// Debian's `docker-registry` on a free loopback port, storage and log in a
/// temporary directory; killed on drop.
struct Registry {
    child: Child,
    port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Registry {
    fn start(credentials: Option<(&str, &str)>) -> Registry {
        require_tool("docker-registry", "docker-registry");
        let dir = tempfile::tempdir().unwrap();
        let auth = match credentials {
            Some((user, password)) => {
                let hash = bcrypt::hash_with_result(password, 5)
                    .unwrap()
                    .format_for_version(bcrypt::Version::TwoY);
                let htpasswd = dir.path().join("htpasswd");
                fs::write(&htpasswd, format!("{user}:{hash}\n")).unwrap();
                format!(
                    "auth:\n  htpasswd:\n    realm: accel-test\n    path: {}\n",
                    htpasswd.display()
                )
            }
            None => String::new(),
        };
        // The registry needs a concrete port: take a free one, release it,
        // and try again with another if someone took it meanwhile.
        for _attempt in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let config = dir.path().join("config.yml");
            fs::write(
                &config,
                format!(
                    "version: 0.1\n\
                     log:\n  level: info\n  accesslog:\n    disabled: false\n\
                     storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
                     http:\n  addr: 127.0.0.1:{port}\n  secret: accel-test-secret\n{auth}",
                    dir.path().join("storage").display()
                ),
            )
            .unwrap();
            let log = dir.path().join(format!("registry-{port}.log"));
            let out = fs::File::create(&log).unwrap();
            let mut child = Command::new("docker-registry")
                .arg("serve")
                .arg(&config)
                .stdout(out.try_clone().unwrap())
                .stderr(out)
                .spawn()
                .expect("start docker-registry");
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Registry {
                        child,
                        port,
                        log,
                        _dir: dir,
                    };
                }
                if let Some(status) = child.try_wait().unwrap() {
                    let text = fs::read_to_string(&log).unwrap_or_default();
                    if text.contains("address already in use") {
                        break;
                    }
                    panic!("docker-registry exited ({status}):\n{text}");
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "docker-registry did not listen on {port}:\n{}",
                        fs::read_to_string(&log).unwrap_or_default()
                    );
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        panic!("no free port for docker-registry after 5 attempts");
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Blob uploads started so far (`POST …/blobs/uploads/` in the access log).
    fn uploads_started(&self) -> usize {
        fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("\"POST /v2/") && l.contains("/blobs/uploads/"))
            .count()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn insecure(auth: PushAuth) -> PushOptions {
    PushOptions {
        auth,
        insecure_http: true,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oci_push_to_docker_registry_round_trips() {
    let registry = Registry::start(None);
    let work = tempfile::tempdir().unwrap();
    let image = tiny_image(work.path());
    let reference = format!("{}/accel/tiny:1", registry.host());
    let options = insecure(PushAuth::Anonymous);

    let first = push(&image, &image.manifest.descriptor, &reference, &options)
        .await
        .unwrap();
    assert_eq!(&first.digest, image.digest());
    assert_eq!(first.uploaded.len(), image.layers.len() + 1, "{first:?}");
    assert!(first.skipped.is_empty());
    let uploads = registry.uploads_started();
    assert_eq!(uploads, image.layers.len() + 1);

    // skopeo reads it back: the same manifest digest, and a copy into an
    // OCI layout keeps it.
    let docker_ref = format!("docker://{reference}");
    let info = skopeo_json(work.path(), &["inspect", "--tls-verify=false", &docker_ref]);
    assert_eq!(info["Digest"], image.digest().to_string(), "{info}");
    assert_eq!(info["Labels"][oci::ANNOTATION_TITLE], "tiny");
    let copy = work.path().join("copy");
    run(skopeo(work.path())
        .args(["copy", "--src-tls-verify=false", &docker_ref])
        .arg(format!("oci:{}:1", copy.display())));
    let copied = OciLayout::open(&copy).unwrap().resolve("1").unwrap();
    assert_eq!(copied.digest(), image.digest());

    // Again: every blob is already there, none is sent.
    let second = push(&image, &image.manifest.descriptor, &reference, &options)
        .await
        .unwrap();
    assert_eq!(second.digest, first.digest);
    assert!(second.uploaded.is_empty(), "{second:?}");
    assert_eq!(second.skipped.len(), image.layers.len() + 1);
    assert_eq!(
        registry.uploads_started(),
        uploads,
        "no upload on the second push"
    );

    // A new model (3 MiB of incompressible bytes: the upload streams in
    // several chunks): only its layer and the configuration travel.
    let mut spec = tiny_spec(&noise(3 << 20));
    spec.created += 60;
    let v2 = build_in(&spec, work.path()).unwrap();
    let v2_ref = format!("{}/accel/tiny:2", registry.host());
    let third = push(&v2, &v2.manifest.descriptor, &v2_ref, &options)
        .await
        .unwrap();
    assert_eq!(third.uploaded.len(), 2, "{third:?}");
    assert!(third.uploaded_bytes > 3 << 20, "{third:?}");
    assert!(third.uploaded.contains(v2.layers[2].descriptor.digest()));
    let info = skopeo_json(
        work.path(),
        &[
            "inspect",
            "--tls-verify=false",
            &format!("docker://{v2_ref}"),
        ],
    );
    assert_eq!(info["Digest"], v2.digest().to_string());

    // Pushing from an OCI layout (what the CLI's blob store stands for) works the same.
    let layout = image
        .write_layout(&work.path().join("layout"), "1")
        .unwrap();
    let from_layout = push(
        &layout,
        &layout.resolve("1").unwrap(),
        &format!("{}/accel/other:1", registry.host()),
        &options,
    )
    .await
    .unwrap();
    assert_eq!(&from_layout.digest, image.digest());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oci_push_with_basic_auth() {
    let registry = Registry::start(Some(("pusher", "s3cret")));
    let work = tempfile::tempdir().unwrap();
    let image = tiny_image(work.path());
    let reference = format!("{}/accel/tiny:1", registry.host());
    let descriptor = &image.manifest.descriptor;

    let wrong = insecure(PushAuth::Basic {
        username: "pusher".into(),
        password: "wrong".into(),
    });
    let err = push(&image, descriptor, &reference, &wrong)
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, DeployError::Remote(_)), "{err:?}");
    assert!(
        text.contains("401") && text.contains("rejected the credentials of user \"pusher\""),
        "{text}"
    );
    assert!(
        !text.contains("wrong"),
        "the password must not be echoed: {text}"
    );

    let err = push(
        &image,
        descriptor,
        &reference,
        &insecure(PushAuth::Anonymous),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, DeployError::Remote(_)), "{err:?}");
    assert!(err.to_string().contains("requires credentials"), "{err}");

    let right = insecure(PushAuth::Basic {
        username: "pusher".into(),
        password: "s3cret".into(),
    });
    let report = push(&image, descriptor, &reference, &right).await.unwrap();
    assert_eq!(&report.digest, image.digest());
    let info = skopeo_json(
        work.path(),
        &[
            "inspect",
            "--tls-verify=false",
            "--creds",
            "pusher:s3cret",
            &format!("docker://{reference}"),
        ],
    );
    assert_eq!(info["Digest"], image.digest().to_string());
}

#[tokio::test]
async fn oci_push_errors_are_classified() {
    let work = tempfile::tempdir().unwrap();
    let image = tiny_image(work.path());
    let descriptor = &image.manifest.descriptor;
    // Nothing listens on a port we just released.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let options = insecure(PushAuth::Anonymous);
    let err = push(
        &image,
        descriptor,
        &format!("127.0.0.1:{port}/a/b:1"),
        &options,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, DeployError::Unavailable(_)), "{err:?}");
    for bad in [
        "127.0.0.1:1/UPPER:1",
        "127.0.0.1:1/a:b:c",
        "127.0.0.1:1/a@sha256:0000",
    ] {
        let err = push(&image, descriptor, bad, &options).await.unwrap_err();
        assert!(
            matches!(err, DeployError::InvalidArgument(_)),
            "{bad}: {err:?}"
        );
    }
    // A digest reference must be the image's.
    let other = format!("127.0.0.1:1/a@sha256:{}", "0".repeat(64));
    let err = push(&image, descriptor, &other, &options)
        .await
        .unwrap_err();
    assert!(matches!(err, DeployError::InvalidArgument(_)), "{err:?}");
}

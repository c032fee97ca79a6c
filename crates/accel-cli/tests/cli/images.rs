//! `accel images`: an image of a registered model passes `skopeo inspect`
//! and `umoci unpack` (Debian's packages); unpacked, it has the expected
//! files, user, entrypoint and labels, and its root filesystem runs
//! `accel serve` (chroot, as the image's user), which answers `accel score`.
//! Pushed to Debian's `docker-registry` on loopback and copied back by
//! `skopeo`, the digest is the one the registry recorded.

use super::{fixture, spawn_serve, Home};
use serde_json::Value;
use std::fs;
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

fn tool(name: &str) -> Command {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        found,
        "{name} is needed: `apt-get install {}` (scripts/test installs it)",
        if name == "docker-registry" {
            "docker-registry"
        } else {
            name
        }
    );
    Command::new(name)
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Debian's `docker-registry` on a free loopback port; killed on drop.
struct OciRegistry {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl OciRegistry {
    fn start() -> OciRegistry {
        let dir = tempfile::tempdir().unwrap();
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let config = dir.path().join("config.yml");
            fs::write(
                &config,
                format!(
                    "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n  secret: accel-test\n",
                    dir.path().join("storage").display()
                ),
            )
            .unwrap();
            let log = fs::File::create(dir.path().join(format!("log-{port}"))).unwrap();
            let mut child = tool("docker-registry")
                .arg("serve")
                .arg(&config)
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap();
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return OciRegistry {
                        child,
                        port,
                        _dir: dir,
                    };
                }
                if child.try_wait().unwrap().is_some() {
                    break; // the port was taken meanwhile: another one
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("docker-registry did not start");
    }
}

impl Drop for OciRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn register_shufflenet(h: &Home) {
    h.register("shuffle", "shufflenet-v2-12-qdq.onnx");
}

#[test]
fn image_passes_skopeo_and_umoci_and_its_rootfs_serves() {
    let h = Home::new();
    register_shufflenet(&h);
    let created = h.json(&[
        "images",
        "create",
        "shuffle-img",
        "--model",
        "shuffle",
        "--description",
        "ShuffleNetV2 int8",
        "--json",
    ]);
    assert_eq!(created["state"], "succeeded", "{created:#}");
    assert_eq!(created["model"], "shuffle:1");
    let digest = created["manifest_digest"].as_str().unwrap().to_string();
    let work = tempfile::tempdir().unwrap();
    let tar = work.path().join("img.tar");
    h.ok(&["images", "export", "shuffle-img", tar.to_str().unwrap()]);

    // skopeo reads the OCI archive: our digest, labels, platform.
    let inspect: Value = serde_json::from_str(&run_ok(
        tool("skopeo")
            .arg("inspect")
            .arg(format!("oci-archive:{}", tar.display())),
    ))
    .unwrap();
    assert_eq!(inspect["Digest"], digest.as_str(), "{inspect:#}");
    assert_eq!(inspect["Architecture"], "amd64");
    assert_eq!(inspect["Os"], "linux");
    assert_eq!(
        inspect["Labels"]["org.opencontainers.image.title"],
        "shuffle-img"
    );
    assert_eq!(inspect["Labels"]["org.opencontainers.image.version"], "1");
    assert_eq!(inspect["Labels"]["dev.accel.model"], "shuffle:1");
    assert!(
        inspect["Layers"].as_array().unwrap().len() >= 3,
        "{inspect:#}"
    );

    // umoci unpacks the layout: files, user, entrypoint, env.
    let layout = work.path().join("layout");
    fs::create_dir(&layout).unwrap();
    run_ok(
        Command::new("tar")
            .arg("-xf")
            .arg(&tar)
            .arg("-C")
            .arg(&layout),
    );
    let bundle = work.path().join("bundle");
    run_ok(
        tool("umoci")
            .args(["unpack", "--rootless", "--image"])
            .arg(format!("{}:1", layout.display()))
            .arg(&bundle),
    );
    let rootfs = bundle.join("rootfs");
    for f in [
        "usr/local/bin/accel",
        "opt/accel/model/model.json",
        "opt/accel/model/model.onnx",
        "opt/accel/model/labels.txt",
        "etc/passwd",
        "tmp",
    ] {
        assert!(rootfs.join(f).exists(), "{f} missing from the rootfs");
    }
    let passwd = fs::read_to_string(rootfs.join("etc/passwd")).unwrap();
    assert!(passwd.contains("accel:x:10001:10001"), "{passwd}");
    let config: Value =
        serde_json::from_str(&fs::read_to_string(bundle.join("config.json")).unwrap()).unwrap();
    let process = &config["process"];
    assert_eq!(process["user"]["uid"], 10001, "{process:#}");
    assert_eq!(process["args"][0], "/usr/local/bin/accel");
    assert_eq!(process["args"][1], "serve");
    let env: Vec<&str> = process["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    assert!(env.contains(&"ACCEL_BUNDLES=/opt/accel/model"), "{env:?}");
    let ort = env
        .iter()
        .find_map(|e| e.strip_prefix("ORT_DYLIB_PATH="))
        .expect("the image ships ONNX Runtime");
    assert!(rootfs.join(ort.trim_start_matches('/')).is_file(), "{ort}");

    // The unpacked root filesystem serves: chroot into it as the image's
    // user, with the image's environment (ports 0: any free ones). Not
    // root: in a user namespace where we are root (then as that root).
    let root = run_ok(Command::new("id").arg("-u")).trim() == "0";
    let mut cmd = if root {
        let mut c = Command::new("chroot");
        c.arg("--userspec=10001:10001");
        c
    } else {
        let mut c = Command::new("unshare");
        c.args(["--user", "--map-root-user", "chroot"]);
        c
    };
    cmd.arg(&rootfs)
        .args(
            process["args"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a.as_str().unwrap()),
        )
        .env_clear();
    for e in &env {
        if let Some((k, v)) = e.split_once('=') {
            cmd.env(k, v);
        }
    }
    cmd.env("ACCEL_HOST", "127.0.0.1")
        .env("ACCEL_GRPC_PORT", "0")
        .env("ACCEL_HTTP_PORT", "0");
    let mut served = spawn_serve(cmd);
    let coffee = fixture("images/skimage_coffee.png");
    let v = h.json(&[
        "score",
        &served.grpc,
        "--service",
        "shuffle",
        coffee.to_str().unwrap(),
        "--json",
    ]);
    served.child.kill().unwrap();
    served.child.wait().unwrap();
    assert_eq!(v["results"][0]["top"][0]["index"], 967, "{v}");
    assert_eq!(v["results"][0]["top"][0]["label"], "espresso");

    // The docker-save format is readable too.
    let dtar = work.path().join("img-docker.tar");
    h.ok(&[
        "images",
        "export",
        "shuffle-img",
        dtar.to_str().unwrap(),
        "--format",
        "docker",
    ]);
    let d: Value = serde_json::from_str(&run_ok(
        tool("skopeo")
            .arg("inspect")
            .arg(format!("docker-archive:{}", dtar.display())),
    ))
    .unwrap();
    assert_eq!(d["Labels"]["dev.accel.model"], "shuffle:1");
}

#[test]
fn push_to_a_registry_and_copy_back_gives_the_same_digest() {
    let h = Home::new();
    register_shufflenet(&h);
    h.ok(&["images", "create", "shuffle-img", "--model", "shuffle"]);
    let record = h.json(&["images", "show", "shuffle-img", "--json"]);
    let digest = record["manifest_digest"].as_str().unwrap().to_string();
    let reg = OciRegistry::start();
    let dest = format!("127.0.0.1:{}/accel/shuffle:1", reg.port);
    let pushed = h.json(&[
        "images",
        "push",
        "shuffle-img",
        &dest,
        "--insecure",
        "--json",
    ]);
    assert_eq!(pushed["digest"], digest.as_str(), "{pushed:#}");
    assert!(pushed["uploaded"].as_u64().unwrap() >= 4, "{pushed:#}");
    // Pushing again uploads nothing.
    let again = h.json(&[
        "images",
        "push",
        "shuffle-img",
        &dest,
        "--insecure",
        "--json",
    ]);
    assert_eq!(again["uploaded"], 0, "{again:#}");
    // skopeo copies it back: identical manifest digest.
    let work = tempfile::tempdir().unwrap();
    let copy = work.path().join("copy");
    run_ok(
        tool("skopeo")
            .args(["copy", "--src-tls-verify=false"])
            .arg(format!("docker://{dest}"))
            .arg(format!("oci:{}:copied", copy.display())),
    );
    let index: Value =
        serde_json::from_str(&fs::read_to_string(copy.join("index.json")).unwrap()).unwrap();
    assert_eq!(
        index["manifests"][0]["digest"],
        digest.as_str(),
        "{index:#}"
    );
    let remote: Value = serde_json::from_str(&run_ok(
        tool("skopeo")
            .args(["inspect", "--tls-verify=false"])
            .arg(format!("docker://{dest}")),
    ))
    .unwrap();
    assert_eq!(remote["Digest"], digest.as_str());
    // The push is recorded.
    let shown = h.json(&["images", "show", "shuffle-img", "--json"]);
    assert_eq!(
        shown["locations"][0]["reference"],
        dest.as_str(),
        "{shown:#}"
    );
    // A registry that is not there: a clear error, nothing recorded.
    let dead = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = h.fails(&[
        "images",
        "push",
        "shuffle-img",
        &format!("127.0.0.1:{dead}/accel/x:1"),
        "--insecure",
    ]);
    assert!(err.contains(&format!("127.0.0.1:{dead}")), "{err}");
}

//! Model bundles (`accel models bundle`, `accel serve --bundle`): a model in
//! a plain directory, served without a registry from a home that cannot be
//! written (a read-only image), checked against its own record.

use super::{fixture, spawn_serve, Home, Served};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The names in a directory.
fn names(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect()
}

/// The ONNX Runtime library that scripts/test provisioned, if any: given by
/// ORT_DYLIB_PATH to a server whose home has no engines directory.
fn ort_dylib() -> Option<PathBuf> {
    let engines = PathBuf::from(std::env::var_os("ACCEL_HOME")?).join("engines");
    std::fs::read_dir(engines)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libonnxruntime.so"))
        })
}

/// An `accel` command whose Accel home is `home` (not a [`Home`]).
fn accel_in(home: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_accel"));
    c.env("ACCEL_HOME", home)
        .env_remove("ACCEL_TEST_CRASH_AT")
        .env_remove("ORT_DYLIB_PATH");
    if let Some(lib) = ort_dylib() {
        c.env("ORT_DYLIB_PATH", lib);
    }
    c
}

/// Runs a command that must fail; returns its one-line stderr.
fn fails(mut cmd: Command) -> String {
    let out = cmd.stdout(Stdio::null()).output().unwrap();
    assert!(!out.status.success(), "{cmd:?} unexpectedly succeeded");
    let err = String::from_utf8(out.stderr).unwrap();
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected a one-line error, got: {err}");
    lines[0].to_string()
}

/// Scores the coffee photo on `service`: top-1 must be 967 "espresso".
fn scores_espresso(h: &Home, grpc: &str, service: &str, key: Option<&str>) {
    let coffee = fixture("images/skimage_coffee.png");
    let mut args = vec!["score", grpc, "--service", service];
    if let Some(k) = key {
        args.extend(["--key", k]);
    }
    args.extend([coffee.to_str().unwrap(), "--json"]);
    let v = h.json(&args);
    assert_eq!(v["results"][0]["top"][0]["index"], 967, "{v}");
    assert_eq!(v["results"][0]["top"][0]["label"], "espresso", "{v}");
}

/// A running server, killed when dropped (a failed assertion included).
struct Running(Served);

impl Running {
    fn start(cmd: Command) -> Running {
        Running(spawn_serve(cmd))
    }

    fn grpc(&self) -> &str {
        &self.0.grpc
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.child.kill();
        let _ = self.0.child.wait();
    }
}

/// Registers the int8 ShuffleNetV2 (with labels) and bundles it into `dir`.
fn bundled_shuffle(h: &Home, dir: &Path) {
    h.register("shuffle", "shufflenet-v2-12-qdq.onnx");
    h.ok(&["models", "bundle", "shuffle", dir.to_str().unwrap()]);
}

#[test]
fn bundle_is_three_files_written_reproducibly() {
    let h = Home::new();
    h.register("shuffle", "shufflenet-v2-12-qdq.onnx");
    let work = tempfile::tempdir().unwrap();
    let (a, b) = (work.path().join("a"), work.path().join("b"));
    let printed = h.ok(&["models", "bundle", "shuffle:1", a.to_str().unwrap()]);
    let expected: Vec<String> = ["labels.txt", "model.json", "model.onnx"]
        .iter()
        .map(|n| a.join(n).display().to_string())
        .collect();
    assert_eq!(printed.lines().collect::<Vec<_>>(), expected);
    assert_eq!(
        names(&a),
        BTreeSet::from(["labels.txt", "model.json", "model.onnx"].map(String::from))
    );
    // model.json is the record exactly as `models show --json` prints it.
    let shown = h.ok(&["models", "show", "shuffle:1", "--json"]);
    assert_eq!(
        std::fs::read_to_string(a.join("model.json")).unwrap(),
        shown
    );
    // The model and labels are the registry's blobs.
    let record: serde_json::Value = serde_json::from_str(&shown).unwrap();
    let model = std::fs::read(a.join("model.onnx")).unwrap();
    assert_eq!(
        model,
        std::fs::read(fixture("models/shufflenet-v2-12-qdq.onnx")).unwrap()
    );
    assert_eq!(record["size"], model.len() as u64);
    let labels = std::fs::read_to_string(a.join("labels.txt")).unwrap();
    assert_eq!(labels.lines().count(), 1000);
    assert_eq!(labels.lines().nth(967), Some("espresso"));
    // Same record, same bytes: again in place, and in another directory.
    let before: Vec<Vec<u8>> = ["labels.txt", "model.json", "model.onnx"]
        .iter()
        .map(|n| std::fs::read(a.join(n)).unwrap())
        .collect();
    h.ok(&["models", "bundle", "shuffle", a.to_str().unwrap()]);
    h.ok(&["models", "bundle", "shuffle", b.to_str().unwrap()]);
    for dir in [&a, &b] {
        assert_eq!(names(dir).len(), 3, "{}", dir.display());
        for (n, bytes) in ["labels.txt", "model.json", "model.onnx"]
            .iter()
            .zip(&before)
        {
            assert_eq!(&std::fs::read(dir.join(n)).unwrap(), bytes, "{n}");
        }
    }
    // A model without labels has no labels.txt (a stale one goes).
    let raw = fixture("models/shufflenet-v2-12-qdq.onnx");
    h.ok(&["models", "register", "raw", raw.to_str().unwrap()]);
    h.ok(&["models", "bundle", "raw", a.to_str().unwrap()]);
    assert_eq!(
        names(&a),
        BTreeSet::from(["model.json", "model.onnx"].map(String::from))
    );
    let err = h.fails(&["models", "bundle", "nope", b.to_str().unwrap()]);
    assert!(err.contains("nope"), "{err}");
}

/// `accel serve --bundle` from an empty home it cannot write (as root, where
/// permissions do not stop it: it creates no registry there either).
#[test]
fn serve_a_bundle_from_a_read_only_home() {
    let h = Home::new();
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("bundle");
    bundled_shuffle(&h, &dir);
    let home = work.path().join("home");
    std::fs::create_dir(&home).unwrap();
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o555)).unwrap();
    let mut cmd = accel_in(&home);
    cmd.args([
        "serve",
        "--bundle",
        dir.to_str().unwrap(),
        "--service",
        "s",
        "--key",
        "k-1",
    ]);
    let served = Running::start(cmd);
    scores_espresso(&h, served.grpc(), "s", Some("k-1"));
    let coffee = fixture("images/skimage_coffee.png");
    let coffee = coffee.to_str().unwrap();
    let err = h.fails(&[
        "score",
        served.grpc(),
        "--service",
        "s",
        "--key",
        "no",
        coffee,
    ]);
    assert!(err.contains("Unauthenticated"), "{err}");
    drop(served);
    // --auth needs the keys in a registry, and this home has none.
    let mut cmd = accel_in(&home);
    cmd.args(["serve", "--bundle", dir.to_str().unwrap(), "--auth"]);
    let err = fails(cmd);
    assert!(
        err.contains("--auth")
            && err.contains("registry")
            && err.contains(&home.display().to_string()),
        "{err}"
    );
    let left = names(&home);
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o755)).unwrap();
    if root {
        // Root may write anyway: the optimized-model cache, and nothing else.
        assert!(
            left.iter().all(|n| n == "cache"),
            "serve created {left:?} in its home"
        );
    } else {
        assert!(left.is_empty(), "serve created {left:?} in its home");
    }
}

/// --model and --bundle in one serve: --service names pair with every
/// --model first, then every --bundle; --key applies to both.
#[test]
fn serve_mixes_models_and_bundles_by_position() {
    let h = Home::new();
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("bundle");
    bundled_shuffle(&h, &dir);
    let mut cmd = h.cmd();
    cmd.args([
        "serve",
        "--bundle",
        dir.to_str().unwrap(),
        "--model",
        "shuffle",
        "--service",
        "from-model",
        "--service",
        "from-bundle",
        "--key",
        "k-2",
        "--engine",
        "tract",
    ]);
    let served = Running::start(cmd);
    scores_espresso(&h, served.grpc(), "from-model", Some("k-2"));
    scores_espresso(&h, served.grpc(), "from-bundle", Some("k-2"));
    let coffee = fixture("images/skimage_coffee.png");
    let err = h.fails(&[
        "score",
        served.grpc(),
        "--service",
        "from-bundle",
        coffee.to_str().unwrap(),
    ]);
    assert!(err.contains("Unauthenticated"), "{err}");
    drop(served);
    let err = h.fails(&[
        "serve",
        "--bundle",
        dir.to_str().unwrap(),
        "--service",
        "a",
        "--service",
        "b",
    ]);
    assert!(err.contains("2 --service names"), "{err}");
}

#[test]
fn a_corrupt_bundle_fails_naming_the_file() {
    let h = Home::new();
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("bundle");
    bundled_shuffle(&h, &dir);
    let home = tempfile::tempdir().unwrap();
    let serve = |engine: &str| {
        let mut cmd = accel_in(home.path());
        cmd.args(["serve", "--bundle", dir.to_str().unwrap()])
            .args(["--engine", engine]);
        fails(cmd)
    };
    // One byte flipped in the model: the sha256 check wins over whatever
    // the engine made of the bytes.
    let model = dir.join("model.onnx");
    let mut bytes = std::fs::read(&model).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&model, &bytes).unwrap();
    for engine in ["auto", "tract"] {
        let err = serve(engine);
        assert!(
            err.contains("corrupt") && err.contains(&model.display().to_string()),
            "{engine}: {err}"
        );
    }
    bytes[mid] ^= 0x40;
    // Truncated: caught before anything is hashed.
    std::fs::write(&model, &bytes[..mid]).unwrap();
    let err = serve("tract");
    assert!(
        err.contains("corrupt") && err.contains("model.onnx"),
        "{err}"
    );
    std::fs::write(&model, &bytes).unwrap();
    // A label changed.
    let labels = dir.join("labels.txt");
    let text = std::fs::read_to_string(&labels).unwrap();
    std::fs::write(&labels, text.replacen("espresso", "decaf", 1)).unwrap();
    let err = serve("tract");
    assert!(
        err.contains("corrupt") && err.contains("labels.txt"),
        "{err}"
    );
    std::fs::write(&labels, &text).unwrap();
    // Not a bundle at all.
    std::fs::remove_file(dir.join("model.json")).unwrap();
    let err = serve("tract");
    assert!(err.contains("not a model bundle"), "{err}");
    assert!(
        !home.path().join("registry.db").exists(),
        "a bundle serve opened the registry"
    );
}

/// A converted plan bundles and serves like any model, from a home with no
/// registry.
#[test]
fn a_bundled_plan_serves_without_the_registry() {
    let h = Home::new();
    h.register("shuffle-f32", "shufflenet-v2-12-f32.onnx");
    h.ok(&[
        "convert",
        "shuffle-f32",
        "--precision",
        "fp32",
        "--threads",
        "1",
        "--min-time-ms",
        "100",
    ]);
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("plan");
    h.ok(&[
        "models",
        "bundle",
        "shuffle-f32-plan:1",
        dir.to_str().unwrap(),
    ]);
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("model.json")).unwrap()).unwrap();
    assert_eq!(record["format"], "accel-plan");
    assert_eq!(names(&dir).len(), 3);
    let home = tempfile::tempdir().unwrap();
    let mut cmd = accel_in(home.path());
    cmd.args(["serve", "--bundle", dir.to_str().unwrap()]);
    let served = Running::start(cmd);
    // The default service name is the model's name.
    scores_espresso(&h, served.grpc(), "shuffle-f32-plan", None);
    drop(served);
    // A plan is loaded as it is: nothing cached, no registry.
    assert!(names(home.path()).is_empty(), "{:?}", names(home.path()));
}

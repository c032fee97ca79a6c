//! End-to-end tests of the `accel` binary: each runs it as a user would, in
//! a fresh temporary Accel home.

#[path = "cli/bundle.rs"]
mod bundle;
#[path = "cli/convert.rs"]
mod convert;
#[path = "cli/detect.rs"]
mod detect;
#[path = "cli/graphs.rs"]
mod graphs;
#[path = "cli/images.rs"]
mod images;
#[path = "cli/security.rs"]
mod security;
#[path = "cli/services.rs"]
mod services;
#[path = "cli/swap.rs"]
mod swap;
#[path = "cli/train.rs"]
mod train;
#[path = "cli/zoo.rs"]
mod zoo;

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// Held by the test that compares timings (convert) and by the tests that
/// load both cores (serve + bench), so that they do not run at once.
static HEAVY: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn heavy() -> std::sync::MutexGuard<'static, ()> {
    HEAVY.lock().unwrap_or_else(|p| p.into_inner())
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn fixture(rel: &str) -> PathBuf {
    root().join("fixtures").join(rel)
}

/// A temporary Accel home that shares the provisioned engines directory.
struct Home {
    dir: tempfile::TempDir,
}

impl Home {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        // Reuse the ONNX Runtime that scripts/test provisioned, if any.
        if let Some(h) = std::env::var_os("ACCEL_HOME") {
            let engines = PathBuf::from(h).join("engines");
            if engines.is_dir() {
                std::os::unix::fs::symlink(engines, dir.path().join("engines")).unwrap();
            }
        }
        Home { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_accel"));
        c.env("ACCEL_HOME", self.path())
            .env_remove("ACCEL_TEST_CRASH_AT");
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "accel {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs a command that must fail; returns its one-line stderr.
    fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "accel {args:?} unexpectedly succeeded"
        );
        let err = String::from_utf8(out.stderr).unwrap();
        let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "expected a one-line error, got: {err}");
        lines[0].to_string()
    }

    fn json(&self, args: &[&str]) -> Value {
        serde_json::from_str(&self.ok(args)).unwrap()
    }

    fn listing(&self) -> Value {
        self.json(&["models", "list", "--json"])
    }

    fn register(&self, name: &str, model: &str) -> String {
        let path = fixture(&format!("models/{model}"));
        let labels = fixture("labels/imagenet-simple-labels.json");
        self.ok(&[
            "models",
            "register",
            name,
            path.to_str().unwrap(),
            "--preset",
            "torchvision",
            "--labels",
            labels.to_str().unwrap(),
        ])
        .trim()
        .to_string()
    }
}

#[test]
fn versions_increment_and_latest_or_pinned_resolve() {
    let h = Home::new();
    assert_eq!(
        h.register("shuffle", "shufflenet-v2-12-qdq.onnx"),
        "shuffle:1"
    );
    assert_eq!(
        h.register("shuffle", "shufflenet-v2-12-f32.onnx"),
        "shuffle:2"
    );
    let latest = h.json(&["models", "show", "shuffle", "--json"]);
    assert_eq!(latest["version"], 2);
    let pinned = h.json(&["models", "show", "shuffle:1", "--json"]);
    assert_eq!(pinned["version"], 1);
    assert_eq!(pinned["spec"]["input_name"], "input");
    assert_eq!(pinned["spec"]["labels"]["count"], 1000);
    let text = h.ok(&["models", "show", "shuffle:1"]);
    assert!(text.contains("shorter_side = 256"), "{text}");
}

#[test]
fn tag_filters_select_models() {
    let h = Home::new();
    let m = fixture("models/shufflenet-v2-12-qdq.onnx");
    let m = m.to_str().unwrap();
    h.ok(&[
        "models",
        "register",
        "a",
        m,
        "--tag",
        "team=vision",
        "--tag",
        "stage=prod",
    ]);
    h.ok(&["models", "register", "b", m, "--tag", "team=vision"]);
    h.ok(&["models", "register", "c", m]);
    let names = |v: Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        names(h.json(&["models", "list", "--tag", "team=vision", "--json"])),
        ["a", "b"]
    );
    assert_eq!(
        names(h.json(&["models", "list", "--tag", "stage", "--json"])),
        ["a"]
    );
    assert_eq!(
        names(h.json(&["models", "list", "--json"])),
        ["a", "b", "c"]
    );
}

#[test]
fn predict_finds_the_known_classes_on_both_engines() {
    let h = Home::new();
    h.register("shuffle", "shufflenet-v2-12-qdq.onnx");
    let imgs = [
        "skimage_chelsea.png",
        "skimage_coffee.png",
        "sklearn_china.jpg",
    ]
    .map(|f| fixture(&format!("images/{f}")));
    for engine in ["onnxruntime", "tract"] {
        let mut args = vec!["predict", "shuffle", "--json", "--engine", engine];
        args.extend(imgs.iter().map(|p| p.to_str().unwrap()));
        let v = h.json(&args);
        assert_eq!(v["engine"], engine);
        let top1: Vec<u64> = v["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["top"][0]["index"].as_u64().unwrap())
            .collect();
        assert!(
            (281..=285).contains(&top1[0]),
            "{engine}: chelsea {}",
            top1[0]
        );
        assert_eq!(&top1[1..], [967, 698], "{engine}");
        assert_eq!(v["results"][1]["top"][0]["label"], "espresso");
        assert_eq!(v["results"][0]["top"].as_array().unwrap().len(), 5);
        assert!(
            v["results"][0]["timings_ms"]["inference_ms"]
                .as_f64()
                .unwrap()
                > 0.0
        );
    }
    // The int8 MobileNetV2 (com.microsoft contrib ops) runs on ONNX Runtime.
    h.register("mobilenet", "mobilenetv2-12-int8.onnx");
    let mut args = vec!["predict", "mobilenet", "--json", "--engine", "onnxruntime"];
    args.extend(imgs.iter().map(|p| p.to_str().unwrap()));
    let v = h.json(&args);
    let top1: Vec<u64> = v["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["top"][0]["index"].as_u64().unwrap())
        .collect();
    assert!(
        (281..=285).contains(&top1[0]),
        "mobilenet: chelsea {}",
        top1[0]
    );
    assert_eq!(&top1[1..], [967, 698], "mobilenet");
}

#[test]
fn quickstart_runs_on_embedded_defaults() {
    let h = Home::new();
    let out = h.ok(&["quickstart", "--runs", "2"]);
    assert!(
        out.contains("registered shufflenet-v2-quickstart:1"),
        "{out}"
    );
    assert!(out.contains("espresso"), "{out}");
    assert!(out.contains("palace"), "{out}");
    assert!(out.contains("median latency"), "{out}");
    assert!(out.contains("(over gRPC, TF Serving Predict)"), "{out}");
    assert!(out.contains("median end-to-end latency over gRPC"), "{out}");
    assert_eq!(
        out.matches("espresso").count(),
        2,
        "in process and over gRPC: {out}"
    );
    // A second run reuses the registered model.
    let again = h.ok(&["quickstart", "--runs", "1"]);
    assert!(
        again.contains("using registered model shufflenet-v2-quickstart:1"),
        "{again}"
    );
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn huge_png_header() -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = b"IHDR".to_vec();
    ihdr.extend_from_slice(&30000u32.to_be_bytes());
    ihdr.extend_from_slice(&30000u32.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    out.extend_from_slice(&13u32.to_be_bytes());
    out.extend_from_slice(&ihdr);
    out.extend_from_slice(&crc32(&ihdr).to_be_bytes());
    out
}

#[test]
fn bad_input_gets_a_one_line_error_and_changes_nothing() {
    let h = Home::new();
    h.register("shuffle", "shufflenet-v2-12-qdq.onnx");
    let before = h.listing();
    let tmp = tempfile::tempdir().unwrap();
    let jpeg = std::fs::read(fixture("images/sklearn_china.jpg")).unwrap();
    let cases: Vec<(PathBuf, &str)> = vec![
        (
            write(tmp.path(), "truncated.jpg", &jpeg[..jpeg.len() / 3]),
            "cannot decode image",
        ),
        (write(tmp.path(), "empty.jpg", b""), "empty input"),
        (
            write(tmp.path(), "text.jpg", b"hello, not a photo\n"),
            "not a JPEG or PNG",
        ),
        (
            write(tmp.path(), "bomb.png", &huge_png_header()),
            "30000x30000",
        ),
    ];
    for (path, needle) in &cases {
        for engine in ["tract", "onnxruntime"] {
            let err = h.fails(&[
                "predict",
                "shuffle",
                "--engine",
                engine,
                path.to_str().unwrap(),
            ]);
            assert!(err.contains(needle), "{}: {err}", path.display());
            assert!(
                err.contains(path.file_name().unwrap().to_str().unwrap()),
                "error names the file: {err}"
            );
        }
    }
    let text_model = write(tmp.path(), "model.onnx", b"definitely not protobuf\n");
    let err = h.fails(&["models", "register", "bad", text_model.to_str().unwrap()]);
    assert!(err.contains("not an ONNX model"), "{err}");
    let png_model = fixture("images/skimage_coffee.png");
    let err = h.fails(&["models", "register", "bad", png_model.to_str().unwrap()]);
    assert!(err.contains("not an ONNX model"), "{err}");
    let img = fixture("images/sklearn_china.jpg");
    let err = h.fails(&["predict", "nosuchmodel", img.to_str().unwrap()]);
    assert!(err.contains("nosuchmodel"), "{err}");
    let err = h.fails(&["predict", "shuffle:7", img.to_str().unwrap()]);
    assert!(err.contains("shuffle") && err.contains('7'), "{err}");
    let err = h.fails(&[
        "models",
        "register",
        "../evil",
        fixture("models/shufflenet-v2-12-qdq.onnx")
            .to_str()
            .unwrap(),
    ]);
    assert!(err.contains("invalid name"), "{err}");
    assert_eq!(h.listing(), before, "the registry changed");
    h.ok(&["registry", "check"]);
}

#[test]
fn delete_refuses_unknown_and_removes_blobs() {
    let h = Home::new();
    h.register("m", "shufflenet-v2-12-qdq.onnx");
    h.register("m", "shufflenet-v2-12-qdq.onnx");
    let err = h.fails(&["models", "delete", "m:3"]);
    assert!(err.contains('3'), "{err}");
    assert_eq!(h.ok(&["models", "delete", "m:1"]).trim(), "deleted m:1");
    // Version 2 shares the blob: still loadable.
    h.ok(&[
        "predict",
        "m",
        "--engine",
        "tract",
        fixture("images/skimage_coffee.png").to_str().unwrap(),
    ]);
    h.ok(&["models", "delete", "m"]);
    let blobs: Vec<_> = std::fs::read_dir(h.path().join("blobs/sha256"))
        .unwrap()
        .collect();
    assert!(blobs.is_empty(), "blobs left: {blobs:?}");
    h.ok(&["registry", "check"]);
}

#[test]
fn two_processes_registering_at_once_get_distinct_versions() {
    let h = Home::new();
    let model = fixture("models/shufflenet-v2-12-f32.onnx");
    let script = format!(
        "for i in 1 2 3 4 5; do '{}' models register same '{}' || exit 1; done",
        env!("CARGO_BIN_EXE_accel"),
        model.display()
    );
    let spawn = || {
        Command::new("sh")
            .arg("-c")
            .arg(&script)
            .env("ACCEL_HOME", h.path())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert!(a.status.success() && b.status.success());
    let mut refs: Vec<String> = String::from_utf8(a.stdout)
        .unwrap()
        .lines()
        .chain(String::from_utf8(b.stdout).unwrap().lines())
        .map(String::from)
        .collect::<Vec<_>>();
    refs.sort();
    let mut want: Vec<String> = (1..=10).map(|v| format!("same:{v}")).collect();
    want.sort();
    assert_eq!(refs, want);
    h.ok(&["registry", "check"]);
}

/// A crash (abort, like kill -9: no destructors, no cleanup) at each step of
/// a registration leaves either no model or a whole one, and no orphan.
#[test]
fn a_crash_at_any_step_of_register_leaves_a_consistent_registry() {
    let model = fixture("models/shufflenet-v2-12-f32.onnx");
    for point in [
        "after-intent",
        "after-temp-write",
        "after-blob-rename",
        "before-commit",
    ] {
        let h = Home::new();
        h.register("keep", "shufflenet-v2-12-qdq.onnx");
        let out = h
            .cmd()
            .args(["models", "register", "crashy", model.to_str().unwrap()])
            .env("ACCEL_TEST_CRASH_AT", point)
            .output()
            .unwrap();
        assert!(
            !out.status.success(),
            "{point}: the crash hook did not fire"
        );
        let check = h.json(&["registry", "check", "--json"]);
        for key in [
            "orphan_blobs",
            "missing_blobs",
            "corrupt_blobs",
            "stale_temp_files",
        ] {
            assert_eq!(check[key], serde_json::json!([]), "{point}: {check}");
        }
        let names: Vec<String> = h
            .listing()
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(names, ["keep"], "{point}");
    }
}

/// kill -9 at random moments during registrations: afterwards the registry
/// holds only whole models, and check finds nothing to repair.
#[test]
fn kill_9_during_register_leaves_a_consistent_registry() {
    let h = Home::new();
    let model = fixture("models/shufflenet-v2-12-f32.onnx");
    let mut seed = 0x9e37_79b9_u64;
    for _ in 0..12 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let delay = std::time::Duration::from_micros(seed % 60_000);
        let mut child = h
            .cmd()
            .args([
                "models",
                "register",
                "victim",
                model.to_str().unwrap(),
                "--preset",
                "torchvision",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
    }
    let check = h.json(&["registry", "check", "--json"]);
    for key in [
        "orphan_blobs",
        "missing_blobs",
        "corrupt_blobs",
        "stale_temp_files",
    ] {
        assert_eq!(check[key], serde_json::json!([]), "{check}");
    }
    for r in h.listing().as_array().unwrap() {
        let reference = format!("victim:{}", r["version"]);
        h.ok(&[
            "predict",
            &reference,
            "--engine",
            "tract",
            fixture("images/skimage_coffee.png").to_str().unwrap(),
        ]);
    }
}

/// A running `accel serve` and the addresses from its ready line.
struct Served {
    child: std::process::Child,
    line: String,
    grpc: String,
    http: String,
}

/// Spawns `cmd` (an `accel serve …` command), reads its first stdout line
/// ("ready grpc=HOST:PORT http=HOST:PORT") and parses the two addresses.
fn spawn_serve(mut cmd: Command) -> Served {
    let mut child = cmd.stdout(Stdio::piped()).spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = |name: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in the ready line {line:?}"))
            .to_string()
    };
    let (grpc, http) = (port("grpc="), port("http="));
    Served {
        child,
        line,
        grpc,
        http,
    }
}

/// `accel serve` + `accel score` (our client, Azure PredictionClient's wire
/// shape) + `accel bench`: right answers, keys enforced, SIGTERM exits.
#[test]
fn serve_score_and_bench_over_grpc() {
    let _heavy = heavy();
    let h = Home::new();
    h.register("shuffle", "shufflenet-v2-12-qdq.onnx");
    let mut cmd = h.cmd();
    cmd.env(
        "ACCEL_LOG",
        "accel=debug,accel_server=debug,accel_runtime=debug",
    )
    .args([
        "--verbose",
        "serve",
        "--model",
        "shuffle",
        "--service",
        "svc",
        "--key",
        "k-123",
        "--engine",
        "tract",
    ])
    .stderr(Stdio::piped());
    let Served {
        child: server,
        line,
        grpc,
        ..
    } = spawn_serve(cmd);
    assert!(
        line.starts_with("ready grpc=127.0.0.1:") && line.contains(" http=127.0.0.1:"),
        "{line}"
    );
    let coffee = fixture("images/skimage_coffee.png");
    let coffee = coffee.to_str().unwrap();
    let v = h.json(&[
        "score",
        &grpc,
        "--service",
        "svc",
        "--key",
        "k-123",
        coffee,
        "--json",
    ]);
    assert_eq!(v["results"][0]["top"][0]["index"], 967, "{v}");
    assert_eq!(v["results"][0]["top"][0]["label"], "espresso");
    let err = h.fails(&["score", &grpc, "--service", "svc", "--key", "wrong", coffee]);
    assert!(
        err.contains("Unauthenticated") && err.contains("wrong API key"),
        "{err}"
    );
    let err = h.fails(&["score", &grpc, "--service", "svc", coffee]);
    assert!(err.contains("Unauthenticated"), "{err}");
    let err = h.fails(&[
        "score",
        &grpc,
        "--service",
        "nosuch",
        "--key",
        "k-123",
        coffee,
    ]);
    assert!(err.contains("NotFound") && err.contains("nosuch"), "{err}");
    let b = h.json(&[
        "bench",
        &grpc,
        "--service",
        "svc",
        "--key",
        "k-123",
        coffee,
        "--requests",
        "6",
        "--warmup",
        "1",
        "--concurrency",
        "2",
        "--json",
    ]);
    assert_eq!(b["requests"], 6, "{b}");
    assert_eq!(b["errors"], 0, "{b}");
    assert!(b["latency_ms"]["p50"].as_f64().unwrap() > 0.0);
    assert!(b["throughput_rps"].as_f64().unwrap() > 0.0);
    // SIGTERM: drains and exits.
    Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .unwrap();
    let out = server.wait_with_output().unwrap();
    assert!(out.status.success(), "serve exited with {}", out.status);
    // Debug logs of every request and of start-up never show the key.
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("request_id"), "no request log lines: {log}");
    assert!(!log.contains("k-123"), "the API key leaked into the logs");
}

/// `accel serve --config FILE`: several services, per-service keys.
#[test]
fn serve_config_file_hosts_several_services() {
    let h = Home::new();
    h.register("shuffle", "shufflenet-v2-12-qdq.onnx");
    let cfg = h.path().join("serve.toml");
    std::fs::write(
        &cfg,
        "[[service]]\nname = \"open\"\nmodel = \"shuffle:1\"\n\n[[service]]\nname = \"locked\"\nmodel = \"shuffle\"\nkeys = [\"s3cret\"]\n",
    )
    .unwrap();
    let mut cmd = h.cmd();
    cmd.args([
        "serve",
        "--config",
        cfg.to_str().unwrap(),
        "--engine",
        "tract",
    ])
    .stderr(Stdio::null());
    let Served {
        child: mut server,
        grpc,
        ..
    } = spawn_serve(cmd);
    let china = fixture("images/sklearn_china.jpg");
    let china = china.to_str().unwrap();
    let v = h.json(&["score", &grpc, "--service", "open", china, "--json"]);
    assert_eq!(v["results"][0]["top"][0]["index"], 698, "{v}");
    let err = h.fails(&["score", &grpc, "--service", "locked", china]);
    assert!(err.contains("Unauthenticated"), "{err}");
    let v = h.json(&[
        "score",
        &grpc,
        "--service",
        "locked",
        "--key",
        "s3cret",
        china,
        "--json",
    ]);
    assert_eq!(v["results"][0]["top"][0]["index"], 698, "{v}");
    let _ = server.kill();
    let _ = server.wait();
    let bad = h.path().join("bad.toml");
    std::fs::write(&bad, "[[service]]\nmodel = \"shuffle\"\nbogus = 1\n").unwrap();
    let err = h.fails(&["serve", "--config", bad.to_str().unwrap()]);
    assert!(err.contains("bogus"), "{err}");
}

/// `accel bench` over the four protocols against one `accel serve` (gRPC
/// and HTTP ports): every answer counted, the server's `server-timing`
/// stages read on every protocol, HTTP failures keyed by status.
#[test]
fn bench_speaks_every_protocol_and_reads_server_timing() {
    let _heavy = heavy();
    let h = Home::new();
    // --requests and --duration exclude each other (clap says so, before anything runs).
    let out = h.run(&[
        "bench",
        "127.0.0.1:1",
        "--service",
        "svc",
        "x.jpg",
        "--requests",
        "1",
        "--duration",
        "1",
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot be used with"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    h.register("shuffle", "shufflenet-v2-12-qdq.onnx");
    let mut cmd = h.cmd();
    cmd.args([
        "serve",
        "--model",
        "shuffle",
        "--service",
        "svc",
        "--key",
        "k-123",
        "--engine",
        "tract",
    ])
    .stderr(Stdio::null());
    let Served {
        child: mut server,
        grpc,
        http,
        ..
    } = spawn_serve(cmd);
    let china = fixture("images/sklearn_china.jpg");
    let china = china.to_str().unwrap();
    let bench = |address: &str, protocol: &str, extra: &[&str]| {
        let mut args = vec![
            "bench",
            address,
            "--service",
            "svc",
            china,
            "--protocol",
            protocol,
            "--requests",
            "4",
            "--warmup",
            "1",
            "--concurrency",
            "2",
            "--json",
        ];
        args.extend_from_slice(extra);
        h.json(&args)
    };
    for (address, protocol) in [
        (&grpc, "tfs-grpc"),
        (&grpc, "kserve-grpc"),
        (&http, "kserve-http"),
        (&http, "tfs-rest"),
    ] {
        let b = bench(address, protocol, &["--key", "k-123"]);
        assert_eq!(b["protocol"], protocol, "{b}");
        assert_eq!(
            (b["requests"].as_u64(), b["errors"].as_u64()),
            (Some(4), Some(0)),
            "{b}"
        );
        let p50 = b["latency_ms"]["p50"].as_f64().unwrap();
        assert!(
            p50 > 0.0 && b["latency_ms"]["max"].as_f64().unwrap() >= p50,
            "{b}"
        );
        assert!(b["throughput_rps"].as_f64().unwrap() > 0.0, "{b}");
        // The server's stages, each no longer than the client saw the whole.
        let st = &b["server_timing_ms"];
        for stage in ["queue", "preprocess", "infer", "total"] {
            let ms = st[stage]["p50"].as_f64();
            assert!(
                ms.is_some_and(|ms| ms >= 0.0),
                "{protocol}: no {stage} in {b}"
            );
            assert_eq!(st[stage]["samples"], 4, "{b}");
        }
        assert!(st["infer"]["p50"].as_f64().unwrap() > 0.0, "{b}");
        assert!(st["total"]["p50"].as_f64().unwrap() <= b["latency_ms"]["max"].as_f64().unwrap());
    }
    // Failures are counted by HTTP status: no key (401), a wrong input name (400).
    let b = bench(&http, "kserve-http", &[]);
    assert_eq!(
        (b["errors"].as_u64(), &b["errors_by_status"]["HTTP 401"]),
        (Some(4), &4.into()),
        "{b}"
    );
    assert!(
        b.get("server_timing_ms").is_none(),
        "no timing without answers: {b}"
    );
    let b = bench(
        &http,
        "kserve-http",
        &["--key", "k-123", "--input", "nosuch"],
    );
    assert_eq!(b["errors_by_status"]["HTTP 400"], 4, "{b}");
    // The text output names the stages.
    let text = h.ok(&[
        "bench",
        &http,
        "--service",
        "svc",
        china,
        "--protocol",
        "tfs-rest",
        "--key",
        "k-123",
        "--requests",
        "2",
        "--warmup",
        "0",
    ]);
    assert!(text.contains("server ms (p50/p99): queue "), "{text}");
    let _ = server.kill();
    let _ = server.wait();
}

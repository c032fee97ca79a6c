//! CLI tests: `accel zoo` (issue 7). A small HTTP server (std only) stands in
//! for the publishers: it serves the fixture models by file name, and
//! corrupted copies under `/corrupt/`. `mobilenetv2-int8` is pulled through
//! `--mirror` with the BUILT-IN catalog, so the bytes are checked against the
//! sha256 ONNX Model Zoo published, not against a value computed here.

use super::{fixture, heavy, Home};
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::{Arc, Mutex};

const PUBLISHED_SHA256: &str = "cc028fe6cae7bc11a4ff53cfc9b79c920e8be65ce33a904ec3e2a8f66d77f95f";

/// Serves `files` (URL file name → bytes) at `/NAME`, corrupted at
/// `/corrupt/NAME`; records every request path.
struct Server {
    base: String,
    requests: Arc<Mutex<Vec<String>>>,
}

impl Server {
    fn start(files: Vec<(&str, Vec<u8>)>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let files: Arc<Vec<(String, Vec<u8>)>> =
            Arc::new(files.into_iter().map(|(n, b)| (n.to_string(), b)).collect());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&requests);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (files, seen) = (Arc::clone(&files), Arc::clone(&seen));
                std::thread::spawn(move || {
                    let _ = answer(stream, &files, &seen);
                });
            }
        });
        Server { base, requests }
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

fn answer(
    stream: TcpStream,
    files: &[(String, Vec<u8>)],
    seen: &Mutex<Vec<String>>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header.trim().is_empty() {
            break;
        }
    }
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    seen.lock().unwrap().push(path.clone());
    let (corrupt, name) = match path.strip_prefix("/corrupt/") {
        Some(n) => (true, n),
        None => (false, path.trim_start_matches('/')),
    };
    let mut out = stream;
    let Some((_, bytes)) = files.iter().find(|(n, _)| n == name) else {
        return write!(
            out,
            "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
    };
    let mut body = bytes.clone();
    if corrupt {
        let mid = body.len() / 2;
        body[mid] ^= 0x55;
    }
    write!(
        out,
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    out.write_all(&body)?;
    out.flush()
}

/// Runs `accel` in `home` without any zoo settings from the environment.
fn zoo(home: &Home, args: &[&str]) -> Output {
    home.cmd()
        .env_remove("ACCEL_ZOO_MIRROR")
        .env_remove("ACCEL_ZOO_CATALOG")
        .args(args)
        .output()
        .unwrap()
}

fn stdout_ok(home: &Home, args: &[&str]) -> (String, String) {
    let out = zoo(home, args);
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(out.status.success(), "accel {args:?} failed: {err}");
    (String::from_utf8(out.stdout).unwrap(), err)
}

/// A command that must fail: its one error line (progress lines aside).
fn one_line_error(home: &Home, args: &[&str]) -> String {
    let out = zoo(home, args);
    assert!(
        !out.status.success(),
        "accel {args:?} unexpectedly succeeded"
    );
    let err = String::from_utf8(out.stderr).unwrap();
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with("downloading "))
        .collect();
    assert_eq!(lines.len(), 1, "expected a one-line error, got: {err}");
    assert!(lines[0].starts_with("error: "), "{err}");
    lines[0].to_string()
}

fn zoo_dir_files(home: &Home) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(home.path().join("zoo"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.ends_with(".lock"))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// A catalog file with one entry; `extra` lines are appended to it.
fn catalog(dir: &Path, name: &str, url: &str, checksum_line: &str, extra: &str) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            r#"
[[models]]
name = "{name}"
task = "classification"
title = "test entry {name}"
url = "{url}"
{checksum_line}
source = "this test"
license = "Apache-2.0"
{extra}
"#
        ),
    )
    .unwrap();
    path
}

#[test]
fn zoo_list_json_has_the_catalog_and_its_fields() {
    let h = Home::new();
    let out = zoo(&h, &["zoo", "list", "--json"]);
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let models = v.as_array().unwrap();
    let names: Vec<&str> = models.iter().map(|m| m["name"].as_str().unwrap()).collect();
    for n in ["resnet50", "resnet152", "densenet121", "vgg16", "ssd-vgg"] {
        assert!(names.contains(&n), "{n} missing from {names:?}");
    }
    for m in models {
        for field in [
            "name",
            "task",
            "url",
            "sha256",
            "sha256_prefix",
            "size",
            "license",
            "format",
            "preset",
            "features",
            "aliases",
            "source",
        ] {
            assert!(m.get(field).is_some(), "{} has no {field}", m["name"]);
        }
        assert!(m["aliases"].is_array());
        assert!(m["url"].as_str().unwrap().starts_with("https://"));
    }
    let get = |n: &str| models.iter().find(|m| m["name"] == n).unwrap();
    let resnet = get("resnet50");
    assert_eq!(resnet["task"], "classification");
    assert_eq!(resnet["preset"], "torchvision");
    assert_eq!(resnet["features"], "resnetv17_pool1_fwd");
    assert_eq!(resnet["sha256"].as_str().unwrap().len(), 64);
    assert!(resnet["aliases"]
        .as_array()
        .unwrap()
        .contains(&Value::from("resnet_v1_50/predictions/Softmax:0")));
    let ssd = get("ssd-vgg");
    assert_eq!(ssd["task"], "detection");
    assert_eq!(ssd["sha256"], Value::Null);
    assert_eq!(ssd["sha256_prefix"], "b556d3b4");
    assert_eq!(ssd["format"], "pytorch");
    assert_eq!(ssd["preset"], "ssd-vgg-300");
    assert_eq!(get("mobilenetv2-int8")["sha256"], PUBLISHED_SHA256);

    let (text, _) = stdout_ok(&h, &["zoo", "list"]);
    assert!(text.starts_with("NAME"), "{text}");
    assert!(text.contains("b556d3b4… (prefix only)"), "{text}");
}

#[test]
fn zoo_pull_registers_the_published_mobilenet_and_it_predicts() {
    let server = Server::start(vec![(
        "mobilenetv2-12-int8.onnx",
        std::fs::read(fixture("models/mobilenetv2-12-int8.onnx")).unwrap(),
    )]);
    let h = Home::new();
    let (out, err) = stdout_ok(
        &h,
        &[
            "zoo",
            "pull",
            "mobilenetv2-int8",
            "--mirror",
            &server.base,
            "--register",
        ],
    );
    assert_eq!(out.trim(), "mobilenetv2-int8:1", "stderr: {err}");
    assert!(
        err.contains("downloading mobilenetv2-int8: 0% (0.0 of 3.7 MB)"),
        "{err}"
    );
    assert!(
        err.contains("downloading mobilenetv2-int8: 100% (3.7 of 3.7 MB)"),
        "{err}"
    );
    assert!(
        err.lines().count() <= 11,
        "at most one line per 10 %: {err}"
    );
    assert_eq!(server.requests(), ["/mobilenetv2-12-int8.onnx"]);
    assert_eq!(zoo_dir_files(&h), [format!("{PUBLISHED_SHA256}.onnx")]);

    // Registered with the catalog's preset, labels and provenance.
    let show: Value =
        serde_json::from_str(&h.ok(&["models", "show", "mobilenetv2-int8", "--json"])).unwrap();
    assert_eq!(show["sha256"], PUBLISHED_SHA256);
    assert_eq!(show["properties"]["accel.zoo.name"], "mobilenetv2-int8");
    assert_eq!(show["properties"]["accel.zoo.sha256"], PUBLISHED_SHA256);
    assert_eq!(show["tags"]["source"], "zoo");
    assert_eq!(show["spec"]["labels"]["count"], 1000);
    assert_eq!(show["spec"]["input_name"], "input");

    // It classifies the espresso photo (contrib ops: ONNX Runtime).
    let coffee = fixture("images/skimage_coffee.png");
    let v = h.json(&[
        "predict",
        "mobilenetv2-int8",
        "--json",
        "--engine",
        "onnxruntime",
        coffee.to_str().unwrap(),
    ]);
    assert_eq!(v["results"][0]["top"][0]["index"], 967, "{v}");
    assert_eq!(v["results"][0]["top"][0]["label"], "espresso", "{v}");

    // A second pull is served from the cache: no request.
    let (path, err) = stdout_ok(
        &h,
        &["zoo", "pull", "mobilenetv2-int8", "--mirror", &server.base],
    );
    assert_eq!(
        PathBuf::from(path.trim()),
        h.path()
            .join("zoo")
            .join(format!("{PUBLISHED_SHA256}.onnx"))
    );
    assert!(err.contains("in the cache"), "{err}");
    assert!(!err.contains("downloading"), "{err}");
    let (json, _) = stdout_ok(
        &h,
        &[
            "zoo",
            "pull",
            "mobilenetv2-int8",
            "--mirror",
            &server.base,
            "--json",
        ],
    );
    let j: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(j["cached"], true);
    assert_eq!(j["sha256"], PUBLISHED_SHA256);
    assert_eq!(server.requests().len(), 1, "cached pulls make no request");

    // --name registers under another name, from the cache.
    let (out, _) = stdout_ok(
        &h,
        &[
            "zoo",
            "pull",
            "mobilenetv2-int8",
            "--mirror",
            &server.base,
            "--register",
            "--name",
            "mnv2",
        ],
    );
    assert_eq!(out.trim(), "mnv2:1");
    assert_eq!(server.requests().len(), 1);
}

#[test]
fn zoo_pull_from_a_corrupted_server_fails_and_leaves_nothing() {
    let bytes = std::fs::read(fixture("models/mobilenetv2-12-int8.onnx")).unwrap();
    let server = Server::start(vec![("mobilenetv2-12-int8.onnx", bytes.clone())]);
    let h = Home::new();
    // Corrupted bytes against the published sha256.
    let mirror = format!("{}/corrupt", server.base);
    let err = one_line_error(
        &h,
        &[
            "zoo",
            "pull",
            "mobilenetv2-int8",
            "--mirror",
            &mirror,
            "--register",
        ],
    );
    assert!(err.contains("checksum mismatch"), "{err}");
    assert!(
        err.contains(PUBLISHED_SHA256),
        "names the expected hash: {err}"
    );
    assert!(
        err.contains(&format!("{mirror}/mobilenetv2-12-int8.onnx")),
        "names the URL: {err}"
    );
    assert!(zoo_dir_files(&h).is_empty(), "{:?}", zoo_dir_files(&h));
    assert_eq!(h.listing(), Value::Array(vec![]), "nothing registered");

    // Right bytes against a wrong sha256 (a test catalog entry).
    let dir = tempfile::tempdir().unwrap();
    let wrong = "0".repeat(64);
    let cat = catalog(
        dir.path(),
        "mobilenet-wrong",
        &format!("{}/mobilenetv2-12-int8.onnx", server.base),
        &format!("sha256 = \"{wrong}\""),
        "format = \"onnx\"",
    );
    let err = one_line_error(
        &h,
        &[
            "zoo",
            "pull",
            "mobilenet-wrong",
            "--catalog",
            cat.to_str().unwrap(),
        ],
    );
    assert!(err.contains(&format!("expected sha256 {wrong}")), "{err}");
    assert!(
        err.contains(&sha256_hex(&bytes)),
        "names the actual hash: {err}"
    );
    assert!(zoo_dir_files(&h).is_empty(), "{:?}", zoo_dir_files(&h));

    // A server that does not have the file: the status, in one line.
    let err = one_line_error(
        &h,
        &[
            "zoo",
            "pull",
            "mobilenetv2",
            "--mirror",
            &server.base,
            "--retries",
            "0",
        ],
    );
    assert!(err.contains("HTTP 404"), "{err}");
}

#[test]
fn zoo_pull_of_an_unknown_name_lists_the_known_names() {
    let h = Home::new();
    let err = one_line_error(&h, &["zoo", "pull", "resnet-9000"]);
    assert!(err.contains("no model \"resnet-9000\""), "{err}");
    for n in ["resnet50", "vgg16", "ssd-vgg", "mobilenetv2-int8"] {
        assert!(err.contains(n), "{n} not listed: {err}");
    }
    // A usage error (clap's own, several lines).
    let out = zoo(&h, &["zoo", "pull", "resnet50", "--quantized"]);
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("--register"), "{err}");
}

#[test]
fn zoo_register_refuses_a_pytorch_checkpoint_and_unknown_presets() {
    let checkpoint = b"not really a state dict, but the zoo only checks hashes".to_vec();
    let server = Server::start(vec![
        ("ssd300_vgg16_coco-b556d3b4.pth", checkpoint.clone()),
        (
            "mobilenetv2-12-int8.onnx",
            std::fs::read(fixture("models/mobilenetv2-12-int8.onnx")).unwrap(),
        ),
    ]);
    let h = Home::new();
    let dir = tempfile::tempdir().unwrap();
    let cat = catalog(
        dir.path(),
        "ssd-vgg",
        "https://download.pytorch.org/models/ssd300_vgg16_coco-b556d3b4.pth",
        &format!("sha256_prefix = \"{}\"", &sha256_hex(&checkpoint)[..8]),
        "format = \"pytorch\"\npreset = \"ssd-vgg-300\"\nlabels = \"coco\"",
    );
    let cat = cat.to_str().unwrap();
    // Without --register it downloads and checks the checkpoint.
    let (path, _) = stdout_ok(
        &h,
        &[
            "zoo",
            "pull",
            "ssd-vgg",
            "--catalog",
            cat,
            "--mirror",
            &server.base,
        ],
    );
    assert_eq!(PathBuf::from(path.trim()), h.path().join("zoo/ssd-vgg.pth"));
    assert_eq!(std::fs::read(path.trim()).unwrap(), checkpoint);
    // --register explains the export, before any download.
    let before = server.requests().len();
    for args in [
        vec![
            "zoo",
            "pull",
            "ssd-vgg",
            "--catalog",
            cat,
            "--mirror",
            &server.base,
            "--register",
        ],
        // The built-in entry, likewise (no network needed to refuse).
        vec!["zoo", "pull", "ssd-vgg", "--register"],
    ] {
        let err = one_line_error(&h, &args);
        assert!(err.contains("PyTorch checkpoint"), "{err}");
        assert!(err.contains("export it to ONNX"), "{err}");
    }
    assert_eq!(server.requests().len(), before);

    // A preset this accel does not know: a clear refusal, before downloading.
    let odd = catalog(
        dir.path(),
        "odd",
        &format!("{}/mobilenetv2-12-int8.onnx", server.base),
        &format!("sha256 = \"{PUBLISHED_SHA256}\""),
        "format = \"onnx\"\npreset = \"yolo-v99\"",
    );
    let err = one_line_error(
        &h,
        &[
            "zoo",
            "pull",
            "odd",
            "--catalog",
            odd.to_str().unwrap(),
            "--register",
        ],
    );
    assert!(err.contains("odd cannot be registered"), "{err}");
    assert!(err.contains("yolo-v99"), "{err}");
    assert_eq!(server.requests().len(), before);
    assert_eq!(h.listing(), Value::Array(vec![]));
}

#[test]
fn zoo_pull_quantized_registers_an_int8_plan() {
    let _heavy = heavy();
    let f32 = std::fs::read(fixture("models/shufflenet-v2-12-f32.onnx")).unwrap();
    let server = Server::start(vec![("shufflenet-v2-12-f32.onnx", f32.clone())]);
    let h = Home::new();
    let dir = tempfile::tempdir().unwrap();
    let cat = catalog(
        dir.path(),
        "shufflenet-f32",
        &format!("{}/shufflenet-v2-12-f32.onnx", server.base),
        &format!("sha256 = \"{}\"", sha256_hex(&f32)),
        "format = \"onnx\"\npreset = \"torchvision\"\nlabels = \"imagenet\"\noutput = [\"output\"]\naliases = [\"shufflenet/predictions/Softmax:0\"]\nfeatures = \"611\"",
    );
    let (out, err) = stdout_ok(
        &h,
        &[
            "zoo",
            "pull",
            "shufflenet-f32",
            "--catalog",
            cat.to_str().unwrap(),
            "--register",
            "--quantized",
        ],
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        ["shufflenet-f32:1", "shufflenet-f32-plan:1"],
        "{err}"
    );
    let model: Value =
        serde_json::from_str(&h.ok(&["models", "show", "shufflenet-f32:1", "--json"])).unwrap();
    assert_eq!(model["properties"]["accel.zoo.features"], "611");
    assert_eq!(
        model["spec"]["outputs"][0]["aliases"],
        serde_json::json!(["shufflenet/predictions/Softmax:0"])
    );
    let plan: Value =
        serde_json::from_str(&h.ok(&["models", "show", "shufflenet-f32-plan:1", "--json"]))
            .unwrap();
    assert_eq!(plan["format"], "accel-plan");
    assert_eq!(plan["parent"], "shufflenet-f32:1");
    assert_eq!(
        plan["properties"]["accel.plan.precision"], "int8",
        "{}",
        plan["report"]
    );
}

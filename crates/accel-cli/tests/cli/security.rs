//! Security properties of the `accel` binary as a user runs it: API keys
//! are stored only hashed and never appear in logs (at the most verbose
//! level) nor in error messages, on either side; a model bundle's record
//! cannot make `accel serve` write outside its home.

use super::{fixture, heavy, spawn_serve, Home, Served};
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::fs::File;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Keys given on the command line, in the environment and in a config file;
/// each holds a token found nowhere else, which is what the logs are
/// searched for (a key cut or quoted would still show it).
const FLAG_KEY: &str = "flag-key-QZXW7rT2vK9pL4mN";
const ENV_KEY: &str = "env-key-HJ3sD8fG1aY6uE0w";
const CONFIG_KEY: &str = "cfg-key-BN5cX2zV7qW4eR9t";
/// Presented but wrong: near misses of real keys must not be echoed either.
const WRONG_KEYS: [&str; 2] = ["flag-key-QZXW7rT2vK9pL4mNx", "wrong-key-PO1iU2yT3rE4wQ5a"];

/// The tokens that must never be printed.
fn secrets(stored: &str) -> Vec<String> {
    let mut s: Vec<String> = [FLAG_KEY, ENV_KEY, CONFIG_KEY]
        .iter()
        .chain(WRONG_KEYS.iter())
        .map(|k| token(k).to_string())
        .collect();
    s.push(stored[4..20].to_string());
    s
}

/// The distinctive part of a key: after its second '-'.
fn token(key: &str) -> &str {
    key.splitn(3, '-').nth(2).unwrap()
}

#[track_caller]
fn assert_no_secret(text: &str, secrets: &[String], what: &str) {
    for s in secrets {
        assert!(
            !text.contains(s.as_str()),
            "{what}: a key ({s}) leaked:\n{text}"
        );
    }
}

/// `accel serve` with the most verbose logging (`--verbose` and
/// `ACCEL_LOG=trace`, every crate), its stderr in `log` (a file: a pipe
/// could fill up and block the server).
fn serve_traced(h: &Home, log: &Path, env: &[(&str, &str)], args: &[&str]) -> Served {
    let mut cmd = h.cmd();
    cmd.env("ACCEL_LOG", "trace")
        .envs(env.iter().copied())
        .arg("--verbose")
        .arg("serve")
        .args(args)
        .args(["--engine", "tract"])
        .stderr(Stdio::from(File::create(log).unwrap()));
    spawn_serve(cmd)
}

/// Runs `accel` with trace logging; returns (success, stdout + stderr).
fn traced(h: &Home, args: &[&str]) -> (bool, String) {
    let out = h
        .cmd()
        .env("ACCEL_LOG", "trace")
        .arg("--verbose")
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// One HTTP/1.1 request on a fresh connection; returns the whole answer.
fn http(addr: &str, request: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    answer
}

fn post(addr: &str, path: &str, auth: &str, body: &str) -> String {
    http(
        addr,
        &format!(
            "POST {path} HTTP/1.1\r\nhost: {addr}\r\nauthorization: {auth}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        ),
    )
}

fn stop(mut server: Served) -> String {
    Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap();
    let mut rest = String::new();
    if let Some(mut out) = server.child.stdout.take() {
        let _ = out.read_to_string(&mut rest);
    }
    let status = server.child.wait().unwrap();
    assert!(status.success(), "serve exited with {status}");
    format!("{}{rest}", server.line)
}

/// Keys given by flag, environment variable, config file and the registry
/// (hashed at rest), used over all four protocols, right and wrong: no key
/// appears in the servers' logs at trace level, in a client's logs at trace
/// level, in an error message, in an HTTP answer, in `--help`, or in the
/// registry's files.
#[test]
fn api_keys_never_reach_logs_errors_or_the_registry_files() {
    let _heavy = heavy();
    let h = Home::new();
    h.register("shuffle", "shufflenet-v2-12-qdq.onnx");

    // Stored keys: printed once, kept only as their sha256.
    let stored = h
        .ok(&["services", "keys", "regenerate", "stored"])
        .trim()
        .to_string();
    assert!(stored.len() >= 32, "{stored}");
    let secrets = secrets(&stored);
    let listed = h.ok(&["services", "keys", "list", "stored", "--json"]);
    assert_no_secret(&listed, &secrets, "keys list");
    let mut db = Vec::new();
    for entry in std::fs::read_dir(h.path()).unwrap() {
        let path = entry.unwrap().path();
        if path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("registry.db")
        {
            db.extend(std::fs::read(&path).unwrap());
        }
    }
    let db = String::from_utf8_lossy(&db);
    assert_no_secret(&db, &secrets, "registry.db");
    assert!(
        db.contains(&hex::encode(Sha256::digest(stored.as_bytes()))),
        "the key's sha256 is not in registry.db"
    );

    // clap never shows the environment's keys, even in --help.
    let help = h
        .cmd()
        .env("ACCEL_API_KEYS", ENV_KEY)
        .args(["serve", "--help"])
        .output()
        .unwrap();
    assert!(help.status.success());
    assert_no_secret(
        &String::from_utf8_lossy(&help.stdout),
        &secrets,
        "serve --help",
    );

    // Server A: --key on the command line, plus a config-file service.
    let logs = tempfile::tempdir().unwrap();
    let cfg = logs.path().join("serve.toml");
    std::fs::write(
        &cfg,
        format!("[[service]]\nname = \"cfgsvc\"\nmodel = \"shuffle\"\nkeys = [\"{CONFIG_KEY}\"]\n"),
    )
    .unwrap();
    let log_a = logs.path().join("a.log");
    let a = serve_traced(
        &h,
        &log_a,
        &[],
        &[
            "--model",
            "shuffle",
            "--service",
            "flagsvc",
            "--key",
            FLAG_KEY,
            "--config",
            cfg.to_str().unwrap(),
        ],
    );
    // Server B: ACCEL_API_KEYS from the environment, plus the registry's
    // keys (--auth).
    let log_b = logs.path().join("b.log");
    let b = serve_traced(
        &h,
        &log_b,
        &[
            ("ACCEL_API_KEYS", ENV_KEY),
            ("ACCEL_MODELS", "shuffle"),
            ("ACCEL_SERVICES", "stored"),
        ],
        &["--auth"],
    );

    let coffee = fixture("images/skimage_coffee.png");
    let coffee = coffee.to_str().unwrap();
    let cases = [
        (&a, "flagsvc", FLAG_KEY),
        (&a, "cfgsvc", CONFIG_KEY),
        (&b, "stored", ENV_KEY),
        (&b, "stored", stored.as_str()),
    ];
    let mut client_output = String::new();
    for (server, service, key) in cases {
        for (addr, protocol) in [
            (&server.grpc, "tfs-grpc"),
            (&server.grpc, "kserve-grpc"),
            (&server.http, "kserve-http"),
            (&server.http, "tfs-rest"),
        ] {
            let bench = |key: &str| {
                h.json(&[
                    "bench",
                    addr,
                    "--service",
                    service,
                    "--key",
                    key,
                    coffee,
                    "--protocol",
                    protocol,
                    "--requests",
                    "2",
                    "--warmup",
                    "0",
                    "--concurrency",
                    "1",
                    "--json",
                ])
            };
            let ok = bench(key);
            assert_eq!(ok["errors"], 0, "{service} {protocol}: {ok}");
            for wrong in WRONG_KEYS {
                let denied = bench(wrong);
                assert_eq!(denied["errors"], 2, "{service} {protocol}: {denied}");
                assert_no_secret(&denied.to_string(), &secrets, "bench --json");
            }
        }
        // The client, traced too: right and wrong keys over gRPC.
        let (ok, text) = traced(
            &h,
            &[
                "score",
                &server.grpc,
                "--service",
                service,
                "--key",
                key,
                coffee,
            ],
        );
        assert!(ok, "{text}");
        client_output.push_str(&text);
        for wrong in WRONG_KEYS {
            let (ok, text) = traced(
                &h,
                &[
                    "score",
                    &server.grpc,
                    "--service",
                    service,
                    "--key",
                    wrong,
                    coffee,
                ],
            );
            assert!(!ok && text.contains("Unauthenticated"), "{text}");
            client_output.push_str(&text);
        }
        // Raw HTTP: a bad body with the right key, a wrong key, another
        // scheme; none of the answers quotes the key.
        let path = format!("/v2/models/{service}/infer");
        for auth in [
            format!("Bearer {key}"),
            format!("Bearer {}", WRONG_KEYS[1]),
            format!("Basic {key}"),
        ] {
            let answer = post(&server.http, &path, &auth, "{not json");
            assert!(answer.starts_with("HTTP/1.1 4"), "{answer}");
            assert_no_secret(&answer, &secrets, "an HTTP answer");
        }
        let path = format!("/v1/models/{service}:predict");
        let answer = post(&server.http, &path, &format!("Bearer {key}"), "[1,2");
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
        assert_no_secret(&answer, &secrets, "a TF Serving REST answer");
    }
    assert_no_secret(&client_output, &secrets, "accel score (trace)");

    for (server, log) in [(a, log_a), (b, log_b)] {
        let stdout = stop(server);
        assert_no_secret(&stdout, &secrets, "serve stdout");
        let log = std::fs::read_to_string(&log).unwrap();
        // The most verbose level was on, and every request was logged.
        assert!(log.contains("TRACE"), "no trace lines: {log}");
        assert!(log.contains("request_id"), "no request lines: {log}");
        assert_no_secret(&log, &secrets, "serve log (trace)");
    }

    // Errors of `accel serve` itself, with a key on the line, in the
    // environment, or on the faulty line of a config file (the TOML
    // parser's own message would quote that line).
    let bad_cfg = logs.path().join("bad.toml");
    std::fs::write(
        &bad_cfg,
        format!("[[service]]\nmodel = \"shuffle\"\nkeys = [\"{CONFIG_KEY}\", oops]\n"),
    )
    .unwrap();
    for (env, args) in [
        (None, vec!["serve", "--config", bad_cfg.to_str().unwrap()]),
        (None, vec!["serve", "--key", FLAG_KEY, "--model", "nosuch"]),
        (
            Some(ENV_KEY),
            vec!["serve", "--model", "nosuch", "--service", "a/b"],
        ),
        (None, vec!["serve", "--key", FLAG_KEY, "--max-batch", "x"]),
        (None, vec!["serve", "--key", FLAG_KEY, "--bogus"]),
        (
            None,
            vec![
                "serve",
                "--key",
                FLAG_KEY,
                "--model",
                "shuffle",
                "--tls-cert",
                "/nonexistent/cert.pem",
                "--tls-key",
                "/nonexistent/key.pem",
                "--engine",
                "tract",
            ],
        ),
    ] {
        let mut cmd = h.cmd();
        cmd.env("ACCEL_LOG", "trace").arg("--verbose").args(&args);
        if let Some(k) = env {
            cmd.env("ACCEL_API_KEYS", k);
        }
        let out = cmd.output().unwrap();
        assert!(!out.status.success(), "{args:?} succeeded");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_no_secret(&text, &secrets, &format!("accel {args:?}"));
    }
}

/// Every path under `root` (relative), directories included.
fn tree(root: &Path) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(dir) = todo.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() && !path.is_symlink() {
                todo.push(path.clone());
            }
            out.insert(path.strip_prefix(root).unwrap().to_path_buf());
        }
    }
    out
}

/// A bundle's files have fixed names (`model.json`, `model.onnx`,
/// `labels.txt`); the one string of `model.json` that becomes a path is
/// the model's sha256 (the optimized-model cache file under
/// `ACCEL_HOME/cache/optimized/`). A record whose hashes or name are not
/// what the registry writes is refused before anything is loaded, and
/// nothing is written outside the home.
#[test]
fn a_bundle_record_cannot_name_paths() {
    let h = Home::new();
    h.register("shuffle", "shufflenet-v2-12-qdq.onnx");
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("bundle");
    h.ok(&["models", "bundle", "shuffle", dir.to_str().unwrap()]);
    let json_path = dir.join("model.json");
    let original = std::fs::read_to_string(&json_path).unwrap();
    // The server's home sits beside the bundle, so an escape would land in
    // `work`: it must hold the same files afterwards.
    let home = work.path().join("home");
    std::fs::create_dir(&home).unwrap();
    if let Ok(engines) = std::fs::read_link(h.path().join("engines")) {
        std::os::unix::fs::symlink(engines, home.join("engines")).unwrap();
    }
    let escape = "../../../escaped";
    let cases: [(&str, &str, serde_json::Value); 5] = [
        ("sha256", "sha256", escape.into()),
        ("sha256", "sha256", "/tmp/accel-escaped".into()),
        ("sha256", "sha256", "A".repeat(64).into()),
        ("labels", "labels sha256", escape.into()),
        ("name", "invalid name", "../../escaped".into()),
    ];
    for (field, needle, value) in cases {
        let mut record: serde_json::Value = serde_json::from_str(&original).unwrap();
        match field {
            "labels" => record["spec"]["labels"]["sha256"] = value.clone(),
            _ => record[field] = value.clone(),
        }
        std::fs::write(&json_path, serde_json::to_string_pretty(&record).unwrap()).unwrap();
        let before = tree(work.path());
        for engine in ["auto", "tract"] {
            let out = Command::new(env!("CARGO_BIN_EXE_accel"))
                .env("ACCEL_HOME", &home)
                .args(["serve", "--bundle", dir.to_str().unwrap()])
                .args(["--engine", engine])
                .stdout(Stdio::null())
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(
                tree(work.path()),
                before,
                "{field} = {value} ({engine}): files appeared; {err}"
            );
            assert!(!out.status.success(), "{field} = {value}: served");
            assert!(
                err.contains("is not a model record") && err.contains(needle),
                "{field} = {value} ({engine}): {err}"
            );
        }
    }
    let escaped: Vec<_> = std::fs::read_dir("/tmp")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("accel-escaped"))
        .collect();
    assert!(escaped.is_empty(), "{escaped:?}");
    // The untouched record still serves from that home (the check refuses
    // only what the registry would never write).
    std::fs::write(&json_path, &original).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_accel"));
    cmd.env("ACCEL_HOME", &home)
        .args([
            "serve",
            "--bundle",
            dir.to_str().unwrap(),
            "--engine",
            "tract",
        ])
        .stderr(Stdio::null());
    let mut served = spawn_serve(cmd);
    assert!(served.line.starts_with("ready "), "{}", served.line);
    let _ = served.child.kill();
    let _ = served.child.wait();
}

//! CLI tests: hot swap and shutdown (issue 8 item 5). A service started
//! without a version moves to each new version on SIGHUP while `accel bench`
//! loads it, with zero failed requests; the old model's memory goes back
//! (a 205 MB model unloaded gives most of the process's RSS back);
//! SIGTERM lets an in-flight request finish before the process exits.

use super::graphs::{constant, model, node, value_info};
use super::*;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{sig} {pid}");
}

fn rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

/// A GET or POST on the HTTP port; returns (status line, body).
fn http(addr: &str, method: &str, path: &str, body: &str) -> (String, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    (
        head.lines().next().unwrap_or("").to_string(),
        body.to_string(),
    )
}

fn served_version(addr: &str) -> u64 {
    let (status, body) = http(addr, "GET", "/v1/models/shuffle", "");
    assert!(status.contains("200"), "{status} {body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    v["model_version_status"][0]["version"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no version in {v}"))
}

/// `accel serve --model MODEL` (no version: it follows the latest) on ONNX
/// Runtime, with its stderr lines sent to the returned channel.
fn serve_following(h: &Home, model: &str) -> (Served, std::sync::mpsc::Receiver<String>) {
    let mut cmd = h.cmd();
    cmd.args(["serve", "--model", model, "--engine", "onnxruntime"])
        .stderr(Stdio::piped());
    let mut served = spawn_serve(cmd);
    let stderr = served.child.stderr.take().unwrap();
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    (served, lines)
}

/// Waits for a line of the server's stderr containing `what`.
fn wait_line(lines: &std::sync::mpsc::Receiver<String>, what: &str) -> String {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::time::Instant::now() < until {
        if let Ok(line) = lines.recv_timeout(std::time::Duration::from_millis(200)) {
            if line.contains(what) {
                return line;
            }
        }
    }
    panic!("the server never printed {what:?}");
}

#[test]
fn sighup_rolls_new_versions_under_load_with_no_failed_request() {
    let _heavy = heavy();
    let h = Home::new();
    let files = ["shufflenet-v2-12-qdq.onnx", "shufflenet-v2-12-f32.onnx"];
    assert_eq!(h.register("shuffle", files[0]), "shuffle:1");
    let (mut served, lines) = serve_following(&h, "shuffle");
    let pid = served.child.id();
    assert_eq!(served_version(&served.http), 1);

    let coffee = fixture("images/skimage_coffee.png");
    let bench = h
        .cmd()
        .args([
            "bench",
            &served.grpc,
            "--service",
            "shuffle",
            coffee.to_str().unwrap(),
            "--concurrency",
            "4",
            "--duration",
            "12",
            "--json",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(800));
    // Versions 2..=7, alternating the float and the int8 ShuffleNet.
    let mut rss = Vec::new();
    for v in 2..=7u64 {
        let want = format!("shuffle:{v}");
        assert_eq!(h.register("shuffle", files[(v % 2) as usize]), want);
        signal(pid, "HUP");
        wait_line(&lines, &format!("now serves {want}"));
        assert_eq!(served_version(&served.http), v);
        rss.push(rss_kb(pid));
    }
    let out = bench.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let b: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(b["requests"].as_u64().unwrap() > 50, "{b}");
    assert_eq!(b["errors"], 0, "requests failed during the swaps: {b}");
    // Each answer is still espresso, from the last version.
    let v = h.json(&[
        "score",
        &served.grpc,
        "--service",
        "shuffle",
        coffee.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(v["results"][0]["top"][0]["index"], 967, "{v}");
    // Memory goes back: after six loads and unloads the RSS is where it was
    // after the second (the same pair of models is resident then).
    eprintln!("RSS after each swap (kB): {rss:?}");
    let (second, last) = (rss[1], rss[rss.len() - 1]);
    assert!(
        last <= second + 20 * 1024,
        "RSS grew from {second} kB to {last} kB over four more swaps: {rss:?}"
    );
    signal(pid, "TERM");
    assert!(served.child.wait().unwrap().success());
}

/// A raw-tensor model: `x [1, 256]` → MatMul by `w [256, width]` (every
/// weight 0.001) → ReduceSum → `s [1, 1]`, which is 0.256 · width for an
/// input of ones.
fn matmul_model(width: usize) -> Vec<u8> {
    let w = constant("w", &[256, width as i64], vec![0.001; 256 * width]);
    model(
        "matmul",
        (
            vec![
                node("MatMul", &["x", "w"], "y"),
                node("ReduceSum", &["y"], "s"),
            ],
            vec![w],
        ),
        value_info("x", &[Some(1), Some(256)]),
        vec![value_info("s", &[Some(1), Some(1)])],
    )
}

/// KServe REST inference with an input of ones; the one output value.
fn sum_of_ones(addr: &str) -> f64 {
    let body = serde_json::json!({"inputs": [{
        "name": "x", "shape": [1, 256], "datatype": "FP32", "data": vec![1.0; 256]
    }]});
    let (status, answer) = http(addr, "POST", "/v2/models/m/infer", &body.to_string());
    assert!(status.contains("200"), "{status} {answer}");
    let v: Value = serde_json::from_str(&answer).unwrap();
    v["outputs"][0]["data"][0].as_f64().unwrap()
}

/// Memory goes back when a model is unloaded: a service on a model with
/// 205 MB of weights is moved (SIGHUP) to a version with 4 KB of them, and
/// the process's resident memory falls by most of the 205 MB.
#[test]
fn unloading_a_large_model_gives_its_memory_back() {
    let _heavy = heavy();
    let h = Home::new();
    let dir = tempfile::tempdir().unwrap();
    let (big, small) = (dir.path().join("big.onnx"), dir.path().join("small.onnx"));
    std::fs::write(&big, matmul_model(200_000)).unwrap();
    std::fs::write(&small, matmul_model(4)).unwrap();
    h.ok(&["models", "register", "m", big.to_str().unwrap()]);
    let (mut served, lines) = serve_following(&h, "m");
    let pid = served.child.id();
    let close = |got: f64, want: f64| (got - want).abs() <= want * 1e-3;
    let got = sum_of_ones(&served.http);
    assert!(close(got, 0.256 * 200_000.0), "{got}");
    let loaded = rss_kb(pid);

    h.ok(&["models", "register", "m", small.to_str().unwrap()]);
    signal(pid, "HUP");
    wait_line(&lines, "now serves m:2");
    let got = sum_of_ones(&served.http);
    assert!(close(got, 0.256 * 4.0), "{got}");
    // The old version is dropped once its last request is done.
    let weights_kb = 256 * 200_000 * 4 / 1024;
    let until = Instant::now() + Duration::from_secs(20);
    let mut after = rss_kb(pid);
    while loaded.saturating_sub(after) < weights_kb * 3 / 4 && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(200));
        after = rss_kb(pid);
    }
    eprintln!("RSS with the 205 MB model {loaded} kB, after unloading it {after} kB");
    assert!(
        loaded.saturating_sub(after) >= weights_kb * 3 / 4,
        "RSS went from {loaded} kB to {after} kB: less than 3/4 of the {weights_kb} kB of weights came back"
    );
    signal(pid, "TERM");
    assert!(served.child.wait().unwrap().success());
}

#[test]
fn sigterm_lets_the_request_in_flight_finish() {
    let _heavy = heavy();
    let h = Home::new();
    h.register("shuffle", "shufflenet-v2-12-qdq.onnx");
    let mut cmd = h.cmd();
    // tract without integer kernels is slow on this model: a batch of 16
    // takes long enough to still be running when the signal comes.
    cmd.args(["serve", "--model", "shuffle", "--engine", "tract"])
        .stderr(Stdio::null());
    let mut served = spawn_serve(cmd);
    let pid = served.child.id();
    let coffee = std::fs::read(fixture("images/skimage_coffee.png")).unwrap();
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(&coffee);
    let instances: Vec<Value> = (0..16).map(|_| serde_json::json!({"b64": b64})).collect();
    let body = serde_json::json!({"instances": instances}).to_string();
    let addr = served.http.clone();
    let started = std::time::Instant::now();
    let request =
        std::thread::spawn(move || http(&addr, "POST", "/v1/models/shuffle:predict", &body));
    std::thread::sleep(std::time::Duration::from_millis(300));
    signal(pid, "TERM");
    let (status, answer) = request.join().unwrap();
    let took = started.elapsed();
    eprintln!("the in-flight request took {took:?}");
    assert!(status.contains("200"), "{status}: {answer}");
    let v: Value = serde_json::from_str(&answer).unwrap();
    let predictions = v["predictions"].as_array().unwrap();
    assert_eq!(predictions.len(), 16);
    assert!(
        took > std::time::Duration::from_millis(300),
        "the request ended before the signal ({took:?}): the test proves nothing"
    );
    assert!(
        served.child.wait().unwrap().success(),
        "exit after draining"
    );
    // The listener is closed now.
    assert!(std::net::TcpStream::connect(&served.http).is_err());
}

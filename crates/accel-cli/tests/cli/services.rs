//! `accel services deploy --target local` and the commands that follow a
//! local deployment, with real processes: a detached supervisor keeps `accel
//! serve` running (a `kill -9` of the server is repaired), `wait`, `logs`,
//! `show` and `list` report it, `delete` stops it and frees its ports, and a
//! device holds one deployment at a time. No fixed ports: deploy picks free
//! ones.

use super::{fixture, heavy, Home};
use serde_json::Value;
use std::process::Command;
use std::time::{Duration, Instant};

/// Kills whatever the deployments of a home still run when a test ends
/// early (a failed assertion): supervisors are detached, each leads its own
/// process group with its server.
struct KillLeftovers<'a>(&'a Home);

impl Drop for KillLeftovers<'_> {
    fn drop(&mut self) {
        let Ok(registry) = accel_registry::Registry::open(self.0.path()) else {
            return;
        };
        for d in registry.list_deployments().unwrap_or_default() {
            if let Some(pid) = d.pid {
                let _ = Command::new("kill")
                    .args(["-KILL", "--", &format!("-{pid}")])
                    .status();
            }
        }
    }
}

/// Registers the quantized ShuffleNet and builds an image of it.
fn image(h: &Home) -> String {
    h.register("shuffle", "shufflenet-v2-12-qdq.onnx");
    let image = h.ok(&["images", "create", "shuffle-img", "--model", "shuffle"]);
    assert_eq!(image.trim(), "shuffle-img:1");
    "shuffle-img".to_string()
}

fn show(h: &Home, name: &str) -> Value {
    h.json(&["services", "show", name, "--json"])
}

/// Polls `show` until `done` holds, for at most `secs` seconds.
fn poll(h: &Home, name: &str, secs: u64, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let v = show(h, name);
        if done(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "waited {secs} s for {what}: {v}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Whether process `pid` is gone (or a zombie).
fn gone(pid: u64) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => matches!(
            stat.rsplit_once(')')
                .and_then(|(_, r)| r.trim_start().chars().next()),
            Some('Z' | 'X')
        ),
    }
}

fn port_of(uri: &str) -> u16 {
    uri.rsplit_once(':').unwrap().1.parse().unwrap()
}

fn score_top1(h: &Home, addr: &str, service: &str, key: &str) -> Value {
    let coffee = fixture("images/skimage_coffee.png");
    let v = h.json(&[
        "score",
        addr,
        "--service",
        service,
        "--key",
        key,
        coffee.to_str().unwrap(),
        "--json",
    ]);
    v["results"][0]["top"][0].clone()
}

/// Deploy → wait → score → `kill -9` the server → the supervisor restarts
/// it on the same port → score again → delete: processes gone, ports free,
/// record and directory gone.
#[test]
fn local_service_scores_survives_a_killed_server_and_deletes_cleanly() {
    let _heavy = heavy();
    let h = Home::new();
    let _leftovers = KillLeftovers(&h);
    let image = image(&h);
    let d = h.json(&[
        "services", "deploy", "edge", "--image", &image, "--target", "local", "--auth", "--json",
    ]);
    assert_eq!(d["service"], "edge", "{d}");
    assert_eq!(d["state"], "starting", "{d}");
    let uri = d["scoring_uri"].as_str().unwrap().to_string();
    let key = d["key"].as_str().unwrap().to_string();
    assert!(uri.starts_with("grpc://127.0.0.1:"), "{uri}");
    let http_port = port_of(d["http_uri"].as_str().unwrap());
    let addr = uri.strip_prefix("grpc://").unwrap().to_string();

    let waited = h.ok(&["services", "wait", "edge", "--timeout", "120"]);
    assert!(waited.contains(&uri), "{waited}");
    let top = score_top1(&h, &addr, "edge", &key);
    assert_eq!(top["index"], 967, "{top}");
    assert_eq!(top["label"], "espresso");
    // The key is required, and never on a command line.
    let coffee = fixture("images/skimage_coffee.png");
    let err = h.fails(&[
        "score",
        &addr,
        "--service",
        "edge",
        coffee.to_str().unwrap(),
    ]);
    assert!(err.contains("Unauthenticated"), "{err}");

    let v = show(&h, "edge");
    assert_eq!(v["state"], "running", "{v}");
    assert_eq!(v["scoring_uri"], uri.as_str());
    assert_eq!(v["supervisor_alive"], true);
    assert_eq!(v["restarts"], 0);
    assert_eq!(v["model"], "shuffle:1");
    let supervisor = v["pid"].as_u64().unwrap();
    let server = v["server_pid"].as_u64().unwrap();
    for pid in [supervisor, server] {
        let argv = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
        assert!(
            !String::from_utf8_lossy(&argv).contains(&key),
            "the key is on a command line"
        );
    }
    let listed = h.json(&["services", "list", "--json"]);
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed[0]["state"], "running");

    // kill -9 the server: the supervisor notices, restarts it on the same
    // ports, and the scoring URI keeps working.
    assert!(Command::new("kill")
        .args(["-KILL", &server.to_string()])
        .status()
        .unwrap()
        .success());
    let v = poll(&h, "edge", 120, "a restarted server", |v| {
        v["restarts"].as_u64() >= Some(1)
            && v["state"] == "running"
            && v["server_pid"].as_u64().is_some_and(|p| p != server)
    });
    assert_eq!(v["scoring_uri"], uri.as_str(), "{v}");
    assert_eq!(v["pid"].as_u64(), Some(supervisor), "{v}");
    assert!(v["last_exit"].as_str().unwrap().contains("signal 9"), "{v}");
    h.ok(&["services", "wait", "edge", "--timeout", "60"]);
    let top = score_top1(&h, &addr, "edge", &key);
    assert_eq!(top["index"], 967, "{top}");
    let new_server = v["server_pid"].as_u64().unwrap();

    let logs = h.ok(&["services", "logs", "edge"]);
    assert_eq!(logs.matches("ready grpc=").count(), 2, "{logs}");
    assert!(logs.contains("killed by signal 9"), "{logs}");
    let tail = h.ok(&["services", "logs", "edge", "--tail", "1"]);
    assert_eq!(tail.lines().count(), 1, "{tail}");

    // delete: everything goes, the ports are free again.
    let out = h.ok(&["services", "delete", "edge"]);
    let grpc_port = port_of(&uri);
    assert!(
        out.contains(&format!("gRPC port {grpc_port} is free")),
        "{out}"
    );
    assert!(out.contains("removed deployment record edge"), "{out}");
    for pid in [supervisor, new_server] {
        assert!(gone(pid), "pid {pid} is still running after delete");
    }
    std::net::TcpListener::bind(("127.0.0.1", grpc_port)).expect("the gRPC port is free");
    std::net::TcpListener::bind(("127.0.0.1", http_port)).expect("the HTTP port is free");
    assert_eq!(
        h.json(&["services", "list", "--json"]),
        serde_json::json!([])
    );
    assert!(!h.path().join("deployments/edge").exists());
    let err = h.fails(&["services", "show", "edge"]);
    assert!(err.contains("no deployment named"), "{err}");
}

/// One model per device: a second deployment on a held device is refused,
/// naming the holder and its model; `--replace` stops and removes the
/// holder and takes the device over. A taken name is refused likewise.
#[test]
fn a_busy_device_is_refused_until_replace_takes_it_over() {
    let h = Home::new();
    let _leftovers = KillLeftovers(&h);
    let image = image(&h);
    let deploy = |name: &str, extra: &[&str]| {
        let mut args = vec![
            "services", "deploy", name, "--image", &image, "--device", "accel:0",
        ];
        args.extend_from_slice(extra);
        h.run(&args)
    };
    let first = deploy("first", &[]);
    assert!(first.status.success(), "{first:?}");
    let err = h.fails(&[
        "services", "deploy", "second", "--image", &image, "--device", "accel:0",
    ]);
    assert_eq!(
        err,
        "error: device accel:0 is used by deployment first serving model shuffle:1: pass --replace to take it over, or another --device"
    );
    let err = h.fails(&["services", "deploy", "first", "--image", &image]);
    assert!(
        err.contains("deployment first already exists") && err.contains("--replace"),
        "{err}"
    );
    h.ok(&["services", "wait", "first", "--timeout", "120"]);
    let first_supervisor = show(&h, "first")["pid"].as_u64().unwrap();

    let second = deploy("second", &["--replace"]);
    assert!(second.status.success(), "{second:?}");
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(
        stderr.contains("replaced deployment first (model shuffle:1) on device accel:0"),
        "{stderr}"
    );
    assert!(gone(first_supervisor), "the replaced supervisor still runs");
    assert!(!h.path().join("deployments/first").exists());
    let listed = h.json(&["services", "list", "--json"]);
    let names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["second"]);
    assert_eq!(listed[0]["device"], "accel:0");
    h.ok(&["services", "wait", "second", "--timeout", "120"]);
    let out = h.ok(&["services", "delete", "second"]);
    assert!(out.contains("removed deployment record second"), "{out}");
}

/// A server that cannot start (its bundle corrupted, then the running one
/// killed): restarted with backoff, `wait` gives up with the state and the
/// end of the server log; a supervisor killed with -9 reads as `failed`
/// (its server goes with it); `delete` still cleans up.
#[test]
fn wait_reports_a_failing_server_and_a_dead_supervisor_reads_failed() {
    let h = Home::new();
    let _leftovers = KillLeftovers(&h);
    let image = image(&h);
    let err = h.fails(&[
        "services", "deploy", "broken", "--image", &image, "--engine", "bogus",
    ]);
    assert!(err.contains("bogus"), "{err}");
    h.ok(&["services", "deploy", "broken", "--image", &image]);
    h.ok(&["services", "wait", "broken", "--timeout", "120"]);
    let server = show(&h, "broken")["server_pid"].as_u64().unwrap();
    std::fs::write(
        h.path().join("deployments/broken/bundle/model.onnx"),
        b"not a model",
    )
    .unwrap();
    Command::new("kill")
        .args(["-KILL", &server.to_string()])
        .status()
        .unwrap();
    poll(&h, "broken", 60, "a failed restart", |v| {
        v["state"] == "restarting" && v["restarts"].as_u64() >= Some(2)
    });
    let out = h.run(&["services", "wait", "broken", "--timeout", "2"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("error: deployment broken is not running after 2 s: state restarting"),
        "{err}"
    );
    assert!(err.contains("[supervisor "), "no log tail: {err}");
    assert!(
        err.contains("model.onnx"),
        "no server error in the tail: {err}"
    );
    let logs = h.ok(&["services", "logs", "broken"]);
    assert!(logs.contains("restarting in"), "{logs}");

    let supervisor = show(&h, "broken")["pid"].as_u64().unwrap();
    Command::new("kill")
        .args(["-KILL", &supervisor.to_string()])
        .status()
        .unwrap();
    let v = poll(&h, "broken", 10, "state failed", |v| v["state"] == "failed");
    assert_eq!(v["supervisor_alive"], false, "{v}");
    let listed = h.ok(&["services", "list"]);
    assert!(listed.contains("failed"), "{listed}");
    let out = h.run(&["services", "wait", "broken", "--timeout", "30"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("deployment broken is failed"),
        "{out:?}"
    );
    h.ok(&["services", "delete", "broken"]);
    assert_eq!(
        h.json(&["services", "list", "--json"]),
        serde_json::json!([])
    );
    assert!(!h.path().join("deployments/broken").exists());
}

/// Clean-up order: a model used by an image, and an image used by a
/// service, are not deleted without `--force` (the refusal names the
/// dependents, and nothing changes); `models delete --force` stops the
/// service and removes deployment, image and model; afterwards the blob
/// store is empty and `registry check` is clean.
#[test]
fn deletes_refuse_dependents_and_force_cascades_to_an_empty_store() {
    let h = Home::new();
    let _leftovers = KillLeftovers(&h);
    let image = image(&h);
    let v = h.json(&[
        "services", "deploy", "edge", "--image", &image, "--target", "local", "--json",
    ]);
    let grpc_port = port_of(v["scoring_uri"].as_str().unwrap());
    h.ok(&["services", "wait", "edge", "--timeout", "120"]);
    let supervisor = show(&h, "edge")["pid"].as_u64().unwrap();

    let err = h.fails(&["images", "delete", "shuffle-img"]);
    assert!(err.contains("edge") && err.contains("--force"), "{err}");
    let err = h.fails(&["models", "delete", "shuffle"]);
    assert!(
        err.contains("shuffle-img:1") && err.contains("edge") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(
        show(&h, "edge")["state"],
        "running",
        "refusals changed nothing"
    );

    let out = h.json(&["models", "delete", "shuffle", "--force", "--json"]);
    let deleted: Vec<&str> = out
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap())
        .collect();
    assert!(deleted.iter().any(|d| d.contains("edge")), "{deleted:?}");
    assert!(
        deleted.iter().any(|d| d.contains("shuffle-img:1")),
        "{deleted:?}"
    );
    assert!(
        deleted.iter().any(|d| d.contains("shuffle:1")),
        "{deleted:?}"
    );
    let pos = |needle: &str| deleted.iter().position(|d| d.contains(needle)).unwrap();
    assert!(pos("edge") < pos("shuffle-img:1") && pos("shuffle-img:1") < pos("shuffle:1"));

    // The service is stopped and its port free; nothing is left.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !gone(supervisor) {
        assert!(
            Instant::now() < deadline,
            "supervisor {supervisor} still runs"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(std::net::TcpListener::bind(("127.0.0.1", grpc_port)).is_ok());
    assert_eq!(
        h.json(&["services", "list", "--json"]),
        serde_json::json!([])
    );
    assert_eq!(h.json(&["images", "list", "--json"]), serde_json::json!([]));
    assert_eq!(h.listing(), serde_json::json!([]));
    let blobs: Vec<_> = std::fs::read_dir(h.path().join("blobs/sha256"))
        .unwrap()
        .collect();
    assert!(blobs.is_empty(), "blobs left: {blobs:?}");
    // `registry check` exits non-zero unless the registry is consistent.
    let check = h.json(&["registry", "check", "--json"]);
    assert_eq!(check["orphan_blobs"], serde_json::json!([]), "{check:#}");
}

/// A delete that stops while removing the deployment's directory (killed,
/// or an I/O error) keeps the record, so a second delete finishes the job
/// (bench/crash.sh found a directory left with no record when the record
/// went first).
#[test]
fn a_delete_that_fails_removing_the_directory_keeps_the_record() {
    let h = Home::new();
    let img = image(&h);
    h.ok(&["services", "deploy", "d", "--image", &img]);
    h.ok(&["services", "wait", "d"]);
    // A file where the directory is: removing it as a directory fails.
    let dir = h.path().join("deployments").join("d");
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::write(&dir, b"not a directory").unwrap();
    let err = h.fails(&["services", "delete", "d"]);
    assert!(err.contains("cannot remove"), "{err}");
    let names: Vec<Value> = h
        .json(&["services", "list", "--json"])
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].clone())
        .collect();
    assert_eq!(
        names,
        [Value::from("d")],
        "the record went before the directory"
    );
    std::fs::remove_file(&dir).unwrap();
    h.ok(&["services", "delete", "d"]);
    assert_eq!(
        h.json(&["services", "list", "--json"]),
        serde_json::json!([])
    );
}

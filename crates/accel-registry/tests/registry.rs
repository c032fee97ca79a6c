//! End-to-end tests of the registry against real homes in temp directories.
//! One test binary; topics that grew their own file live in `registry/`.

#[path = "registry/deployments.rs"]
mod deployments;
#[path = "registry/images.rs"]
mod images;
#[path = "registry/operations.rs"]
mod operations;
#[path = "registry/paths.rs"]
mod paths;
#[path = "registry/reports.rs"]
mod reports;

use accel_core::error::{ErrorKind, HasKind};
use accel_core::name::NameRef;
use accel_core::spec::{LabelsRef, PipelineSpec, Preset};
use accel_registry::{ModelFilter, NewModel, Registry, RegistryError, CRASH_ENV};
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use tempfile::TempDir;

fn r(s: &str) -> NameRef {
    s.parse().unwrap()
}

fn spec() -> PipelineSpec {
    Preset::Torchvision.spec()
}

/// Writes a fake model file with the given content.
fn model_file(dir: &Path, file: &str, content: &[u8]) -> PathBuf {
    let p = dir.join(file);
    fs::write(&p, content).unwrap();
    p
}

fn new_model(name: &str, file: PathBuf) -> NewModel {
    NewModel {
        name: name.to_string(),
        model_file: file,
        description: format!("test model {name}"),
        tags: BTreeMap::new(),
        properties: BTreeMap::new(),
        format: "onnx".into(),
        parent: None,
        spec: spec(),
        labels: None,
        report: None,
    }
}

fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

fn blob_files(home: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(home.join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn temp_files(home: &Path) -> Vec<String> {
    fs::read_dir(home.join("tmp"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

fn setup() -> (TempDir, Registry) {
    let home = TempDir::new().unwrap();
    let reg = Registry::open(home.path()).unwrap();
    (home, reg)
}

#[test]
fn versions_increment_and_latest_vs_pinned() {
    let (home, reg) = setup();
    let mut seen = Vec::new();
    for i in 1..=3u8 {
        let f = model_file(home.path(), "m.onnx", &[i; 10]);
        let mut m = new_model("resnet", f);
        m.tags.insert("round".into(), i.to_string());
        m.properties.insert("opset".into(), "17".into());
        let rec = reg.register_model(m).unwrap();
        assert_eq!(rec.version, u32::from(i));
        assert_eq!(rec.reference(), format!("resnet:{i}"));
        assert_eq!(rec.sha256, sha256_hex(&[i; 10]));
        assert_eq!(rec.size, 10);
        assert_eq!(rec.format, "onnx");
        assert_eq!(rec.parent, None);
        assert_eq!(rec.spec, spec());
        assert_eq!(
            rec.tags.get("round").map(String::as_str),
            Some(&*i.to_string())
        );
        assert_eq!(rec.properties.get("opset").map(String::as_str), Some("17"));
        assert!(
            rec.created.ends_with('Z') && rec.created.len() == 20,
            "{}",
            rec.created
        );
        seen.push(rec);
    }
    // A different name starts at 1 again.
    let f = model_file(home.path(), "o.onnx", b"other");
    assert_eq!(
        reg.register_model(new_model("other", f)).unwrap().version,
        1
    );

    assert_eq!(reg.get_model(&r("resnet")).unwrap(), seen[2]);
    assert_eq!(reg.get_model(&r("resnet:2")).unwrap(), seen[1]);
    assert_eq!(reg.get_model(&r("resnet:1")).unwrap(), seen[0]);
    // The state survives reopening.
    drop(reg);
    let reg = Registry::open(home.path()).unwrap();
    assert_eq!(reg.get_model(&r("resnet")).unwrap(), seen[2]);
    let all = reg.list_models(&ModelFilter::default()).unwrap();
    let refs: Vec<String> = all.iter().map(|m| m.reference()).collect();
    assert_eq!(refs, ["other:1", "resnet:1", "resnet:2", "resnet:3"]);
    assert_eq!(
        reg.read_blob_verified(&seen[1].sha256).unwrap(),
        vec![2u8; 10]
    );
    assert_eq!(
        fs::read(reg.blob_path(&seen[0].sha256)).unwrap(),
        vec![1u8; 10]
    );
}

#[test]
fn not_found_messages_name_the_problem() {
    let (home, reg) = setup();
    let err = reg.get_model(&r("nope")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert_eq!(err.to_string(), "no model named \"nope\"");
    for _ in 0..3 {
        let f = model_file(home.path(), "m.onnx", b"x");
        reg.register_model(new_model("foo", f)).unwrap();
    }
    let err = reg.get_model(&r("foo:7")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert_eq!(
        err.to_string(),
        "model \"foo\" has no version 7 (latest is 3)"
    );
    let err = reg.delete_model(&r("foo:9"), false).unwrap_err();
    assert_eq!(
        err.to_string(),
        "model \"foo\" has no version 9 (latest is 3)"
    );
    let err = reg.delete_model(&r("bar"), true).unwrap_err();
    assert_eq!(err.to_string(), "no model named \"bar\"");
    let mut m = new_model("child", model_file(home.path(), "c.onnx", b"c"));
    m.parent = Some(r("base"));
    let err = reg.register_model(m).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert_eq!(err.to_string(), "parent: no model named \"base\"");
    assert!(reg.list_models(&ModelFilter::default()).unwrap().len() == 3);
}

#[test]
fn bad_input_is_invalid_argument_and_writes_nothing() {
    let (home, reg) = setup();
    let good = model_file(home.path(), "m.onnx", b"model");
    let cases: Vec<(NewModel, &str)> = vec![
        (new_model("a/b", good.clone()), "invalid name \"a/b\""),
        (
            NewModel {
                tags: BTreeMap::from([("k=v".to_string(), "x".to_string())]),
                ..new_model("m", good.clone())
            },
            "tag key \"k=v\" must not contain '=' or control characters",
        ),
        (
            NewModel {
                properties: BTreeMap::from([("k".to_string(), "a\u{1b}[31m".to_string())]),
                ..new_model("m", good.clone())
            },
            "property \"k\" has a value with control characters",
        ),
        (
            new_model("m", home.path().join("missing.onnx")),
            "cannot read model file",
        ),
        (
            new_model("m", model_file(home.path(), "empty.onnx", b"")),
            "is empty",
        ),
        (
            new_model("m", home.path().to_path_buf()),
            "is not a regular file",
        ),
        (
            NewModel {
                labels: Some(vec!["a\nb".into()]),
                ..new_model("m", good.clone())
            },
            "must not contain newlines",
        ),
        (
            NewModel {
                format: "ONNX".into(),
                ..new_model("m", good.clone())
            },
            "format \"ONNX\"",
        ),
    ];
    for (m, msg) in cases {
        let err = reg.register_model(m).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
        assert!(err.to_string().contains(msg), "{err:?} lacks {msg:?}");
    }
    // A spec pointing at a labels blob that is not in the registry.
    let mut s = spec();
    s.labels = Some(LabelsRef {
        sha256: sha256_hex(b"nothing"),
        count: 1,
    });
    let err = reg
        .register_model(NewModel {
            spec: s,
            ..new_model("m", good)
        })
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    assert!(err.to_string().contains("not in the registry"), "{err}");
    assert!(reg.list_models(&ModelFilter::default()).unwrap().is_empty());
    assert!(blob_files(home.path()).is_empty());
    assert!(temp_files(home.path()).is_empty());
    let report = reg.check(false).unwrap();
    assert!(report.is_clean(), "{report:?}");
}

#[test]
fn tag_filter_by_value_and_presence() {
    let (home, reg) = setup();
    let f = model_file(home.path(), "m.onnx", b"m");
    let tagged = |name: &str, tags: &[(&str, &str)]| {
        let mut m = new_model(name, f.clone());
        m.tags = tags
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        reg.register_model(m).unwrap()
    };
    tagged("a", &[("env", "prod")]); // a:1
    tagged("a", &[("env", "dev")]); // a:2
    tagged("b", &[("env", "prod"), ("team", "vision")]); // b:1
    tagged("c", &[]); // c:1
    tagged("a", &[("team", "vision")]); // a:3

    let list = |f: ModelFilter| -> Vec<String> {
        reg.list_models(&f)
            .unwrap()
            .iter()
            .map(|m| m.reference())
            .collect()
    };
    let tag = |k: &str, v: Option<&str>| (k.to_string(), v.map(str::to_string));
    assert_eq!(
        list(ModelFilter {
            tags: vec![tag("env", Some("prod"))],
            ..Default::default()
        }),
        ["a:1", "b:1"]
    );
    assert_eq!(
        list(ModelFilter {
            tags: vec![tag("env", None)],
            ..Default::default()
        }),
        ["a:1", "a:2", "b:1"]
    );
    assert_eq!(
        list(ModelFilter {
            tags: vec![tag("env", Some("prod")), tag("team", None)],
            ..Default::default()
        }),
        ["b:1"]
    );
    assert_eq!(
        list(ModelFilter {
            tags: vec![tag("env", Some("staging"))],
            ..Default::default()
        }),
        Vec::<String>::new()
    );
    assert_eq!(
        list(ModelFilter {
            name: Some("a".into()),
            ..Default::default()
        }),
        ["a:1", "a:2", "a:3"]
    );
    assert_eq!(
        list(ModelFilter {
            latest_only: true,
            ..Default::default()
        }),
        ["a:3", "b:1", "c:1"]
    );
    // latest_only applies to the models that match the other conditions.
    assert_eq!(
        list(ModelFilter {
            tags: vec![tag("env", None)],
            latest_only: true,
            ..Default::default()
        }),
        ["a:2", "b:1"]
    );
}

#[test]
fn same_file_twice_is_one_blob() {
    let (home, reg) = setup();
    let f = model_file(home.path(), "m.onnx", b"identical bytes");
    let a = reg.register_model(new_model("a", f.clone())).unwrap();
    let b = reg.register_model(new_model("b", f)).unwrap();
    assert_eq!(a.sha256, b.sha256);
    assert_eq!(blob_files(home.path()), std::slice::from_ref(&a.sha256));
    // Deleting one user keeps the blob; deleting the last removes it.
    let gone = reg.delete_model(&r("a:1"), false).unwrap();
    assert_eq!(
        gone.models
            .iter()
            .map(|m| m.reference())
            .collect::<Vec<_>>(),
        ["a:1"]
    );
    assert_eq!(blob_files(home.path()), std::slice::from_ref(&a.sha256));
    assert_eq!(
        reg.read_blob_verified(&b.sha256).unwrap(),
        b"identical bytes"
    );
    reg.delete_model(&r("b"), false).unwrap();
    assert!(blob_files(home.path()).is_empty());
    assert!(reg.check(false).unwrap().is_clean());
}

#[test]
fn labels_are_stored_as_a_blob_and_inherited_by_reference() {
    let (home, reg) = setup();
    let labels: Vec<String> = ["tench", "goldfish", "great white shark"]
        .map(String::from)
        .to_vec();
    let base = reg
        .register_model(NewModel {
            labels: Some(labels.clone()),
            ..new_model("base", model_file(home.path(), "m.onnx", b"fp32"))
        })
        .unwrap();
    let text = "tench\ngoldfish\ngreat white shark\n";
    let lref = LabelsRef {
        sha256: sha256_hex(text.as_bytes()),
        count: 3,
    };
    assert_eq!(base.spec.labels, Some(lref.clone()));
    assert_eq!(reg.labels(&base).unwrap(), Some(labels.clone()));
    assert_eq!(
        fs::read_to_string(reg.blob_path(&lref.sha256)).unwrap(),
        text
    );
    // A converted model keeps the parent's labels by reference.
    let child = reg
        .register_model(NewModel {
            parent: Some(r("base")),
            spec: base.spec.clone(),
            format: "accel-plan".into(),
            ..new_model("base-int8", model_file(home.path(), "q.onnx", b"int8"))
        })
        .unwrap();
    assert_eq!(child.parent.as_deref(), Some("base:1"));
    assert_eq!(child.spec.labels, Some(lref.clone()));
    assert_eq!(reg.labels(&child).unwrap(), Some(labels.clone()));
    // Without labels there are none.
    let plain = reg
        .register_model(new_model("plain", model_file(home.path(), "p.onnx", b"p")))
        .unwrap();
    assert_eq!(reg.labels(&plain).unwrap(), None);
    // Deleting the parent (forced) takes the child and the labels blob.
    let gone = reg.delete_model(&r("base"), true).unwrap();
    assert_eq!(
        gone.models
            .iter()
            .map(|m| m.reference())
            .collect::<Vec<_>>(),
        ["base:1", "base-int8:1"]
    );
    assert_eq!(blob_files(home.path()), std::slice::from_ref(&plain.sha256));
}

#[test]
fn delete_refuses_parents_and_force_cascades() {
    let (home, reg) = setup();
    let base = reg
        .register_model(NewModel {
            labels: Some(vec!["cat".into(), "dog".into()]),
            ..new_model("foo", model_file(home.path(), "a", b"base"))
        })
        .unwrap();
    let int8 = reg
        .register_model(NewModel {
            parent: Some(r("foo:1")),
            ..new_model("foo-int8", model_file(home.path(), "b", b"int8"))
        })
        .unwrap();
    assert_eq!(int8.parent.as_deref(), Some("foo:1"));

    let err = reg.delete_model(&r("foo:1"), false).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition);
    assert!(matches!(err, RegistryError::FailedPrecondition(_)));
    assert_eq!(
        err.to_string(),
        "model \"foo:1\" is the parent of \"foo-int8:1\"; use --force to delete both"
    );
    // A grandchild: the message counts it, force deletes it too.
    let plan = reg
        .register_model(NewModel {
            parent: Some(r("foo-int8")),
            format: "accel-plan".into(),
            ..new_model("foo-plan", model_file(home.path(), "c", b"plan"))
        })
        .unwrap();
    assert_eq!(plan.parent.as_deref(), Some("foo-int8:1"));
    let err = reg.delete_model(&r("foo"), false).unwrap_err();
    assert_eq!(
        err.to_string(),
        "model \"foo:1\" is the parent of \"foo-int8:1\" (and 1 model derived from those); \
         use --force to delete them too"
    );
    // Nothing was deleted by the refusals.
    assert_eq!(reg.list_models(&ModelFilter::default()).unwrap().len(), 3);
    assert_eq!(blob_files(home.path()).len(), 4);
    // Deleting a leaf needs no force.
    let gone = reg.delete_model(&r("foo-plan:1"), false).unwrap();
    assert_eq!(gone.models, vec![plan]);

    let gone = reg.delete_model(&r("foo:1"), true).unwrap();
    assert_eq!(gone.models, vec![base, int8]);
    assert!(gone.deployments.is_empty() && gone.images.is_empty());
    assert!(reg.list_models(&ModelFilter::default()).unwrap().is_empty());
    assert!(blob_files(home.path()).is_empty());
    let report = reg.check(false).unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.orphan_blobs.len() + report.missing_blobs.len(), 0);
    let err = reg.get_model(&r("foo-int8")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
}

#[test]
fn concurrent_registrations_get_distinct_versions() {
    let home = TempDir::new().unwrap();
    let files = TempDir::new().unwrap();
    let start = std::sync::Arc::new(std::sync::Barrier::new(2));
    let handles: Vec<_> = (0..2u8)
        .map(|t| {
            let reg = Registry::open(home.path()).unwrap();
            let dir = files.path().to_path_buf();
            let start = start.clone();
            std::thread::spawn(move || {
                start.wait();
                (0..10u8)
                    .map(|i| {
                        let f = model_file(&dir, &format!("{t}-{i}.onnx"), &[t, i, 42]);
                        reg.register_model(new_model("busy", f)).unwrap().version
                    })
                    .collect::<Vec<u32>>()
            })
        })
        .collect();
    let mut versions: Vec<u32> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    versions.sort();
    assert_eq!(versions, (1..=20).collect::<Vec<u32>>());
    let reg = Registry::open(home.path()).unwrap();
    assert_eq!(reg.get_model(&r("busy")).unwrap().version, 20);
    assert_eq!(blob_files(home.path()).len(), 20);
    let report = reg.check(false).unwrap();
    assert!(
        report.is_clean() && report.recovered.is_empty(),
        "{report:?}"
    );
}

#[test]
fn corrupted_blob_is_detected() {
    let (home, reg) = setup();
    let m = reg
        .register_model(NewModel {
            labels: Some(vec!["x".into()]),
            ..new_model("m", model_file(home.path(), "m.onnx", b"0123456789"))
        })
        .unwrap();
    let path = reg.blob_path(&m.sha256);
    let mut bytes = fs::read(&path).unwrap();
    bytes[4] ^= 0x01;
    fs::write(&path, &bytes).unwrap();
    let err = reg.read_blob_verified(&m.sha256).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DataLoss);
    assert!(
        err.to_string().starts_with(&format!(
            "blob {} is corrupt: its content hashes to {}",
            m.sha256,
            sha256_hex(&bytes)
        )),
        "{err}"
    );
    let report = reg.check(true).unwrap();
    assert_eq!(report.corrupt_blobs, std::slice::from_ref(&m.sha256));
    assert!(report.missing_blobs.is_empty() && report.orphan_blobs.is_empty());
    assert!(!report.is_clean());
    assert!(path.exists(), "repair must not delete a corrupt blob");

    // A labels blob that vanished is data loss naming the model.
    let lsha = m.spec.labels.clone().unwrap().sha256;
    fs::remove_file(reg.blob_path(&lsha)).unwrap();
    let err = reg.labels(&m).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DataLoss);
    assert!(
        err.to_string()
            .starts_with(&format!("blob {lsha} of model \"m:1\" is missing")),
        "{err}"
    );
    let report = reg.check(false).unwrap();
    assert_eq!(report.missing_blobs, [lsha]);
    // An unknown but well-formed hash is simply not found.
    let err = reg.read_blob_verified(&sha256_hex(b"unknown")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
}

#[test]
fn check_reports_and_repairs_orphans_and_stale_temps() {
    let (home, reg) = setup();
    let m = reg
        .register_model(new_model("m", model_file(home.path(), "m.onnx", b"kept")))
        .unwrap();
    let orphan = sha256_hex(b"orphan");
    fs::write(reg.blob_path(&orphan), b"orphan").unwrap();
    fs::write(home.path().join("tmp/left-over.part"), b"partial").unwrap();
    let report = reg.check(false).unwrap();
    assert_eq!(report.orphan_blobs, std::slice::from_ref(&orphan));
    assert_eq!(report.stale_temp_files, ["left-over.part"]);
    assert!(report.missing_blobs.is_empty() && report.corrupt_blobs.is_empty());
    assert!(!report.repaired && !report.is_clean());
    // Reporting removed nothing.
    assert!(reg.blob_path(&orphan).exists());

    let report = reg.check(true).unwrap();
    assert_eq!(report.orphan_blobs, std::slice::from_ref(&orphan));
    assert!(report.repaired && report.is_clean(), "{report:?}");
    assert_eq!(blob_files(home.path()), std::slice::from_ref(&m.sha256));
    assert!(temp_files(home.path()).is_empty());
    let report = reg.check(false).unwrap();
    assert!(
        report.is_clean() && report.orphan_blobs.is_empty(),
        "{report:?}"
    );
    assert_eq!(
        serde_json::to_value(&report).unwrap(),
        serde_json::json!({
            "orphan_blobs": [], "missing_blobs": [], "corrupt_blobs": [],
            "stale_temp_files": [], "dead_operations": [], "dead_image_builds": [],
            "recovered": [],
            "repaired": false
        })
    );
}

// ---- crash recovery: a child process (this test binary, re-executed) is
// ---- killed by the crash hook at each point of register_model.

const CHILD_HOME: &str = "ACCEL_REGISTRY_TEST_CHILD_HOME";
const CHILD_CONTENT: &str = "ACCEL_REGISTRY_TEST_CHILD_CONTENT";

/// Not a test by itself: the body of the child process of
/// `crash_at_each_point_leaves_no_trace`. Does nothing unless the parent set
/// `ACCEL_REGISTRY_TEST_CHILD_HOME`.
#[test]
fn crash_child() {
    let Some(home) = std::env::var_os(CHILD_HOME) else {
        return;
    };
    let home = PathBuf::from(home);
    let content = std::env::var(CHILD_CONTENT).unwrap();
    let reg = Registry::open(&home).unwrap();
    // The source file lives in the home's top level, which the registry
    // ignores, so the aborted child leaves nothing outside the parent's TempDir.
    let f = model_file(&home, "crashy.onnx", content.as_bytes());
    reg.register_model(NewModel {
        labels: Some(vec!["label-a".into(), "label-b".into()]),
        report: Some(serde_json::json!({"written": "with the model, or not at all"})),
        ..new_model("crashy", f)
    })
    .unwrap();
    println!("REGISTERED WITHOUT CRASHING");
}

#[cfg(unix)]
fn crash_child_at(home: &Path, point: &str, content: &str) {
    use std::os::unix::process::ExitStatusExt;
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["crash_child", "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_HOME, home)
        .env(CHILD_CONTENT, content)
        .env(CRASH_ENV, point)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !stdout.contains("REGISTERED WITHOUT CRASHING"),
        "{point}: {stdout}"
    );
    assert_eq!(
        out.status.signal(),
        Some(6),
        "{point}: {:?} {stdout}",
        out.status
    );
}

#[cfg(unix)]
fn pending_rows(home: &Path) -> i64 {
    count_rows(home, "pending")
}

/// The number of rows in `table` of the home's database, read directly.
fn count_rows(home: &Path, table: &str) -> i64 {
    let conn = rusqlite::Connection::open(home.join("registry.db")).unwrap();
    conn.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))
        .unwrap()
}

#[cfg(unix)]
#[test]
fn crash_at_each_point_leaves_no_trace() {
    // (crash point, content of the crashing model, intent rows left,
    //  temp files left, blob files left (keeper's included)).
    let cases = [
        ("after-intent", "new content", 1, 0, 1),
        ("after-temp-write", "new content", 1, 1, 1),
        ("after-blob-rename", "new content", 1, 0, 2),
        ("before-commit", "new content", 2, 0, 3),
        // Same content as the keeper: the shared blob must survive recovery.
        ("after-blob-rename", "keeper content", 1, 0, 1),
        ("before-commit", "keeper content", 2, 0, 2),
    ];
    for (point, content, intents, temps, blobs) in cases {
        let home = TempDir::new().unwrap();
        let keeper = {
            let reg = Registry::open(home.path()).unwrap();
            let f = model_file(home.path(), "keeper.onnx", b"keeper content");
            reg.register_model(new_model("keeper", f)).unwrap()
        };
        crash_child_at(home.path(), point, content);

        // The crash left debris behind...
        assert_eq!(pending_rows(home.path()), intents, "{point}/{content}");
        assert_eq!(temp_files(home.path()).len(), temps, "{point}/{content}");
        assert_eq!(blob_files(home.path()).len(), blobs, "{point}/{content}");

        // ...which opening the registry rolls back.
        let reg = Registry::open(home.path()).unwrap();
        let report = reg.check(false).unwrap();
        assert!(report.is_clean(), "{point}/{content}: {report:?}");
        assert_eq!(
            report.recovered.len(),
            intents as usize,
            "{point}: {report:?}"
        );
        assert!(
            report
                .recovered
                .iter()
                .all(|l| l.starts_with("rolled back an interrupted registration by pid ")),
            "{report:?}"
        );
        assert_eq!(pending_rows(home.path()), 0);
        assert_eq!(count_rows(home.path(), "model_reports"), 0, "{point}");
        assert!(temp_files(home.path()).is_empty(), "{point}");
        assert_eq!(
            blob_files(home.path()),
            std::slice::from_ref(&keeper.sha256),
            "{point}/{content}"
        );
        let err = reg.get_model(&r("crashy")).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound, "{point}");
        assert_eq!(
            reg.read_blob_verified(&keeper.sha256).unwrap(),
            b"keeper content"
        );
        // Reported once only.
        assert!(reg.check(false).unwrap().recovered.is_empty());
        // The name is free: the next registration is version 1.
        let f = model_file(home.path(), "again.onnx", content.as_bytes());
        assert_eq!(
            reg.register_model(new_model("crashy", f)).unwrap().version,
            1
        );
    }
}

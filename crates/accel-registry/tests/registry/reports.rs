//! Model reports (migration 3) and upgrading a version-2 database.

use super::*;
use accel_registry::ModelRecord;
use serde_json::json;

fn a_report() -> serde_json::Value {
    json!({
        "candidates": [
            {"engine": "ort", "precision": "int8", "threads": 4, "p50_ms": 1.25, "top1": 0.695},
            {"engine": "tract", "precision": "fp32", "threads": 1, "p50_ms": 7.5, "top1": 0.702}
        ],
        "chosen": 0,
        "calibration": {"images": 128, "method": "minmax"},
        "note": "unicode é ✓ and \"quotes\""
    })
}

fn report_text(home: &Path, id: i64) -> Option<String> {
    use rusqlite::OptionalExtension;
    let conn = rusqlite::Connection::open(home.join("registry.db")).unwrap();
    conn.query_row(
        "SELECT report FROM model_reports WHERE model_id = ?1",
        [id],
        |r| r.get(0),
    )
    .optional()
    .unwrap()
}

fn model_id(home: &Path, reference: &str) -> i64 {
    let (name, version) = reference.split_once(':').unwrap();
    let conn = rusqlite::Connection::open(home.join("registry.db")).unwrap();
    conn.query_row(
        "SELECT id FROM models WHERE name = ?1 AND version = ?2",
        rusqlite::params![name, version.parse::<u32>().unwrap()],
        |r| r.get(0),
    )
    .unwrap()
}

#[test]
fn report_round_trip_and_delete_cascades() {
    let (home, reg) = setup();
    let base = reg
        .register_model(new_model(
            "base",
            model_file(home.path(), "m.onnx", b"fp32"),
        ))
        .unwrap();
    assert_eq!(base.report, None);
    let plan = reg
        .register_model(NewModel {
            parent: Some(r("base")),
            format: "accel-plan".into(),
            report: Some(a_report()),
            ..new_model("base-plan", model_file(home.path(), "p.onnx", b"plan"))
        })
        .unwrap();
    assert_eq!(plan.report, Some(a_report()));
    assert_eq!(reg.get_model(&r("base-plan")).unwrap(), plan);
    let all = reg.list_models(&ModelFilter::default()).unwrap();
    assert_eq!(all, vec![base.clone(), plan.clone()]);

    // JSON: "report" is there when there is one, absent otherwise, and a
    // record without the field reads back with none.
    let with = serde_json::to_value(&plan).unwrap();
    assert_eq!(with["report"], a_report());
    assert_eq!(with["parent"], "base:1");
    let without = serde_json::to_value(&base).unwrap();
    assert!(without.get("report").is_none(), "{without}");
    assert_eq!(
        serde_json::from_value::<ModelRecord>(without).unwrap(),
        base
    );
    assert_eq!(serde_json::from_value::<ModelRecord>(with).unwrap(), plan);

    // Stored in its own table, once, as JSON.
    let plan_id = model_id(home.path(), "base-plan:1");
    let stored = report_text(home.path(), plan_id).unwrap();
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&stored).unwrap(),
        a_report()
    );
    assert_eq!(count_rows(home.path(), "model_reports"), 1);

    // It survives reopening.
    drop(reg);
    let reg = Registry::open(home.path()).unwrap();
    assert_eq!(reg.get_model(&r("base-plan:1")).unwrap(), plan);
    assert!(reg.check(false).unwrap().is_clean());

    // A second report on another model; deleting one model takes only its row.
    let other = reg
        .register_model(NewModel {
            report: Some(json!({"chosen": 1})),
            ..new_model("other", model_file(home.path(), "o.onnx", b"other"))
        })
        .unwrap();
    assert_eq!(count_rows(home.path(), "model_reports"), 2);
    let gone = reg.delete_model(&r("other"), false).unwrap();
    assert_eq!(gone.models, vec![other]);
    assert_eq!(count_rows(home.path(), "model_reports"), 1);
    assert!(report_text(home.path(), plan_id).is_some());

    // Deleting the parent with force takes the child and its report.
    let gone = reg.delete_model(&r("base"), true).unwrap();
    assert_eq!(gone.models, vec![base, plan]);
    assert_eq!(count_rows(home.path(), "model_reports"), 0);
    assert_eq!(count_rows(home.path(), "models"), 0);
    assert!(blob_files(home.path()).is_empty());
    let report = reg.check(false).unwrap();
    assert!(report.is_clean(), "{report:?}");
}

#[test]
fn invalid_reports_are_refused_and_write_nothing() {
    let (home, reg) = setup();
    let kept = reg
        .register_model(new_model("kept", model_file(home.path(), "k.onnx", b"k")))
        .unwrap();
    let f = model_file(home.path(), "m.onnx", b"model");
    // {"x":"<n bytes>"} is n + 8 bytes serialized.
    let max = 1 << 20;
    let cases = [
        (json!(null), "a report must be a JSON object, not null"),
        (
            json!([1, 2]),
            "a report must be a JSON object, not an array",
        ),
        (
            json!("text"),
            "a report must be a JSON object, not a string",
        ),
        (json!(7), "a report must be a JSON object, not a number"),
        (
            json!({ "x": "a".repeat(max - 7) }),
            "report is 1048577 bytes serialized, more than the 1048576 allowed",
        ),
    ];
    for (report, msg) in cases {
        let err = reg
            .register_model(NewModel {
                report: Some(report),
                labels: Some(vec!["cat".into()]),
                ..new_model("m", f.clone())
            })
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
        assert_eq!(err.to_string(), msg);
    }
    // Nothing was written: no model, no report row, no blob, no temp file.
    let all = reg.list_models(&ModelFilter::default()).unwrap();
    assert_eq!(all, vec![kept.clone()]);
    assert_eq!(count_rows(home.path(), "model_reports"), 0);
    assert_eq!(blob_files(home.path()), std::slice::from_ref(&kept.sha256));
    assert!(temp_files(home.path()).is_empty());
    assert!(reg.check(false).unwrap().is_clean());

    // Exactly 1 MiB is accepted.
    let big = json!({ "x": "a".repeat(max - 8) });
    let rec = reg
        .register_model(NewModel {
            report: Some(big.clone()),
            ..new_model("m", f)
        })
        .unwrap();
    assert_eq!(rec.report, Some(big));
    assert_eq!(count_rows(home.path(), "model_reports"), 1);
}

/// Creates a registry database as a build at schema version 2 (before
/// reports and operations) left it, holding `old:1` with a tag, a property
/// and its blob.
fn version_2_home(home: &Path) -> String {
    fs::create_dir_all(home.join("blobs/sha256")).unwrap();
    let content = b"an old model";
    let sha = sha256_hex(content);
    fs::write(home.join("blobs/sha256").join(&sha), content).unwrap();
    let conn = rusqlite::Connection::open(home.join("registry.db")).unwrap();
    conn.execute_batch(include_str!("schema_v2.sql")).unwrap();
    conn.pragma_update(None, "user_version", 2).unwrap();
    conn.execute(
        "INSERT INTO models (id, name, version, description, format, sha256, size, created, parent_id, spec)
         VALUES (1, 'old', 1, 'from before reports', 'onnx', ?1, ?2, '2024-05-01T12:00:00Z', NULL, ?3)",
        rusqlite::params![sha, content.len() as i64, serde_json::to_string(&spec()).unwrap()],
    )
    .unwrap();
    conn.execute_batch(&format!(
        "INSERT INTO model_tags VALUES (1, 'env', 'prod');
         INSERT INTO model_properties VALUES (1, 'opset', '17');
         INSERT INTO model_blobs VALUES (1, '{sha}', 'model');"
    ))
    .unwrap();
    sha
}

#[test]
fn a_version_2_database_is_upgraded_and_old_models_have_no_report() {
    let home = TempDir::new().unwrap();
    let sha = version_2_home(home.path());
    let reg = Registry::open(home.path()).unwrap();
    let version: i64 = rusqlite::Connection::open(home.path().join("registry.db"))
        .unwrap()
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, 6);

    let old = reg.get_model(&r("old")).unwrap();
    assert_eq!(old.reference(), "old:1");
    assert_eq!(old.sha256, sha);
    assert_eq!(old.created, "2024-05-01T12:00:00Z");
    assert_eq!(old.tags.get("env").map(String::as_str), Some("prod"));
    assert_eq!(old.properties.get("opset").map(String::as_str), Some("17"));
    assert_eq!(old.report, None);
    assert!(serde_json::to_value(&old).unwrap().get("report").is_none());
    assert_eq!(
        reg.list_models(&ModelFilter::default()).unwrap(),
        vec![old.clone()]
    );
    let report = reg.check(false).unwrap();
    assert!(report.is_clean(), "{report:?}");

    // The new tables work: a converted child with a report, an operation.
    let child = reg
        .register_model(NewModel {
            parent: Some(r("old:1")),
            format: "accel-plan".into(),
            report: Some(json!({"chosen": 0})),
            ..new_model("old-plan", model_file(home.path(), "p.onnx", b"plan"))
        })
        .unwrap();
    assert_eq!(child.report, Some(json!({"chosen": 0})));
    let op = reg
        .create_operation("convert", &json!({"model": "old:1"}), std::process::id())
        .unwrap();
    assert_eq!(reg.operations().unwrap(), vec![op]);
    // Reopening an upgraded home changes nothing.
    drop(reg);
    let reg = Registry::open(home.path()).unwrap();
    assert_eq!(reg.get_model(&r("old")).unwrap(), old);
    assert_eq!(reg.get_model(&r("old-plan")).unwrap(), child);
}

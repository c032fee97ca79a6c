//! Long-running operations (migration 4).

use super::*;
use accel_registry::{OperationRecord, OperationStatus};
use serde_json::json;

/// The pid of a process that has exited and been reaped.
fn dead_pid() -> u32 {
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    pid
}

fn me() -> u32 {
    std::process::id()
}

/// The stored status of `id`, read directly.
fn stored_status(home: &Path, id: &str) -> String {
    let conn = rusqlite::Connection::open(home.join("registry.db")).unwrap();
    conn.query_row("SELECT status FROM operations WHERE id = ?1", [id], |r| {
        r.get(0)
    })
    .unwrap()
}

#[test]
fn create_progress_finish_show_and_list() {
    let (home, reg) = setup();
    let args = json!({"model": "shufflenet:1", "engines": ["ort", "tract"], "no_wait": true});
    let op = reg.create_operation("convert", &args, me()).unwrap();
    let hex = op.id.strip_prefix("convert-").unwrap();
    assert!(
        hex.len() == 12
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "{}",
        op.id
    );
    assert_eq!(op.kind, "convert");
    assert_eq!(op.args, args);
    assert_eq!(op.status, OperationStatus::Running);
    assert_eq!(op.pid, me());
    assert!(
        op.started.ends_with('Z') && op.started.len() == 20,
        "{}",
        op.started
    );
    assert_eq!(
        (&op.finished, &op.progress, &op.result, &op.error),
        (&None, &None, &None, &None)
    );
    assert_eq!(reg.operation(&op.id).unwrap(), op);

    reg.set_operation_progress(&op.id, "calibrating 12/128")
        .unwrap();
    reg.set_operation_progress(&op.id, "evaluating ort int8 \u{1b}[1m")
        .unwrap();
    let mut child = Guard(
        std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap(),
    );
    reg.set_operation_pid(&op.id, child.0.id()).unwrap();
    let shown = reg.operation(&op.id).unwrap();
    assert_eq!(shown.status, OperationStatus::Running);
    assert_eq!(shown.pid, child.0.id());
    // Control characters are replaced, not stored.
    assert_eq!(
        shown.progress.as_deref(),
        Some("evaluating ort int8 \u{fffd}[1m")
    );

    let result = json!({"model": "shufflenet-plan:1"});
    let done = reg.finish_operation(&op.id, Ok(result.clone())).unwrap();
    assert_eq!(done.status, OperationStatus::Succeeded);
    assert_eq!(done.result, Some(result));
    assert_eq!(done.error, None);
    assert_eq!(done.progress, shown.progress, "the last progress is kept");
    let finished = done.finished.clone().unwrap();
    assert!(
        finished.ends_with('Z') && finished >= done.started,
        "{finished}"
    );
    assert_eq!(reg.operation(&op.id).unwrap(), done);
    // Once its work is finished the process may exit: it stays succeeded.
    child.kill();
    assert_eq!(reg.operation(&op.id).unwrap(), done);

    // A failed one.
    let bad = reg.create_operation("convert", &json!({}), me()).unwrap();
    let failed = reg
        .finish_operation(&bad.id, Err("calibration data: no images in /x".into()))
        .unwrap();
    assert_eq!(failed.status, OperationStatus::Failed);
    assert_eq!(
        failed.error.as_deref(),
        Some("calibration data: no images in /x")
    );
    assert_eq!(failed.result, None);
    assert!(failed.finished.is_some());

    // A third, still running. Newest first (ties in `started` broken by
    // insertion order).
    let third = reg.create_operation("convert", &json!([1]), me()).unwrap();
    let ids: Vec<String> = reg
        .operations()
        .unwrap()
        .into_iter()
        .map(|o| o.id)
        .collect();
    assert_eq!(ids, [third.id.as_str(), &bad.id, &op.id]);

    // JSON: lower-case status, round trip.
    let v = serde_json::to_value(&failed).unwrap();
    assert_eq!(v["status"], "failed");
    assert_eq!(v["kind"], "convert");
    assert_eq!(
        serde_json::from_value::<OperationRecord>(v).unwrap(),
        failed
    );

    // Survives reopening; check has nothing to say about live or finished ones.
    drop(reg);
    let reg = Registry::open(home.path()).unwrap();
    assert_eq!(reg.operation(&op.id).unwrap(), done);
    let report = reg.check(false).unwrap();
    assert!(
        report.is_clean() && report.dead_operations.is_empty(),
        "{report:?}"
    );
}

/// Kills and reaps a child when dropped, so a failing test leaves no sleeper.
struct Guard(std::process::Child);

impl Guard {
    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.kill();
    }
}

#[test]
fn finishing_twice_and_writing_after_the_end_are_refused() {
    let (home, reg) = setup();
    let op = reg.create_operation("convert", &json!({}), me()).unwrap();
    let done = reg.finish_operation(&op.id, Ok(json!(1))).unwrap();
    let id = &op.id;
    let refused = format!("cannot finish operation \"{id}\": it already finished (succeeded)");
    for outcome in [Ok(json!(2)), Err("late".to_string())] {
        let err = reg.finish_operation(id, outcome).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::FailedPrecondition, "{err}");
        assert_eq!(err.to_string(), refused);
    }
    let err = reg.set_operation_progress(id, "more").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition, "{err}");
    assert!(err.to_string().contains("already finished"), "{err}");
    let err = reg.set_operation_pid(id, 1).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition, "{err}");
    assert_eq!(reg.operation(id).unwrap(), done, "refusals changed it");
    assert_eq!(stored_status(home.path(), id), "succeeded");

    // A result over 1 MiB is refused and the operation stays running.
    let op = reg.create_operation("convert", &json!({}), me()).unwrap();
    let err = reg
        .finish_operation(&op.id, Ok(json!({ "x": "a".repeat(1 << 20) })))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    assert!(err.to_string().starts_with("operation result is "), "{err}");
    assert_eq!(reg.operation(&op.id).unwrap(), op);
    // A long error message is cut, not refused.
    let failed = reg
        .finish_operation(&op.id, Err("e".repeat(100_000)))
        .unwrap();
    let error = failed.error.unwrap();
    assert!(
        error.len() <= 64 * 1024 && error.ends_with('…'),
        "{}",
        error.len()
    );
}

#[test]
fn a_dead_pid_reads_as_failed_until_repair_stores_it() {
    let (home, reg) = setup();
    let pid = dead_pid();
    let op = reg
        .create_operation("convert", &json!({"model": "m:1"}), pid)
        .unwrap();
    // Created with a dead pid: it reads as failed at once.
    assert_eq!(op.status, OperationStatus::Failed);
    let shown = reg.operation(&op.id).unwrap();
    assert_eq!(shown.status, OperationStatus::Failed);
    assert_eq!(
        shown.error.as_deref(),
        Some("the process ended without finishing")
    );
    assert_eq!(shown.finished, None, "when it ended is unknown");
    assert_eq!(shown.pid, pid);
    assert_eq!(reg.operations().unwrap(), vec![shown.clone()]);
    // Reads do not write.
    assert_eq!(stored_status(home.path(), &op.id), "running");

    // A live one next to it is not reported.
    let live = reg.create_operation("convert", &json!({}), me()).unwrap();
    let report = reg.check(false).unwrap();
    assert_eq!(report.dead_operations, std::slice::from_ref(&op.id));
    assert!(!report.is_clean(), "{report:?}");
    assert_eq!(stored_status(home.path(), &op.id), "running");

    let report = reg.check(true).unwrap();
    assert_eq!(report.dead_operations, std::slice::from_ref(&op.id));
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(stored_status(home.path(), &op.id), "failed");
    assert_eq!(stored_status(home.path(), &live.id), "running");
    assert_eq!(reg.operation(&op.id).unwrap(), shown);
    let report = reg.check(false).unwrap();
    assert!(
        report.is_clean() && report.dead_operations.is_empty(),
        "{report:?}"
    );
    // Stored as failed, it can no longer be finished.
    let err = reg.finish_operation(&op.id, Ok(json!(0))).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition, "{err}");
    // And, not running, it can be deleted.
    reg.delete_operation(&op.id).unwrap();
    assert_eq!(reg.operations().unwrap(), vec![live]);
}

#[test]
fn the_worker_may_finish_a_job_whose_recorded_pid_is_stale() {
    // Writers go by the stored status: the process calling them is alive.
    let (_home, reg) = setup();
    let op = reg
        .create_operation("convert", &json!({}), dead_pid())
        .unwrap();
    assert_eq!(op.status, OperationStatus::Failed);
    reg.set_operation_progress(&op.id, "still going").unwrap();
    reg.set_operation_pid(&op.id, me()).unwrap();
    assert_eq!(
        reg.operation(&op.id).unwrap().status,
        OperationStatus::Running
    );
    let done = reg.finish_operation(&op.id, Ok(json!("ok"))).unwrap();
    assert_eq!(done.status, OperationStatus::Succeeded);
    assert_eq!(done.error, None);
}

#[test]
fn unknown_ids_are_not_found_and_bad_input_is_refused() {
    let (home, reg) = setup();
    let id = "convert-000000000000";
    let msg = format!("no operation \"{id}\"");
    let errs = [
        reg.operation(id).unwrap_err(),
        reg.set_operation_progress(id, "x").unwrap_err(),
        reg.set_operation_pid(id, 1).unwrap_err(),
        reg.finish_operation(id, Ok(json!(null))).unwrap_err(),
        reg.delete_operation(id).unwrap_err(),
    ];
    for err in errs {
        assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
        assert_eq!(err.to_string(), msg);
    }
    let err = reg
        .create_operation("deploy", &json!({}), me())
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    assert_eq!(
        err.to_string(),
        "unknown operation kind \"deploy\" (known: convert)"
    );
    let err = reg
        .create_operation("convert", &json!({ "x": "a".repeat(1 << 20) }), me())
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    assert!(reg.operations().unwrap().is_empty());
    assert_eq!(count_rows(home.path(), "operations"), 0);
}

#[test]
fn deleting_a_running_operation_is_refused() {
    let (home, reg) = setup();
    let op = reg.create_operation("convert", &json!({}), me()).unwrap();
    let err = reg.delete_operation(&op.id).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition, "{err}");
    assert_eq!(
        err.to_string(),
        format!(
            "operation \"{}\" is still running (pid {}); wait for it to finish",
            op.id,
            me()
        )
    );
    assert_eq!(reg.operation(&op.id).unwrap(), op);
    reg.finish_operation(&op.id, Err("cancelled".into()))
        .unwrap();
    reg.delete_operation(&op.id).unwrap();
    let err = reg.operation(&op.id).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert_eq!(count_rows(home.path(), "operations"), 0);
}

#[test]
fn concurrent_creations_get_distinct_ids() {
    let home = TempDir::new().unwrap();
    let handles: Vec<_> = (0..2)
        .map(|_| {
            let reg = Registry::open(home.path()).unwrap();
            std::thread::spawn(move || {
                (0..50)
                    .map(|_| {
                        reg.create_operation("convert", &json!({}), me())
                            .unwrap()
                            .id
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let ids: std::collections::BTreeSet<String> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    assert_eq!(ids.len(), 100);
    let reg = Registry::open(home.path()).unwrap();
    assert_eq!(reg.operations().unwrap().len(), 100);
}

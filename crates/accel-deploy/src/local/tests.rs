//! The supervisor against tiny shell scripts: restart with doubling
//! backoff, backoff reset after healthy running, SIGTERM forwarded on stop,
//! SIGKILL for a server that ignores it, programs that cannot start, and
//! the process-wide SIGTERM handler.

use super::process;
use super::supervisor::*;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

type Log = Arc<Mutex<Vec<(Instant, Event)>>>;

fn sh(script: &str, log: &Path) -> ServerSpec {
    ServerSpec {
        program: "/bin/sh".into(),
        args: vec!["-c".into(), script.into()],
        env: vec![("SECRET_FOR_TEST".into(), "s3cret".into())],
        env_remove: vec![],
        log: log.to_path_buf(),
        ready_prefix: Some("ready".into()),
    }
}

fn quick(initial_ms: u64, max_ms: u64, reset_ms: u64) -> SupervisorOptions {
    SupervisorOptions {
        backoff: Backoff {
            initial: Duration::from_millis(initial_ms),
            max: Duration::from_millis(max_ms),
            reset_after: Duration::from_millis(reset_ms),
        },
        stop_timeout: Duration::from_secs(5),
        poll: Duration::from_millis(10),
        ..SupervisorOptions::default()
    }
}

/// Runs the supervisor on a thread; `stop_when` sees each event with the
/// ones before it and says when to request the stop.
fn start(
    spec: ServerSpec,
    options: SupervisorOptions,
    mut stop_when: impl FnMut(&Event, &[(Instant, Event)]) -> bool + Send + 'static,
) -> (JoinHandle<RunSummary>, Log) {
    let sup = Supervisor::new(spec, options);
    let stop = sup.stop_handle();
    let events: Log = Arc::default();
    let seen = Arc::clone(&events);
    let handle = std::thread::spawn(move || {
        let mut observer = |e: &Event| {
            let mut seen = seen.lock().unwrap();
            if stop_when(e, &seen) {
                stop.stop();
            }
            seen.push((Instant::now(), e.clone()));
        };
        sup.run(&mut observer).unwrap()
    });
    (handle, events)
}

fn join(handle: JoinHandle<RunSummary>) -> RunSummary {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !handle.is_finished() {
        assert!(Instant::now() < deadline, "the supervisor did not stop");
        std::thread::sleep(Duration::from_millis(10));
    }
    handle.join().unwrap()
}

fn events(log: &Log) -> Vec<Event> {
    log.lock().unwrap().iter().map(|(_, e)| e.clone()).collect()
}

fn count(events: &[(Instant, Event)], f: impl Fn(&Event) -> bool) -> usize {
    events.iter().filter(|(_, e)| f(e)).count()
}

fn wait_for(log: &Log, what: impl Fn(&Event) -> bool) -> Event {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(e) = events(log).into_iter().find(|e| what(e)) {
            return e;
        }
        assert!(Instant::now() < deadline, "timed out: {:?}", events(log));
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_dying_server_is_restarted_with_doubling_backoff_until_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("logs/server.log");
    let script = "echo \"ready grpc=127.0.0.1:1 http=127.0.0.1:2 key=$SECRET_FOR_TEST\"; \
                  echo to-stderr >&2; sleep 0.2; exit 3";
    let (handle, log_events) = start(sh(script, &log), quick(40, 160, 3_600_000), |e, seen| {
        matches!(e, Event::Exited { .. }) && count(seen, |e| matches!(e, Event::Exited { .. })) == 4
    });
    let summary = join(handle);
    let timed = log_events.lock().unwrap().clone();
    let all: Vec<Event> = timed.iter().map(|(_, e)| e.clone()).collect();
    assert_eq!(summary.restarts, 5, "{all:?}");
    assert!(!summary.killed);
    let pids: Vec<u32> = all
        .iter()
        .filter_map(|e| match e {
            Event::Spawned { pid, .. } => Some(*pid),
            _ => None,
        })
        .collect();
    assert_eq!(pids.len(), 5, "{all:?}");
    let mut distinct = pids.clone();
    distinct.dedup();
    assert_eq!(distinct.len(), 5, "pids repeat: {pids:?}");
    for e in &all {
        if let Event::Ready { addrs, .. } = e {
            assert_eq!(addrs.grpc.as_deref(), Some("127.0.0.1:1"));
            assert_eq!(addrs.http.as_deref(), Some("127.0.0.1:2"));
        }
        if let Event::Exited {
            status, was_ready, ..
        } = e
        {
            assert_eq!(status, "exit code 3");
            assert!(was_ready);
        }
    }
    assert_eq!(count(&timed, |e| matches!(e, Event::Ready { .. })), 5);
    let delays: Vec<u128> = all
        .iter()
        .filter_map(|e| match e {
            Event::Backoff { delay, .. } => Some(delay.as_millis()),
            _ => None,
        })
        .collect();
    assert_eq!(delays, [40, 80, 160, 160, 160], "{all:?}");
    // Each restart waited at least its delay.
    for w in timed.windows(2) {
        if let ((t0, Event::Backoff { delay, .. }), (t1, Event::Spawned { .. })) = (&w[0], &w[1]) {
            assert!(t1.duration_since(*t0) >= *delay, "{w:?}");
        }
    }
    assert_eq!(
        &all[all.len() - 2..],
        [
            Event::Stopping { pid: None },
            Event::Stopped { killed: false }
        ]
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(text.matches("to-stderr").count(), 5, "{text}");
    assert_eq!(text.matches("key=s3cret").count(), 5, "{text}");
    assert!(text.contains("[supervisor "), "{text}");
    assert!(text.contains("exited (exit code 3)"), "{text}");
    assert!(text.contains("restarting in 0.2 s"), "{text}");
}

#[test]
fn backoff_returns_to_its_start_after_healthy_running() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("server.log");
    let (handle, log_events) = start(
        sh("echo ready; sleep 0.25; exit 1", &log),
        quick(30, 10_000, 100),
        |e, seen| {
            matches!(e, Event::Backoff { .. })
                && count(seen, |e| matches!(e, Event::Backoff { .. })) == 2
        },
    );
    join(handle);
    let delays: Vec<u128> = events(&log_events)
        .iter()
        .filter_map(|e| match e {
            Event::Backoff { delay, .. } => Some(delay.as_millis()),
            _ => None,
        })
        .collect();
    assert_eq!(delays, [30, 30, 30]);
}

#[test]
fn stop_forwards_sigterm_and_waits_for_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("server.log");
    let script = "trap 'echo got-term; exit 0' TERM; echo ready; while :; do sleep 0.05; done";
    let (handle, log_events) = start(sh(script, &log), quick(50, 50, 1000), |e, _| {
        matches!(e, Event::Ready { .. })
    });
    let summary = join(handle);
    assert_eq!(
        summary,
        RunSummary {
            restarts: 0,
            killed: false
        }
    );
    let all = events(&log_events);
    let Event::Spawned { pid, .. } = all[0] else {
        panic!("{all:?}")
    };
    assert_eq!(all[2], Event::Stopping { pid: Some(pid) });
    assert_eq!(all[3], Event::Stopped { killed: false });
    assert!(!process::alive(pid));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("got-term"), "{text}");
    assert!(text.contains("stopped (exit code 0)"), "{text}");
}

#[test]
fn a_server_that_ignores_sigterm_is_killed_after_the_stop_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("server.log");
    let script = "trap '' TERM; echo ready; while :; do sleep 0.05; done";
    let mut options = quick(50, 50, 1000);
    options.stop_timeout = Duration::from_millis(300);
    let t0 = Instant::now();
    let (handle, log_events) = start(sh(script, &log), options, |e, _| {
        matches!(e, Event::Ready { .. })
    });
    let summary = join(handle);
    assert!(summary.killed);
    assert!(t0.elapsed() >= Duration::from_millis(300));
    let all = events(&log_events);
    assert_eq!(all.last(), Some(&Event::Stopped { killed: true }));
    let Event::Spawned { pid, .. } = all[0] else {
        panic!("{all:?}")
    };
    assert!(!process::alive(pid));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("SIGKILL"), "{text}");
}

#[test]
fn a_program_that_cannot_start_is_retried_like_a_dead_one() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("server.log");
    let mut spec = sh("", &log);
    spec.program = dir.path().join("no-such-program");
    let (handle, log_events) = start(spec, quick(10, 20, 1000), |e, seen| {
        matches!(e, Event::SpawnFailed { .. })
            && count(seen, |e| matches!(e, Event::SpawnFailed { .. })) == 2
    });
    let summary = join(handle);
    assert_eq!(summary.restarts, 3);
    let all = events(&log_events);
    assert!(
        matches!(&all[0], Event::SpawnFailed { error, restarts: 0 } if error.contains("no-such-program")),
        "{all:?}"
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("cannot start"), "{text}");
}

#[test]
fn without_a_ready_prefix_a_server_is_ready_when_spawned() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("server.log");
    let mut spec = sh("sleep 5", &log);
    spec.ready_prefix = None;
    let (handle, log_events) = start(spec, quick(10, 20, 1000), |e, _| {
        matches!(e, Event::Ready { .. })
    });
    join(handle);
    assert!(matches!(events(&log_events)[1], Event::Ready { .. }));
}

#[test]
fn sigterm_to_the_supervising_process_stops_it() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("server.log");
    let mut options = quick(50, 50, 1000);
    options.handle_signals = true;
    let (handle, log_events) = start(
        sh("echo ready; while :; do sleep 0.05; done", &log),
        options,
        |_, _| false,
    );
    wait_for(&log_events, |e| matches!(e, Event::Ready { .. }));
    // The handlers are installed before the first spawn.
    process::signal(std::process::id(), process::Signal::Term).unwrap();
    let summary = join(handle);
    assert!(!summary.killed);
    assert_eq!(
        events(&log_events).last(),
        Some(&Event::Stopped { killed: false })
    );
}

#[test]
fn process_helpers_see_children_ports_and_liveness() {
    let mut child = std::process::Command::new("/bin/sh")
        .args(["-c", "sleep 30"])
        .spawn()
        .unwrap();
    let pid = child.id();
    assert!(process::alive(pid));
    assert!(process::children(std::process::id()).contains(&pid));
    assert_eq!(process::parent(pid), Some(std::process::id()));
    let argv = process::cmdline(pid).unwrap();
    assert_eq!(argv, ["/bin/sh", "-c", "sleep 30"]);
    process::signal(pid, process::Signal::Kill).unwrap();
    child.wait().unwrap();
    assert!(!process::alive(pid));
    assert!(process::wait_gone(pid, Duration::from_millis(10)));
    assert!(!process::alive(0));

    let ports = process::free_ports(2).unwrap();
    assert_ne!(ports[0], ports[1]);
    let held = std::net::TcpListener::bind(("127.0.0.1", ports[0])).unwrap();
    assert!(!process::port_free("127.0.0.1", ports[0]));
    drop(held);
    assert!(process::wait_port_free(
        "127.0.0.1",
        ports[0],
        Duration::from_secs(2)
    ));
}

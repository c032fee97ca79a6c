//! The supervisor loop: spawn a server, wait for its `ready` line, restart
//! it with exponential backoff whenever it dies, stop it on request.
//!
//! ```text
//!            spawn ──────► Spawned ──(ready line)──► Ready
//!              ▲              │                        │
//!              │           (exits)                  (exits)
//!   Backoff ◄──┴── Exited ◄───┴────────────────────────┘
//!   (0.2 s, doubling to 10 s; back to 0.2 s after 30 s of ready running)
//!
//!   stop (SIGTERM/SIGINT or StopHandle), in any state:
//!   Stopping ─► SIGTERM to the server ─► exit within stop_timeout, or SIGKILL ─► Stopped
//! ```
//!
//! Nothing here knows the registry: every step is an [`Event`] handed to an
//! [`Observer`], which the caller turns into record updates.

use super::process::{self, Signal};
use crate::DeployError;
use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// What to run and where its output goes.
#[derive(Debug, Clone)]
pub struct ServerSpec {
    /// The program (for Accel services: the `accel` binary itself).
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<OsString>,
    /// Variables added to the inherited environment (secrets such as API
    /// keys go here, never into `args`: a command line is world-readable).
    pub env: Vec<(OsString, OsString)>,
    /// Variables removed from the inherited environment.
    pub env_remove: Vec<OsString>,
    /// Where stdout and stderr are appended, with the supervisor's own lines.
    pub log: PathBuf,
    /// The server is ready once it prints a stdout line starting with this
    /// (`accel serve`: `"ready "`); `None`: ready as soon as it is spawned.
    pub ready_prefix: Option<String>,
}

/// Restart delays: `initial`, doubling up to `max`; back to `initial` when
/// the server had been ready for at least `reset_after` before it died.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The first delay.
    pub initial: Duration,
    /// The largest delay.
    pub max: Duration,
    /// Healthy running time that resets the delay.
    pub reset_after: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(200),
            max: Duration::from_secs(10),
            reset_after: Duration::from_secs(30),
        }
    }
}

/// How the supervisor behaves.
#[derive(Debug, Clone)]
pub struct SupervisorOptions {
    /// Restart delays.
    pub backoff: Backoff,
    /// How long a stopping server may drain before it is killed.
    pub stop_timeout: Duration,
    /// How often the child and the stop flag are looked at.
    pub poll: Duration,
    /// Stop on SIGTERM and SIGINT sent to this process (installs handlers
    /// for both, process-wide, for the rest of the process's life).
    pub handle_signals: bool,
    /// At a (re)start, a log larger than this moves to `<log>.1`.
    pub max_log_bytes: u64,
    /// Linux: the server gets SIGTERM if the supervising thread dies (a
    /// `kill -9` of the supervisor), so no unsupervised server is left.
    pub die_with_supervisor: bool,
}

impl Default for SupervisorOptions {
    fn default() -> Self {
        SupervisorOptions {
            backoff: Backoff::default(),
            stop_timeout: Duration::from_secs(15),
            poll: Duration::from_millis(50),
            handle_signals: false,
            max_log_bytes: 16 * 1024 * 1024,
            die_with_supervisor: true,
        }
    }
}

/// The ready line and the addresses it names (`grpc=HOST:PORT`,
/// `http=HOST:PORT`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadyAddrs {
    /// The line, without its newline (empty when no ready line is expected).
    pub line: String,
    /// The `grpc=` address, if the line has one.
    pub grpc: Option<String>,
    /// The `http=` address, if the line has one.
    pub http: Option<String>,
}

impl ReadyAddrs {
    /// Parses `ready grpc=HOST:PORT http=HOST:PORT` (any words, any order).
    pub fn parse(line: &str) -> Self {
        let word = |key: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(key))
                .map(str::to_string)
        };
        ReadyAddrs {
            line: line.trim_end().to_string(),
            grpc: word("grpc="),
            http: word("http="),
        }
    }
}

/// One step of the supervisor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A server process started; `restarts` earlier ones have died.
    Spawned {
        /// Its pid.
        pid: u32,
        /// How many times the server was restarted before this one.
        restarts: u32,
    },
    /// The program could not be started (it is retried like a dead server).
    SpawnFailed {
        /// Why.
        error: String,
        /// Restarts so far.
        restarts: u32,
    },
    /// The server printed its ready line (or, without a ready prefix, was
    /// spawned).
    Ready {
        /// Its pid.
        pid: u32,
        /// The line and the addresses it names.
        addrs: ReadyAddrs,
    },
    /// The server died on its own.
    Exited {
        /// Its pid.
        pid: u32,
        /// `exit code N` or `killed by signal N`.
        status: String,
        /// How long it ran.
        ran: Duration,
        /// Whether it had become ready.
        was_ready: bool,
    },
    /// The next start comes after `delay`.
    Backoff {
        /// The delay.
        delay: Duration,
        /// Restarts so far, this one included.
        restarts: u32,
    },
    /// A stop was requested; `pid` is the server being stopped, if one runs.
    Stopping {
        /// The server's pid.
        pid: Option<u32>,
    },
    /// Stopped: nothing runs any more; the supervisor returns.
    Stopped {
        /// Whether the server had to be killed (it did not exit within the
        /// stop timeout after SIGTERM).
        killed: bool,
    },
}

impl std::fmt::Display for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Event::Spawned { pid, restarts } => {
                write!(f, "server started, pid {pid} (restarts so far: {restarts})")
            }
            Event::SpawnFailed { error, .. } => f.write_str(error),
            Event::Ready { pid, addrs } if addrs.line.is_empty() => {
                write!(f, "server pid {pid} is running")
            }
            Event::Ready { pid, addrs } => write!(f, "server pid {pid}: {}", addrs.line),
            Event::Exited {
                pid, status, ran, ..
            } => write!(
                f,
                "server pid {pid} exited ({status}) after {:.1} s",
                ran.as_secs_f64()
            ),
            Event::Backoff { delay, restarts } => {
                write!(f, "restart {restarts} in {:.1} s", delay.as_secs_f64())
            }
            Event::Stopping { pid: Some(pid) } => write!(f, "stopping server pid {pid}"),
            Event::Stopping { pid: None } => f.write_str("stopping"),
            Event::Stopped { killed: true } => f.write_str("stopped (the server was killed)"),
            Event::Stopped { killed: false } => f.write_str("stopped"),
        }
    }
}

/// Receives the supervisor's events, in order, on the supervising thread.
pub trait Observer {
    /// Called for each event.
    fn on_event(&mut self, event: &Event);
}

impl<F: FnMut(&Event)> Observer for F {
    fn on_event(&mut self, event: &Event) {
        self(event)
    }
}

/// Asks a running supervisor to stop (cloneable, any thread).
#[derive(Debug, Clone, Default)]
pub struct StopHandle(Arc<AtomicBool>);

impl StopHandle {
    /// Requests the stop.
    pub fn stop(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Whether a stop was requested.
    pub fn is_stopped(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// What a run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunSummary {
    /// How many times the server was restarted.
    pub restarts: u32,
    /// Whether the last server had to be killed.
    pub killed: bool,
}

/// Set by the SIGTERM/SIGINT handler.
static SIGNALLED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop_signal(_sig: libc::c_int) {
    SIGNALLED.store(true, Ordering::SeqCst);
}

fn install_stop_handlers() -> std::io::Result<()> {
    for sig in [libc::SIGTERM, libc::SIGINT] {
        // SAFETY: a zeroed sigaction is valid; the handler only stores to an
        // atomic, which is async-signal-safe.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_stop_signal as *const () as libc::sighandler_t;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            if libc::sigaction(sig, &action, std::ptr::null_mut()) != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
    }
    Ok(())
}

/// Runs one server and keeps it running.
#[derive(Debug)]
pub struct Supervisor {
    spec: ServerSpec,
    options: SupervisorOptions,
    stop: StopHandle,
}

/// A spawned server and the channel its ready line arrives on.
struct Running {
    child: Child,
    pid: u32,
    started: Instant,
    ready_at: Option<Instant>,
    ready_rx: mpsc::Receiver<ReadyAddrs>,
}

impl Supervisor {
    /// A supervisor for `spec`; nothing starts before [`Supervisor::run`].
    pub fn new(spec: ServerSpec, options: SupervisorOptions) -> Self {
        Supervisor {
            spec,
            options,
            stop: StopHandle::default(),
        }
    }

    /// A handle that stops [`Supervisor::run`] from another thread.
    pub fn stop_handle(&self) -> StopHandle {
        self.stop.clone()
    }

    fn stopping(&self) -> bool {
        self.stop.is_stopped() || (self.options.handle_signals && SIGNALLED.load(Ordering::SeqCst))
    }

    /// Runs the server until a stop is requested, restarting it whenever it
    /// dies; returns once it is stopped. Fails only when the log cannot be
    /// opened or the signal handlers cannot be installed (a program that
    /// cannot be spawned is retried like one that died).
    pub fn run(self, observer: &mut dyn Observer) -> Result<RunSummary, DeployError> {
        if self.options.handle_signals {
            install_stop_handlers()
                .map_err(|e| DeployError::io("installing the SIGTERM/SIGINT handlers", e))?;
        }
        let backoff = self.options.backoff;
        let mut delay = backoff.initial;
        let mut restarts = 0u32;
        loop {
            if self.stopping() {
                return Ok(self.finish(observer, None, restarts));
            }
            self.rotate_log();
            let mut log = self.open_log()?;
            let mut ready_for = None;
            match self.spawn(&log) {
                Err(e) => {
                    let error = format!("cannot start {}: {e}", self.spec.program.display());
                    note(&mut log, &error);
                    observer.on_event(&Event::SpawnFailed { error, restarts });
                }
                Ok(mut run) => {
                    note(
                        &mut log,
                        &format!("server started, pid {} (restarts: {restarts})", run.pid),
                    );
                    observer.on_event(&Event::Spawned {
                        pid: run.pid,
                        restarts,
                    });
                    if self.spec.ready_prefix.is_none() {
                        run.ready_at = Some(Instant::now());
                        observer.on_event(&Event::Ready {
                            pid: run.pid,
                            addrs: ReadyAddrs::parse(""),
                        });
                    }
                    let status = loop {
                        if let Ok(addrs) = run.ready_rx.try_recv() {
                            run.ready_at = Some(Instant::now());
                            observer.on_event(&Event::Ready {
                                pid: run.pid,
                                addrs,
                            });
                        }
                        if self.stopping() {
                            let summary =
                                self.finish(observer, Some((&mut run, &mut log)), restarts);
                            return Ok(summary);
                        }
                        match run.child.try_wait() {
                            Ok(Some(status)) => break status,
                            Ok(None) => {}
                            Err(e) => {
                                note(&mut log, &format!("cannot wait for the server: {e}"));
                            }
                        }
                        std::thread::sleep(self.options.poll);
                    };
                    // A ready line printed just before dying: its reader may
                    // not have passed it on yet (the channel closes at EOF).
                    if run.ready_at.is_none() {
                        if let Ok(addrs) = run.ready_rx.recv_timeout(Duration::from_millis(200)) {
                            run.ready_at = Some(Instant::now());
                            observer.on_event(&Event::Ready {
                                pid: run.pid,
                                addrs,
                            });
                        }
                    }
                    let ran = run.started.elapsed();
                    let status = describe(status);
                    note(
                        &mut log,
                        &format!(
                            "server pid {} exited ({status}) after {:.1} s",
                            run.pid,
                            ran.as_secs_f64()
                        ),
                    );
                    observer.on_event(&Event::Exited {
                        pid: run.pid,
                        status,
                        ran,
                        was_ready: run.ready_at.is_some(),
                    });
                    ready_for = run.ready_at.map(|t| t.elapsed());
                }
            }
            if ready_for.is_some_and(|d| d >= backoff.reset_after) {
                delay = backoff.initial;
            }
            restarts += 1;
            note(
                &mut log,
                &format!("restarting in {:.1} s", delay.as_secs_f64()),
            );
            observer.on_event(&Event::Backoff { delay, restarts });
            drop(log);
            let until = Instant::now() + delay;
            while Instant::now() < until {
                if self.stopping() {
                    return Ok(self.finish(observer, None, restarts));
                }
                let left = until.saturating_duration_since(Instant::now());
                std::thread::sleep(left.min(self.options.poll));
            }
            delay = (delay * 2).min(backoff.max);
        }
    }

    /// Stops the running server, if any: SIGTERM, then SIGKILL after the
    /// stop timeout.
    fn finish(
        &self,
        observer: &mut dyn Observer,
        running: Option<(&mut Running, &mut File)>,
        restarts: u32,
    ) -> RunSummary {
        let mut killed = false;
        match running {
            None => observer.on_event(&Event::Stopping { pid: None }),
            Some((run, log)) => {
                observer.on_event(&Event::Stopping { pid: Some(run.pid) });
                note(log, &format!("stopping: SIGTERM to server pid {}", run.pid));
                let _ = process::signal(run.pid, Signal::Term);
                let deadline = Instant::now() + self.options.stop_timeout;
                let status = loop {
                    match run.child.try_wait() {
                        Ok(Some(status)) => break Some(status),
                        Ok(None) if Instant::now() < deadline => {
                            std::thread::sleep(Duration::from_millis(20))
                        }
                        _ => break None,
                    }
                };
                let status = match status {
                    Some(s) => s,
                    None => {
                        killed = true;
                        note(
                            log,
                            &format!(
                                "server pid {} still running after {:.1} s: SIGKILL",
                                run.pid,
                                self.options.stop_timeout.as_secs_f64()
                            ),
                        );
                        let _ = run.child.kill();
                        match run.child.wait() {
                            Ok(s) => s,
                            Err(_) => ExitStatus::from_raw(libc::SIGKILL),
                        }
                    }
                };
                note(
                    log,
                    &format!("server pid {} stopped ({})", run.pid, describe(status)),
                );
            }
        }
        observer.on_event(&Event::Stopped { killed });
        RunSummary { restarts, killed }
    }

    fn open_log(&self) -> Result<File, DeployError> {
        let log = &self.spec.log;
        if let Some(dir) = log.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| DeployError::io(format!("creating {}", dir.display()), e))?;
        }
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| DeployError::io(format!("opening {}", log.display()), e))
    }

    fn rotate_log(&self) {
        let log = &self.spec.log;
        if std::fs::metadata(log).is_ok_and(|m| m.len() > self.options.max_log_bytes) {
            let mut old = log.clone().into_os_string();
            old.push(".1");
            let _ = std::fs::rename(log, old);
        }
    }

    /// Spawns the server: stdin null, stderr appended to the log, stdout
    /// read by a thread that appends it to the log and passes on the first
    /// ready line.
    fn spawn(&self, log: &File) -> std::io::Result<Running> {
        let spec = &self.spec;
        let mut cmd = Command::new(&spec.program);
        cmd.args(&spec.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log.try_clone()?));
        for k in &spec.env_remove {
            cmd.env_remove(k);
        }
        cmd.envs(spec.env.iter().map(|(k, v)| (k, v)));
        #[cfg(target_os = "linux")]
        if self.options.die_with_supervisor {
            // SAFETY: prctl is async-signal-safe; nothing else runs between
            // fork and exec.
            unsafe {
                cmd.pre_exec(|| {
                    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let mut child = cmd.spawn()?;
        let pid = child.id();
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, ready_rx) = mpsc::channel();
        let mut out = log.try_clone()?;
        let prefix = spec.ready_prefix.clone();
        std::thread::Builder::new()
            .name("accel-supervisor-stdout".into())
            .spawn(move || {
                let mut reader = BufReader::new(stdout);
                let mut line = Vec::new();
                let mut tx = Some(tx);
                loop {
                    line.clear();
                    match reader.read_until(b'\n', &mut line) {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                    let _ = out.write_all(&line);
                    if !line.ends_with(b"\n") {
                        let _ = out.write_all(b"\n");
                    }
                    if let (Some(p), Some(_)) = (&prefix, &tx) {
                        let text = String::from_utf8_lossy(&line);
                        if text.starts_with(p.as_str()) {
                            let _ = tx.take().map(|t| t.send(ReadyAddrs::parse(&text)));
                        }
                    }
                }
            })?;
        Ok(Running {
            child,
            pid,
            started: Instant::now(),
            ready_at: None,
            ready_rx,
        })
    }
}

/// `exit code N` or `killed by signal N`.
fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        _ => status.to_string(),
    }
}

/// Appends one `[supervisor] TIME message` line to the log.
fn note(log: &mut File, message: &str) {
    let _ = writeln!(log, "[supervisor {}] {message}", utc_now());
}

/// Now, as `YYYY-MM-DDTHH:MM:SS.mmmZ` (the time stamp of the supervisor's
/// log lines).
pub fn utc_now() -> String {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn ready_line_is_parsed() {
        let r = ReadyAddrs::parse("ready grpc=127.0.0.1:5 http=127.0.0.1:6\n");
        assert_eq!(r.line, "ready grpc=127.0.0.1:5 http=127.0.0.1:6");
        assert_eq!(r.grpc.as_deref(), Some("127.0.0.1:5"));
        assert_eq!(r.http.as_deref(), Some("127.0.0.1:6"));
        assert_eq!(ReadyAddrs::parse("ready").grpc, None);
    }

    #[test]
    fn timestamps_are_rfc3339_utc() {
        let t = utc_now();
        assert_eq!(t.len(), 24, "{t}");
        assert!(t.ends_with('Z') && t.as_bytes()[10] == b'T', "{t}");
        assert!(t.as_str() > "2024-01-01", "{t}");
    }
}

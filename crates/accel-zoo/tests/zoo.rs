//! The downloader against a local HTTP/1.1 server (std only) that can cut a
//! connection mid-body, corrupt the bytes or ignore `Range`, and records the
//! `Range` header of every request. The file served is the project's real
//! fixture, checked against the sha256 the catalog says ONNX Model Zoo
//! published for it.

use accel_zoo::{fetch, mirror_url, Catalog, FetchRequest, Fetched, Progress, ZooError};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const MODEL: &str = "mobilenetv2-12-int8.onnx";

#[derive(Default)]
struct Knobs {
    /// Close the connection after this many body bytes, on the next request only.
    cut_after: Option<usize>,
    /// Flip one byte in the middle of every body.
    corrupt: bool,
    /// Answer 200 with the whole file even when a Range is asked.
    ignore_range: bool,
}

#[derive(Debug, Clone)]
struct Seen {
    path: String,
    range: Option<String>,
}

#[derive(Default)]
struct State {
    files: HashMap<String, Vec<u8>>,
    knobs: Mutex<Knobs>,
    seen: Mutex<Vec<Seen>>,
}

struct Server {
    base: String,
    state: Arc<State>,
}

impl Server {
    fn start(files: &[(&str, Vec<u8>)]) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(State {
            files: files
                .iter()
                .map(|(p, b)| (format!("/{p}"), b.clone()))
                .collect(),
            ..State::default()
        });
        let s = Arc::clone(&state);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let s = Arc::clone(&s);
                std::thread::spawn(move || {
                    let _ = serve(stream, &s);
                });
            }
        });
        Server { base, state }
    }

    fn knobs(&self) -> std::sync::MutexGuard<'_, Knobs> {
        self.state.knobs.lock().unwrap()
    }

    fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }
}

fn serve(stream: TcpStream, state: &State) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    let mut range = None;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.trim().eq_ignore_ascii_case("range") {
                range = Some(v.trim().to_string());
            }
        }
    }
    state.seen.lock().unwrap().push(Seen {
        path: path.clone(),
        range: range.clone(),
    });
    let (cut, corrupt, ignore_range) = {
        let mut k = state.knobs.lock().unwrap();
        (k.cut_after.take(), k.corrupt, k.ignore_range)
    };
    let mut out = stream;
    let Some(file) = state.files.get(&path) else {
        let body = b"not found\n";
        write!(
            out,
            "HTTP/1.1 404 Not Found\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )?;
        return out.write_all(body);
    };
    let mut file = file.clone();
    if corrupt {
        let mid = file.len() / 2;
        file[mid] ^= 0xff;
    }
    let start = range
        .as_deref()
        .filter(|_| !ignore_range)
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.parse::<usize>().ok());
    let body = match start {
        Some(n) if n >= file.len() => {
            write!(
                out,
                "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                file.len()
            )?;
            return Ok(());
        }
        Some(n) => {
            write!(
                out,
                "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {n}-{}/{}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                file.len() - 1,
                file.len(),
                file.len() - n
            )?;
            &file[n..]
        }
        None => {
            write!(
                out,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n",
                file.len()
            )?;
            &file[..]
        }
    };
    match cut {
        Some(k) => {
            out.write_all(&body[..k.min(body.len())])?;
            out.flush()?;
            out.shutdown(std::net::Shutdown::Both)
        }
        None => {
            for chunk in body.chunks(64 << 10) {
                out.write_all(chunk)?;
            }
            out.flush()
        }
    }
}

fn fixture() -> Vec<u8> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/models")
        .join(MODEL);
    std::fs::read(p).unwrap()
}

fn run(req: &FetchRequest<'_>) -> Result<Fetched, ZooError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(fetch(req))
}

/// The published entry, fetched from `server` as a mirror.
fn request<'a>(server: &Server, cache: &Path) -> FetchRequest<'a> {
    let catalog = Catalog::bundled();
    let entry = catalog.get("mobilenetv2-int8").unwrap();
    let mut r = FetchRequest::for_entry(entry, cache);
    r.url = mirror_url(&entry.url, &server.base).unwrap();
    r.retries = 0;
    r.retry_delay = Duration::from_millis(10);
    r.timeout = Duration::from_secs(20);
    r
}

fn published_sha256() -> String {
    Catalog::bundled()
        .get("mobilenetv2-int8")
        .unwrap()
        .sha256
        .clone()
        .unwrap()
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.ends_with(".lock"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn fetches_the_published_bytes_then_serves_them_from_the_cache() {
    let server = Server::start(&[(MODEL, fixture())]);
    let cache = tempfile::tempdir().unwrap();
    let seen: Mutex<Vec<Progress>> = Mutex::new(Vec::new());
    let progress = |p: Progress| seen.lock().unwrap().push(p);
    let mut req = request(&server, cache.path());
    req.progress = Some(&progress);
    let got = run(&req).unwrap();
    let sha = published_sha256();
    assert_eq!(got.sha256, sha, "the fixture is the published file");
    assert_eq!(got.size, 3_655_033);
    assert!(!got.cached);
    assert_eq!(got.attempts, 1);
    assert_eq!(got.path, cache.path().join(format!("{sha}.onnx")));
    assert_eq!(std::fs::read(&got.path).unwrap(), fixture());
    assert_eq!(files_in(cache.path()), [format!("{sha}.onnx")]);
    let reports = seen.lock().unwrap().clone();
    assert!(reports.len() > 2, "{reports:?}");
    assert!(reports.windows(2).all(|w| w[0].done <= w[1].done));
    assert_eq!(reports[0].done, 0);
    let last = reports.last().unwrap();
    assert_eq!((last.done, last.total), (3_655_033, Some(3_655_033)));
    assert_eq!(server.seen().len(), 1);
    assert_eq!(server.seen()[0].path, format!("/{MODEL}"));
    assert_eq!(server.seen()[0].range, None);

    // Second call: verified from the cache, no request.
    let again = run(&request(&server, cache.path())).unwrap();
    assert!(again.cached);
    assert_eq!(again.attempts, 0);
    assert_eq!(again.sha256, sha);
    assert_eq!(server.seen().len(), 1, "a cached fetch makes no request");
}

#[test]
fn a_checksum_mismatch_is_rejected_and_leaves_no_file() {
    let server = Server::start(&[(MODEL, fixture())]);
    server.knobs().corrupt = true;
    let cache = tempfile::tempdir().unwrap();
    let req = request(&server, cache.path());
    let err = run(&req).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, ZooError::ChecksumMismatch { .. }), "{msg}");
    assert!(msg.contains(&req.url), "names the URL: {msg}");
    assert!(
        msg.contains(&published_sha256()),
        "names the expected hash: {msg}"
    );
    let ZooError::ChecksumMismatch { actual, .. } = &err else {
        unreachable!()
    };
    assert_eq!(actual.len(), 64);
    assert!(
        msg.contains(actual.as_str()),
        "names the actual hash: {msg}"
    );
    assert!(!msg.contains('\n'));
    assert!(!req.part_path().exists(), "the partial file is deleted");
    assert!(!req.final_path().exists());
    assert!(
        files_in(cache.path()).is_empty(),
        "{:?}",
        files_in(cache.path())
    );
}

#[test]
fn a_cut_connection_resumes_with_a_range_request() {
    const K: usize = 1_000_000;
    let server = Server::start(&[(MODEL, fixture())]);
    server.knobs().cut_after = Some(K);
    let cache = tempfile::tempdir().unwrap();
    let req = request(&server, cache.path());
    // No retries: the attempt fails and keeps what it received.
    let err = run(&req).unwrap_err();
    assert!(matches!(err, ZooError::Interrupted { .. }), "{err}");
    assert!(err.to_string().contains("interrupted"), "{err}");
    assert_eq!(std::fs::metadata(req.part_path()).unwrap().len(), K as u64);
    assert!(!req.final_path().exists());
    // The next call asks for the remainder only.
    let got = run(&req).unwrap();
    assert_eq!(got.sha256, published_sha256());
    let seen = server.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].range, None);
    assert_eq!(
        seen[1].range.as_deref(),
        Some(format!("bytes={K}-").as_str())
    );
    assert!(!req.part_path().exists());
    assert_eq!(std::fs::read(&got.path).unwrap(), fixture());
}

#[test]
fn one_call_with_a_retry_survives_a_cut_connection() {
    const K: usize = 123_457;
    let server = Server::start(&[(MODEL, fixture())]);
    server.knobs().cut_after = Some(K);
    let cache = tempfile::tempdir().unwrap();
    let mut req = request(&server, cache.path());
    req.retries = 1;
    let got = run(&req).unwrap();
    assert_eq!(got.sha256, published_sha256());
    assert_eq!(got.attempts, 2);
    let ranges: Vec<Option<String>> = server.seen().into_iter().map(|s| s.range).collect();
    assert_eq!(ranges, [None, Some(format!("bytes={K}-"))]);
}

#[test]
fn a_server_that_ignores_range_makes_it_start_over() {
    const K: usize = 500_000;
    let server = Server::start(&[(MODEL, fixture())]);
    server.knobs().cut_after = Some(K);
    server.knobs().ignore_range = true;
    let cache = tempfile::tempdir().unwrap();
    let mut req = request(&server, cache.path());
    req.retries = 1;
    let got = run(&req).unwrap();
    assert_eq!(got.sha256, published_sha256());
    assert_eq!(got.size, 3_655_033);
    let seen = server.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(
        seen[1].range.as_deref(),
        Some(format!("bytes={K}-").as_str())
    );
    assert_eq!(std::fs::read(&got.path).unwrap(), fixture());
}

#[test]
fn a_complete_partial_file_is_checked_without_a_request() {
    // A crash between the last byte and the rename leaves a whole `.part`.
    let server = Server::start(&[(MODEL, fixture())]);
    let cache = tempfile::tempdir().unwrap();
    let req = request(&server, cache.path());
    std::fs::write(req.part_path(), fixture()).unwrap();
    let got = run(&req).unwrap();
    assert_eq!(got.sha256, published_sha256());
    assert!(server.seen().is_empty());
}

#[test]
fn a_damaged_cached_file_is_fetched_again() {
    let server = Server::start(&[(MODEL, fixture())]);
    let cache = tempfile::tempdir().unwrap();
    let req = request(&server, cache.path());
    std::fs::write(req.final_path(), b"not the model").unwrap();
    let got = run(&req).unwrap();
    assert!(!got.cached);
    assert_eq!(got.sha256, published_sha256());
    assert_eq!(server.seen().len(), 1);
}

#[test]
fn not_found_names_the_status_and_the_url() {
    let server = Server::start(&[]);
    let cache = tempfile::tempdir().unwrap();
    let mut req = request(&server, cache.path());
    req.retries = 2;
    let err = run(&req).unwrap_err();
    assert!(matches!(err, ZooError::Status { status: 404, .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("404") && msg.contains(&req.url), "{msg}");
    assert_eq!(server.seen().len(), 1, "a 404 is not retried");
    assert!(files_in(cache.path()).is_empty());
}

#[test]
fn a_refused_connection_is_a_one_line_error() {
    // A port that was free a moment ago.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cache = tempfile::tempdir().unwrap();
    let catalog = Catalog::bundled();
    let entry = catalog.get("mobilenetv2-int8").unwrap();
    let mut req = FetchRequest::for_entry(entry, cache.path());
    req.url = mirror_url(&entry.url, &format!("http://127.0.0.1:{port}")).unwrap();
    req.retries = 1;
    req.retry_delay = Duration::from_millis(10);
    let err = run(&req).unwrap_err();
    assert!(matches!(err, ZooError::Request { .. }), "{err}");
    assert!(err.to_string().contains(&req.url), "{err}");
}

#[test]
fn a_prefix_only_entry_is_named_after_the_entry() {
    let bytes = b"a pytorch checkpoint, as far as this test is concerned".to_vec();
    let sha = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(&bytes))
    };
    let server = Server::start(&[("ssd300_vgg16_coco-b556d3b4.pth", bytes.clone())]);
    let text = format!(
        r#"
[[models]]
name = "ssd-vgg"
task = "detection"
title = "t"
url = "https://download.pytorch.org/models/ssd300_vgg16_coco-b556d3b4.pth"
sha256_prefix = "{}"
source = "s"
license = "BSD-3-Clause"
format = "pytorch"
"#,
        &sha[..8]
    );
    let catalog = Catalog::parse(&text).unwrap();
    let entry = catalog.get("ssd-vgg").unwrap();
    let cache = tempfile::tempdir().unwrap();
    let mut req = FetchRequest::for_entry(entry, cache.path());
    req.url = mirror_url(&entry.url, &server.base).unwrap();
    let got = run(&req).unwrap();
    assert_eq!(got.path, cache.path().join("ssd-vgg.pth"));
    assert_eq!(got.sha256, sha);
    // Another prefix: mismatch, named with its ellipsis.
    let other = PathBuf::from(cache.path()).join("other");
    let mut req = FetchRequest::for_entry(entry, &other);
    req.url = mirror_url(&entry.url, &server.base).unwrap();
    req.checksum = accel_zoo::Checksum::Sha256Prefix("00000000".into());
    let err = run(&req).unwrap_err().to_string();
    assert!(err.contains("expected sha256 00000000…"), "{err}");
}

//! The downloader: resumable (HTTP `Range`), retried, checked against the
//! published sha256 and size, and atomic (`.part` file, fsync, rename).
//!
//! ```text
//! <cache>/<sha256>.<ext>        the verified file (name = the full published sha256,
//!                               or the entry's name where only a prefix is published)
//! <cache>/<sha256>.<ext>.part   bytes received so far; resumed by the next attempt
//! <cache>/<sha256>.<ext>.lock   held while one process downloads that file
//! ```
//!
//! `fetch` does its file I/O and hashing synchronously between network
//! reads: run it on a runtime whose thread may block (the CLI's
//! current-thread runtime), not on a latency-sensitive server's workers.

use crate::catalog::{check_url, extension_of, file_name_of, ZooEntry};
use crate::error::ZooError;
use sha2::{Digest, Sha256};
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What a download is checked against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checksum {
    /// The full sha256 (64 lowercase hex digits).
    Sha256(String),
    /// Only a prefix of it (torchvision publishes 8 hex digits in file names).
    Sha256Prefix(String),
}

impl Checksum {
    /// Whether a computed sha256 (lowercase hex) satisfies this checksum.
    pub fn matches(&self, actual: &str) -> bool {
        match self {
            Checksum::Sha256(full) => actual == full,
            Checksum::Sha256Prefix(prefix) => !prefix.is_empty() && actual.starts_with(prefix),
        }
    }

    /// The full sha256, when published.
    pub fn full(&self) -> Option<&str> {
        match self {
            Checksum::Sha256(full) => Some(full),
            Checksum::Sha256Prefix(_) => None,
        }
    }

    /// How the expected value reads in messages (`abcd…` for a prefix).
    pub fn expected(&self) -> String {
        match self {
            Checksum::Sha256(full) => full.clone(),
            Checksum::Sha256Prefix(prefix) => format!("{prefix}…"),
        }
    }
}

/// How far a download is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Bytes of the file on disk (a resumed download starts above zero).
    pub done: u64,
    /// The file's size: the published one, else what the server announced.
    pub total: Option<u64>,
}

/// One file to fetch, and how.
pub struct FetchRequest<'a> {
    /// Where to download from (the catalog URL or a mirror's).
    pub url: String,
    /// The published checksum.
    pub checksum: Checksum,
    /// The published size in bytes, if any (checked; a larger body is cut off).
    pub size: Option<u64>,
    /// The cache directory (created if needed).
    pub cache_dir: PathBuf,
    /// The file's stem when only a sha256 prefix is published (the file is
    /// named by its full sha256 otherwise).
    pub name: String,
    /// The cached file's extension (`onnx`, `pth`).
    pub extension: String,
    /// Further attempts after a transient failure (connection lost or cut,
    /// 5xx, 408, 429); each resumes from the partial file.
    pub retries: u32,
    /// Wait before retry n: n × this.
    pub retry_delay: Duration,
    /// Connect timeout, and the longest wait for the next bytes of the body.
    pub timeout: Duration,
    /// Called as bytes arrive (many times a second on a fast link).
    pub progress: Option<&'a (dyn Fn(Progress) + Sync)>,
}

impl std::fmt::Debug for FetchRequest<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FetchRequest")
            .field("url", &self.url)
            .field("checksum", &self.checksum)
            .field("size", &self.size)
            .field("cache_dir", &self.cache_dir)
            .field("name", &self.name)
            .field("extension", &self.extension)
            .field("retries", &self.retries)
            .field("retry_delay", &self.retry_delay)
            .field("timeout", &self.timeout)
            .field("progress", &self.progress.is_some())
            .finish()
    }
}

impl<'a> FetchRequest<'a> {
    /// A request for `url` with the defaults: 3 retries, 1 s apart (growing),
    /// 60 s timeout, no published size, no progress callback; the stem and
    /// extension come from the URL's file name.
    pub fn new(url: impl Into<String>, checksum: Checksum, cache_dir: impl Into<PathBuf>) -> Self {
        let url = url.into();
        let file = file_name_of(&url);
        let extension = extension_of(file).to_string();
        let name = file
            .strip_suffix(&format!(".{extension}"))
            .unwrap_or(file)
            .to_string();
        FetchRequest {
            checksum,
            size: None,
            cache_dir: cache_dir.into(),
            name: if name.is_empty() {
                "download".into()
            } else {
                name
            },
            extension,
            retries: 3,
            retry_delay: Duration::from_secs(1),
            timeout: Duration::from_secs(60),
            progress: None,
            url,
        }
    }

    /// The request for a catalog entry from its own URL (set `url` to
    /// [`mirror_url`] to fetch from a mirror).
    pub fn for_entry(entry: &ZooEntry, cache_dir: impl Into<PathBuf>) -> Self {
        FetchRequest {
            size: entry.size,
            name: entry.name.clone(),
            extension: entry.extension().to_string(),
            ..FetchRequest::new(entry.url.clone(), entry.checksum(), cache_dir)
        }
    }

    /// Where the verified file is (or will be).
    pub fn final_path(&self) -> PathBuf {
        let stem = self.checksum.full().unwrap_or(&self.name);
        self.cache_dir.join(format!("{stem}.{}", self.extension))
    }

    /// Where the bytes received so far are.
    pub fn part_path(&self) -> PathBuf {
        with_suffix(&self.final_path(), ".part")
    }

    fn report(&self, done: u64, total: Option<u64>) {
        if let Some(p) = self.progress {
            p(Progress { done, total });
        }
    }
}

/// A fetched (or already cached) file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// The verified file in the cache.
    pub path: PathBuf,
    /// Its sha256 (lowercase hex), computed here.
    pub sha256: String,
    /// Its size in bytes.
    pub size: u64,
    /// True when the file was already in the cache (no request was made).
    pub cached: bool,
    /// HTTP attempts made (0 when cached).
    pub attempts: u32,
}

/// `url` with its base replaced by `mirror`: `{mirror}/{file name of url}`,
/// for a server of your own (behind a firewall, or in tests).
pub fn mirror_url(url: &str, mirror: &str) -> Result<String, ZooError> {
    let name = file_name_of(url);
    if name.is_empty() {
        return Err(ZooError::InvalidUrl {
            url: url.to_string(),
            reason: "no file name to look up on the mirror".into(),
        });
    }
    check_url(mirror)?;
    Ok(format!("{}/{name}", mirror.trim_end_matches('/')))
}

/// Downloads `req.url` into the cache, checked; returns the cached file at
/// once (no request) if it is there and verifies.
///
/// A partial file left by an earlier attempt is resumed with `Range:
/// bytes=N-` (206: appended; 200: the server ignored the range, so start
/// over). A cut connection keeps the partial file and, while retries
/// remain, resumes. Wrong bytes (sha256 or size) delete the partial file.
pub async fn fetch(req: &FetchRequest<'_>) -> Result<Fetched, ZooError> {
    std::fs::create_dir_all(&req.cache_dir)
        .map_err(|e| ZooError::io("cannot create the zoo cache", &req.cache_dir, e))?;
    let final_path = req.final_path();
    let part = req.part_path();
    let _lock = lock(&with_suffix(&final_path, ".lock")).await?;

    if final_path.is_file() {
        let (sha, size) = hash_file(&final_path)?;
        if req.checksum.matches(&sha) && req.size.is_none_or(|s| s == size) {
            tracing::info!(path = %final_path.display(), "zoo: cached");
            return Ok(Fetched {
                path: final_path,
                sha256: sha,
                size,
                cached: true,
                attempts: 0,
            });
        }
        tracing::warn!(path = %final_path.display(), sha256 = %sha, "zoo: cached file does not verify; fetching again");
        remove(&final_path)?;
    }

    check_url(&req.url)?;
    ensure_crypto_provider();
    let client = reqwest::Client::builder()
        .connect_timeout(req.timeout)
        .read_timeout(req.timeout)
        .user_agent(concat!("accel-zoo/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| ZooError::Request {
            url: req.url.clone(),
            source: e,
        })?;

    let mut attempts = 0u32;
    let (sha, size) = loop {
        attempts += 1;
        match attempt(&client, req, &part).await {
            Ok(done) => break done,
            Err(e) if e.is_transient() && attempts <= req.retries => {
                tracing::warn!(error = %e, attempt = attempts, "zoo: retrying");
                tokio::time::sleep(req.retry_delay * attempts).await;
            }
            Err(e) => return Err(e),
        }
    };

    if !req.checksum.matches(&sha) {
        remove(&part)?;
        return Err(ZooError::ChecksumMismatch {
            url: req.url.clone(),
            expected: req.checksum.expected(),
            actual: sha,
            size,
            expected_size: req.size,
        });
    }
    if let Some(expected) = req.size.filter(|&s| s != size) {
        remove(&part)?;
        return Err(ZooError::SizeMismatch {
            url: req.url.clone(),
            expected,
            actual: size,
        });
    }
    std::fs::rename(&part, &final_path)
        .map_err(|e| ZooError::io("cannot move the download into place as", &final_path, e))?;
    sync_dir(&req.cache_dir)?;
    tracing::info!(path = %final_path.display(), size, attempts, "zoo: fetched");
    Ok(Fetched {
        path: final_path,
        sha256: sha,
        size,
        cached: false,
        attempts,
    })
}

/// One HTTP attempt: resumes or restarts `part` and streams the body into
/// it; returns the sha256 and size of the whole file.
async fn attempt(
    client: &reqwest::Client,
    req: &FetchRequest<'_>,
    part: &Path,
) -> Result<(String, u64), ZooError> {
    let url = &req.url;
    let mut have = match std::fs::metadata(part) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => return Err(ZooError::io("cannot read", part, e)),
    };
    if let Some(size) = req.size {
        if have > size {
            remove(part)?;
            have = 0;
        } else if have == size && have > 0 {
            // Complete already (a crash between the last byte and the rename).
            req.report(have, Some(size));
            File::open(part)
                .and_then(|f| f.sync_all())
                .map_err(|e| ZooError::io("cannot sync", part, e))?;
            return hash_file(part);
        }
    }

    let mut request = client.get(url.as_str());
    if have > 0 {
        request = request.header(reqwest::header::RANGE, format!("bytes={have}-"));
    }
    tracing::debug!(url = %url, from = have, "zoo: GET");
    let mut response = request.send().await.map_err(|e| ZooError::Request {
        url: url.clone(),
        source: e.without_url(),
    })?;
    let status = response.status().as_u16();
    let resumed = match status {
        206 => {
            let content_range = response
                .headers()
                .get(reqwest::header::CONTENT_RANGE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            if have == 0 || range_start(&content_range) != Some(have) {
                // Start over next time rather than append at a wrong offset.
                remove(part)?;
                return Err(ZooError::BadRange {
                    url: url.clone(),
                    asked: have,
                    content_range,
                });
            }
            true
        }
        416 if have > 0 => {
            remove(part)?;
            return Err(ZooError::BadRange {
                url: url.clone(),
                asked: have,
                content_range: String::new(),
            });
        }
        200..=299 => false,
        _ => {
            return Err(ZooError::Status {
                url: url.clone(),
                status,
            })
        }
    };

    let mut hasher = Sha256::new();
    let file = if resumed {
        hash_into(part, &mut hasher)?;
        OpenOptions::new()
            .append(true)
            .open(part)
            .map_err(|e| ZooError::io("cannot open", part, e))?
    } else {
        if have > 0 {
            tracing::info!(url = %url, "zoo: the server ignored the range; starting over");
        }
        have = 0;
        File::create(part).map_err(|e| ZooError::io("cannot create", part, e))?
    };
    let total = req
        .size
        .or_else(|| response.content_length().map(|l| l + have));
    let mut done = have;
    req.report(done, total);
    let write_error = |e| ZooError::io("cannot write", part, e);
    let mut out = BufWriter::with_capacity(1 << 20, file);
    loop {
        match response.chunk().await {
            Ok(Some(bytes)) => {
                done += bytes.len() as u64;
                if let Some(size) = req.size.filter(|&s| done > s) {
                    drop(out);
                    remove(part)?;
                    return Err(ZooError::TooLarge {
                        url: url.clone(),
                        expected: size,
                    });
                }
                out.write_all(&bytes).map_err(write_error)?;
                hasher.update(&bytes);
                req.report(done, total);
            }
            Ok(None) => break,
            Err(e) => {
                out.flush().map_err(write_error)?;
                return Err(ZooError::Interrupted {
                    url: url.clone(),
                    received: done,
                    part: part.to_path_buf(),
                    source: e.without_url(),
                });
            }
        }
    }
    let file = out.into_inner().map_err(|e| write_error(e.into_error()))?;
    file.sync_all().map_err(write_error)?;
    Ok((hex::encode(hasher.finalize()), done))
}

/// The first byte of a `Content-Range: bytes FIRST-LAST/TOTAL` header.
fn range_start(content_range: &str) -> Option<u64> {
    let spec = content_range.trim().strip_prefix("bytes")?.trim_start();
    spec.split('-').next()?.trim().parse().ok()
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

fn hash_into(path: &Path, hasher: &mut Sha256) -> Result<u64, ZooError> {
    let mut file = File::open(path).map_err(|e| ZooError::io("cannot open", path, e))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = file
            .read(&mut buf)
            .map_err(|e| ZooError::io("cannot read", path, e))?;
        if n == 0 {
            return Ok(total);
        }
        hasher.update(&buf[..n]);
        total += n as u64;
    }
}

fn hash_file(path: &Path) -> Result<(String, u64), ZooError> {
    let mut hasher = Sha256::new();
    let size = hash_into(path, &mut hasher)?;
    Ok((hex::encode(hasher.finalize()), size))
}

fn remove(path: &Path) -> Result<(), ZooError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(ZooError::io("cannot delete", path, e))
        }
        _ => Ok(()),
    }
}

fn sync_dir(dir: &Path) -> Result<(), ZooError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| ZooError::io("cannot sync", dir, e))
}

/// Takes an exclusive lock on `path` (created if needed), waiting while
/// another process holds it: two pulls of one file take turns, and the
/// second finds the first's file in the cache. Released when dropped.
async fn lock(path: &Path) -> Result<File, ZooError> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| ZooError::io("cannot open the lock file", path, e))?;
    let mut waited = false;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(std::fs::TryLockError::WouldBlock) => {
                if !waited {
                    tracing::warn!(path = %path.display(), "zoo: waiting for another download of this file");
                    waited = true;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(ZooError::io("cannot lock", path, e))
            }
        }
    }
}

/// reqwest is built without a default rustls crypto provider (as
/// oci-client uses it): install ring's, as the rest of the workspace does,
/// unless the process already chose one.
fn ensure_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Losing a race to another installer is fine: one is installed.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_starts() {
        assert_eq!(range_start("bytes 100-199/200"), Some(100));
        assert_eq!(range_start("bytes 0-0/1"), Some(0));
        assert_eq!(range_start("bytes */200"), None);
        assert_eq!(range_start(""), None);
    }

    #[test]
    fn checksums_match_full_or_prefix() {
        let full = "ab".repeat(32);
        assert!(Checksum::Sha256(full.clone()).matches(&full));
        assert!(!Checksum::Sha256(full.clone()).matches(&"cd".repeat(32)));
        assert!(Checksum::Sha256Prefix("abab".into()).matches(&full));
        assert!(!Checksum::Sha256Prefix(String::new()).matches(&full));
        assert_eq!(Checksum::Sha256Prefix("ab".into()).expected(), "ab…");
    }

    #[test]
    fn paths_use_the_sha256_or_the_name() {
        let full = "ab".repeat(32);
        let r = FetchRequest::new(
            "https://h/x/resnet50-v1-7.onnx",
            Checksum::Sha256(full.clone()),
            "/c",
        );
        assert_eq!(r.final_path(), PathBuf::from(format!("/c/{full}.onnx")));
        assert_eq!(r.part_path(), PathBuf::from(format!("/c/{full}.onnx.part")));
        let p = FetchRequest::new(
            "https://h/m/ssd300_vgg16_coco-b556d3b4.pth",
            Checksum::Sha256Prefix("b556d3b4".into()),
            "/c",
        );
        assert_eq!(
            p.final_path(),
            PathBuf::from("/c/ssd300_vgg16_coco-b556d3b4.pth")
        );
    }

    #[test]
    fn mirrors_replace_the_base() {
        assert_eq!(
            mirror_url(
                "https://media.githubusercontent.com/media/onnx/models/abc/vision/m.onnx",
                "http://127.0.0.1:8000/zoo/"
            )
            .unwrap(),
            "http://127.0.0.1:8000/zoo/m.onnx"
        );
        assert!(mirror_url("https://h/m.onnx", "file:///tmp").is_err());
        assert!(mirror_url("https://h/", "http://m").is_err());
    }
}

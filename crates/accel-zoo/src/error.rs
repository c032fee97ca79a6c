//! The zoo's errors. Each message is one line and names what failed (the
//! catalog entry, the URL, the file), so that the CLI can print it as is.

use std::path::PathBuf;

/// Everything that can go wrong reading the catalog or fetching a model.
#[derive(Debug, thiserror::Error)]
pub enum ZooError {
    /// The catalog text is not valid TOML or does not have the catalog's shape.
    #[error("cannot parse the zoo catalog {origin}")]
    Parse {
        /// Where the text came from (a path, or "(bundled)").
        origin: String,
        /// The parser's message.
        #[source]
        source: Box<toml::de::Error>,
    },
    /// The catalog parsed but an entry breaks a rule.
    #[error("zoo catalog entry {entry:?}: {reason}")]
    Invalid {
        /// The entry's name (or its position when the name is the problem).
        entry: String,
        /// What is wrong.
        reason: String,
    },
    /// No entry has that name.
    #[error("no model {name:?} in the zoo catalog (known: {})", known.join(", "))]
    UnknownModel {
        /// The name asked for.
        name: String,
        /// Every name the catalog has.
        known: Vec<String>,
    },
    /// A URL (catalog or mirror) that cannot be used.
    #[error("invalid URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// A local file operation failed.
    #[error("{action} {}", path.display())]
    Io {
        /// What was being done ("cannot write", …).
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The request failed before a status came back (DNS, connect, TLS, timeout).
    #[error("cannot fetch {url}")]
    Request {
        /// The URL.
        url: String,
        /// reqwest's error (without the URL, which is above).
        #[source]
        source: reqwest::Error,
    },
    /// The server answered with a status that is not a success.
    #[error("{url} answered HTTP {status}")]
    Status {
        /// The URL.
        url: String,
        /// The HTTP status code.
        status: u16,
    },
    /// The connection ended before the whole body arrived. The partial file
    /// is kept, so that the next attempt resumes where this one stopped.
    #[error("download of {url} was interrupted after {received} bytes (partial file {} kept; run again to resume)", part.display())]
    Interrupted {
        /// The URL.
        url: String,
        /// Bytes in the partial file.
        received: u64,
        /// The partial file.
        part: PathBuf,
        /// The transport error.
        #[source]
        source: reqwest::Error,
    },
    /// The server sent a partial answer (206) for another range than asked.
    #[error("{url} answered range {content_range:?} to a request for bytes={asked}-")]
    BadRange {
        /// The URL.
        url: String,
        /// The first byte asked for.
        asked: u64,
        /// The server's `Content-Range` (empty if missing).
        content_range: String,
    },
    /// The bytes are not the published ones (the partial file was deleted).
    #[error("checksum mismatch for {url}: expected sha256 {expected}, got {actual} ({size} bytes{}); the download was deleted",
        expected_size.map(|s| format!(", expected {s}")).unwrap_or_default())]
    ChecksumMismatch {
        /// The URL.
        url: String,
        /// The published sha256 (or its published prefix followed by `…`).
        expected: String,
        /// The sha256 of what arrived.
        actual: String,
        /// Bytes received.
        size: u64,
        /// The published size, if any.
        expected_size: Option<u64>,
    },
    /// The checksum matched but the size is not the published one (a
    /// catalog error, or a prefix-only checksum that matched by chance).
    #[error("{url} sent {actual} bytes, not the published {expected}; the download was deleted")]
    SizeMismatch {
        /// The URL.
        url: String,
        /// The published size.
        expected: u64,
        /// Bytes received.
        actual: u64,
    },
    /// The server sent more bytes than the published size (deleted at once).
    #[error("{url} sent more than the published {expected} bytes; the download was deleted")]
    TooLarge {
        /// The URL.
        url: String,
        /// The published size.
        expected: u64,
    },
}

impl ZooError {
    /// Whether another attempt could succeed (connection trouble, a cut
    /// body, a server error), as opposed to a definite answer (404, wrong
    /// bytes).
    pub fn is_transient(&self) -> bool {
        match self {
            ZooError::Request { .. } | ZooError::Interrupted { .. } | ZooError::BadRange { .. } => {
                true
            }
            ZooError::Status { status, .. } => *status >= 500 || *status == 408 || *status == 429,
            _ => false,
        }
    }

    pub(crate) fn io(action: &'static str, path: &std::path::Path, source: std::io::Error) -> Self {
        ZooError::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    }
}

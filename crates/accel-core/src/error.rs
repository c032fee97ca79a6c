//! The transport-neutral error kind.
//!
//! Every library crate has its own `thiserror` enum; each of those exposes a
//! `kind()` returning one of these. The server maps kinds to gRPC codes and
//! HTTP statuses in exactly one place.

use std::fmt;

/// What went wrong, independent of the transport that reports it.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The caller sent something malformed or out of bounds.
    InvalidArgument,
    /// The named model, version, service or file does not exist.
    NotFound,
    /// The thing being created exists already.
    AlreadyExists,
    /// The system is not in a state that allows the operation (e.g. a model in use).
    FailedPrecondition,
    /// A configured limit (queue, size, pixels) was reached.
    ResourceExhausted,
    /// The deadline passed before the work finished.
    DeadlineExceeded,
    /// Missing or wrong credentials.
    Unauthenticated,
    /// The operation is not supported.
    Unimplemented,
    /// A dependency (e.g. an engine library) is not available right now.
    Unavailable,
    /// Stored data is corrupt (checksum mismatch, broken database).
    DataLoss,
    /// A bug or an unexpected failure of a component.
    Internal,
}

impl ErrorKind {
    /// A short, stable, lower-case name for logs and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidArgument => "invalid_argument",
            ErrorKind::NotFound => "not_found",
            ErrorKind::AlreadyExists => "already_exists",
            ErrorKind::FailedPrecondition => "failed_precondition",
            ErrorKind::ResourceExhausted => "resource_exhausted",
            ErrorKind::DeadlineExceeded => "deadline_exceeded",
            ErrorKind::Unauthenticated => "unauthenticated",
            ErrorKind::Unimplemented => "unimplemented",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::DataLoss => "data_loss",
            ErrorKind::Internal => "internal",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Implemented by every library error so callers can match on the kind.
pub trait HasKind {
    /// The transport-neutral kind of this error.
    fn kind(&self) -> ErrorKind;
}

/// Errors of this crate: spec parsing and tensor construction.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    /// A pipeline spec could not be parsed or is inconsistent.
    #[error("invalid pipeline spec: {0}")]
    Spec(String),
    /// A name (model, service, tag) is not acceptable.
    #[error("invalid name {name:?}: {reason}")]
    Name {
        /// The offending name.
        name: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// Tensor shape and data length disagree.
    #[error("tensor shape {shape:?} needs {expected} elements, got {actual}")]
    Shape {
        /// The declared shape.
        shape: Vec<usize>,
        /// Elements the shape needs.
        expected: usize,
        /// Elements present.
        actual: usize,
    },
}

impl HasKind for CoreError {
    fn kind(&self) -> ErrorKind {
        ErrorKind::InvalidArgument
    }
}

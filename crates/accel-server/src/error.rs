//! The server's error: a transport-neutral kind and a message for the
//! client. Conversions to gRPC and HTTP live in `status.rs`, nowhere else.

use accel_core::error::{ErrorKind, HasKind};
use std::fmt;

/// An error answered to a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServeError {
    /// What kind of failure.
    pub kind: ErrorKind,
    /// A one-line message naming the problem.
    pub message: String,
}

impl ServeError {
    /// A new error.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        ServeError {
            kind,
            message: message.into(),
        }
    }

    /// `INVALID_ARGUMENT`.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidArgument, message)
    }

    /// `NOT_FOUND`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }

    /// From any library error that knows its kind.
    pub fn from_kinded<E: HasKind + fmt::Display>(e: &E) -> Self {
        Self::new(e.kind(), e.to_string())
    }
}

impl fmt::Display for ServeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ServeError {}

impl From<accel_runtime::RuntimeError> for ServeError {
    fn from(e: accel_runtime::RuntimeError) -> Self {
        Self::from_kinded(&e)
    }
}

/// Errors starting the server (binding ports, reading TLS files).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// TLS material is missing or malformed.
    #[error("TLS: {0}")]
    Tls(String),
    /// The configuration is inconsistent.
    #[error("{0}")]
    Config(String),
}

//! Errors of packaging and deployment.

use accel_core::error::{ErrorKind, HasKind};

/// What can go wrong while building, pushing or deploying.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// An argument (reference, port, manifest option...) is wrong.
    #[error("{0}")]
    InvalidArgument(String),
    /// Something named does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The state does not allow it (a device in use, a running service...).
    #[error("{0}")]
    FailedPrecondition(String),
    /// A remote (OCI registry, Kubernetes API) refused or failed.
    #[error("{0}")]
    Remote(String),
    /// The remote could not be reached.
    #[error("{0}")]
    Unavailable(String),
    /// Local I/O failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The cause.
        source: std::io::Error,
    },
}

impl DeployError {
    /// An I/O error with its context.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        DeployError::Io {
            context: context.into(),
            source,
        }
    }
}

impl HasKind for DeployError {
    fn kind(&self) -> ErrorKind {
        match self {
            DeployError::InvalidArgument(_) => ErrorKind::InvalidArgument,
            DeployError::NotFound(_) => ErrorKind::NotFound,
            DeployError::FailedPrecondition(_) => ErrorKind::FailedPrecondition,
            DeployError::Remote(_) => ErrorKind::FailedPrecondition,
            DeployError::Unavailable(_) => ErrorKind::Unavailable,
            DeployError::Io { .. } => ErrorKind::Internal,
        }
    }
}

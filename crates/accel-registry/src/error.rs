//! The registry's error type.
//!
//! Every fallible registry operation returns [`RegistryError`]; its
//! [`HasKind`] implementation is how the CLI and the server turn a failure
//! into an exit code or a gRPC/HTTP status without matching on messages.

use accel_core::error::{CoreError, ErrorKind, HasKind};
use std::io;

/// What went wrong in a registry operation. Each message is one line that
/// names the problem (the model, version, file or blob concerned).
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The named model, version or blob does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The thing being created exists already.
    #[error("{0}")]
    AlreadyExists(String),
    /// The operation is refused in the current state (e.g. deleting a model
    /// that another model was converted from, or a database written by a
    /// newer release).
    #[error("{0}")]
    FailedPrecondition(String),
    /// A name, tag, property, spec or input file is not acceptable.
    #[error("{0}")]
    InvalidArgument(String),
    /// Stored data is corrupt or missing: a blob whose content does not match
    /// its sha256, a blob a model needs that is gone, a broken database.
    #[error("{0}")]
    DataLoss(String),
    /// A file-system operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, naming the path.
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The SQLite database reported an error.
    #[error("registry database: {0}")]
    Sqlite(#[from] rusqlite::Error),
}

impl RegistryError {
    /// Wraps an I/O error with a description of what was being done.
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        RegistryError::Io {
            context: context.into(),
            source,
        }
    }
}

impl From<CoreError> for RegistryError {
    fn from(e: CoreError) -> Self {
        RegistryError::InvalidArgument(e.to_string())
    }
}

impl HasKind for RegistryError {
    fn kind(&self) -> ErrorKind {
        match self {
            RegistryError::NotFound(_) => ErrorKind::NotFound,
            RegistryError::AlreadyExists(_) => ErrorKind::AlreadyExists,
            RegistryError::FailedPrecondition(_) => ErrorKind::FailedPrecondition,
            RegistryError::InvalidArgument(_) => ErrorKind::InvalidArgument,
            RegistryError::DataLoss(_) => ErrorKind::DataLoss,
            RegistryError::Io { .. } => ErrorKind::Internal,
            RegistryError::Sqlite(e) => match e.sqlite_error_code() {
                Some(rusqlite::ErrorCode::DatabaseCorrupt)
                | Some(rusqlite::ErrorCode::NotADatabase) => ErrorKind::DataLoss,
                _ => ErrorKind::Internal,
            },
        }
    }
}

/// Shorthand for this crate's results.
pub type Result<T, E = RegistryError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_follow_the_variant() {
        let cases = [
            (RegistryError::NotFound("x".into()), ErrorKind::NotFound),
            (
                RegistryError::AlreadyExists("x".into()),
                ErrorKind::AlreadyExists,
            ),
            (
                RegistryError::FailedPrecondition("x".into()),
                ErrorKind::FailedPrecondition,
            ),
            (
                RegistryError::InvalidArgument("x".into()),
                ErrorKind::InvalidArgument,
            ),
            (RegistryError::DataLoss("x".into()), ErrorKind::DataLoss),
            (
                RegistryError::io("reading x", io::Error::other("boom")),
                ErrorKind::Internal,
            ),
        ];
        for (err, kind) in cases {
            assert_eq!(err.kind(), kind, "{err}");
        }
        let core = accel_core::name::validate_name("a/b").unwrap_err();
        assert_eq!(RegistryError::from(core).kind(), ErrorKind::InvalidArgument);
    }

    #[test]
    fn io_errors_name_what_was_done() {
        let e = RegistryError::io("reading /x/y", io::Error::other("boom"));
        assert_eq!(e.to_string(), "reading /x/y: boom");
    }
}

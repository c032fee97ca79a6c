//! Errors of the converter.

use accel_core::error::{ErrorKind, HasKind};
use accel_runtime::RuntimeError;

/// What can go wrong while converting a model.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    /// The model file is not a well-formed ONNX model.
    #[error("invalid ONNX model: {0}")]
    InvalidModel(String),
    /// The model uses something the converter does not handle (an operator,
    /// an opset, external data...).
    #[error("cannot convert: {0}")]
    Unsupported(String),
    /// An argument (folder, output name, budget...) is wrong.
    #[error("{0}")]
    InvalidArgument(String),
    /// The conversion ran but its result is not acceptable (e.g. no int8
    /// candidate within the accuracy budget).
    #[error("{0}")]
    Rejected(String),
    /// An engine failed while loading or running a candidate.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// Reading inputs failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being read.
        context: String,
        /// The cause.
        source: std::io::Error,
    },
}

impl HasKind for ConvertError {
    fn kind(&self) -> ErrorKind {
        match self {
            ConvertError::InvalidModel(_) | ConvertError::InvalidArgument(_) => {
                ErrorKind::InvalidArgument
            }
            ConvertError::Unsupported(_) => ErrorKind::Unimplemented,
            ConvertError::Rejected(_) => ErrorKind::FailedPrecondition,
            ConvertError::Runtime(e) => e.kind(),
            ConvertError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                ErrorKind::NotFound
            }
            ConvertError::Io { .. } => ErrorKind::Internal,
        }
    }
}

//! Errors of the runtime crate.

use accel_core::error::{ErrorKind, HasKind};

/// What can go wrong while loading models and running pipelines.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The image bytes could not be decoded.
    #[error("cannot decode image: {0}")]
    Decode(String),
    /// The image is larger than the configured pixel limit.
    #[error("image is {width}x{height} = {pixels} pixels, over the limit of {limit}")]
    TooManyPixels {
        /// Width from the header.
        width: u32,
        /// Height from the header.
        height: u32,
        /// width × height.
        pixels: u64,
        /// The configured limit.
        limit: u64,
    },
    /// The request is malformed (wrong dtype, shape, batch size...).
    #[error("{0}")]
    InvalidInput(String),
    /// The model file is not a model this engine can load.
    #[error("cannot load model with {engine}: {message}")]
    Load {
        /// Engine name.
        engine: &'static str,
        /// Engine's message.
        message: String,
    },
    /// The engine is not available (e.g. ONNX Runtime library not found).
    #[error("{0}")]
    EngineUnavailable(String),
    /// The engine failed while running.
    #[error("{engine} inference failed: {message}")]
    Inference {
        /// Engine name.
        engine: &'static str,
        /// Engine's message.
        message: String,
    },
    /// The pipeline spec does not fit the model.
    #[error("pipeline does not fit the model: {0}")]
    Spec(String),
}

impl HasKind for RuntimeError {
    fn kind(&self) -> ErrorKind {
        match self {
            RuntimeError::Decode(_) | RuntimeError::InvalidInput(_) => ErrorKind::InvalidArgument,
            RuntimeError::TooManyPixels { .. } => ErrorKind::InvalidArgument,
            RuntimeError::Load { .. } | RuntimeError::Spec(_) => ErrorKind::FailedPrecondition,
            RuntimeError::EngineUnavailable(_) => ErrorKind::Unavailable,
            RuntimeError::Inference { .. } => ErrorKind::Internal,
        }
    }
}

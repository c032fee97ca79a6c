//! Core types of Accel: tensors, data types, pipeline and model specifications,
//! and the transport-neutral error kind.
//!
//! This crate does no I/O. Every other crate depends on it; it depends on none of them.
#![deny(missing_docs)]

pub mod detection;
pub mod error;
pub mod name;
pub mod spec;
pub mod tensor;

pub use error::ErrorKind;
pub use spec::PipelineSpec;
pub use tensor::{DType, Tensor, TensorData};

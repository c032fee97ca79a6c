//! The Accel runtime: engines behind one backend trait, image preprocessing,
//! postprocessing, and compiled pipelines.
//!
//! A [`pipeline::CompiledPipeline`] is built once per loaded model and is
//! immutable and `Send + Sync`; each call keeps its own state (buffers,
//! timings) on its own stack.
#![deny(missing_docs)]

pub mod detect;
pub mod engine;
pub mod error;
pub mod image;
pub mod limits;
pub mod onnx_info;
pub mod pipeline;
pub mod postprocess;

pub use engine::{Backend, EngineChoice, EngineKind, LoadOptions, Plan, TensorInfo};
pub use error::RuntimeError;
pub use limits::Limits;
pub use pipeline::{CompiledPipeline, ImageResult, Timings};

//! The Accel converter: turns an ONNX model into an accelerator plan.
//!
//! Passes: graph reading and opset upgrade (`graph`, `opset`), static int8
//! QDQ quantization from calibrated activation ranges (`quantize`,
//! `calibrate`), candidate measurement (`evaluate`), the accuracy-budget
//! rule (`select`) and the report (`report`). Registry reads and writes are
//! the caller's: a failed conversion leaves nothing behind.
#![deny(missing_docs)]

pub mod error;

pub use error::ConvertError;
pub mod calibrate;
pub mod compose;
pub mod convert;
pub mod evaluate;
pub mod features;
pub mod graph;
pub mod inputs;
pub mod opset;
pub mod quantize;
pub mod report;
pub mod select;
pub mod train;

pub use convert::{convert, ConvertRequest, Converted, Engines, Progress, Silent};
pub use report::Report;
pub use select::Precision;

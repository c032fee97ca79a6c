//! Tooling for measuring Accel: generators for real-architecture models with
//! random weights (never downloaded), and the benchmark programs' helpers.
#![deny(missing_docs)]

pub mod onnx_builder;
pub mod resnet;
pub mod stats;

//! gRPC adapters: TensorFlow Serving's `PredictionService` and KServe v2's
//! `GRPCInferenceService`. Each handler translates the wire request into an
//! [`crate::request::InferRequest`], calls the core, and translates back.

pub mod kserve;
pub mod metadata;
pub mod tensor;
pub mod tfs;

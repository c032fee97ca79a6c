//! Wire types and gRPC services for the protocols Accel speaks.
//!
//! Everything here is generated at build time from the `.proto` files under
//! `crates/accel-proto/proto/` (compiled by `protox`, so no system `protoc` is
//! needed) with `prost` messages and `tonic` clients/servers:
//!
//! - [`tensorflow::serving`]: TensorFlow Serving's
//!   `tensorflow.serving.PredictionService` (Classify, Regress, Predict,
//!   MultiInference, GetModelMetadata), wire-compatible with
//!   `tensorflow_serving.apis.prediction_service_pb2_grpc` clients.
//! - [`tensorflow`]: the TensorFlow core messages it uses (`TensorProto`,
//!   `TensorShapeProto`, `DataType`, `SignatureDef`, `TensorInfo`, ...).
//! - [`inference`]: the KServe v2 / Open Inference Protocol
//!   `inference.GRPCInferenceService`.
//! - [`onnx`]: the ONNX model format (`ModelProto`, `GraphProto`, `NodeProto`,
//!   `TensorProto`, ...), messages only, from onnx 1.23.2's `onnx.proto` in
//!   its proto3 form (`proto/onnx/onnx.proto` says how it was made). Not in
//!   [`FILE_DESCRIPTOR_SET`]: no service speaks it.
//!
//! Google well-known types (`Any`, `Int64Value`) are [`prost_types`].
//!
//! Which files were trimmed is documented at the top of each `.proto` file
//! (only `tensorflow/core/protobuf/meta_graph.proto` and, for the Triton-only
//! extensions, `kserve/grpc_predict_v2.proto`).

pub use prost;
pub use prost_types;
pub use tonic;

/// Encoded `google.protobuf.FileDescriptorSet` of every compiled file and its
/// imports (including the Google well-known types), without source info.
/// Intended for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/accel_proto_descriptor.bin"));

/// Protobuf package `tensorflow`: TensorFlow core messages.
#[allow(missing_docs, clippy::all, clippy::pedantic, rustdoc::all)]
pub mod tensorflow {
    tonic::include_proto!("tensorflow");

    /// Protobuf package `tensorflow.serving`: TensorFlow Serving APIs.
    #[allow(missing_docs, clippy::all, clippy::pedantic, rustdoc::all)]
    pub mod serving {
        tonic::include_proto!("tensorflow.serving");
    }
}

/// Protobuf package `inference`: KServe v2 / Open Inference Protocol.
#[allow(missing_docs, clippy::all, clippy::pedantic, rustdoc::all)]
pub mod inference {
    tonic::include_proto!("inference");
}

/// Protobuf package `onnx`: the ONNX model format (messages only; read and
/// written with [`prost::Message`]).
#[allow(missing_docs, clippy::all, clippy::pedantic, rustdoc::all)]
pub mod onnx {
    include!(concat!(env!("OUT_DIR"), "/onnx.rs"));
}

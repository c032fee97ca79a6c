//! The Accel server: ONE request core (routing, authentication, validation,
//! admission, execution on engine threads, deadlines, metrics) behind thin
//! transport adapters — TensorFlow Serving and KServe v2 over gRPC, KServe v2
//! and TensorFlow Serving over HTTP. Adapters only translate between wire
//! formats and [`core::RequestCore`]; error kinds become gRPC codes and HTTP
//! statuses in [`status`] alone.
#![deny(missing_docs)]

pub mod admission;
pub mod auth;
pub mod core;
pub mod error;
pub mod executor;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod grpc;
pub mod http;
mod job;
pub mod metrics;
pub mod request;
pub mod server;
pub mod status;
#[cfg(test)]
pub(crate) mod testing;

pub use crate::core::{RequestCore, Service};
pub use error::{ServeError, StartError};

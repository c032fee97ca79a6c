//! Accel packaging and deployment.
//!
//! Module map: `error`; `oci` (image layout, layers, config, manifest,
//! archives, push over the OCI distribution API); `local` (supervised edge
//! services); `kube` (Kubernetes manifests, server-side apply, rollout wait,
//! delete by labels). Registry records are the caller's (the CLI).
#![deny(missing_docs)]

pub mod error;
pub mod kube;
pub mod local;
pub mod oci;

pub use error::DeployError;

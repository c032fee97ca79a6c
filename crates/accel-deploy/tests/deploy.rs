//! The integration tests of accel-deploy, one test binary for the crate
//! (one link of the crate and its dependencies, not one per file).
//!
//! Each area has its module under `tests/deploy/`: add yours here as
//! `#[path = "deploy/NAME.rs"] mod NAME;` (kube, local, …).

#[path = "deploy/oci.rs"]
mod oci;

#[path = "deploy/kube.rs"]
mod kube;

#[path = "deploy/paths.rs"]
mod paths;

//! Fuzz targets of Accel, as plain functions of the input bytes (each
//! panics on a broken invariant), and a bounded-time mutation driver.
//!
//! Two runners share these bodies: `fuzz/` (cargo-fuzz / libFuzzer, nightly,
//! `scripts/fuzz`) for long coverage-guided runs, and this crate's test
//! (`tests/fuzz.rs`, stable, in `.ci/run`), which replays the checked-in
//! corpus `fuzz/corpus/<target>/` and mutates it for a bounded time.
#![deny(missing_docs)]

pub mod driver;
pub mod targets;

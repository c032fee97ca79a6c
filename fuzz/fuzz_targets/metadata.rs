//! bytes -> zoo catalog, registry names/references, OCI JSON, stored specs.
//! The body is `accel_fuzz::targets::metadata`, shared with the stable
//! bounded-time runner (`crates/accel-fuzz/tests/fuzz.rs`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| accel_fuzz::targets::metadata(data));

//! bytes -> TF Serving REST or KServe REST JSON (+ binary part) -> tensors.
//! The body is `accel_fuzz::targets::rest_json`, shared with the stable
//! bounded-time runner (`crates/accel-fuzz/tests/fuzz.rs`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| accel_fuzz::targets::rest_json(data));

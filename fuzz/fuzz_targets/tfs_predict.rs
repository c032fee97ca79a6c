//! bytes -> TF Serving `PredictRequest` -> tensors -> the core's validation.
//! The body is `accel_fuzz::targets::tfs_predict`, shared with the stable
//! bounded-time runner (`crates/accel-fuzz/tests/fuzz.rs`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| accel_fuzz::targets::tfs_predict(data));

//! bytes -> KServe v2 `ModelInferRequest` -> tensors -> the core's validation.
//! The body is `accel_fuzz::targets::kserve_infer`, shared with the stable
//! bounded-time runner (`crates/accel-fuzz/tests/fuzz.rs`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| accel_fuzz::targets::kserve_infer(data));

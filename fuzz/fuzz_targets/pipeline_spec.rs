//! bytes -> `PipelineSpec::parse` (TOML/JSON) -> validate -> round trips.
//! The body is `accel_fuzz::targets::pipeline_spec`, shared with the stable
//! bounded-time runner (`crates/accel-fuzz/tests/fuzz.rs`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| accel_fuzz::targets::pipeline_spec(data));

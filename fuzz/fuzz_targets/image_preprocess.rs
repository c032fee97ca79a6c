//! bytes -> image decoding -> preprocessing (crop and plain presets).
//! The body is `accel_fuzz::targets::image_preprocess`, shared with the stable
//! bounded-time runner (`crates/accel-fuzz/tests/fuzz.rs`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| accel_fuzz::targets::image_preprocess(data));

//! Converter integration tests. References come from other people's code:
//! ONNX Runtime's own quantizer and calibrator, onnx's version converter,
//! Pillow + numpy preprocessing (`refs/gen_quant_refs.py` made
//! `refs/quant_refs.json`), and ONNX Runtime running the models.
//!
//! Tests that run models need ONNX Runtime: run them as
//! `ACCEL_HOME=/work/main/target/accel-home cargo test -p accel-convert`
//! (or set `ORT_DYLIB_PATH`), as `scripts/test` does.

#[path = "convert/common.rs"]
mod common;
#[path = "convert/graph_opset.rs"]
mod graph_opset;
#[path = "convert/quantize.rs"]
mod quantize;
#[path = "convert/transfer.rs"]
mod transfer;

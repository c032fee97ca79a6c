//! Compiles `proto/` with protox (pure Rust, no system `protoc`) and generates
//! prost messages plus tonic clients and servers with tonic-prost-build.
//!
//! The ONNX model format (`proto/onnx/onnx.proto`) is a separate pass:
//! prost messages only (no services), and not part of the descriptor set
//! exported for gRPC reflection, since no service speaks it.

use std::{env, fs, path::PathBuf};

use prost::Message as _;

/// Root files of the gRPC pass; everything they import is compiled too.
const PROTOS: &[&str] = &[
    "tensorflow_serving/apis/prediction_service.proto",
    "kserve/grpc_predict_v2.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    let proto_root = manifest_dir.join("proto");
    println!("cargo:rerun-if-changed=proto");
    println!("cargo:rerun-if-changed=build.rs");

    let mut compiler = protox::Compiler::new([&proto_root])?;
    compiler.include_imports(true).include_source_info(true);
    compiler.open_files(PROTOS)?;
    let fds = compiler.file_descriptor_set();

    // Descriptor set exported for gRPC reflection: without source info (the
    // comments), which only the code generator needs.
    let mut for_reflection = fds.clone();
    for file in &mut for_reflection.file {
        file.source_code_info = None;
    }
    fs::write(
        out_dir.join("accel_proto_descriptor.bin"),
        for_reflection.encode_to_vec(),
    )?;

    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .build_transport(true)
        // With well-known types not compiled, prost-build maps
        // `.google.protobuf` to `::prost_types` by itself (an explicit
        // extern_path for it is rejected as a duplicate).
        .compile_well_known_types(false)
        .compile_fds(fds)?;

    compile_onnx(&proto_root)?;
    Ok(())
}

/// The ONNX model format: messages only (`onnx.rs` in `OUT_DIR`).
fn compile_onnx(proto_root: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
    let mut compiler = protox::Compiler::new([proto_root])?;
    compiler.include_imports(true).include_source_info(true);
    compiler.open_files(["onnx/onnx.proto"])?;
    tonic_prost_build::Config::new().compile_fds(compiler.file_descriptor_set())?;
    Ok(())
}

//! Wire-exactness of accel-proto against bytes produced by the official Python
//! classes (`tensorflow-serving-api`, `tritonclient[grpc]`); see
//! `tests/golden/make_golden.py` and `tests/golden/PROVENANCE`.
//!
//! Every golden message is decoded with the generated types, checked field by
//! field, re-encoded and compared with the Python bytes: byte for byte where
//! the order is fixed, otherwise (prost maps are HashMaps, so entries come out
//! in any order) as the same multiset of fields at every nesting level, the
//! exact bytes of each scalar included. On top of that, our own descriptors are
//! compared field by field with the official ones, and the generated servers
//! and clients are driven over the exact gRPC paths the official Python stubs
//! use.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Debug;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use accel_proto::inference::{
    self,
    grpc_inference_service_client::GrpcInferenceServiceClient,
    grpc_inference_service_server::{GrpcInferenceService, GrpcInferenceServiceServer},
    infer_parameter::ParameterChoice,
    InferParameter, ModelInferRequest, ModelInferResponse, ModelMetadataResponse,
};
use accel_proto::tensorflow::serving::{
    self as tfs,
    model_spec::VersionChoice,
    prediction_service_client::PredictionServiceClient,
    prediction_service_server::{PredictionService, PredictionServiceServer},
    GetModelMetadataRequest, GetModelMetadataResponse, ModelSpec, PredictRequest, PredictResponse,
    SignatureDefMap,
};
use accel_proto::tensorflow::{
    tensor_info::Encoding, DataType, TensorInfo, TensorProto, TensorShapeProto,
};
use http_body_util::{BodyExt, Full};
use prost::Message;
use prost_types::{
    DescriptorProto, EnumDescriptorProto, FieldDescriptorProto, FileDescriptorSet,
    MethodDescriptorProto,
};
use tonic::codegen::{http, Bytes, Service};
use tonic::{Request, Response, Status};

/// JPEG-looking payload used by make_golden.py (SOI + JFIF APP0 ... EOI).
fn jpeg_like() -> Vec<u8> {
    let mut v = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00".to_vec();
    v.extend(0x80u8..0x90);
    v.extend_from_slice(b"\xff\xd9");
    v
}

fn golden(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// One field on the wire, for order-insensitive comparison.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Wire {
    Varint(u64),
    Fixed64([u8; 8]),
    Fixed32([u8; 4]),
    /// A length-delimited value that parses as a message: its fields, sorted.
    Message(Vec<(u64, Wire)>),
    /// Any other length-delimited value (strings, bytes, packed scalars).
    Bytes(Vec<u8>),
}

fn varint(bytes: &[u8], pos: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *bytes.get(*pos)?;
        *pos += 1;
        value |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return Some(value);
        }
    }
    None
}

/// Parses `bytes` as a message into (tag, value) pairs sorted at every level,
/// so that two encodings compare equal iff they hold the same fields with the
/// same encoded values, whatever the order of fields and map entries.
fn canonical(bytes: &[u8]) -> Option<Vec<(u64, Wire)>> {
    let mut fields = Vec::new();
    let mut pos = 0;
    while pos < bytes.len() {
        let key = varint(bytes, &mut pos)?;
        let (tag, wire_type) = (key >> 3, key & 7);
        if tag == 0 {
            return None;
        }
        let value = match wire_type {
            0 => Wire::Varint(varint(bytes, &mut pos)?),
            1 => {
                let v = bytes.get(pos..pos + 8)?;
                pos += 8;
                Wire::Fixed64(v.try_into().ok()?)
            }
            2 => {
                let len = usize::try_from(varint(bytes, &mut pos)?).ok()?;
                let v = bytes.get(pos..pos.checked_add(len)?)?;
                pos += len;
                match canonical(v) {
                    Some(inner) if !v.is_empty() => Wire::Message(inner),
                    _ => Wire::Bytes(v.to_vec()),
                }
            }
            5 => {
                let v = bytes.get(pos..pos + 4)?;
                pos += 4;
                Wire::Fixed32(v.try_into().ok()?)
            }
            _ => return None,
        };
        fields.push((tag, value));
    }
    fields.sort();
    Some(fields)
}

/// Decodes a golden file, re-encodes it and checks the result against the
/// Python bytes: identical, or (when map entries come out in another order)
/// the same length and the same fields at every level. The re-encoded bytes
/// must also decode to the same struct (this keeps the order of repeated
/// fields checked). Returns the message.
fn roundtrip<M: Message + Default + PartialEq + Debug>(name: &str) -> M {
    let bytes = golden(name);
    let msg = M::decode(bytes.as_slice()).unwrap_or_else(|e| panic!("decoding {name}: {e}"));
    let again = msg.encode_to_vec();
    assert_eq!(
        M::decode(again.as_slice()).unwrap(),
        msg,
        "{name}: decode(encode(x)) != x"
    );
    if again != bytes {
        eprintln!("{name}: same bytes in another order; comparing field by field");
        assert_eq!(
            again.len(),
            bytes.len(),
            "{name}: re-encoded length differs"
        );
        assert_eq!(
            canonical(&again).expect("our bytes parse"),
            canonical(&bytes).expect("Python bytes parse"),
            "{name}: re-encoded fields differ from the Python bytes"
        );
    }
    msg
}

fn sorted_keys<V>(map: &HashMap<String, V>) -> Vec<&str> {
    let mut keys: Vec<_> = map.keys().map(String::as_str).collect();
    keys.sort_unstable();
    keys
}

fn dims(shape: &Option<TensorShapeProto>) -> Vec<i64> {
    let shape = shape.as_ref().expect("tensor_shape is set");
    assert!(!shape.unknown_rank);
    shape.dim.iter().map(|d| d.size).collect()
}

fn f32s_le(bytes: &[u8]) -> Vec<f32> {
    assert_eq!(bytes.len() % 4, 0);
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

fn spec(name: &str, version: Option<i64>, signature: &str) -> ModelSpec {
    ModelSpec {
        name: name.into(),
        version_choice: version.map(VersionChoice::Version),
        signature_name: signature.into(),
    }
}

fn param(choice: ParameterChoice) -> InferParameter {
    InferParameter {
        parameter_choice: Some(choice),
    }
}

// ---------------------------------------------------------------------------
// TensorFlow Serving messages
// ---------------------------------------------------------------------------

#[test]
fn predict_request_as_sent_by_azure_prediction_client() {
    let req: PredictRequest = roundtrip("tfs_predict_request_azure.bin");
    assert_eq!(req.model_spec, None, "Azure's client sends no model_spec");
    assert!(req.output_filter.is_empty());
    assert_eq!(sorted_keys(&req.inputs), ["images"]);
    let images = &req.inputs["images"];
    assert_eq!(images.dtype(), DataType::DtString);
    assert_eq!(images.dtype, 7);
    assert_eq!(dims(&images.tensor_shape), [1]);
    assert_eq!(images.string_val, [jpeg_like()]);
    assert!(images.tensor_content.is_empty());
    assert_eq!(images.version_number, 0);
}

#[test]
fn predict_request_with_model_spec_and_several_encodings() {
    let req: PredictRequest = roundtrip("tfs_predict_request_full.bin");
    assert_eq!(
        req.model_spec,
        Some(spec("resnet", Some(3), "serving_default"))
    );
    assert_eq!(req.output_filter, ["probabilities", "classes"]);
    assert_eq!(sorted_keys(&req.inputs), ["ids", "pixels", "scale"]);

    let pixels = &req.inputs["pixels"];
    assert_eq!(pixels.dtype(), DataType::DtFloat);
    assert_eq!(dims(&pixels.tensor_shape), [1, 2, 3]);
    assert!(pixels.float_val.is_empty());
    assert_eq!(
        f32s_le(&pixels.tensor_content),
        [0.0, 0.5, 1.0, -1.5, 2.25, 3.0e-3]
    );

    let scale = &req.inputs["scale"];
    assert_eq!(scale.dtype(), DataType::DtFloat);
    assert_eq!(dims(&scale.tensor_shape), [2]);
    assert_eq!(scale.float_val, [0.5, -2.0]);
    assert!(scale.tensor_content.is_empty());

    let ids = &req.inputs["ids"];
    assert_eq!(ids.dtype(), DataType::DtInt64);
    assert_eq!(ids.int64_val, [7, -1, 1 << 40]);

    // Fields added after TF Serving 2.11 stay unset.
    assert_eq!(req.predict_streamed_options, None);
    assert_eq!(req.client_id, None);
    assert_eq!(req.request_options, None);
}

#[test]
fn predict_request_with_version_label() {
    let req: PredictRequest = roundtrip("tfs_predict_request_label.bin");
    let spec = req.model_spec.expect("model_spec");
    assert_eq!(spec.name, "resnet");
    assert_eq!(
        spec.version_choice,
        Some(VersionChoice::VersionLabel("stable".into()))
    );
    assert_eq!(spec.signature_name, "classify");
    let flag = &req.inputs["flag"];
    assert_eq!(flag.dtype(), DataType::DtBool);
    assert_eq!(flag.bool_val, [true, false]);
}

#[test]
fn predict_response_with_float_output() {
    let resp: PredictResponse = roundtrip("tfs_predict_response.bin");
    assert_eq!(
        resp.model_spec,
        Some(spec("resnet", Some(3), "serving_default"))
    );
    assert_eq!(resp.outputs.len(), 1);
    let probs = &resp.outputs["probabilities"];
    assert_eq!(probs.dtype(), DataType::DtFloat);
    assert_eq!(dims(&probs.tensor_shape), [1, 3]);
    assert_eq!(probs.float_val, [0.125, 0.75, 0.125]);
}

#[test]
fn predict_response_built_in_rust_matches_python_bytes() {
    let mut outputs = HashMap::new();
    outputs.insert(
        "probabilities".to_string(),
        TensorProto {
            dtype: DataType::DtFloat as i32,
            tensor_shape: Some(TensorShapeProto {
                dim: [1, 3]
                    .into_iter()
                    .map(|size| accel_proto::tensorflow::tensor_shape_proto::Dim {
                        size,
                        name: String::new(),
                    })
                    .collect(),
                unknown_rank: false,
            }),
            float_val: vec![0.125, 0.75, 0.125],
            ..Default::default()
        },
    );
    let resp = PredictResponse {
        model_spec: Some(spec("resnet", Some(3), "serving_default")),
        outputs,
    };
    assert_eq!(resp.encode_to_vec(), golden("tfs_predict_response.bin"));
}

#[test]
fn get_model_metadata_request() {
    let req: GetModelMetadataRequest = roundtrip("tfs_get_model_metadata_request.bin");
    assert_eq!(req.model_spec, Some(spec("resnet", None, "")));
    assert_eq!(req.metadata_field, ["signature_def"]);
}

#[test]
fn get_model_metadata_response_with_signature_def_any() {
    let resp: GetModelMetadataResponse = roundtrip("tfs_get_model_metadata_response.bin");
    assert_eq!(resp.model_spec, Some(spec("resnet", Some(3), "")));
    assert_eq!(sorted_keys(&resp.metadata), ["signature_def"]);
    let any = &resp.metadata["signature_def"];
    assert_eq!(
        any.type_url,
        "type.googleapis.com/tensorflow.serving.SignatureDefMap"
    );
    let map = SignatureDefMap::decode(any.value.as_slice()).unwrap();
    assert_eq!(
        map.encode_to_vec(),
        any.value,
        "SignatureDefMap re-encodes exactly"
    );
    assert_eq!(sorted_keys(&map.signature_def), ["serving_default"]);
    let sig = &map.signature_def["serving_default"];
    assert_eq!(sig.method_name, "tensorflow/serving/predict");
    assert!(sig.defaults.is_empty());

    let input: &TensorInfo = &sig.inputs["images"];
    assert_eq!(input.encoding, Some(Encoding::Name("input_bytes:0".into())));
    assert_eq!(input.dtype(), DataType::DtString);
    assert_eq!(dims(&input.tensor_shape), [-1]);

    let output = &sig.outputs["scores"];
    assert_eq!(output.encoding, Some(Encoding::Name("softmax:0".into())));
    assert_eq!(output.dtype(), DataType::DtFloat);
    assert_eq!(dims(&output.tensor_shape), [-1, 1000]);
    assert_eq!(sig.inputs.len() + sig.outputs.len(), 2);
}

// ---------------------------------------------------------------------------
// KServe v2 messages
// ---------------------------------------------------------------------------

#[test]
fn model_infer_request_with_typed_contents_and_parameters() {
    let req: ModelInferRequest = roundtrip("kserve_infer_request_contents.bin");
    assert_eq!(req.model_name, "resnet");
    assert_eq!(req.model_version, "1");
    assert_eq!(req.id, "req-42");
    let expected: HashMap<String, InferParameter> = [
        (
            "binary_data_output",
            param(ParameterChoice::BoolParam(true)),
        ),
        (
            "content_type",
            param(ParameterChoice::StringParam("image/jpeg".into())),
        ),
        ("priority", param(ParameterChoice::Uint64Param(1 << 63))),
        ("temperature", param(ParameterChoice::DoubleParam(0.25))),
        ("timeout", param(ParameterChoice::Int64Param(-5))),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    assert_eq!(req.parameters, expected);

    assert_eq!(req.inputs.len(), 2);
    let image = &req.inputs[0];
    assert_eq!(
        (image.name.as_str(), image.datatype.as_str()),
        ("IMAGE", "BYTES")
    );
    assert_eq!(image.shape, [1]);
    assert_eq!(
        image.parameters["binary_data_size"],
        param(ParameterChoice::Int64Param(jpeg_like().len() as i64))
    );
    let contents = image.contents.as_ref().expect("contents");
    assert_eq!(contents.bytes_contents, [jpeg_like()]);
    assert!(contents.fp32_contents.is_empty());

    let scale = &req.inputs[1];
    assert_eq!(
        (scale.name.as_str(), scale.datatype.as_str()),
        ("SCALE", "FP32")
    );
    assert_eq!(scale.shape, [1, 2]);
    assert_eq!(scale.contents.as_ref().unwrap().fp32_contents, [0.5, -2.0]);

    assert_eq!(req.outputs.len(), 1);
    assert_eq!(req.outputs[0].name, "scores");
    assert_eq!(
        req.outputs[0].parameters["classification"],
        param(ParameterChoice::Int64Param(3))
    );
    assert!(req.raw_input_contents.is_empty());
}

#[test]
fn model_infer_request_as_built_by_tritonclient() {
    let req: ModelInferRequest = roundtrip("kserve_infer_request_tritonclient.bin");
    assert_eq!(
        (
            req.model_name.as_str(),
            req.model_version.as_str(),
            req.id.as_str()
        ),
        ("resnet", "1", "req-43")
    );
    let expected: HashMap<String, InferParameter> = [
        ("mode", param(ParameterChoice::StringParam("fast".into()))),
        // tritonclient sends `priority` as uint64_param (field 5).
        ("priority", param(ParameterChoice::Uint64Param(7))),
        ("timeout", param(ParameterChoice::Int64Param(1000))),
        ("top_k", param(ParameterChoice::Int64Param(5))),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    assert_eq!(req.parameters, expected);

    let names: Vec<_> = req
        .inputs
        .iter()
        .map(|t| (t.name.as_str(), t.datatype.as_str(), t.shape.clone()))
        .collect();
    assert_eq!(
        names,
        [("IMAGE", "BYTES", vec![1]), ("SCALE", "FP32", vec![1, 2])]
    );
    assert!(req.inputs.iter().all(|t| t.contents.is_none()));
    assert_eq!(req.outputs.len(), 1);
    assert_eq!(req.outputs[0].name, "scores");

    // Raw contents: BYTES elements carry a 4-byte little-endian length prefix.
    assert_eq!(req.raw_input_contents.len(), 2);
    let jpeg = jpeg_like();
    let mut expected_bytes = (jpeg.len() as u32).to_le_bytes().to_vec();
    expected_bytes.extend_from_slice(&jpeg);
    assert_eq!(req.raw_input_contents[0], expected_bytes);
    assert_eq!(f32s_le(&req.raw_input_contents[1]), [0.5, -2.0]);
}

#[test]
fn model_infer_response_with_raw_output() {
    let resp: ModelInferResponse = roundtrip("kserve_infer_response.bin");
    assert_eq!(
        (
            resp.model_name.as_str(),
            resp.model_version.as_str(),
            resp.id.as_str()
        ),
        ("resnet", "1", "req-43")
    );
    assert_eq!(
        resp.parameters["sequence_end"],
        param(ParameterChoice::BoolParam(false))
    );
    assert_eq!(resp.outputs.len(), 1);
    let out = &resp.outputs[0];
    assert_eq!(
        (out.name.as_str(), out.datatype.as_str()),
        ("scores", "FP32")
    );
    assert_eq!(out.shape, [1, 3]);
    assert!(out.contents.is_none());
    assert_eq!(resp.raw_output_contents.len(), 1);
    assert_eq!(f32s_le(&resp.raw_output_contents[0]), [0.125, 0.75, 0.125]);
}

#[test]
fn model_metadata_response() {
    let resp: ModelMetadataResponse = roundtrip("kserve_model_metadata_response.bin");
    assert_eq!(resp.name, "resnet");
    assert_eq!(resp.versions, ["1", "2"]);
    assert_eq!(resp.platform, "onnxruntime_onnx");
    let meta = |t: &inference::model_metadata_response::TensorMetadata| {
        (t.name.clone(), t.datatype.clone(), t.shape.clone())
    };
    assert_eq!(
        resp.inputs.iter().map(meta).collect::<Vec<_>>(),
        [("IMAGE".to_string(), "BYTES".to_string(), vec![-1])]
    );
    assert_eq!(
        resp.outputs.iter().map(meta).collect::<Vec<_>>(),
        [("scores".to_string(), "FP32".to_string(), vec![-1, 1000])]
    );
}

// ---------------------------------------------------------------------------
// Descriptors: ours against the official ones, field by field
// ---------------------------------------------------------------------------

#[derive(Default)]
struct Index {
    messages: HashMap<String, DescriptorProto>,
    enums: HashMap<String, EnumDescriptorProto>,
    methods: HashMap<String, BTreeMap<String, MethodDescriptorProto>>,
}

impl Index {
    fn new(encoded: &[u8]) -> Self {
        let set = FileDescriptorSet::decode(encoded).expect("FileDescriptorSet");
        let mut index = Index::default();
        for file in set.file {
            let package = file.package().to_string();
            for m in &file.message_type {
                index.add_message(&package, m);
            }
            for e in &file.enum_type {
                index
                    .enums
                    .insert(format!("{package}.{}", e.name()), e.clone());
            }
            for s in &file.service {
                let methods = s
                    .method
                    .iter()
                    .map(|m| (m.name().to_string(), m.clone()))
                    .collect();
                index
                    .methods
                    .insert(format!("{package}.{}", s.name()), methods);
            }
        }
        index
    }

    fn add_message(&mut self, scope: &str, m: &DescriptorProto) {
        let name = format!("{scope}.{}", m.name());
        for nested in &m.nested_type {
            self.add_message(&name, nested);
        }
        for e in &m.enum_type {
            self.enums.insert(format!("{name}.{}", e.name()), e.clone());
        }
        self.messages.insert(name, m.clone());
    }
}

/// The wire-relevant facts of a field: number, name, type, label, message or
/// enum type, oneof membership and proto3 `optional`.
fn field_facts(m: &DescriptorProto, f: &FieldDescriptorProto) -> String {
    let oneof = f
        .oneof_index
        .map(|i| m.oneof_decl[i as usize].name().to_string())
        .unwrap_or_default();
    format!(
        "{} {} {:?} {:?} {} oneof={} optional={}",
        f.number(),
        f.name(),
        f.label(),
        f.r#type(),
        f.type_name(),
        oneof,
        f.proto3_optional(),
    )
}

fn facts(m: &DescriptorProto) -> BTreeMap<i32, String> {
    m.field
        .iter()
        .map(|f| (f.number(), field_facts(m, f)))
        .collect()
}

#[test]
fn descriptors_match_the_official_definitions() {
    let ours = Index::new(accel_proto::FILE_DESCRIPTOR_SET);
    let official = Index::new(&golden("reference_descriptors.bin"));
    let ours_only = |name: &String| !name.starts_with("google.protobuf.");

    let mut compared = BTreeSet::new();
    for (name, m) in ours.messages.iter().filter(|(n, _)| ours_only(n)) {
        let reference = official
            .messages
            .get(name)
            .unwrap_or_else(|| panic!("{name} is not in the official definitions"));
        assert_eq!(facts(m), facts(reference), "fields of {name}");
        compared.insert(name.as_str());
    }
    for (name, e) in ours.enums.iter().filter(|(n, _)| ours_only(n)) {
        let values = |e: &EnumDescriptorProto| -> BTreeMap<i32, String> {
            e.value
                .iter()
                .map(|v| (v.number(), v.name().to_string()))
                .collect()
        };
        let reference = official
            .enums
            .get(name)
            .unwrap_or_else(|| panic!("enum {name} is not in the official definitions"));
        assert_eq!(values(e), values(reference), "values of {name}");
        compared.insert(name.as_str());
    }
    for must in [
        "tensorflow.DataType",
        "tensorflow.TensorProto",
        "tensorflow.TensorShapeProto.Dim",
        "tensorflow.ResourceHandleProto",
        "tensorflow.VariantTensorDataProto",
        "tensorflow.SignatureDef",
        "tensorflow.TensorInfo",
        "tensorflow.Example",
        "tensorflow.serving.ModelSpec",
        "tensorflow.serving.PredictRequest",
        "tensorflow.serving.PredictRequest.RequestOptions",
        "tensorflow.serving.PredictResponse",
        "tensorflow.serving.GetModelMetadataResponse",
        "tensorflow.serving.SignatureDefMap",
        "tensorflow.serving.ClassificationRequest",
        "tensorflow.serving.MultiInferenceResponse",
        "inference.ModelInferRequest",
        "inference.ModelInferRequest.InferInputTensor",
        "inference.ModelInferResponse",
        "inference.InferParameter",
        "inference.InferTensorContents",
        "inference.ModelMetadataResponse",
    ] {
        assert!(compared.contains(must), "{must} was not compared");
    }

    // Services: same methods with the same request/response types. Triton's
    // service is a superset of KServe's; ours declares exactly KServe's six.
    for (service, methods) in &ours.methods {
        let reference = &official.methods[service];
        for (name, m) in methods {
            let r = &reference[name];
            assert_eq!(
                (
                    m.input_type(),
                    m.output_type(),
                    m.client_streaming(),
                    m.server_streaming()
                ),
                (
                    r.input_type(),
                    r.output_type(),
                    r.client_streaming(),
                    r.server_streaming()
                ),
                "{service}/{name}"
            );
        }
    }
    let names = |s: &str| ours.methods[s].keys().cloned().collect::<Vec<_>>();
    assert_eq!(
        names("tensorflow.serving.PredictionService"),
        official.methods["tensorflow.serving.PredictionService"]
            .keys()
            .cloned()
            .collect::<Vec<_>>()
    );
    assert_eq!(
        names("inference.GRPCInferenceService"),
        [
            "ModelInfer",
            "ModelMetadata",
            "ModelReady",
            "ServerLive",
            "ServerMetadata",
            "ServerReady"
        ]
    );
}

// ---------------------------------------------------------------------------
// gRPC paths and services
// ---------------------------------------------------------------------------

/// Method paths the official Python stubs call (recorded by make_golden.py).
fn official_paths() -> Vec<String> {
    String::from_utf8(golden("grpc_paths.txt"))
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn service_names_are_the_published_ones() {
    use tonic::server::NamedService;
    const TFS: &str = <PredictionServiceServer<Tfs> as NamedService>::NAME;
    const KSERVE: &str = <GrpcInferenceServiceServer<Kserve> as NamedService>::NAME;
    assert_eq!(TFS, "tensorflow.serving.PredictionService");
    assert_eq!(KSERVE, "inference.GRPCInferenceService");
    assert_eq!(
        accel_proto::tensorflow::serving::prediction_service_server::SERVICE_NAME,
        TFS
    );
    assert_eq!(
        accel_proto::inference::grpc_inference_service_server::SERVICE_NAME,
        KSERVE
    );
}

/// Test PredictionService: Predict checks the request against the Azure
/// golden and answers with the PredictResponse golden; the other methods
/// answer with a recognisable status so routing can be observed.
struct Tfs;

fn reached(method: &str) -> Status {
    Status::failed_precondition(format!("reached-{method}"))
}

#[tonic::async_trait]
impl PredictionService for Tfs {
    async fn classify(
        &self,
        _: Request<tfs::ClassificationRequest>,
    ) -> Result<Response<tfs::ClassificationResponse>, Status> {
        Err(reached("Classify"))
    }
    async fn regress(
        &self,
        _: Request<tfs::RegressionRequest>,
    ) -> Result<Response<tfs::RegressionResponse>, Status> {
        Err(reached("Regress"))
    }
    async fn predict(
        &self,
        request: Request<PredictRequest>,
    ) -> Result<Response<PredictResponse>, Status> {
        let expected =
            PredictRequest::decode(golden("tfs_predict_request_azure.bin").as_slice()).unwrap();
        if request.into_inner() != expected {
            return Err(Status::invalid_argument("unexpected request"));
        }
        let golden = golden("tfs_predict_response.bin");
        Ok(Response::new(
            PredictResponse::decode(golden.as_slice()).unwrap(),
        ))
    }
    async fn multi_inference(
        &self,
        _: Request<tfs::MultiInferenceRequest>,
    ) -> Result<Response<tfs::MultiInferenceResponse>, Status> {
        Err(reached("MultiInference"))
    }
    async fn get_model_metadata(
        &self,
        _: Request<GetModelMetadataRequest>,
    ) -> Result<Response<GetModelMetadataResponse>, Status> {
        Err(reached("GetModelMetadata"))
    }
}

/// Test GRPCInferenceService: ModelInfer checks the request against the
/// tritonclient golden and answers with the ModelInferResponse golden.
struct Kserve;

#[tonic::async_trait]
impl GrpcInferenceService for Kserve {
    async fn server_live(
        &self,
        _: Request<inference::ServerLiveRequest>,
    ) -> Result<Response<inference::ServerLiveResponse>, Status> {
        Err(reached("ServerLive"))
    }
    async fn server_ready(
        &self,
        _: Request<inference::ServerReadyRequest>,
    ) -> Result<Response<inference::ServerReadyResponse>, Status> {
        Err(reached("ServerReady"))
    }
    async fn model_ready(
        &self,
        _: Request<inference::ModelReadyRequest>,
    ) -> Result<Response<inference::ModelReadyResponse>, Status> {
        Err(reached("ModelReady"))
    }
    async fn server_metadata(
        &self,
        _: Request<inference::ServerMetadataRequest>,
    ) -> Result<Response<inference::ServerMetadataResponse>, Status> {
        Err(reached("ServerMetadata"))
    }
    async fn model_metadata(
        &self,
        _: Request<inference::ModelMetadataRequest>,
    ) -> Result<Response<ModelMetadataResponse>, Status> {
        Err(reached("ModelMetadata"))
    }
    async fn model_infer(
        &self,
        request: Request<ModelInferRequest>,
    ) -> Result<Response<ModelInferResponse>, Status> {
        let expected =
            ModelInferRequest::decode(golden("kserve_infer_request_tritonclient.bin").as_slice())
                .unwrap();
        if request.into_inner() != expected {
            return Err(Status::invalid_argument("unexpected request"));
        }
        let golden = golden("kserve_infer_response.bin");
        Ok(Response::new(
            ModelInferResponse::decode(golden.as_slice()).unwrap(),
        ))
    }
}

/// gRPC length-prefixed message framing (uncompressed).
fn frame(message: &[u8]) -> Bytes {
    let mut out = vec![0u8];
    out.extend_from_slice(&(message.len() as u32).to_be_bytes());
    out.extend_from_slice(message);
    out.into()
}

/// Result of one raw HTTP/2-level call: grpc-status, grpc-message, and the
/// unframed response message (if any).
type RawReply = (String, String, Vec<u8>);

/// Calls a generated server directly with an HTTP request at `path`, as a
/// gRPC client library would send it, with `body` as the one request message.
async fn raw_call<S>(service: &mut S, path: &str, body: &[u8]) -> RawReply
where
    S: Service<
        http::Request<Full<Bytes>>,
        Response = http::Response<tonic::body::Body>,
        Error = std::convert::Infallible,
    >,
{
    let request = http::Request::builder()
        .method("POST")
        .uri(format!("http://localhost{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(frame(body)))
        .unwrap();
    std::future::poll_fn(|cx| service.poll_ready(cx))
        .await
        .unwrap();
    let response = service.call(request).await.unwrap();
    assert_eq!(response.status(), http::StatusCode::OK);
    let (parts, body) = response.into_parts();
    let collected = body.collect().await.expect("response body");
    let trailers = collected.trailers().cloned().unwrap_or_default();
    let data = collected.to_bytes();
    let header = |name: &str| {
        trailers
            .get(name)
            .or_else(|| parts.headers.get(name))
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default()
    };
    let message = if data.is_empty() {
        Vec::new()
    } else {
        assert_eq!(data[0], 0, "uncompressed frame");
        let len = u32::from_be_bytes(data[1..5].try_into().unwrap()) as usize;
        assert_eq!(data.len(), 5 + len, "exactly one message");
        data[5..].to_vec()
    };
    (header("grpc-status"), header("grpc-message"), message)
}

#[tokio::test]
async fn servers_answer_the_paths_the_official_python_stubs_call() {
    let paths = official_paths();
    let tfs_paths: Vec<_> = paths
        .iter()
        .filter(|p| p.starts_with("/tensorflow.serving.PredictionService/"))
        .collect();
    assert_eq!(tfs_paths.len(), 5);
    let kserve_methods = [
        "ServerLive",
        "ServerReady",
        "ModelReady",
        "ServerMetadata",
        "ModelMetadata",
        "ModelInfer",
    ];
    for m in kserve_methods {
        let path = format!("/inference.GRPCInferenceService/{m}");
        assert!(paths.contains(&path), "tritonclient stub calls {path}");
    }

    // Predict, with the Azure client's bytes in and the Python
    // PredictResponse's exact bytes out.
    let mut tfs = PredictionServiceServer::new(Tfs);
    let reply = raw_call(
        &mut tfs,
        "/tensorflow.serving.PredictionService/Predict",
        &golden("tfs_predict_request_azure.bin"),
    )
    .await;
    assert_eq!(
        reply,
        ("0".into(), "".into(), golden("tfs_predict_response.bin"))
    );

    // Every other TF Serving path reaches its own handler.
    for path in tfs_paths.iter().filter(|p| !p.ends_with("/Predict")) {
        let method = path.rsplit('/').next().unwrap();
        let (status, message, _) = raw_call(&mut tfs, path, &[]).await;
        assert_eq!(
            (status.as_str(), message),
            ("9", format!("reached-{method}")),
            "{path}"
        );
    }
    // An unknown method is UNIMPLEMENTED, so the checks above can fail.
    let (status, _, _) =
        raw_call(&mut tfs, "/tensorflow.serving.PredictionService/Nope", &[]).await;
    assert_eq!(status, "12");

    // ModelInfer, tritonclient's bytes in, Python ModelInferResponse bytes out.
    let mut kserve = GrpcInferenceServiceServer::new(Kserve);
    let reply = raw_call(
        &mut kserve,
        "/inference.GRPCInferenceService/ModelInfer",
        &golden("kserve_infer_request_tritonclient.bin"),
    )
    .await;
    assert_eq!(
        reply,
        ("0".into(), "".into(), golden("kserve_infer_response.bin"))
    );
    for method in kserve_methods.iter().filter(|m| **m != "ModelInfer") {
        let path = format!("/inference.GRPCInferenceService/{method}");
        let (status, message, _) = raw_call(&mut kserve, &path, &[]).await;
        assert_eq!(
            (status.as_str(), message),
            ("9", format!("reached-{method}")),
            "{path}"
        );
    }
}

/// Wraps a service and records the request paths it sees.
#[derive(Clone)]
struct Recorder<S> {
    inner: S,
    paths: Arc<Mutex<Vec<String>>>,
}

impl<S, B> Service<http::Request<B>> for Recorder<S>
where
    S: Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        self.paths
            .lock()
            .unwrap()
            .push(request.uri().path().to_string());
        self.inner.call(request)
    }
}

#[tokio::test]
async fn generated_clients_call_the_official_paths() {
    let paths = Arc::new(Mutex::new(Vec::new()));

    let mut client = PredictionServiceClient::new(Recorder {
        inner: PredictionServiceServer::new(Tfs),
        paths: paths.clone(),
    });
    let request =
        PredictRequest::decode(golden("tfs_predict_request_azure.bin").as_slice()).unwrap();
    let response = client.predict(request).await.unwrap().into_inner();
    assert_eq!(response.encode_to_vec(), golden("tfs_predict_response.bin"));

    let mut client = GrpcInferenceServiceClient::new(Recorder {
        inner: GrpcInferenceServiceServer::new(Kserve),
        paths: paths.clone(),
    });
    let request =
        ModelInferRequest::decode(golden("kserve_infer_request_tritonclient.bin").as_slice())
            .unwrap();
    let response = client.model_infer(request).await.unwrap().into_inner();
    assert_eq!(
        response.encode_to_vec(),
        golden("kserve_infer_response.bin")
    );
    let status = client
        .server_live(inference::ServerLiveRequest {})
        .await
        .unwrap_err();
    assert_eq!(status.message(), "reached-ServerLive");

    let seen = paths.lock().unwrap().clone();
    assert_eq!(
        seen,
        [
            "/tensorflow.serving.PredictionService/Predict",
            "/inference.GRPCInferenceService/ModelInfer",
            "/inference.GRPCInferenceService/ServerLive",
        ]
    );
    let official = official_paths();
    assert!(seen.iter().all(|p| official.contains(p)));
}

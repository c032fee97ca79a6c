//! KServe v2 REST (Open Inference Protocol) with Triton's binary tensor
//! data extension, as `tritonclient.http` speaks it.

use super::binary::{self, BinaryReader, RawType};
use super::common::{
    api_key, identity_encoding, json_ok, json_response, read_body, timeout, with_server_timing,
    AppState, HttpError, ModelPath,
};
use super::meta;
use super::values::{b64_text, decode_b64, flatten, BytesAs, Flat};
use crate::error::ServeError;
use crate::request::{InferRequest, InferResponse, NamedInput, Protocol};
use accel_core::{DType, ErrorKind, Tensor, TensorData};
use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use http::header::CONTENT_TYPE;
use http::{HeaderMap, HeaderValue, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::time::Duration;

/// The KServe v2 routes.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v2", get(server_metadata))
        .route("/v2/health/live", get(live))
        .route("/v2/health/ready", get(ready))
        .route("/v2/models/{model}", get(model_metadata))
        .route("/v2/models/{model}/versions/{version}", get(model_metadata))
        .route("/v2/models/{model}/ready", get(model_ready))
        .route(
            "/v2/models/{model}/versions/{version}/ready",
            get(model_ready),
        )
        .route("/v2/models/{model}/infer", post(infer))
        .route("/v2/models/{model}/versions/{version}/infer", post(infer))
}

async fn server_metadata() -> Response {
    json_ok(&json!({
        "name": "accel",
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": ["binary_tensor_data"],
    }))
}

async fn live() -> Response {
    json_ok(&json!({ "live": true }))
}

async fn ready(State(st): State<AppState>) -> Response {
    let ready = st.core.is_ready();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json_response(status, json!({ "ready": ready }).to_string().into_bytes())
}

async fn model_ready(State(st): State<AppState>, path: ModelPath) -> Result<Response, HttpError> {
    let service = st.core.route(&path.target()?)?;
    let ready = st.core.is_ready();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({ "name": service.name, "ready": ready });
    Ok(json_response(status, body.to_string().into_bytes()))
}

async fn model_metadata(
    State(st): State<AppState>,
    path: ModelPath,
    headers: HeaderMap,
) -> Result<Response, HttpError> {
    let service = st
        .core
        .authorize(&path.target()?, api_key(&headers).as_ref())?;
    let tensor = |t: meta::TensorDesc| json!({ "name": t.name, "datatype": datatype(t.dtype), "shape": t.shape });
    Ok(json_ok(&json!({
        "name": service.name,
        "versions": [service.version.to_string()],
        "platform": meta::platform(&service),
        "inputs": [tensor(meta::input(&service))],
        "outputs": meta::outputs(&service).into_iter().map(tensor).collect::<Vec<_>>(),
    })))
}

async fn infer(
    State(st): State<AppState>,
    path: ModelPath,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, HttpError> {
    let body = read_body(body, st.limits.max_body_bytes).await?;
    identity_encoding(&headers)?;
    let target = path.target()?;
    let header_timeout = timeout(&headers)?;
    let (json_part, binary_part) = binary::split_body(&body, binary::header_length(&headers)?)?;
    let parsed = parse_request(json_part, binary_part)?;
    let request = InferRequest {
        protocol: Protocol::KserveHttp,
        target,
        api_key: api_key(&headers),
        inputs: parsed.inputs,
        output_filter: parsed.outputs.iter().map(|o| o.name.clone()).collect(),
        timeout: match (header_timeout, parsed.timeout) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        },
    };
    let answer = st.core.infer(request).await?;
    let (json_part, binary_part) = write_response(
        &answer,
        parsed.id.as_deref(),
        &parsed.outputs,
        parsed.binary_output,
    );
    if binary_part.is_empty() {
        return Ok(with_server_timing(
            json_response(StatusCode::OK, json_part),
            &answer,
        ));
    }
    let header_len = HeaderValue::from(json_part.len());
    let mut body = json_part;
    body.extend_from_slice(&binary_part);
    let mut resp = (StatusCode::OK, body).into_response();
    let h = resp.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(binary::HEADER_LENGTH, header_len);
    Ok(with_server_timing(resp, &answer))
}

// ---------------------------------------------------------------- datatypes

/// How an input's elements are written on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WireType {
    Raw(RawType),
    Bytes,
}

fn wire_type(datatype: &str, input: &str) -> Result<WireType, ServeError> {
    Ok(match datatype {
        "BOOL" => WireType::Raw(RawType::Bool),
        "UINT8" => WireType::Raw(RawType::U8),
        "INT8" => WireType::Raw(RawType::I8),
        "INT32" => WireType::Raw(RawType::I32),
        "INT64" => WireType::Raw(RawType::I64),
        "FP32" => WireType::Raw(RawType::F32),
        "BYTES" => WireType::Bytes,
        other => {
            return Err(ServeError::invalid(format!(
                "input {input:?}: unsupported datatype {other:?} (supported: BOOL, UINT8, INT8, INT32, INT64, FP32, BYTES)"
            )))
        }
    })
}

/// The KServe datatype of an element type.
pub(crate) fn datatype(dtype: DType) -> &'static str {
    match dtype {
        DType::F32 => "FP32",
        DType::I64 => "INT64",
        DType::I32 => "INT32",
        DType::U8 => "UINT8",
        DType::I8 => "INT8",
        DType::String => "BYTES",
        _ => "BYTES",
    }
}

// ---------------------------------------------------------------- requests

#[derive(Deserialize)]
struct RequestBody {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    parameters: Option<Map<String, Value>>,
    inputs: Vec<InputBody>,
    #[serde(default)]
    outputs: Option<Vec<OutputBody>>,
}

#[derive(Deserialize)]
struct InputBody {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    #[serde(default)]
    parameters: Option<Map<String, Value>>,
    #[serde(default)]
    data: Option<Value>,
}

#[derive(Deserialize)]
struct OutputBody {
    name: String,
    #[serde(default)]
    parameters: Option<Map<String, Value>>,
}

/// An output the client asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RequestedOutput {
    pub name: String,
    /// `parameters.binary_data`, when given.
    pub binary: Option<bool>,
}

/// A parsed inference request.
#[derive(Debug)]
pub(crate) struct Parsed {
    pub id: Option<String>,
    pub inputs: Vec<NamedInput>,
    pub outputs: Vec<RequestedOutput>,
    /// `parameters.binary_data_output`: the default for outputs.
    pub binary_output: bool,
    /// `parameters.timeout`, in microseconds on the wire.
    pub timeout: Option<Duration>,
}

fn param<'a>(params: &'a Option<Map<String, Value>>, key: &str) -> Option<&'a Value> {
    params.as_ref().and_then(|p| p.get(key))
}

fn bool_param(
    params: &Option<Map<String, Value>>,
    key: &str,
    owner: &str,
) -> Result<Option<bool>, ServeError> {
    param(params, key)
        .map(|v| {
            v.as_bool().ok_or_else(|| {
                ServeError::invalid(format!(
                    "{owner}: parameter {key:?} must be true or false, got {v}"
                ))
            })
        })
        .transpose()
}

fn unsupported_params(params: &Option<Map<String, Value>>, owner: &str) -> Result<(), ServeError> {
    for key in ["shared_memory_region", "classification"] {
        if param(params, key).is_some() {
            return Err(ServeError::new(
                ErrorKind::Unimplemented,
                format!("{owner}: parameter {key:?} is not supported by this server"),
            ));
        }
    }
    Ok(())
}

/// Parses the JSON part and, for inputs with `binary_data_size`, the binary
/// part after it.
pub(crate) fn parse_request(json_part: &[u8], binary_part: &[u8]) -> Result<Parsed, ServeError> {
    let body: RequestBody = serde_json::from_slice(json_part)
        .map_err(|e| ServeError::invalid(format!("malformed KServe inference request: {e}")))?;
    let binary_output =
        bool_param(&body.parameters, "binary_data_output", "request")?.unwrap_or(false);
    let timeout = param(&body.parameters, "timeout")
        .map(|v| {
            v.as_u64().map(Duration::from_micros).ok_or_else(|| {
                ServeError::invalid(format!(
                    "parameter \"timeout\" must be microseconds (a whole number), got {v}"
                ))
            })
        })
        .transpose()?;
    let mut reader = BinaryReader::new(binary_part);
    let inputs = body
        .inputs
        .into_iter()
        .map(|input| parse_input(input, &mut reader))
        .collect::<Result<Vec<_>, _>>()?;
    if reader.remaining() > 0 {
        return Err(ServeError::invalid(format!(
            "{} bytes of binary data follow the inputs' binary_data_size",
            reader.remaining()
        )));
    }
    let outputs = body
        .outputs
        .unwrap_or_default()
        .into_iter()
        .map(|o| {
            let owner = format!("output {:?}", o.name);
            unsupported_params(&o.parameters, &owner)?;
            let binary = bool_param(&o.parameters, "binary_data", &owner)?;
            Ok(RequestedOutput {
                name: o.name,
                binary,
            })
        })
        .collect::<Result<Vec<_>, ServeError>>()?;
    Ok(Parsed {
        id: body.id,
        inputs,
        outputs,
        binary_output,
        timeout,
    })
}

fn parse_input(input: InputBody, reader: &mut BinaryReader<'_>) -> Result<NamedInput, ServeError> {
    let name = input.name;
    let owner = format!("input {name:?}");
    unsupported_params(&input.parameters, &owner)?;
    let ty = wire_type(&input.datatype, &name)?;
    let shape = input
        .shape
        .iter()
        .map(|&d| usize::try_from(d))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| {
            ServeError::invalid(format!(
                "{owner}: shape {:?} has a negative dimension",
                input.shape
            ))
        })?;
    let binary_size = param(&input.parameters, "binary_data_size")
        .map(|v| {
            v.as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| {
                    ServeError::invalid(format!(
                        "{owner}: binary_data_size must be a byte count, got {v}"
                    ))
                })
        })
        .transpose()?;
    let bad = |m: String| ServeError::invalid(format!("{owner}: {m}"));
    let data = match (binary_size, &input.data) {
        (Some(_), Some(_)) => return Err(bad("has both \"data\" and binary_data_size".into())),
        (None, None) => return Err(bad("has no \"data\" (and no binary_data_size)".into())),
        (Some(n), None) => {
            let raw = reader.take(n, &name)?;
            match ty {
                WireType::Bytes => {
                    TensorData::String(binary::read_bytes_elements(raw).map_err(bad)?)
                }
                WireType::Raw(t) => binary::read_raw(t, raw).map_err(bad)?,
            }
        }
        (None, Some(data)) => json_data(ty, &flatten(data)).map_err(bad)?,
    };
    let tensor = Tensor::new(shape, data).map_err(|e| bad(e.to_string()))?;
    Ok(NamedInput { name, tensor })
}

fn json_numbers<T>(
    leaves: &[&Value],
    what: &str,
    f: impl Fn(&Value) -> Option<T>,
) -> Result<Vec<T>, String> {
    leaves
        .iter()
        .enumerate()
        .map(|(i, v)| f(v).ok_or_else(|| format!("element {i} ({v}) is not {what}")))
        .collect()
}

fn int<T: TryFrom<i64>>(v: &Value) -> Option<T> {
    v.as_i64().and_then(|x| T::try_from(x).ok())
}

/// Elements given in JSON: numbers, booleans, or for BYTES base64 strings
/// or `{"b64": ...}` objects.
fn json_data(ty: WireType, leaves: &[&Value]) -> Result<TensorData, String> {
    Ok(match ty {
        WireType::Raw(RawType::Bool) => TensorData::U8(json_numbers(leaves, "a boolean", |v| v.as_bool().map(u8::from))?),
        WireType::Raw(RawType::U8) => TensorData::U8(json_numbers(leaves, "a UINT8", int)?),
        WireType::Raw(RawType::I8) => TensorData::I8(json_numbers(leaves, "an INT8", int)?),
        WireType::Raw(RawType::I32) => TensorData::I32(json_numbers(leaves, "an INT32", int)?),
        WireType::Raw(RawType::I64) => TensorData::I64(json_numbers(leaves, "an INT64", Value::as_i64)?),
        WireType::Raw(RawType::F32) => {
            TensorData::F32(json_numbers(leaves, "a number", |v| v.as_f64().map(|x| x as f32))?)
        }
        WireType::Bytes => TensorData::String(
            leaves
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    let text = match v {
                        Value::String(s) => s.as_str(),
                        other => b64_text(other).ok_or_else(|| {
                            format!("BYTES element {i} must be a base64 string or a {{\"b64\": ...}} object")
                        })?,
                    };
                    decode_b64(text).map_err(|e| format!("BYTES element {i} is not valid base64 ({e})"))
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
    })
}

// ---------------------------------------------------------------- responses

#[derive(Serialize)]
struct ResponseBody<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    model_name: &'a str,
    model_version: String,
    outputs: Vec<OutputTensor<'a>>,
}

#[derive(Serialize)]
struct OutputTensor<'a> {
    name: &'a str,
    datatype: &'static str,
    shape: &'a [usize],
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<BinaryParameters>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<Flat<'a>>,
}

#[derive(Serialize)]
struct BinaryParameters {
    binary_data_size: usize,
}

/// The JSON part and the binary part (empty when every output is JSON).
/// Outputs are named as the client asked for them, or by the model's own
/// names when it asked for none.
pub(crate) fn write_response(
    answer: &InferResponse,
    id: Option<&str>,
    requested: &[RequestedOutput],
    binary_default: bool,
) -> (Vec<u8>, Vec<u8>) {
    let mut binary_part = Vec::new();
    let outputs = answer
        .outputs
        .iter()
        .map(|(label, out)| {
            let name = if requested.is_empty() {
                out.name.as_str()
            } else {
                label.as_str()
            };
            let binary = requested
                .iter()
                .find(|r| &r.name == label)
                .and_then(|r| r.binary)
                .unwrap_or(binary_default);
            let t = &out.tensor;
            let mut o = OutputTensor {
                name,
                datatype: datatype(t.dtype()),
                shape: t.shape(),
                parameters: None,
                data: None,
            };
            if binary {
                let raw = binary::write_raw(t.data());
                o.parameters = Some(BinaryParameters {
                    binary_data_size: raw.len(),
                });
                binary_part.extend_from_slice(&raw);
            } else {
                o.data = Some(Flat {
                    data: t.data(),
                    bytes: BytesAs::Base64,
                });
            }
            o
        })
        .collect();
    let body = ResponseBody {
        id,
        model_name: &answer.service,
        model_version: answer.version.to_string(),
        outputs,
    };
    (
        serde_json::to_vec(&body).expect("JSON serializes"),
        binary_part,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use accel_runtime::pipeline::NamedOutput;
    use std::time::Instant;

    #[test]
    fn json_bytes_are_base64_strings_or_b64_objects() {
        let body = json!({"inputs": [{"name": "images", "shape": [2], "datatype": "BYTES",
            "data": ["aGk=", {"b64": "eW8="}]}]});
        let p = parse_request(body.to_string().as_bytes(), &[]).unwrap();
        assert_eq!(p.inputs[0].name, "images");
        assert_eq!(p.inputs[0].tensor.shape(), &[2]);
        assert_eq!(
            p.inputs[0].tensor.data(),
            &TensorData::String(vec![b"hi".to_vec(), b"yo".to_vec()])
        );
        assert!(p.outputs.is_empty() && !p.binary_output && p.timeout.is_none());

        let body = json!({"inputs": [{"name": "images", "shape": [1], "datatype": "BYTES", "data": ["%%%"]}]});
        let e = parse_request(body.to_string().as_bytes(), &[]).unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidArgument);
        assert!(
            e.message.contains("\"images\"") && e.message.contains("base64"),
            "{}",
            e.message
        );
    }

    #[test]
    fn nested_numeric_data_is_flattened_with_the_given_shape() {
        let body = json!({"inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [[1, 2.5], [3, 4]]},
            {"name": "m", "shape": [2], "datatype": "BOOL", "data": [true, false]}]});
        let p = parse_request(body.to_string().as_bytes(), &[]).unwrap();
        assert_eq!(
            p.inputs[0].tensor,
            Tensor::from_f32(vec![2, 2], vec![1.0, 2.5, 3.0, 4.0]).unwrap()
        );
        assert_eq!(p.inputs[1].tensor.data(), &TensorData::U8(vec![1, 0]));
        let count =
            json!({"inputs": [{"name": "x", "shape": [3], "datatype": "INT64", "data": [1, 2]}]});
        assert!(parse_request(count.to_string().as_bytes(), &[])
            .unwrap_err()
            .message
            .contains("needs 3 elements"));
        let range =
            json!({"inputs": [{"name": "x", "shape": [1], "datatype": "UINT8", "data": [300]}]});
        assert!(parse_request(range.to_string().as_bytes(), &[])
            .unwrap_err()
            .message
            .contains("UINT8"));
        let fp16 =
            json!({"inputs": [{"name": "x", "shape": [1], "datatype": "FP16", "data": [1]}]});
        assert!(parse_request(fp16.to_string().as_bytes(), &[])
            .unwrap_err()
            .message
            .contains("unsupported datatype"));
    }

    /// What tritonclient.http sends for one binary BYTES input and no
    /// requested outputs.
    #[test]
    fn tritonclient_binary_request() {
        let header = json!({"inputs": [{"name": "input", "shape": [2], "datatype": "BYTES",
            "parameters": {"binary_data_size": 17}}], "parameters": {"binary_data_output": true, "timeout": 2500}});
        let mut binary = binary::write_bytes_elements(&[b"jpeg".to_vec(), b"png!!".to_vec()]);
        assert_eq!(binary.len(), 17);
        let p = parse_request(header.to_string().as_bytes(), &binary).unwrap();
        assert_eq!(
            p.inputs[0].tensor.data(),
            &TensorData::String(vec![b"jpeg".to_vec(), b"png!!".to_vec()])
        );
        assert!(p.binary_output);
        assert_eq!(p.timeout, Some(Duration::from_micros(2500)));
        binary.push(0);
        let e = parse_request(header.to_string().as_bytes(), &binary).unwrap_err();
        assert!(
            e.message.contains("1 bytes of binary data"),
            "{}",
            e.message
        );
        let fp = json!({"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "parameters": {"binary_data_size": 8}}],
            "outputs": [{"name": "y", "parameters": {"binary_data": false}}]});
        let raw: Vec<u8> = [1.5f32, -1.0]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        let p = parse_request(fp.to_string().as_bytes(), &raw).unwrap();
        assert_eq!(
            p.inputs[0].tensor,
            Tensor::from_f32(vec![1, 2], vec![1.5, -1.0]).unwrap()
        );
        assert_eq!(
            p.outputs,
            vec![RequestedOutput {
                name: "y".into(),
                binary: Some(false)
            }]
        );
    }

    fn answer(label: &str) -> InferResponse {
        InferResponse {
            service: "svc".into(),
            version: 3,
            outputs: vec![(
                label.into(),
                NamedOutput {
                    name: "probs".into(),
                    aliases: vec!["softmax:0".into()],
                    tensor: Tensor::from_f32(vec![1, 2], vec![0.25, 0.75]).unwrap(),
                },
            )],
            arrived: Instant::now(),
            times: Default::default(),
        }
    }

    #[test]
    fn json_response_uses_model_names_when_no_output_was_asked() {
        let (j, b) = write_response(&answer("softmax:0"), Some("r1"), &[], false);
        assert!(b.is_empty());
        let v: Value = serde_json::from_slice(&j).unwrap();
        assert_eq!(
            v,
            json!({"id": "r1", "model_name": "svc", "model_version": "3", "outputs": [
                {"name": "probs", "datatype": "FP32", "shape": [1, 2], "data": [0.25, 0.75]}]})
        );
        let asked = [RequestedOutput {
            name: "softmax:0".into(),
            binary: None,
        }];
        let (j, _) = write_response(&answer("softmax:0"), None, &asked, false);
        let v: Value = serde_json::from_slice(&j).unwrap();
        assert_eq!(v["outputs"][0]["name"], "softmax:0");
        assert!(v.get("id").is_none());
    }

    #[test]
    fn binary_response_as_tritonclient_reads_it() {
        let (j, b) = write_response(&answer("softmax:0"), None, &[], true);
        let v: Value = serde_json::from_slice(&j).unwrap();
        let out = &v["outputs"][0];
        assert_eq!(out["parameters"]["binary_data_size"], 8);
        assert!(out.get("data").is_none());
        assert_eq!(
            b,
            [0.25f32, 0.75]
                .iter()
                .flat_map(|x| x.to_le_bytes())
                .collect::<Vec<_>>()
        );
        // A per-output `binary_data: false` overrides the request default.
        let asked = [RequestedOutput {
            name: "probs".into(),
            binary: Some(false),
        }];
        let (j, b) = write_response(&answer("probs"), None, &asked, true);
        assert!(b.is_empty());
        assert!(String::from_utf8(j)
            .unwrap()
            .contains("\"data\":[0.25,0.75]"));
    }
}

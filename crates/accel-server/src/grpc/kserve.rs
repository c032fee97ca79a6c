//! KServe v2 / Open Inference Protocol over gRPC
//! (`inference.GRPCInferenceService`), as Triton's clients call it.

use super::metadata;
use super::tensor::{batch_dims, from_kserve_dtype, kserve_dtype};
use crate::core::{RequestCore, Service};
use crate::error::ServeError;
use crate::request::{InferRequest, NamedInput, Protocol, Target};
use accel_core::{DType, Tensor, TensorData};
use accel_proto::inference::grpc_inference_service_server::GrpcInferenceService;
use accel_proto::inference::{
    model_infer_response::InferOutputTensor, model_metadata_response::TensorMetadata,
    InferTensorContents, ModelInferRequest, ModelInferResponse, ModelMetadataRequest,
    ModelMetadataResponse, ModelReadyRequest, ModelReadyResponse, ServerLiveRequest,
    ServerLiveResponse, ServerMetadataRequest, ServerMetadataResponse, ServerReadyRequest,
    ServerReadyResponse,
};
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// The `GRPCInferenceService` implementation.
#[derive(Debug, Clone)]
pub struct KserveService {
    core: Arc<RequestCore>,
}

impl KserveService {
    /// A handler over `core`.
    pub fn new(core: Arc<RequestCore>) -> Self {
        KserveService { core }
    }
}

pub(crate) fn target(name: &str, version: &str) -> Result<Target, ServeError> {
    let version = if version.is_empty() {
        None
    } else {
        Some(
            version
                .parse::<u64>()
                .map_err(|_| ServeError::not_found(format!("no model version {version:?}")))?,
        )
    };
    Ok(Target {
        name: Some(name.to_string()),
        version,
        route: None,
    })
}

/// Name, KServe datatype and shape (`-1` where dynamic) of one tensor.
pub type TensorMeta = (String, &'static str, Vec<i64>);

/// The engine's KServe platform name.
pub fn platform(service: &Service) -> String {
    format!("{}_onnx", service.pipeline.plan().engine())
}

/// Input and output metadata of a service, as KServe describes tensors.
pub fn tensor_metadata(service: &Service) -> (Vec<TensorMeta>, Vec<TensorMeta>) {
    let plan = service.pipeline.plan();
    let spec = service.pipeline.spec();
    let input = if service.takes_images() {
        (spec.input_name.clone(), "BYTES", vec![-1])
    } else {
        let i = &plan.inputs()[0];
        (
            spec.input_name.clone(),
            kserve_dtype(i.dtype),
            batch_dims(&i.shape),
        )
    };
    let outputs = service
        .pipeline
        .output_infos()
        .iter()
        .map(|o| (o.name.clone(), kserve_dtype(o.dtype), batch_dims(&o.shape)))
        .collect();
    (vec![input], outputs)
}

/// Splits Triton's raw BYTES encoding: each element is a 4-byte
/// little-endian length followed by that many bytes.
pub fn split_raw_bytes(name: &str, raw: &[u8]) -> Result<Vec<Vec<u8>>, ServeError> {
    let mut out = Vec::new();
    let mut rest = raw;
    while !rest.is_empty() {
        let (len, tail) = rest.split_first_chunk::<4>().ok_or_else(|| {
            ServeError::invalid(format!("input {name:?}: truncated BYTES element length"))
        })?;
        let len = u32::from_le_bytes(*len) as usize;
        if tail.len() < len {
            return Err(ServeError::invalid(format!(
                "input {name:?}: BYTES element claims {len} bytes, {} remain",
                tail.len()
            )));
        }
        out.push(tail[..len].to_vec());
        rest = &tail[len..];
    }
    Ok(out)
}

fn le<T, const N: usize>(
    name: &str,
    raw: &[u8],
    f: fn([u8; N]) -> T,
) -> Result<Vec<T>, ServeError> {
    if !raw.len().is_multiple_of(N) {
        return Err(ServeError::invalid(format!(
            "input {name:?}: raw contents of {} bytes is not a multiple of {N}",
            raw.len()
        )));
    }
    Ok(raw
        .chunks_exact(N)
        .map(|c| f(c.try_into().expect("chunk")))
        .collect())
}

fn input_tensor(
    name: &str,
    datatype: &str,
    shape: &[i64],
    contents: Option<&InferTensorContents>,
    raw: Option<&Vec<u8>>,
) -> Result<Tensor, ServeError> {
    let dtype = from_kserve_dtype(datatype)?;
    let shape: Vec<usize> = shape
        .iter()
        .map(|&d| {
            usize::try_from(d).map_err(|_| {
                ServeError::invalid(format!("input {name:?} has a negative dimension {d}"))
            })
        })
        .collect::<Result<_, _>>()?;
    let data = match (raw, dtype) {
        (Some(raw), DType::String) => TensorData::String(split_raw_bytes(name, raw)?),
        (Some(raw), DType::F32) => TensorData::F32(le(name, raw, f32::from_le_bytes)?),
        (Some(raw), DType::I64) => TensorData::I64(le(name, raw, i64::from_le_bytes)?),
        (Some(raw), DType::I32) => TensorData::I32(le(name, raw, i32::from_le_bytes)?),
        (Some(raw), DType::U8) => TensorData::U8(raw.clone()),
        (Some(raw), _) => TensorData::I8(raw.iter().map(|&b| b as i8).collect()),
        (None, _) => {
            let c = contents.cloned().unwrap_or_default();
            match dtype {
                DType::String => TensorData::String(c.bytes_contents),
                DType::F32 => TensorData::F32(c.fp32_contents),
                DType::I64 => TensorData::I64(c.int64_contents),
                DType::I32 => TensorData::I32(c.int_contents),
                DType::U8 => TensorData::U8(c.uint_contents.into_iter().map(|v| v as u8).collect()),
                _ => TensorData::I8(c.int_contents.into_iter().map(|v| v as i8).collect()),
            }
        }
    };
    Tensor::new(shape, data).map_err(|e| ServeError::invalid(format!("input {name:?}: {e}")))
}

/// A ModelInfer request's inputs as Accel tensors (typed contents or
/// `raw_input_contents`, one per input).
pub(crate) fn infer_inputs(r: &ModelInferRequest) -> Result<Vec<NamedInput>, ServeError> {
    if !r.raw_input_contents.is_empty() && r.raw_input_contents.len() != r.inputs.len() {
        return Err(ServeError::invalid(format!(
            "{} raw_input_contents for {} inputs",
            r.raw_input_contents.len(),
            r.inputs.len()
        )));
    }
    r.inputs
        .iter()
        .enumerate()
        .map(|(i, inp)| {
            Ok(NamedInput {
                name: inp.name.clone(),
                tensor: input_tensor(
                    &inp.name,
                    &inp.datatype,
                    &inp.shape,
                    inp.contents.as_ref(),
                    r.raw_input_contents.get(i),
                )?,
            })
        })
        .collect()
}

/// Raw little-endian bytes of an output, as Triton returns outputs.
pub fn raw_output(t: &Tensor) -> Vec<u8> {
    match t.data() {
        TensorData::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        TensorData::I64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        TensorData::I32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        TensorData::U8(v) => v.clone(),
        TensorData::I8(v) => v.iter().map(|&x| x as u8).collect(),
        TensorData::String(v) => v
            .iter()
            .flat_map(|s| {
                (s.len() as u32)
                    .to_le_bytes()
                    .into_iter()
                    .chain(s.iter().copied())
            })
            .collect(),
    }
}

#[tonic::async_trait]
impl GrpcInferenceService for KserveService {
    async fn server_live(
        &self,
        _: Request<ServerLiveRequest>,
    ) -> Result<Response<ServerLiveResponse>, Status> {
        Ok(Response::new(ServerLiveResponse { live: true }))
    }

    async fn server_ready(
        &self,
        _: Request<ServerReadyRequest>,
    ) -> Result<Response<ServerReadyResponse>, Status> {
        Ok(Response::new(ServerReadyResponse {
            ready: self.core.is_ready(),
        }))
    }

    async fn model_ready(
        &self,
        request: Request<ModelReadyRequest>,
    ) -> Result<Response<ModelReadyResponse>, Status> {
        let r = request.into_inner();
        self.core.route(&target(&r.name, &r.version)?)?;
        Ok(Response::new(ModelReadyResponse {
            ready: self.core.is_ready(),
        }))
    }

    async fn server_metadata(
        &self,
        _: Request<ServerMetadataRequest>,
    ) -> Result<Response<ServerMetadataResponse>, Status> {
        Ok(Response::new(ServerMetadataResponse {
            name: "accel".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            extensions: vec![],
        }))
    }

    async fn model_metadata(
        &self,
        request: Request<ModelMetadataRequest>,
    ) -> Result<Response<ModelMetadataResponse>, Status> {
        let key = metadata::api_key(request.metadata());
        let r = request.into_inner();
        let service = self
            .core
            .authorize(&target(&r.name, &r.version)?, key.as_ref())?;
        let (inputs, outputs) = tensor_metadata(&service);
        let meta = |v: Vec<TensorMeta>| {
            v.into_iter()
                .map(|(name, datatype, shape)| TensorMetadata {
                    name,
                    datatype: datatype.into(),
                    shape,
                })
                .collect()
        };
        Ok(Response::new(ModelMetadataResponse {
            name: service.name.clone(),
            versions: vec![service.version.to_string()],
            platform: platform(&service),
            inputs: meta(inputs),
            outputs: meta(outputs),
        }))
    }

    async fn model_infer(
        &self,
        request: Request<ModelInferRequest>,
    ) -> Result<Response<ModelInferResponse>, Status> {
        let md = request.metadata().clone();
        let r = request.into_inner();
        let run = async {
            let inputs = infer_inputs(&r)?;
            self.core
                .infer(InferRequest {
                    protocol: Protocol::KserveGrpc,
                    target: target(&r.model_name, &r.model_version)?,
                    api_key: metadata::api_key(&md),
                    inputs,
                    output_filter: r.outputs.iter().map(|o| o.name.clone()).collect(),
                    timeout: metadata::timeout(&md),
                })
                .await
        };
        let answer = run.await?;
        let explicit = !r.outputs.is_empty();
        let mut outputs = Vec::new();
        let mut raw = Vec::new();
        for (label, o) in &answer.outputs {
            outputs.push(InferOutputTensor {
                name: if explicit {
                    label.clone()
                } else {
                    o.name.clone()
                },
                datatype: kserve_dtype(o.tensor.dtype()).into(),
                shape: o.tensor.shape().iter().map(|&d| d as i64).collect(),
                ..Default::default()
            });
            raw.push(raw_output(&o.tensor));
        }
        let resp = Response::new(ModelInferResponse {
            model_name: answer.service.clone(),
            model_version: answer.version.to_string(),
            id: r.id.clone(),
            outputs,
            raw_output_contents: raw,
            ..Default::default()
        });
        Ok(metadata::with_server_timing(resp, &answer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_bytes_round_trip_and_truncation_is_refused() {
        let t = Tensor::new(
            vec![2],
            TensorData::String(vec![b"ab".to_vec(), b"".to_vec()]),
        )
        .unwrap();
        let raw = raw_output(&t);
        assert_eq!(raw, [2, 0, 0, 0, b'a', b'b', 0, 0, 0, 0]);
        assert_eq!(
            split_raw_bytes("x", &raw).unwrap(),
            vec![b"ab".to_vec(), vec![]]
        );
        assert!(split_raw_bytes("x", &raw[..5])
            .unwrap_err()
            .message
            .contains("claims 2 bytes"));
        assert!(split_raw_bytes("x", &[1, 0]).is_err());
    }
}

//! The gRPC protocols: TF Serving `Predict` (shaped as Azure's
//! `PredictionClient` sends it) and KServe v2 `ModelInfer` with a BYTES
//! input in `raw_input_contents`. Every worker shares the client's channel.

use super::tally::{Answer, Outcome};
use super::{answer, BenchPlan, BenchProtocol, DEFAULT_KSERVE_INPUT};
use crate::{Client, ClientError};
use accel_proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use accel_proto::inference::{model_infer_request::InferInputTensor, ModelInferRequest};
use accel_proto::tensorflow::serving::prediction_service_client::PredictionServiceClient;
use accel_proto::tensorflow::serving::PredictRequest;
use accel_proto::tensorflow::{tensor_shape_proto::Dim, DataType, TensorProto, TensorShapeProto};
use std::sync::Arc;
use std::time::Duration;
use tonic::metadata::MetadataMap;
use tonic::transport::Channel;

/// Answers can be large (e.g. detection outputs); accept up to this.
const MAX_ANSWER_BYTES: usize = 64 << 20;

#[derive(Clone)]
enum Stub {
    Tfs(PredictionServiceClient<Channel>, Arc<Vec<PredictRequest>>),
    Kserve(
        GrpcInferenceServiceClient<Channel>,
        Arc<Vec<ModelInferRequest>>,
    ),
}

/// The prepared requests and the metadata every call carries.
#[derive(Clone)]
pub(super) struct GrpcTarget {
    stub: Stub,
    metadata: MetadataMap,
    timeout: Option<Duration>,
    /// Read each answer's top-1.
    check: bool,
}

/// One worker (a cheap handle on the shared channel).
pub(super) struct GrpcWorker(GrpcTarget);

impl GrpcTarget {
    pub(super) fn new(
        client: &Client,
        plan: &BenchPlan,
        check: bool,
    ) -> Result<GrpcTarget, ClientError> {
        let channel = client.channel();
        let (stub, route) = match plan.protocol {
            BenchProtocol::TfsGrpc => {
                let input = plan.input.as_deref().unwrap_or("images");
                let requests = plan.images.iter().map(|image| tfs_request(input, image));
                (
                    Stub::Tfs(
                        PredictionServiceClient::new(channel)
                            .max_decoding_message_size(MAX_ANSWER_BYTES),
                        Arc::new(requests.collect()),
                    ),
                    true,
                )
            }
            BenchProtocol::KserveGrpc => {
                let input = plan.input.as_deref().unwrap_or(DEFAULT_KSERVE_INPUT);
                let model = client.service();
                let requests = plan
                    .images
                    .iter()
                    .map(|image| kserve_request(model, input, image));
                (
                    Stub::Kserve(
                        GrpcInferenceServiceClient::new(channel)
                            .max_decoding_message_size(MAX_ANSWER_BYTES),
                        Arc::new(requests.collect()),
                    ),
                    false,
                )
            }
            p => return Err(ClientError::Config(format!("{p:?} is not a gRPC protocol"))),
        };
        Ok(GrpcTarget {
            stub,
            metadata: client.metadata(route)?,
            timeout: client.options().timeout,
            check,
        })
    }

    pub(super) fn worker(&self) -> GrpcWorker {
        GrpcWorker(self.clone())
    }
}

impl GrpcWorker {
    pub(super) async fn send(&mut self, n: usize) -> Outcome {
        let GrpcTarget {
            stub,
            metadata,
            timeout,
            check,
        } = &mut self.0;
        let answer = match stub {
            Stub::Tfs(stub, requests) => {
                let req = request(requests[n % requests.len()].clone(), metadata, *timeout);
                stub.predict(req).await.map(|r| {
                    let top1 = if *check {
                        answer::tfs_top1(r.get_ref())
                    } else {
                        None
                    };
                    (server_timing(r.metadata()), top1)
                })
            }
            Stub::Kserve(stub, requests) => {
                let req = request(requests[n % requests.len()].clone(), metadata, *timeout);
                stub.model_infer(req).await.map(|r| {
                    let top1 = if *check {
                        answer::kserve_top1(r.get_ref())
                    } else {
                        None
                    };
                    (server_timing(r.metadata()), top1)
                })
            }
        };
        match answer {
            Ok((server_timing, top1)) => Ok(Answer {
                server_timing,
                top1,
            }),
            Err(status) => Err(format!("{:?}", status.code())),
        }
    }
}

fn server_timing(md: &MetadataMap) -> Option<String> {
    md.get("server-timing")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

fn request<T>(message: T, metadata: &MetadataMap, timeout: Option<Duration>) -> tonic::Request<T> {
    let mut req = tonic::Request::new(message);
    *req.metadata_mut() = metadata.clone();
    if let Some(d) = timeout {
        req.set_timeout(d);
    }
    req
}

fn tfs_request(input: &str, image: &[u8]) -> PredictRequest {
    let tensor = TensorProto {
        dtype: DataType::DtString as i32,
        tensor_shape: Some(TensorShapeProto {
            dim: vec![Dim {
                size: 1,
                name: String::new(),
            }],
            unknown_rank: false,
        }),
        string_val: vec![image.to_vec()],
        ..Default::default()
    };
    PredictRequest {
        inputs: [(input.to_string(), tensor)].into_iter().collect(),
        ..Default::default()
    }
}

fn kserve_request(model: &str, input: &str, image: &[u8]) -> ModelInferRequest {
    let mut raw = (image.len() as u32).to_le_bytes().to_vec();
    raw.extend_from_slice(image);
    ModelInferRequest {
        model_name: model.to_string(),
        inputs: vec![InferInputTensor {
            name: input.to_string(),
            datatype: "BYTES".into(),
            shape: vec![1],
            ..Default::default()
        }],
        raw_input_contents: vec![raw],
        ..Default::default()
    }
}

//! TensorFlow Serving's `tensorflow.serving.PredictionService`, as
//! TensorFlow Serving clients and Azure ML's `PredictionClient` call it.

use super::metadata;
use super::tensor::{batch_dims, from_proto, shape_proto, tf_dtype, to_proto};
use crate::core::{RequestCore, Service};
use crate::error::ServeError;
use crate::request::{InferRequest, NamedInput, Protocol, Target};
use accel_core::DType;
use accel_proto::tensorflow::serving::prediction_service_server::PredictionService;
use accel_proto::tensorflow::serving::{
    model_spec::VersionChoice, ClassificationRequest, ClassificationResponse,
    GetModelMetadataRequest, GetModelMetadataResponse, ModelSpec, MultiInferenceRequest,
    MultiInferenceResponse, PredictRequest, PredictResponse, RegressionRequest, RegressionResponse,
    SignatureDefMap,
};
use accel_proto::tensorflow::{tensor_info, SignatureDef, TensorInfo};
use prost::Message;
use std::collections::HashMap;
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// The signature every Accel service answers to.
pub const SIGNATURE: &str = "serving_default";
const PREDICT_METHOD: &str = "tensorflow/serving/predict";

/// The `PredictionService` implementation.
#[derive(Debug, Clone)]
pub struct TfsService {
    core: Arc<RequestCore>,
}

impl TfsService {
    /// A handler over `core`.
    pub fn new(core: Arc<RequestCore>) -> Self {
        TfsService { core }
    }
}

pub(crate) fn target(
    spec: Option<&ModelSpec>,
    md: &tonic::metadata::MetadataMap,
) -> Result<Target, ServeError> {
    let mut t = Target {
        route: metadata::route(md),
        ..Target::default()
    };
    if let Some(spec) = spec {
        t.name = Some(spec.name.clone()).filter(|n| !n.is_empty());
        match &spec.version_choice {
            Some(VersionChoice::Version(v)) => {
                t.version = Some(
                    u64::try_from(*v)
                        .map_err(|_| ServeError::invalid("model_spec.version must be positive"))?,
                )
            }
            Some(VersionChoice::VersionLabel(l)) if !l.is_empty() => {
                return Err(ServeError::not_found(format!(
                    "no version labelled {l:?} (Accel services have no labels)"
                )))
            }
            _ => {}
        }
        if !matches!(spec.signature_name.as_str(), "" | SIGNATURE) {
            return Err(ServeError::invalid(format!(
                "unknown signature {:?} (Accel services answer {SIGNATURE:?})",
                spec.signature_name
            )));
        }
    }
    Ok(t)
}

/// A Predict request's inputs as Accel tensors.
pub(crate) fn predict_inputs(req: &PredictRequest) -> Result<Vec<NamedInput>, ServeError> {
    req.inputs
        .iter()
        .map(|(name, p)| {
            Ok(NamedInput {
                name: name.clone(),
                tensor: from_proto(name, p)?,
            })
        })
        .collect()
}

fn model_spec(service: &Service) -> ModelSpec {
    ModelSpec {
        name: service.name.clone(),
        signature_name: SIGNATURE.to_string(),
        version_choice: Some(VersionChoice::Version(i64::from(service.version))),
    }
}

/// The signature of a service, as TensorFlow Serving describes one.
pub fn signature_def(service: &Service) -> SignatureDef {
    let spec = service.pipeline.spec();
    let plan = service.pipeline.plan();
    let info = |name: &str, dtype: DType, dims: Vec<i64>| TensorInfo {
        dtype: tf_dtype(dtype) as i32,
        tensor_shape: Some(shape_proto(&dims)),
        encoding: Some(tensor_info::Encoding::Name(name.to_string())),
    };
    let input_key = spec
        .input_aliases
        .first()
        .unwrap_or(&spec.input_name)
        .clone();
    let input = if service.takes_images() {
        info(&spec.input_name, DType::String, vec![-1])
    } else {
        let i = &plan.inputs()[0];
        info(&spec.input_name, i.dtype, batch_dims(&i.shape))
    };
    let outputs = service
        .pipeline
        .output_infos()
        .iter()
        .map(|o| {
            (
                o.aliases.first().unwrap_or(&o.name).clone(),
                info(&o.name, o.dtype, batch_dims(&o.shape)),
            )
        })
        .collect();
    SignatureDef {
        inputs: HashMap::from([(input_key, input)]),
        outputs,
        method_name: PREDICT_METHOD.to_string(),
        ..Default::default()
    }
}

fn unimplemented(what: &str) -> Status {
    Status::unimplemented(format!(
        "{what} is not implemented by Accel; use Predict (or the KServe v2 ModelInfer)"
    ))
}

#[tonic::async_trait]
impl PredictionService for TfsService {
    async fn classify(
        &self,
        _: Request<ClassificationRequest>,
    ) -> Result<Response<ClassificationResponse>, Status> {
        Err(unimplemented("Classify"))
    }

    async fn regress(
        &self,
        _: Request<RegressionRequest>,
    ) -> Result<Response<RegressionResponse>, Status> {
        Err(unimplemented("Regress"))
    }

    async fn multi_inference(
        &self,
        _: Request<MultiInferenceRequest>,
    ) -> Result<Response<MultiInferenceResponse>, Status> {
        Err(unimplemented("MultiInference"))
    }

    async fn predict(
        &self,
        request: Request<PredictRequest>,
    ) -> Result<Response<PredictResponse>, Status> {
        let md = request.metadata().clone();
        let req = request.into_inner();
        let result = async {
            let inputs = predict_inputs(&req)?;
            let t = target(req.model_spec.as_ref(), &md)?;
            self.core
                .infer(InferRequest {
                    protocol: Protocol::TfsGrpc,
                    target: t,
                    api_key: metadata::api_key(&md),
                    inputs,
                    output_filter: req.output_filter.clone(),
                    timeout: metadata::timeout(&md),
                })
                .await
        };
        let answer = match result.await {
            Ok(a) => a,
            Err(e) => return Err(e.into()),
        };
        let service = self.core.route(&Target {
            name: Some(answer.service.clone()),
            ..Target::default()
        })?;
        let resp = Response::new(PredictResponse {
            outputs: answer
                .outputs
                .iter()
                .map(|(label, o)| (label.clone(), to_proto(&o.tensor)))
                .collect(),
            model_spec: Some(model_spec(&service)),
        });
        Ok(metadata::with_server_timing(resp, &answer))
    }

    async fn get_model_metadata(
        &self,
        request: Request<GetModelMetadataRequest>,
    ) -> Result<Response<GetModelMetadataResponse>, Status> {
        let md = request.metadata().clone();
        let req = request.into_inner();
        if !req.metadata_field.iter().any(|f| f == "signature_def") {
            return Err(Status::invalid_argument(
                "metadata_field must include \"signature_def\" (the only metadata Accel serves)",
            ));
        }
        let service = self.core.authorize(
            &target(req.model_spec.as_ref(), &md)?,
            metadata::api_key(&md).as_ref(),
        )?;
        let map = SignatureDefMap {
            signature_def: HashMap::from([(SIGNATURE.to_string(), signature_def(&service))]),
        };
        let any = prost_types::Any {
            type_url: "type.googleapis.com/tensorflow.serving.SignatureDefMap".into(),
            value: map.encode_to_vec(),
        };
        Ok(Response::new(GetModelMetadataResponse {
            model_spec: Some(model_spec(&service)),
            metadata: HashMap::from([("signature_def".to_string(), any)]),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{core, KEY};
    use accel_proto::tensorflow::TensorProto;

    fn request(timeout: &str) -> Request<PredictRequest> {
        let x = TensorProto {
            dtype: accel_proto::tensorflow::DataType::DtFloat as i32,
            tensor_shape: Some(shape_proto(&[1, 2])),
            float_val: vec![1.0, 2.0],
            ..Default::default()
        };
        let mut r = Request::new(PredictRequest {
            inputs: HashMap::from([("x".to_string(), x)]),
            ..Default::default()
        });
        r.metadata_mut()
            .insert("authorization", format!("Bearer {KEY}").parse().unwrap());
        r.metadata_mut().insert(
            "x-ms-aml-grpc-service-route",
            "/api/v1/service/svc".parse().unwrap(),
        );
        if !timeout.is_empty() {
            r.metadata_mut()
                .insert("grpc-timeout", timeout.parse().unwrap());
        }
        r
    }

    #[tokio::test]
    async fn an_expired_grpc_timeout_is_deadline_exceeded_and_others_answer() {
        let svc = TfsService::new(core(true));
        let err = svc.predict(request("0m")).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::DeadlineExceeded, "{err:?}");
        assert!(err.message().contains("deadline"), "{err:?}");
        let ok = svc.predict(request("10S")).await.unwrap();
        let timing = ok.metadata().get("server-timing").expect("server-timing");
        let names: Vec<&str> = timing
            .to_str()
            .unwrap()
            .split(", ")
            .map(|m| m.split_once(";dur=").unwrap().0)
            .collect();
        assert_eq!(names, ["queue", "preprocess", "infer", "total"]);
        let ok = ok.into_inner();
        assert_eq!(ok.outputs["y:0"].float_val, vec![2.0, 4.0]);
        let ok = svc.predict(request("")).await.unwrap().into_inner();
        assert_eq!(ok.outputs.len(), 1);
    }
}

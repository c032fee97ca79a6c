//! TensorFlow Serving REST: `/v1/models/{m}[/versions/{v}]` status,
//! `.../metadata`, and `...:predict` in the row (`instances`) and columnar
//! (`inputs`) formats.

use super::common::{
    api_key, identity_encoding, json_ok, read_body, target, timeout, AppState, HttpError,
};
use super::meta::{self, TensorDesc};
use super::values::{b64_text, nested, rows_nested, tfs_tensor, BytesAs, Nested};
use crate::error::ServeError;
use crate::request::{InferRequest, NamedInput, Protocol};
use accel_core::{DType, ErrorKind};
use accel_runtime::pipeline::NamedOutput;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use http::{HeaderMap, Method};
use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};
use serde_json::{json, Map, Value};

/// The TF Serving routes (one wildcard: the `:predict` suffix is part of
/// the last segment, which the router cannot match on).
pub(crate) fn routes() -> Router<AppState> {
    Router::new().route("/v1/models/{*rest}", get(on_get).post(on_post))
}

/// What a `/v1/models/...` path asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Action {
    Status,
    Metadata,
    /// `:predict`, `:classify`, ...
    Verb(String),
}

/// A parsed `/v1/models/...` path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TfsPath {
    pub model: String,
    pub version: Option<String>,
    pub action: Action,
}

/// Parses what follows `/v1/models/`.
pub(crate) fn parse_path(rest: &str) -> Result<TfsPath, ServeError> {
    let rest = rest.trim_matches('/');
    let (path, verb) = match rest.rsplit_once(':') {
        Some((p, v)) if !v.contains('/') => (p, Some(v)),
        _ => (rest, None),
    };
    let no_route = || {
        ServeError::not_found(format!(
            "no TF Serving REST route /v1/models/{rest}; use /v1/models/<name>[/versions/<n>][:predict|/metadata]"
        ))
    };
    let segments: Vec<&str> = path.split('/').collect();
    let (model, version, metadata) = match segments.as_slice() {
        [m] => (*m, None, false),
        [m, "metadata"] => (*m, None, true),
        [m, "versions", v] => (*m, Some(*v), false),
        [m, "versions", v, "metadata"] => (*m, Some(*v), true),
        [_, "labels", ..] => {
            return Err(ServeError::new(
                ErrorKind::Unimplemented,
                "version labels are not supported; use /v1/models/<name>[/versions/<n>]",
            ))
        }
        _ => return Err(no_route()),
    };
    if model.is_empty() || version == Some("") {
        return Err(no_route());
    }
    let action = match (verb, metadata) {
        (None, false) => Action::Status,
        (None, true) => Action::Metadata,
        (Some(v), false) => Action::Verb(v.to_string()),
        (Some(_), true) => return Err(no_route()),
    };
    Ok(TfsPath {
        model: model.to_string(),
        version: version.map(str::to_string),
        action,
    })
}

async fn on_get(
    State(st): State<AppState>,
    Path(rest): Path<String>,
    headers: HeaderMap,
) -> Result<Response, HttpError> {
    let path = parse_path(&rest)?;
    let target = target(&path.model, path.version.as_deref())?;
    match path.action {
        Action::Status => {
            let service = st.core.route(&target)?;
            let state = if st.core.is_ready() {
                "AVAILABLE"
            } else {
                "LOADING"
            };
            Ok(json_ok(&json!({"model_version_status": [{
                "version": service.version.to_string(),
                "state": state,
                "status": {"error_code": "OK", "error_message": ""},
            }]})))
        }
        Action::Metadata => {
            let service = st.core.authorize(&target, api_key(&headers).as_ref())?;
            let input = meta::input(&service);
            let outputs = meta::outputs(&service);
            Ok(json_ok(&metadata(
                &service.name,
                service.version,
                &input,
                &outputs,
            )))
        }
        Action::Verb(_) => Err(HttpError::method_not_allowed(
            &Method::GET,
            &format!("/v1/models/{rest}"),
        )),
    }
}

async fn on_post(
    State(st): State<AppState>,
    Path(rest): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, HttpError> {
    let body = read_body(body, st.limits.max_body_bytes).await?;
    let path = parse_path(&rest)?;
    match &path.action {
        Action::Verb(v) if v == "predict" => {}
        Action::Verb(v) if v == "classify" || v == "regress" => {
            return Err(ServeError::new(
                ErrorKind::Unimplemented,
                format!(":{v} is not supported; use :predict"),
            )
            .into())
        }
        Action::Verb(v) => {
            return Err(ServeError::not_found(format!(
                "unknown TF Serving verb :{v}; use :predict"
            ))
            .into())
        }
        _ => {
            return Err(HttpError::method_not_allowed(
                &Method::POST,
                &format!("/v1/models/{rest}"),
            ))
        }
    }
    identity_encoding(&headers)?;
    let target = target(&path.model, path.version.as_deref())?;
    let deadline = timeout(&headers)?;
    // Unnamed inputs go to the model's input; an unknown model is left for
    // the core to refuse (and count).
    let default_input = st
        .core
        .route(&target)
        .map(|s| s.pipeline.spec().input_name.clone())
        .unwrap_or_default();
    let (format, inputs) = parse_predict(&body, &default_input)?;
    let answer = st
        .core
        .infer(InferRequest {
            protocol: Protocol::TfsRest,
            target,
            api_key: api_key(&headers),
            inputs,
            output_filter: vec![],
            timeout: deadline,
        })
        .await?;
    Ok(super::common::with_server_timing(
        super::common::json_response(
            http::StatusCode::OK,
            write_predict(format, &answer.outputs)?,
        ),
        &answer,
    ))
}

// ---------------------------------------------------------------- predict

/// The request's format, which the answer mirrors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    /// `instances` → `predictions`.
    Row,
    /// `inputs` → `outputs`.
    Columnar,
}

/// Parses a `:predict` body into its format and inputs.
pub(crate) fn parse_predict(
    body: &[u8],
    default_input: &str,
) -> Result<(Format, Vec<NamedInput>), ServeError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ServeError::invalid(format!("malformed TF Serving predict request: {e}")))?;
    let Value::Object(obj) = value else {
        return Err(ServeError::invalid(
            "the predict body must be a JSON object with \"instances\" or \"inputs\"",
        ));
    };
    match (obj.get("instances"), obj.get("inputs")) {
        (Some(_), Some(_)) => Err(ServeError::invalid(
            "give either \"instances\" or \"inputs\", not both",
        )),
        (None, None) => Err(ServeError::invalid(
            "the predict body needs \"instances\" (row format) or \"inputs\" (columnar format)",
        )),
        (Some(instances), None) => Ok((
            Format::Row,
            parse_instances(instances, default_input).map_err(ServeError::invalid)?,
        )),
        (None, Some(inputs)) => Ok((
            Format::Columnar,
            parse_columnar(inputs, default_input).map_err(ServeError::invalid)?,
        )),
    }
}

/// An object of named inputs (not a `{"b64": ...}` value).
fn named(v: &Value) -> Option<&Map<String, Value>> {
    match v {
        Value::Object(m) if b64_text(v).is_none() => Some(m),
        _ => None,
    }
}

/// Row format: a list of examples, each a value of the one input or an
/// object of named inputs; examples are stacked along a new first axis.
fn parse_instances(instances: &Value, default_input: &str) -> Result<Vec<NamedInput>, String> {
    let Value::Array(rows) = instances else {
        return Err("\"instances\" must be a list (one element per example)".into());
    };
    let Some(first) = rows.first() else {
        return Err("\"instances\" is empty".into());
    };
    let Some(keys) = named(first) else {
        let all: Vec<&Value> = rows.iter().collect();
        let (shape, leaves) = rows_nested(&all, "instances")?;
        let tensor = tfs_tensor(shape, &leaves, "instances")?;
        return Ok(vec![NamedInput {
            name: default_input.to_string(),
            tensor,
        }]);
    };
    keys.keys()
        .map(|key| {
            let column = rows
                .iter()
                .enumerate()
                .map(|(i, row)| {
                    named(row)
                        .filter(|m| m.len() == keys.len())
                        .and_then(|m| m.get(key))
                        .ok_or_else(|| {
                            let names: Vec<&String> = keys.keys().collect();
                            format!("instances[{i}] does not name the same inputs as instances[0] ({names:?})")
                        })
                })
                .collect::<Result<Vec<_>, _>>()?;
            let what = format!("instances[*].{key}");
            let (shape, leaves) = rows_nested(&column, &what)?;
            Ok(NamedInput {
                name: key.clone(),
                tensor: tfs_tensor(shape, &leaves, &what)?,
            })
        })
        .collect()
}

/// Columnar format: the one input's value, or an object of named inputs. A
/// single value (no list) counts as a batch of one.
fn parse_columnar(inputs: &Value, default_input: &str) -> Result<Vec<NamedInput>, String> {
    let one = |name: &str, v: &Value, what: &str| -> Result<NamedInput, String> {
        let (mut shape, leaves) = nested(v, what)?;
        if shape.is_empty() {
            shape.push(1);
        }
        Ok(NamedInput {
            name: name.to_string(),
            tensor: tfs_tensor(shape, &leaves, what)?,
        })
    };
    match named(inputs) {
        Some(map) => {
            if map.is_empty() {
                return Err("\"inputs\" is an empty object".into());
            }
            map.iter()
                .map(|(k, v)| one(k, v, &format!("inputs.{k}")))
                .collect()
        }
        None => Ok(vec![one(default_input, inputs, "inputs")?]),
    }
}

fn bytes_style(label: &str) -> BytesAs {
    BytesAs::Tfs {
        b64: label.ends_with("_bytes"),
    }
}

/// Several outputs of one example (or of the whole batch), keyed by label.
struct ByLabel<'a>(Vec<(&'a str, Nested<'a>)>);

impl Serialize for ByLabel<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

#[derive(Serialize)]
#[serde(untagged)]
enum Answer<'a> {
    One(Nested<'a>),
    Many(ByLabel<'a>),
}

#[derive(Serialize)]
struct Predictions<'a> {
    predictions: Vec<Answer<'a>>,
}

#[derive(Serialize)]
struct Outputs<'a> {
    outputs: Answer<'a>,
}

/// The answer body: row format splits every output along its first axis
/// into one prediction per example; columnar keeps whole tensors.
pub(crate) fn write_predict(
    format: Format,
    outputs: &[(String, NamedOutput)],
) -> Result<Vec<u8>, ServeError> {
    let whole: Vec<(&str, Nested<'_>)> = outputs
        .iter()
        .map(|(label, o)| (label.as_str(), Nested::whole(&o.tensor, bytes_style(label))))
        .collect();
    let body = match (format, whole.as_slice()) {
        (Format::Columnar, [(_, one)]) => serde_json::to_vec(&Outputs {
            outputs: Answer::One(*one),
        }),
        (Format::Columnar, _) => serde_json::to_vec(&Outputs {
            outputs: Answer::Many(ByLabel(whole)),
        }),
        (Format::Row, [(_, one)]) => serde_json::to_vec(&Predictions {
            predictions: one.rows().into_iter().map(Answer::One).collect(),
        }),
        (Format::Row, _) => {
            let split: Vec<(&str, Vec<Nested<'_>>)> =
                whole.iter().map(|(l, n)| (*l, n.rows())).collect();
            let n = split.first().map_or(0, |(_, rows)| rows.len());
            if let Some((label, rows)) = split.iter().find(|(_, rows)| rows.len() != n) {
                return Err(ServeError::new(
                    ErrorKind::FailedPrecondition,
                    format!(
                        "output {label:?} has {} rows, {:?} has {n}; the row format needs one batch size, \
                         use the columnar format (\"inputs\")",
                        rows.len(),
                        split[0].0
                    ),
                ));
            }
            let predictions = (0..n)
                .map(|i| {
                    Answer::Many(ByLabel(
                        split.iter().map(|(l, rows)| (*l, rows[i])).collect(),
                    ))
                })
                .collect();
            serde_json::to_vec(&Predictions { predictions })
        }
    };
    Ok(body.expect("JSON serializes"))
}

// ---------------------------------------------------------------- metadata

fn tf_dtype(dtype: DType) -> &'static str {
    match dtype {
        DType::F32 => "DT_FLOAT",
        DType::I64 => "DT_INT64",
        DType::I32 => "DT_INT32",
        DType::U8 => "DT_UINT8",
        DType::I8 => "DT_INT8",
        DType::String => "DT_STRING",
        _ => "DT_INVALID",
    }
}

fn tensor_info(t: &TensorDesc) -> Value {
    json!({
        "dtype": tf_dtype(t.dtype),
        "tensor_shape": {
            "dim": t.shape.iter().map(|d| json!({"size": d.to_string(), "name": ""})).collect::<Vec<_>>(),
            "unknown_rank": false,
        },
        "name": t.name,
    })
}

/// TF Serving's `GetModelMetadata` answer, as its REST API prints it.
pub(crate) fn metadata(
    model: &str,
    version: u32,
    input: &TensorDesc,
    outputs: &[TensorDesc],
) -> Value {
    let inputs: Map<String, Value> =
        std::iter::once((input.key.clone(), tensor_info(input))).collect();
    let outputs: Map<String, Value> = outputs
        .iter()
        .map(|o| (o.key.clone(), tensor_info(o)))
        .collect();
    json!({
        "model_spec": {"name": model, "signature_name": "", "version": version.to_string()},
        "metadata": {"signature_def": {
            "signature_def": {
                "serving_default": {
                    "inputs": inputs,
                    "outputs": outputs,
                    "method_name": "tensorflow/serving/predict",
                }
            }
        }}
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use accel_core::{Tensor, TensorData};

    #[test]
    fn predict_paths() {
        let p = parse_path("shuffle:predict").unwrap();
        assert_eq!(
            (p.model.as_str(), p.version, p.action),
            ("shuffle", None, Action::Verb("predict".into()))
        );
        let p = parse_path("shuffle/versions/1:predict").unwrap();
        assert_eq!(
            (p.model.as_str(), p.version.as_deref()),
            ("shuffle", Some("1"))
        );
        assert_eq!(p.action, Action::Verb("predict".into()));
        assert_eq!(parse_path("m.v2").unwrap().action, Action::Status);
        assert_eq!(
            parse_path("m/versions/4").unwrap().version.as_deref(),
            Some("4")
        );
        assert_eq!(parse_path("m/metadata").unwrap().action, Action::Metadata);
        assert_eq!(
            parse_path("m/versions/4/metadata").unwrap().action,
            Action::Metadata
        );
        assert_eq!(
            parse_path("m:classify").unwrap().action,
            Action::Verb("classify".into())
        );
        for bad in [
            "",
            "m/other",
            "m/versions",
            "m/metadata:predict",
            ":predict",
            "m/versions/:predict",
        ] {
            assert_eq!(
                parse_path(bad).unwrap_err().kind,
                ErrorKind::NotFound,
                "{bad:?}"
            );
        }
        assert_eq!(
            parse_path("m/labels/stable:predict").unwrap_err().kind,
            ErrorKind::Unimplemented
        );
    }

    fn only(inputs: Vec<NamedInput>) -> NamedInput {
        assert_eq!(inputs.len(), 1);
        inputs.into_iter().next().unwrap()
    }

    #[test]
    fn row_format_inputs() {
        let (f, inputs) = parse_predict(
            br#"{"instances": [{"b64": "aGk="}, {"b64": "eW8="}]}"#,
            "input",
        )
        .unwrap();
        assert_eq!(f, Format::Row);
        let i = only(inputs);
        assert_eq!(i.name, "input");
        assert_eq!(i.tensor.shape(), &[2]);
        assert_eq!(
            i.tensor.data(),
            &TensorData::String(vec![b"hi".to_vec(), b"yo".to_vec()])
        );

        let (_, inputs) = parse_predict(
            br#"{"signature_name": "serving_default", "instances": [{"images": {"b64": "aGk="}}]}"#,
            "input",
        )
        .unwrap();
        let i = only(inputs);
        assert_eq!(
            (i.name.as_str(), i.tensor.shape()),
            ("images", &[1usize][..])
        );

        let (_, inputs) = parse_predict(
            br#"{"instances": [[[1, 2], [3, 4]], [[5, 6], [7, 8]]]}"#,
            "x",
        )
        .unwrap();
        let i = only(inputs);
        assert_eq!(i.tensor.shape(), &[2, 2, 2]);
        assert_eq!(i.tensor.as_f32().unwrap()[7], 8.0);

        let (_, inputs) = parse_predict(br#"{"instances": [[{"b64": "aGk="}]]}"#, "input").unwrap();
        assert_eq!(only(inputs).tensor.shape(), &[1, 1]);

        let e = parse_predict(br#"{"instances": [{"a": 1}, {"b": 2}]}"#, "x").unwrap_err();
        assert!(e.message.contains("instances[1]"), "{}", e.message);
        let e = parse_predict(br#"{"instances": [[1, 2], [3]]}"#, "x").unwrap_err();
        assert!(e.message.contains("rectangular"), "{}", e.message);
        assert!(parse_predict(br#"{"instances": []}"#, "x").is_err());
        assert!(parse_predict(br#"{"instances": [1], "inputs": [1]}"#, "x").is_err());
        assert!(parse_predict(br#"{"signature_name": "x"}"#, "x").is_err());
    }

    #[test]
    fn columnar_inputs() {
        let (f, inputs) =
            parse_predict(br#"{"inputs": {"images": [{"b64": "aGk="}]}}"#, "input").unwrap();
        assert_eq!(f, Format::Columnar);
        let i = only(inputs);
        assert_eq!(
            (i.name.as_str(), i.tensor.shape()),
            ("images", &[1usize][..])
        );
        let (_, inputs) = parse_predict(
            br#"{"inputs": [{"b64": "aGk="}, {"b64": "aGk="}]}"#,
            "input",
        )
        .unwrap();
        let i = only(inputs);
        assert_eq!(
            (i.name.as_str(), i.tensor.shape()),
            ("input", &[2usize][..])
        );
        let (_, inputs) = parse_predict(br#"{"inputs": {"b64": "aGk="}}"#, "input").unwrap();
        let i = only(inputs);
        assert_eq!(
            (i.name.as_str(), i.tensor.shape()),
            ("input", &[1usize][..])
        );
        assert_eq!(i.tensor.data(), &TensorData::String(vec![b"hi".to_vec()]));
        let (_, inputs) = parse_predict(br#"{"inputs": {"x": [[0.5, 1]]}}"#, "input").unwrap();
        assert_eq!(
            only(inputs).tensor,
            Tensor::from_f32(vec![1, 2], vec![0.5, 1.0]).unwrap()
        );
    }

    fn out(label: &str, shape: Vec<usize>, data: Vec<f32>) -> (String, NamedOutput) {
        (
            label.into(),
            NamedOutput {
                name: "model_out".into(),
                aliases: vec![],
                tensor: Tensor::from_f32(shape, data).unwrap(),
            },
        )
    }

    fn parsed(format: Format, outputs: &[(String, NamedOutput)]) -> Value {
        serde_json::from_slice(&write_predict(format, outputs).unwrap()).unwrap()
    }

    #[test]
    fn one_output_row_and_columnar() {
        let one = [out("probs", vec![1, 3], vec![0.25, 0.5, 0.25])];
        assert_eq!(
            parsed(Format::Row, &one),
            json!({"predictions": [[0.25, 0.5, 0.25]]})
        );
        assert_eq!(
            parsed(Format::Columnar, &one),
            json!({"outputs": [[0.25, 0.5, 0.25]]})
        );
        let two_rows = [out("probs", vec![2, 2], vec![0.1, 0.9, 0.8, 0.2])];
        assert_eq!(
            parsed(Format::Row, &two_rows),
            json!({"predictions": [[0.1, 0.9], [0.8, 0.2]]})
        );
        let raw = String::from_utf8(write_predict(Format::Row, &two_rows).unwrap()).unwrap();
        assert_eq!(raw, r#"{"predictions":[[0.1,0.9],[0.8,0.2]]}"#);
    }

    #[test]
    fn several_outputs_are_keyed_by_label() {
        let two = [
            out("a", vec![2, 1], vec![1.0, 2.0]),
            out("b", vec![2], vec![3.0, 4.0]),
        ];
        assert_eq!(
            parsed(Format::Row, &two),
            json!({"predictions": [{"a": [1.0], "b": 3.0}, {"a": [2.0], "b": 4.0}]})
        );
        assert_eq!(
            parsed(Format::Columnar, &two),
            json!({"outputs": {"a": [[1.0], [2.0]], "b": [3.0, 4.0]}})
        );
        let uneven = [
            out("a", vec![2], vec![1.0, 2.0]),
            out("b", vec![1], vec![3.0]),
        ];
        assert!(write_predict(Format::Row, &uneven).is_err());
    }

    #[test]
    fn metadata_mirrors_tf_serving() {
        let input = TensorDesc {
            name: "input".into(),
            key: "images".into(),
            dtype: DType::String,
            shape: vec![-1],
        };
        let output = TensorDesc {
            name: "output".into(),
            key: "probs:0".into(),
            dtype: DType::F32,
            shape: vec![-1, 1000],
        };
        let m = metadata("shuffle", 1, &input, &[output]);
        assert_eq!(
            m["model_spec"],
            json!({"name": "shuffle", "signature_name": "", "version": "1"})
        );
        let sig = &m["metadata"]["signature_def"]["signature_def"]["serving_default"];
        assert_eq!(
            sig["inputs"]["images"],
            json!({"dtype": "DT_STRING", "tensor_shape": {"dim": [{"size": "-1", "name": ""}], "unknown_rank": false}, "name": "input"})
        );
        assert_eq!(
            sig["outputs"]["probs:0"]["tensor_shape"]["dim"][1]["size"],
            "1000"
        );
        assert_eq!(sig["method_name"], "tensorflow/serving/predict");
    }
}

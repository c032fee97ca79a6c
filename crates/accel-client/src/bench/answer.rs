//! An answer's fingerprint for checking: the index of the largest value of
//! its largest float output (the top-1 class of a classifier), read from
//! each protocol's answer. Batch 1: the whole tensor is one item.

use accel_proto::inference::ModelInferResponse;
use accel_proto::tensorflow::serving::PredictResponse;
use accel_proto::tensorflow::DataType;

/// Index of the largest value (the first of equal ones); `None` when empty
/// or when a value is NaN.
pub fn argmax<I: IntoIterator<Item = f32>>(values: I) -> Option<usize> {
    let mut best: Option<(usize, f32)> = None;
    for (i, v) in values.into_iter().enumerate() {
        if v.is_nan() {
            return None;
        }
        if best.is_none_or(|(_, b)| v > b) {
            best = Some((i, v));
        }
    }
    best.map(|(i, _)| i)
}

fn le_f32(bytes: &[u8]) -> impl Iterator<Item = f32> + '_ {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
}

/// TF Serving `Predict`: the float output with the most values (ties: the
/// first name in order).
pub(super) fn tfs_top1(resp: &PredictResponse) -> Option<usize> {
    let mut outputs: Vec<_> = resp
        .outputs
        .iter()
        .filter(|(_, t)| t.dtype == DataType::DtFloat as i32)
        .map(|(name, t)| {
            let n = if t.tensor_content.is_empty() {
                t.float_val.len()
            } else {
                t.tensor_content.len() / 4
            };
            (n, name, t)
        })
        .collect();
    outputs.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)));
    let (_, _, t) = outputs.first()?;
    if t.tensor_content.is_empty() {
        argmax(t.float_val.iter().copied())
    } else {
        argmax(le_f32(&t.tensor_content))
    }
}

/// KServe v2 `ModelInfer`: the FP32 output with the most values, raw or typed.
pub(super) fn kserve_top1(resp: &ModelInferResponse) -> Option<usize> {
    let raw = |i: usize| resp.raw_output_contents.get(i);
    let len = |i: usize, c: &Option<accel_proto::inference::InferTensorContents>| match raw(i) {
        Some(r) => r.len() / 4,
        None => c.as_ref().map_or(0, |c| c.fp32_contents.len()),
    };
    // `max_by_key` keeps the last of equals: reversed, the first output.
    let (i, o) = resp
        .outputs
        .iter()
        .enumerate()
        .filter(|(_, o)| o.datatype == "FP32")
        .rev()
        .max_by_key(|(i, o)| len(*i, &o.contents))?;
    match raw(i) {
        Some(r) => argmax(le_f32(r)),
        None => argmax(o.contents.as_ref()?.fp32_contents.iter().copied()),
    }
}

/// A JSON answer (KServe REST `outputs[].data`, TF Serving REST
/// `predictions`): the longest array of numbers anywhere in it.
pub(super) fn json_top1(body: &[u8]) -> Option<usize> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let mut best: Option<&Vec<serde_json::Value>> = None;
    longest_numeric(&v, &mut best);
    argmax(best?.iter().map(|x| x.as_f64().unwrap_or(f64::NAN) as f32))
}

fn longest_numeric<'a>(v: &'a serde_json::Value, best: &mut Option<&'a Vec<serde_json::Value>>) {
    match v {
        serde_json::Value::Array(a) => {
            if !a.is_empty() && a.iter().all(serde_json::Value::is_number) {
                if best.is_none_or(|b| a.len() > b.len()) {
                    *best = Some(a);
                }
            } else {
                a.iter().for_each(|x| longest_numeric(x, best));
            }
        }
        serde_json::Value::Object(m) => m.values().for_each(|x| longest_numeric(x, best)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use accel_proto::inference::model_infer_response::InferOutputTensor;
    use accel_proto::tensorflow::TensorProto;

    #[test]
    fn argmax_first_of_equals_and_nan() {
        assert_eq!(argmax([0.1, 0.7, 0.7, 0.2]), Some(1));
        assert_eq!(argmax(Vec::<f32>::new()), None);
        assert_eq!(argmax([0.1, f32::NAN]), None);
        assert_eq!(argmax([-3.0, -1.0]), Some(1));
    }

    #[test]
    fn tfs_picks_the_largest_float_output() {
        let mut resp = PredictResponse::default();
        resp.outputs.insert(
            "small".into(),
            TensorProto {
                dtype: DataType::DtFloat as i32,
                float_val: vec![9.0, 0.0],
                ..Default::default()
            },
        );
        let content: Vec<u8> = [0.1f32, 0.2, 0.9, 0.3]
            .iter()
            .flat_map(|f| f.to_le_bytes())
            .collect();
        resp.outputs.insert(
            "probs".into(),
            TensorProto {
                dtype: DataType::DtFloat as i32,
                tensor_content: content,
                ..Default::default()
            },
        );
        assert_eq!(tfs_top1(&resp), Some(2));
        assert_eq!(tfs_top1(&PredictResponse::default()), None);
    }

    #[test]
    fn kserve_raw_and_typed() {
        let raw: Vec<u8> = [0.5f32, 0.1, 0.2]
            .iter()
            .flat_map(|f| f.to_le_bytes())
            .collect();
        let resp = ModelInferResponse {
            outputs: vec![
                InferOutputTensor {
                    name: "labels".into(),
                    datatype: "BYTES".into(),
                    ..Default::default()
                },
                InferOutputTensor {
                    name: "probs".into(),
                    datatype: "FP32".into(),
                    ..Default::default()
                },
            ],
            raw_output_contents: vec![b"xxxxxxxxxxxxxxxxxxxx".to_vec(), raw],
            ..Default::default()
        };
        assert_eq!(kserve_top1(&resp), Some(0));
        let typed = ModelInferResponse {
            outputs: vec![InferOutputTensor {
                name: "probs".into(),
                datatype: "FP32".into(),
                contents: Some(accel_proto::inference::InferTensorContents {
                    fp32_contents: vec![0.0, 0.0, 1.0],
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        };
        assert_eq!(kserve_top1(&typed), Some(2));
    }

    #[test]
    fn json_longest_numeric_array() {
        let kserve = br#"{"model_name":"m","outputs":[{"name":"p","shape":[1,4],"datatype":"FP32","data":[0.1,0.2,0.6,0.1]}]}"#;
        assert_eq!(json_top1(kserve), Some(2));
        let tfs = br#"{"predictions":[[0.9,0.05,0.05]]}"#;
        assert_eq!(json_top1(tfs), Some(0));
        let named = br#"{"predictions":[{"classes":[3],"probs":[0.1,0.1,0.1,0.7]}]}"#;
        assert_eq!(json_top1(named), Some(3));
        assert_eq!(json_top1(b"not json"), None);
    }
}

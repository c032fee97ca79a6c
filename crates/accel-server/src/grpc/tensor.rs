//! `tensorflow.TensorProto` <-> Accel tensors, and dtype names of both
//! protocols.

use crate::error::ServeError;
use accel_core::{DType, Tensor, TensorData};
use accel_proto::tensorflow::{tensor_shape_proto::Dim, DataType, TensorProto, TensorShapeProto};

/// The TensorFlow dtype of an Accel dtype.
pub fn tf_dtype(d: DType) -> DataType {
    match d {
        DType::F32 => DataType::DtFloat,
        DType::I64 => DataType::DtInt64,
        DType::I32 => DataType::DtInt32,
        DType::U8 => DataType::DtUint8,
        DType::I8 => DataType::DtInt8,
        _ => DataType::DtString,
    }
}

/// The KServe v2 datatype name of an Accel dtype.
pub fn kserve_dtype(d: DType) -> &'static str {
    match d {
        DType::F32 => "FP32",
        DType::I64 => "INT64",
        DType::I32 => "INT32",
        DType::U8 => "UINT8",
        DType::I8 => "INT8",
        _ => "BYTES",
    }
}

/// The Accel dtype of a KServe v2 datatype name.
pub fn from_kserve_dtype(s: &str) -> Result<DType, ServeError> {
    Ok(match s {
        "FP32" => DType::F32,
        "INT64" => DType::I64,
        "INT32" => DType::I32,
        "UINT8" => DType::U8,
        "INT8" => DType::I8,
        "BYTES" => DType::String,
        other => {
            return Err(ServeError::invalid(format!(
                "unsupported datatype {other:?}"
            )))
        }
    })
}

/// A model shape for metadata: the batch dimension and every dynamic one
/// as `-1`.
pub fn batch_dims(shape: &[Option<usize>]) -> Vec<i64> {
    shape
        .iter()
        .enumerate()
        .map(|(i, d)| {
            if i == 0 {
                -1
            } else {
                d.map_or(-1, |d| d as i64)
            }
        })
        .collect()
}

/// A shape proto with `dims` (`-1` for unknown).
pub fn shape_proto(dims: &[i64]) -> TensorShapeProto {
    TensorShapeProto {
        dim: dims
            .iter()
            .map(|&size| Dim {
                size,
                name: String::new(),
            })
            .collect(),
        unknown_rank: false,
    }
}

fn shape_of(name: &str, p: &TensorProto) -> Result<Vec<usize>, ServeError> {
    let shape = p
        .tensor_shape
        .as_ref()
        .ok_or_else(|| ServeError::invalid(format!("input {name:?} has no tensor_shape")))?;
    if shape.unknown_rank {
        return Err(ServeError::invalid(format!(
            "input {name:?} has an unknown rank"
        )));
    }
    shape
        .dim
        .iter()
        .map(|d| {
            usize::try_from(d.size).map_err(|_| {
                ServeError::invalid(format!(
                    "input {name:?} has a negative dimension {}",
                    d.size
                ))
            })
        })
        .collect()
}

fn from_le<T, const N: usize>(
    name: &str,
    bytes: &[u8],
    f: fn([u8; N]) -> T,
) -> Result<Vec<T>, ServeError> {
    if !bytes.len().is_multiple_of(N) {
        return Err(ServeError::invalid(format!(
            "input {name:?}: tensor_content has {} bytes, not a multiple of {N}",
            bytes.len()
        )));
    }
    Ok(bytes
        .chunks_exact(N)
        .map(|c| f(c.try_into().expect("chunk size")))
        .collect())
}

/// A single typed value is broadcast to at most this many elements
/// (64 MiB of float32); larger shapes must carry their values.
pub const MAX_BROADCAST_ELEMENTS: usize = 1 << 24;

/// Decodes an input tensor, reading `tensor_content` or the typed `*_val`
/// field. A single value in a typed field is broadcast to the whole shape,
/// as TensorFlow does.
pub fn from_proto(name: &str, p: &TensorProto) -> Result<Tensor, ServeError> {
    let shape = shape_of(name, p)?;
    let n = shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n <= MAX_BROADCAST_ELEMENTS)
        .unwrap_or(0);
    let dtype = DataType::try_from(p.dtype).unwrap_or(DataType::DtInvalid);
    let has_content = !p.tensor_content.is_empty();
    fn typed<T: Clone>(v: &[T], n: usize) -> Vec<T> {
        if v.len() == 1 && n > 1 {
            vec![v[0].clone(); n]
        } else {
            v.to_vec()
        }
    }
    let data = match dtype {
        DataType::DtString => TensorData::String(p.string_val.clone()),
        DataType::DtFloat if has_content => {
            TensorData::F32(from_le(name, &p.tensor_content, f32::from_le_bytes)?)
        }
        DataType::DtFloat => TensorData::F32(typed(&p.float_val, n)),
        DataType::DtInt64 if has_content => {
            TensorData::I64(from_le(name, &p.tensor_content, i64::from_le_bytes)?)
        }
        DataType::DtInt64 => TensorData::I64(typed(&p.int64_val, n)),
        DataType::DtInt32 if has_content => {
            TensorData::I32(from_le(name, &p.tensor_content, i32::from_le_bytes)?)
        }
        DataType::DtInt32 => TensorData::I32(typed(&p.int_val, n)),
        DataType::DtUint8 if has_content => TensorData::U8(p.tensor_content.clone()),
        DataType::DtUint8 => {
            TensorData::U8(typed(&p.int_val, n).into_iter().map(|v| v as u8).collect())
        }
        DataType::DtInt8 if has_content => {
            TensorData::I8(p.tensor_content.iter().map(|&b| b as i8).collect())
        }
        DataType::DtInt8 => {
            TensorData::I8(typed(&p.int_val, n).into_iter().map(|v| v as i8).collect())
        }
        other => {
            return Err(ServeError::invalid(format!(
                "input {name:?} has dtype {} which Accel does not accept",
                other.as_str_name()
            )))
        }
    };
    Tensor::new(shape, data).map_err(|e| ServeError::invalid(format!("input {name:?}: {e}")))
}

/// Encodes an output tensor the way TensorFlow Serving does by default:
/// typed `*_val` fields.
pub fn to_proto(t: &Tensor) -> TensorProto {
    let dims: Vec<i64> = t.shape().iter().map(|&d| d as i64).collect();
    let mut p = TensorProto {
        dtype: tf_dtype(t.dtype()) as i32,
        tensor_shape: Some(shape_proto(&dims)),
        ..Default::default()
    };
    match t.data() {
        TensorData::F32(v) => p.float_val = v.clone(),
        TensorData::I64(v) => p.int64_val = v.clone(),
        TensorData::I32(v) => p.int_val = v.clone(),
        TensorData::U8(v) => p.int_val = v.iter().map(|&x| i32::from(x)).collect(),
        TensorData::I8(v) => p.int_val = v.iter().map(|&x| i32::from(x)).collect(),
        TensorData::String(v) => p.string_val = v.clone(),
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensor_content_and_typed_fields_decode_alike() {
        let vals = [1.5f32, -2.0, 3.25, 0.0];
        let content: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
        let a = TensorProto {
            dtype: DataType::DtFloat as i32,
            tensor_shape: Some(shape_proto(&[2, 2])),
            tensor_content: content,
            ..Default::default()
        };
        let b = TensorProto {
            tensor_content: vec![],
            float_val: vals.to_vec(),
            ..a.clone()
        };
        assert_eq!(from_proto("x", &a).unwrap(), from_proto("x", &b).unwrap());
        assert_eq!(from_proto("x", &a).unwrap().as_f32().unwrap(), &vals);
        let round = to_proto(&from_proto("x", &a).unwrap());
        assert_eq!(
            from_proto("x", &round).unwrap(),
            from_proto("x", &a).unwrap()
        );
    }

    #[test]
    fn mismatched_shapes_and_odd_contents_are_refused() {
        let p = TensorProto {
            dtype: DataType::DtFloat as i32,
            tensor_shape: Some(shape_proto(&[3])),
            float_val: vec![1.0, 2.0],
            ..Default::default()
        };
        assert!(from_proto("x", &p)
            .unwrap_err()
            .message
            .contains("needs 3 elements"));
        let p = TensorProto {
            tensor_content: vec![0; 5],
            float_val: vec![],
            ..p
        };
        assert!(from_proto("x", &p)
            .unwrap_err()
            .message
            .contains("multiple of 4"));
        let p = TensorProto {
            dtype: DataType::DtString as i32,
            tensor_shape: Some(shape_proto(&[1])),
            string_val: vec![b"jpeg".to_vec()],
            ..Default::default()
        };
        assert_eq!(from_proto("x", &p).unwrap().dtype(), DType::String);
        // One value with a huge shape is not expanded (a 30-byte request must
        // not allocate terabytes): it is refused as a shape mismatch.
        let p = TensorProto {
            dtype: DataType::DtFloat as i32,
            tensor_shape: Some(shape_proto(&[1 << 40])),
            float_val: vec![1.0],
            ..Default::default()
        };
        assert!(from_proto("x", &p).is_err());
    }
}

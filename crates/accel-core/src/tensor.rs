//! A small owned tensor type shared by engines, pipelines and transports.

use crate::error::CoreError;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Element type of a tensor.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    /// 32-bit float.
    F32,
    /// 64-bit signed integer.
    I64,
    /// 32-bit signed integer.
    I32,
    /// 8-bit unsigned integer.
    U8,
    /// 8-bit signed integer.
    I8,
    /// Variable-length byte strings (e.g. encoded images).
    String,
}

impl DType {
    /// Size of one element in bytes, `None` for strings.
    pub fn size(self) -> Option<usize> {
        match self {
            DType::F32 | DType::I32 => Some(4),
            DType::I64 => Some(8),
            DType::U8 | DType::I8 => Some(1),
            DType::String => None,
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            DType::F32 => "float32",
            DType::I64 => "int64",
            DType::I32 => "int32",
            DType::U8 => "uint8",
            DType::I8 => "int8",
            DType::String => "string",
        };
        f.write_str(s)
    }
}

/// The elements of a tensor, row-major.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    /// float32 elements.
    F32(Vec<f32>),
    /// int64 elements.
    I64(Vec<i64>),
    /// int32 elements.
    I32(Vec<i32>),
    /// uint8 elements.
    U8(Vec<u8>),
    /// int8 elements.
    I8(Vec<i8>),
    /// Byte strings.
    String(Vec<Vec<u8>>),
}

impl TensorData {
    /// The element type.
    pub fn dtype(&self) -> DType {
        match self {
            TensorData::F32(_) => DType::F32,
            TensorData::I64(_) => DType::I64,
            TensorData::I32(_) => DType::I32,
            TensorData::U8(_) => DType::U8,
            TensorData::I8(_) => DType::I8,
            TensorData::String(_) => DType::String,
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            TensorData::F32(v) => v.len(),
            TensorData::I64(v) => v.len(),
            TensorData::I32(v) => v.len(),
            TensorData::U8(v) => v.len(),
            TensorData::I8(v) => v.len(),
            TensorData::String(v) => v.len(),
        }
    }

    /// True when there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// An owned, row-major tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    shape: Vec<usize>,
    data: TensorData,
}

impl Tensor {
    /// Builds a tensor, checking that the shape matches the number of elements.
    pub fn new(shape: Vec<usize>, data: TensorData) -> Result<Self, CoreError> {
        let expected = shape
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .unwrap_or(usize::MAX);
        if expected != data.len() {
            return Err(CoreError::Shape {
                shape,
                expected,
                actual: data.len(),
            });
        }
        Ok(Tensor { shape, data })
    }

    /// A float32 tensor.
    pub fn from_f32(shape: Vec<usize>, data: Vec<f32>) -> Result<Self, CoreError> {
        Self::new(shape, TensorData::F32(data))
    }

    /// The shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The elements.
    pub fn data(&self) -> &TensorData {
        &self.data
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        self.data.dtype()
    }

    /// The float32 elements, if this is a float32 tensor.
    pub fn as_f32(&self) -> Option<&[f32]> {
        match &self.data {
            TensorData::F32(v) => Some(v),
            _ => None,
        }
    }

    /// Splits into shape and data.
    pub fn into_parts(self) -> (Vec<usize>, TensorData) {
        (self.shape, self.data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_and_length_must_agree() {
        assert!(Tensor::from_f32(vec![2, 3], vec![0.0; 6]).is_ok());
        let err = Tensor::from_f32(vec![2, 3], vec![0.0; 5]).unwrap_err();
        assert!(err.to_string().contains("needs 6 elements, got 5"), "{err}");
        // An overflowing shape is refused, not wrapped around.
        assert!(Tensor::from_f32(vec![1 << 40, 1 << 40, 1 << 40], vec![]).is_err());
    }
}

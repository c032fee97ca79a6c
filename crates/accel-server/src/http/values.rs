//! Tensor values in JSON: base64 byte strings, flattening nested lists (with
//! the shape they imply), and writing tensors back as flat or nested lists.

use accel_core::{Tensor, TensorData};
use base64::alphabet;
use base64::engine::{DecodePaddingMode, Engine as _, GeneralPurpose, GeneralPurposeConfig};
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};
use serde_json::Value;

const LENIENT: GeneralPurposeConfig = GeneralPurposeConfig::new()
    .with_encode_padding(true)
    .with_decode_padding_mode(DecodePaddingMode::Indifferent);
const STANDARD: GeneralPurpose = GeneralPurpose::new(&alphabet::STANDARD, LENIENT);
const URL_SAFE: GeneralPurpose = GeneralPurpose::new(&alphabet::URL_SAFE, LENIENT);

/// Decodes base64: the standard or the URL-safe alphabet, padding optional,
/// line breaks and spaces ignored (as `base64` wraps its output).
pub(crate) fn decode_b64(text: &str) -> Result<Vec<u8>, String> {
    let cleaned;
    let text = if text.bytes().any(|b| b.is_ascii_whitespace()) {
        cleaned = text.split_ascii_whitespace().collect::<String>();
        &cleaned
    } else {
        text
    };
    STANDARD
        .decode(text)
        .or_else(|e| URL_SAFE.decode(text).map_err(|_| e.to_string()))
}

/// Encodes bytes as standard, padded base64.
pub(crate) fn encode_b64(data: &[u8]) -> String {
    STANDARD.encode(data)
}

/// The text of a `{"b64": "..."}` object.
pub(crate) fn b64_text(v: &Value) -> Option<&str> {
    match v {
        Value::Object(m) if m.len() == 1 => m.get("b64").and_then(Value::as_str),
        _ => None,
    }
}

/// Every non-list element of nested lists, in row-major order.
pub(crate) fn flatten(v: &Value) -> Vec<&Value> {
    fn walk<'a>(v: &'a Value, out: &mut Vec<&'a Value>) {
        match v {
            Value::Array(items) => items.iter().for_each(|i| walk(i, out)),
            leaf => out.push(leaf),
        }
    }
    let mut out = Vec::new();
    walk(v, &mut out);
    out
}

/// The shape nested lists imply and their elements, row-major. Lists at the
/// same depth must agree in length; a non-list is a rank-0 value.
pub(crate) fn nested<'a>(v: &'a Value, what: &str) -> Result<(Vec<usize>, Vec<&'a Value>), String> {
    match v {
        Value::Array(rows) => rows_nested(&rows.iter().collect::<Vec<_>>(), what),
        leaf => Ok((vec![], vec![leaf])),
    }
}

/// As [`nested`] for the rows of an outer list given as a slice.
pub(crate) fn rows_nested<'a>(
    rows: &[&'a Value],
    what: &str,
) -> Result<(Vec<usize>, Vec<&'a Value>), String> {
    let mut shape = vec![rows.len()];
    let mut cur = rows.first().copied();
    while let Some(Value::Array(items)) = cur {
        shape.push(items.len());
        cur = items.first();
    }
    let mut out = Vec::with_capacity(shape.iter().product());
    let mut at = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        at.push(i);
        collect(row, &shape[1..], &mut at, &mut out).map_err(|at| {
            let place: String = at.iter().map(|i| format!("[{i}]")).collect();
            format!(
                "{what}{place} does not fit the shape {shape:?} of the first element; \
                 nested lists must be rectangular"
            )
        })?;
        at.pop();
    }
    Ok((shape, out))
}

fn collect<'a>(
    v: &'a Value,
    shape: &[usize],
    at: &mut Vec<usize>,
    out: &mut Vec<&'a Value>,
) -> Result<(), Vec<usize>> {
    match (shape.split_first(), v) {
        (None, Value::Array(_)) => Err(at.clone()),
        (None, leaf) => {
            out.push(leaf);
            Ok(())
        }
        (Some((&n, rest)), Value::Array(items)) if items.len() == n => {
            for (i, item) in items.iter().enumerate() {
                at.push(i);
                collect(item, rest, at, out)?;
                at.pop();
            }
            Ok(())
        }
        (Some(_), _) => Err(at.clone()),
    }
}

/// A TF Serving JSON tensor: numbers become float32; `{"b64": ...}` objects
/// and strings (their UTF-8 bytes, as TF Serving takes them) a string tensor.
pub(crate) fn tfs_tensor(
    shape: Vec<usize>,
    leaves: &[&Value],
    what: &str,
) -> Result<Tensor, String> {
    let Some(first) = leaves.first() else {
        return Err(format!("{what} is empty; its element type cannot be told"));
    };
    let data = if first.is_number() {
        let mut v = Vec::with_capacity(leaves.len());
        for (i, leaf) in leaves.iter().enumerate() {
            let x = leaf
                .as_f64()
                .ok_or_else(|| mixed(what, i, leaf, "a number"))?;
            v.push(x as f32);
        }
        TensorData::F32(v)
    } else {
        let mut v = Vec::with_capacity(leaves.len());
        for (i, leaf) in leaves.iter().enumerate() {
            let bytes = match (b64_text(leaf), leaf) {
                (Some(text), _) => decode_b64(text)
                    .map_err(|e| format!("{what}: element {i} is not valid base64 ({e})"))?,
                (None, Value::String(s)) => s.as_bytes().to_vec(),
                _ => return Err(mixed(what, i, leaf, "a {\"b64\": ...} object or a string")),
            };
            v.push(bytes);
        }
        TensorData::String(v)
    };
    Tensor::new(shape, data).map_err(|e| format!("{what}: {e}"))
}

fn mixed(what: &str, i: usize, leaf: &Value, want: &str) -> String {
    let got = match leaf {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    };
    format!("{what}: element {i} is {got}, expected {want} like the first element")
}

/// How byte strings are written in JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BytesAs {
    /// A base64 string (KServe; the same form the input side reads).
    Base64,
    /// TF Serving: a `{"b64": ...}` object when `b64` is set (the output's
    /// name ends in `_bytes`) or the bytes are not UTF-8, else a string.
    Tfs { b64: bool },
}

fn element<S: Serializer>(
    data: &TensorData,
    i: usize,
    bytes: BytesAs,
    s: S,
) -> Result<S::Ok, S::Error> {
    match data {
        TensorData::F32(v) => s.serialize_f32(v[i]),
        TensorData::I64(v) => s.serialize_i64(v[i]),
        TensorData::I32(v) => s.serialize_i32(v[i]),
        TensorData::U8(v) => s.serialize_u8(v[i]),
        TensorData::I8(v) => s.serialize_i8(v[i]),
        TensorData::String(v) => match (bytes, std::str::from_utf8(&v[i])) {
            (BytesAs::Base64, _) => s.serialize_str(&encode_b64(&v[i])),
            (BytesAs::Tfs { b64: false }, Ok(text)) => s.serialize_str(text),
            (BytesAs::Tfs { .. }, _) => {
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry("b64", &encode_b64(&v[i]))?;
                m.end()
            }
        },
    }
}

/// A tensor's elements as one flat JSON list (floats written as float32,
/// so `0.1` stays `0.1`).
pub(crate) struct Flat<'a> {
    pub data: &'a TensorData,
    pub bytes: BytesAs,
}

impl Serialize for Flat<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.data.len()))?;
        for i in 0..self.data.len() {
            seq.serialize_element(&Element(self.data, i, self.bytes))?;
        }
        seq.end()
    }
}

struct Element<'a>(&'a TensorData, usize, BytesAs);

impl Serialize for Element<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        element(self.0, self.1, self.2, s)
    }
}

/// A tensor (or a sub-tensor starting at element `start`) as nested lists
/// following `shape`; a scalar when `shape` is empty.
#[derive(Clone, Copy)]
pub(crate) struct Nested<'a> {
    pub shape: &'a [usize],
    pub data: &'a TensorData,
    pub start: usize,
    pub bytes: BytesAs,
}

impl<'a> Nested<'a> {
    /// The whole tensor.
    pub fn whole(t: &'a Tensor, bytes: BytesAs) -> Self {
        Nested {
            shape: t.shape(),
            data: t.data(),
            start: 0,
            bytes,
        }
    }

    /// The sub-tensors along the first axis (the tensor itself for a scalar).
    pub fn rows(self) -> Vec<Nested<'a>> {
        let Some((&n, inner)) = self.shape.split_first() else {
            return vec![self];
        };
        let stride: usize = inner.iter().product();
        (0..n)
            .map(|i| Nested {
                shape: inner,
                start: self.start + i * stride,
                ..self
            })
            .collect()
    }
}

impl Serialize for Nested<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.shape.is_empty() {
            return element(self.data, self.start, self.bytes, s);
        }
        let rows = self.rows();
        let mut seq = s.serialize_seq(Some(rows.len()))?;
        for row in &rows {
            seq.serialize_element(row)?;
        }
        seq.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn base64_variants() {
        assert_eq!(decode_b64("aGk=").unwrap(), b"hi");
        assert_eq!(decode_b64("aGk").unwrap(), b"hi"); // unpadded
        assert_eq!(decode_b64("aGk=\n").unwrap(), b"hi"); // `base64` output
        assert_eq!(decode_b64("-_8=").unwrap(), vec![0xfb, 0xff]); // URL-safe
        assert_eq!(decode_b64("+/8=").unwrap(), vec![0xfb, 0xff]);
        assert!(decode_b64("not base64!").is_err());
        assert_eq!(encode_b64(b"hi"), "aGk=");
        assert_eq!(b64_text(&json!({"b64": "aGk="})), Some("aGk="));
        assert_eq!(b64_text(&json!({"b64": "aGk=", "x": 1})), None);
        assert_eq!(b64_text(&json!("aGk=")), None);
    }

    #[test]
    fn flatten_any_nesting() {
        let v = json!([[1, 2], [3, [4, 5]]]);
        let flat: Vec<i64> = flatten(&v).iter().map(|x| x.as_i64().unwrap()).collect();
        assert_eq!(flat, vec![1, 2, 3, 4, 5]);
        assert_eq!(flatten(&json!(7)).len(), 1);
    }

    #[test]
    fn nested_shape_inference() {
        let v = json!([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]);
        let (shape, leaves) = nested(&v, "instances").unwrap();
        assert_eq!(shape, vec![2, 3]);
        assert_eq!(leaves[3], &json!(4.0));
        let (shape, _) = nested(&json!([{"b64": "aGk="}, {"b64": "aGk="}]), "x").unwrap();
        assert_eq!(shape, vec![2]);
        let (shape, _) = nested(&json!([[{"b64": "aGk="}]]), "x").unwrap();
        assert_eq!(shape, vec![1, 1]);
        let v = json!(3.5);
        let (shape, leaves) = nested(&v, "x").unwrap();
        assert_eq!((shape, leaves.len()), (vec![], 1));
        let e = nested(&json!([[1, 2], [3]]), "instances").unwrap_err();
        assert!(
            e.contains("instances[1]") && e.contains("rectangular"),
            "{e}"
        );
        let e = nested(&json!([[1, 2], [3, [4]]]), "inputs").unwrap_err();
        assert!(e.contains("inputs[1][1]"), "{e}");
        assert!(nested(&json!([1, [2]]), "x").is_err());
    }

    #[test]
    fn tfs_tensors_from_json() {
        let v = json!([[1, 2.5]]);
        let (shape, leaves) = nested(&v, "instances").unwrap();
        let t = tfs_tensor(shape, &leaves, "instances").unwrap();
        assert_eq!(t, Tensor::from_f32(vec![1, 2], vec![1.0, 2.5]).unwrap());
        let v = json!([{"b64": "aGk="}, "hey"]);
        let (shape, leaves) = nested(&v, "instances").unwrap();
        let t = tfs_tensor(shape, &leaves, "instances").unwrap();
        assert_eq!(
            t.data(),
            &TensorData::String(vec![b"hi".to_vec(), b"hey".to_vec()])
        );
        let v = json!([1.0, {"b64": "aGk="}]);
        let (shape, leaves) = nested(&v, "instances").unwrap();
        let e = tfs_tensor(shape, &leaves, "instances").unwrap_err();
        assert!(e.contains("element 1 is an object"), "{e}");
        let v = json!([{"b64": "@@@"}]);
        let (shape, leaves) = nested(&v, "instances").unwrap();
        assert!(tfs_tensor(shape, &leaves, "instances")
            .unwrap_err()
            .contains("base64"));
        assert!(tfs_tensor(vec![0], &[], "instances")
            .unwrap_err()
            .contains("empty"));
    }

    #[test]
    fn writing_flat_and_nested() {
        let t = Tensor::from_f32(vec![2, 2], vec![0.1, 2.0, 3.0, 4.0]).unwrap();
        let flat = serde_json::to_string(&Flat {
            data: t.data(),
            bytes: BytesAs::Base64,
        })
        .unwrap();
        assert_eq!(flat, "[0.1,2.0,3.0,4.0]");
        let nested = serde_json::to_string(&Nested::whole(&t, BytesAs::Base64)).unwrap();
        assert_eq!(nested, "[[0.1,2.0],[3.0,4.0]]");
        let rows: Vec<String> = Nested::whole(&t, BytesAs::Base64)
            .rows()
            .iter()
            .map(|r| serde_json::to_string(r).unwrap())
            .collect();
        assert_eq!(rows, vec!["[0.1,2.0]", "[3.0,4.0]"]);

        let s = Tensor::new(
            vec![2],
            TensorData::String(vec![b"ok".to_vec(), vec![0xff]]),
        )
        .unwrap();
        let kserve = serde_json::to_string(&Flat {
            data: s.data(),
            bytes: BytesAs::Base64,
        })
        .unwrap();
        assert_eq!(kserve, r#"["b2s=","/w=="]"#);
        let tfs = serde_json::to_string(&Nested::whole(&s, BytesAs::Tfs { b64: false })).unwrap();
        assert_eq!(tfs, r#"["ok",{"b64":"/w=="}]"#);
        let tfs = serde_json::to_string(&Nested::whole(&s, BytesAs::Tfs { b64: true })).unwrap();
        assert_eq!(tfs, r#"[{"b64":"b2s="},{"b64":"/w=="}]"#);
    }
}

//! Triton's binary tensor data extension of KServe v2 REST: the body is a
//! JSON header of `Inference-Header-Content-Length` bytes followed by raw
//! tensors. Numbers are little-endian raw values; BYTES elements are each a
//! 4-byte little-endian length and the bytes.

use crate::error::ServeError;
use accel_core::TensorData;
use http::HeaderMap;

/// The header naming the JSON part's length.
pub(crate) const HEADER_LENGTH: &str = "inference-header-content-length";

/// The length given by `Inference-Header-Content-Length`, if present.
pub(crate) fn header_length(headers: &HeaderMap) -> Result<Option<usize>, ServeError> {
    let Some(v) = headers.get(HEADER_LENGTH) else {
        return Ok(None);
    };
    v.to_str()
        .ok()
        .and_then(|s| s.trim().parse::<usize>().ok())
        .map(Some)
        .ok_or_else(|| {
            ServeError::invalid(format!(
                "Inference-Header-Content-Length must be a byte count, got {:?}",
                String::from_utf8_lossy(v.as_bytes())
            ))
        })
}

/// Splits a body into its JSON header and the binary data after it.
pub(crate) fn split_body(
    body: &[u8],
    header_len: Option<usize>,
) -> Result<(&[u8], &[u8]), ServeError> {
    match header_len {
        None => Ok((body, &[])),
        Some(n) if n <= body.len() => Ok(body.split_at(n)),
        Some(n) => Err(ServeError::invalid(format!(
            "Inference-Header-Content-Length is {n} but the body has only {} bytes",
            body.len()
        ))),
    }
}

/// Hands out consecutive pieces of the binary section, one per input.
pub(crate) struct BinaryReader<'a> {
    rest: &'a [u8],
}

impl<'a> BinaryReader<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        BinaryReader { rest: data }
    }

    /// The next `n` bytes, for input `name`.
    pub fn take(&mut self, n: usize, name: &str) -> Result<&'a [u8], ServeError> {
        if n > self.rest.len() {
            return Err(ServeError::invalid(format!(
                "input {name:?} has binary_data_size {n} but only {} bytes of binary data are left",
                self.rest.len()
            )));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    /// Bytes no input claimed.
    pub fn remaining(&self) -> usize {
        self.rest.len()
    }
}

/// Parses BYTES elements: each a u32 little-endian length, then the bytes.
pub(crate) fn read_bytes_elements(mut data: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let mut out = Vec::new();
    while !data.is_empty() {
        let Some((len, rest)) = data.split_first_chunk::<4>() else {
            return Err(format!(
                "BYTES element {} is cut off inside its 4-byte length prefix",
                out.len()
            ));
        };
        let len = u32::from_le_bytes(*len) as usize;
        if len > rest.len() {
            return Err(format!(
                "BYTES element {} claims {len} bytes but only {} remain",
                out.len(),
                rest.len()
            ));
        }
        let (item, rest) = rest.split_at(len);
        out.push(item.to_vec());
        data = rest;
    }
    Ok(out)
}

/// Frames BYTES elements as [`read_bytes_elements`] reads them.
pub(crate) fn write_bytes_elements(items: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(items.iter().map(|i| i.len() + 4).sum());
    for item in items {
        out.extend_from_slice(&(item.len() as u32).to_le_bytes());
        out.extend_from_slice(item);
    }
    out
}

/// The element types of the binary form (BOOL is one byte, as UINT8 is).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RawType {
    Bool,
    U8,
    I8,
    I32,
    I64,
    F32,
}

fn chunks<const N: usize, T>(
    data: &[u8],
    what: &str,
    f: impl Fn([u8; N]) -> T,
) -> Result<Vec<T>, String> {
    if !data.len().is_multiple_of(N) {
        return Err(format!(
            "{} bytes of {what} data is not a whole number of {N}-byte elements",
            data.len()
        ));
    }
    Ok(data
        .chunks_exact(N)
        .map(|c| f(c.try_into().expect("exact chunk")))
        .collect())
}

/// Decodes raw little-endian values.
pub(crate) fn read_raw(ty: RawType, data: &[u8]) -> Result<TensorData, String> {
    Ok(match ty {
        RawType::Bool => TensorData::U8(data.iter().map(|&b| u8::from(b != 0)).collect()),
        RawType::U8 => TensorData::U8(data.to_vec()),
        RawType::I8 => TensorData::I8(data.iter().map(|&b| b as i8).collect()),
        RawType::I32 => TensorData::I32(chunks(data, "INT32", i32::from_le_bytes)?),
        RawType::I64 => TensorData::I64(chunks(data, "INT64", i64::from_le_bytes)?),
        RawType::F32 => TensorData::F32(chunks(data, "FP32", f32::from_le_bytes)?),
    })
}

/// Encodes a tensor's elements in the binary form.
pub(crate) fn write_raw(data: &TensorData) -> Vec<u8> {
    match data {
        TensorData::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        TensorData::I64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        TensorData::I32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        TensorData::U8(v) => v.clone(),
        TensorData::I8(v) => v.iter().map(|&x| x as u8).collect(),
        TensorData::String(v) => write_bytes_elements(v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn bytes_framing_round_trips_and_rejects_truncation() {
        let items = vec![b"abc".to_vec(), vec![], vec![0xff; 300]];
        let framed = write_bytes_elements(&items);
        assert_eq!(&framed[..7], &[3, 0, 0, 0, b'a', b'b', b'c']);
        assert_eq!(&framed[7..11], &[0, 0, 0, 0]);
        assert_eq!(&framed[11..15], &[44, 1, 0, 0]); // 300 little-endian
        assert_eq!(read_bytes_elements(&framed).unwrap(), items);
        // What tritonclient's serialize_byte_tensor makes for [b"hi"].
        assert_eq!(
            read_bytes_elements(b"\x02\x00\x00\x00hi").unwrap(),
            vec![b"hi".to_vec()]
        );
        let e = read_bytes_elements(&framed[..framed.len() - 1]).unwrap_err();
        assert!(e.contains("element 2 claims 300 bytes"), "{e}");
        let e = read_bytes_elements(&[1, 0]).unwrap_err();
        assert!(e.contains("length prefix"), "{e}");
        assert!(read_bytes_elements(&[]).unwrap().is_empty());
    }

    #[test]
    fn header_split() {
        let mut h = HeaderMap::new();
        assert_eq!(header_length(&h).unwrap(), None);
        assert_eq!(
            split_body(b"{}xyz", None).unwrap(),
            (&b"{}xyz"[..], &b""[..])
        );
        h.insert(HEADER_LENGTH, HeaderValue::from_static("2"));
        let n = header_length(&h).unwrap();
        assert_eq!(split_body(b"{}xyz", n).unwrap(), (&b"{}"[..], &b"xyz"[..]));
        assert!(split_body(b"{}", Some(3))
            .unwrap_err()
            .message
            .contains("only 2 bytes"));
        h.insert(HEADER_LENGTH, HeaderValue::from_static("two"));
        assert!(header_length(&h).is_err());

        let mut r = BinaryReader::new(b"abcdef");
        assert_eq!(r.take(2, "x").unwrap(), b"ab");
        assert_eq!(r.take(3, "y").unwrap(), b"cde");
        assert_eq!(r.remaining(), 1);
        assert!(r.take(2, "z").unwrap_err().message.contains("\"z\""));
    }

    #[test]
    fn raw_numbers_are_little_endian() {
        let f = write_raw(&TensorData::F32(vec![1.0, -2.5]));
        assert_eq!(&f[..4], &[0, 0, 0x80, 0x3f]);
        assert_eq!(
            read_raw(RawType::F32, &f).unwrap(),
            TensorData::F32(vec![1.0, -2.5])
        );
        let i = write_raw(&TensorData::I64(vec![-1, 258]));
        assert_eq!(&i[8..10], &[2, 1]);
        assert_eq!(
            read_raw(RawType::I64, &i).unwrap(),
            TensorData::I64(vec![-1, 258])
        );
        assert_eq!(
            read_raw(RawType::Bool, &[0, 7]).unwrap(),
            TensorData::U8(vec![0, 1])
        );
        assert_eq!(
            read_raw(RawType::I8, &[0xff]).unwrap(),
            TensorData::I8(vec![-1])
        );
        assert!(read_raw(RawType::I32, &[0; 6])
            .unwrap_err()
            .contains("4-byte"));
        let s = write_raw(&TensorData::String(vec![b"ab".to_vec()]));
        assert_eq!(s, b"\x02\x00\x00\x00ab");
    }
}

//! Decoding JPEG and PNG bytes into 8-bit RGB, honouring EXIF orientation,
//! dropping alpha (as PIL's `convert("RGB")` does) and expanding grayscale.
//! The pixel limit is checked against the header before anything is allocated.

use crate::error::RuntimeError;
use crate::limits::Limits;
use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader};
use std::io::Cursor;

/// A decoded 8-bit RGB image, row-major, 3 bytes a pixel.
#[derive(Clone)]
pub struct RgbImage {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// `width * height * 3` bytes.
    pub pixels: Vec<u8>,
}

impl std::fmt::Debug for RgbImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RgbImage({}x{})", self.width, self.height)
    }
}

/// Decodes `bytes` (JPEG or PNG, detected from the content, not a file name).
pub fn decode_rgb(bytes: &[u8], limits: &Limits) -> Result<RgbImage, RuntimeError> {
    if bytes.is_empty() {
        return Err(RuntimeError::Decode("empty input (0 bytes)".into()));
    }
    if bytes.len() > limits.max_image_bytes {
        return Err(RuntimeError::InvalidInput(format!(
            "encoded image is {} bytes, over the limit of {}",
            bytes.len(),
            limits.max_image_bytes
        )));
    }
    let format = image::guess_format(bytes).map_err(|_| {
        RuntimeError::Decode("not a JPEG or PNG image (unrecognised signature)".into())
    })?;
    if !matches!(format, ImageFormat::Jpeg | ImageFormat::Png) {
        return Err(RuntimeError::Decode(format!(
            "unsupported image format {format:?} (JPEG and PNG are supported)"
        )));
    }
    if let Some((width, height)) = header_dimensions(bytes, format) {
        check_pixels(width, height, limits)?;
    }
    if format == ImageFormat::Jpeg {
        check_jpeg_complete(bytes)?;
    }
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    // Dimensions are checked by hand first, to report them; the crate's own
    // limits then bound every allocation the decoder makes.
    let mut decoder_limits = image::Limits::default();
    decoder_limits.max_alloc = Some(limits.max_image_pixels.saturating_mul(4) + (64 << 20));
    reader.limits(decoder_limits);
    let mut decoder = reader
        .into_decoder()
        .map_err(|e| RuntimeError::Decode(format!("{format:?}: {e}")))?;
    let (width, height) = decoder.dimensions();
    check_pixels(width, height, limits)?;
    let orientation = decoder
        .orientation()
        .map_err(|e| RuntimeError::Decode(format!("{format:?}: {e}")))?;
    let mut img = DynamicImage::from_decoder(decoder)
        .map_err(|e| RuntimeError::Decode(format!("{format:?}: {e}")))?;
    img.apply_orientation(orientation);
    let rgb = match img {
        DynamicImage::ImageRgb8(rgb) => rgb,
        other => other.to_rgb8(),
    };
    Ok(RgbImage {
        width: rgb.width(),
        height: rgb.height(),
        pixels: rgb.into_raw(),
    })
}

/// JPEG decoders pad a truncated scan with grey and report success; Pillow
/// refuses such files ("image file is truncated"), and so do we: the entropy
/// coded data must be followed by an end-of-image marker.
fn check_jpeg_complete(bytes: &[u8]) -> Result<(), RuntimeError> {
    let sos = bytes.windows(2).position(|w| w == [0xFF, 0xDA]);
    let eoi = bytes.windows(2).rposition(|w| w == [0xFF, 0xD9]);
    match (sos, eoi) {
        (Some(s), Some(e)) if e > s => Ok(()),
        (None, _) => Err(RuntimeError::Decode(
            "Jpeg: no image data (no start-of-scan marker)".into(),
        )),
        _ => Err(RuntimeError::Decode(format!(
            "Jpeg: file is truncated ({} bytes, no end-of-image marker)",
            bytes.len()
        ))),
    }
}

fn check_pixels(width: u32, height: u32, limits: &Limits) -> Result<(), RuntimeError> {
    let pixels = u64::from(width) * u64::from(height);
    if pixels > limits.max_image_pixels {
        return Err(RuntimeError::TooManyPixels {
            width,
            height,
            pixels,
            limit: limits.max_image_pixels,
        });
    }
    if pixels == 0 {
        return Err(RuntimeError::Decode(
            "image has zero width or height".into(),
        ));
    }
    Ok(())
}

/// Width and height as the file's header states them, read without
/// decoding anything: PNG's IHDR, or JPEG's first start-of-frame marker.
pub fn header_dimensions(bytes: &[u8], format: ImageFormat) -> Option<(u32, u32)> {
    let be16 = |i: usize| -> Option<u32> {
        Some(u32::from(u16::from_be_bytes(
            bytes.get(i..i + 2)?.try_into().ok()?,
        )))
    };
    let be32 = |i: usize| -> Option<u32> {
        Some(u32::from_be_bytes(bytes.get(i..i + 4)?.try_into().ok()?))
    };
    match format {
        ImageFormat::Png => {
            (bytes.get(12..16)? == b"IHDR").then_some(())?;
            Some((be32(16)?, be32(20)?))
        }
        ImageFormat::Jpeg => {
            let mut i = 2;
            while i + 4 <= bytes.len() {
                if bytes[i] != 0xFF {
                    return None;
                }
                let marker = bytes[i + 1];
                if marker == 0xFF {
                    i += 1;
                    continue;
                }
                let len = be16(i + 2)? as usize;
                let is_sof =
                    (0xC0..=0xCF).contains(&marker) && !matches!(marker, 0xC4 | 0xC8 | 0xCC);
                if is_sof {
                    return Some((be16(i + 7)?, be16(i + 5)?));
                }
                i += 2 + len;
            }
            None
        }
        _ => None,
    }
}

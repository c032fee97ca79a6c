//! From RGB pixels to the model's input tensor: resize (aspect-preserving
//! shorter side + center crop, or plain), channel order, scale/mean/std and
//! layout, written straight into the caller's batch buffer.
//!
//! The resize is a bilinear *convolution* (the filter support grows with the
//! downscale factor), the same resampling as PIL's `Image.resize(...,
//! BILINEAR)` that torchvision applies to PIL images.

use super::decode::RgbImage;
use crate::error::RuntimeError;
use accel_core::spec::{ChannelOrder, Layout, Preprocess, Resize};
use fast_image_resize as fr;

/// The size the image is scaled to before cropping, as torchvision's
/// `Resize(int)` computes it: the shorter side becomes `shorter`, the longer
/// `int(shorter * long / short)`.
pub fn scaled_size(width: u32, height: u32, resize: &Resize) -> (u32, u32) {
    match *resize {
        Resize::Plain { width, height } => (width, height),
        Resize::ShorterSideCenterCrop { shorter_side, .. } => {
            let s = u64::from(shorter_side);
            if width <= height {
                let h = (s * u64::from(height) / u64::from(width)) as u32;
                (shorter_side, h.max(1))
            } else {
                let w = (s * u64::from(width) / u64::from(height)) as u32;
                (w.max(1), shorter_side)
            }
        }
    }
}

/// Offset of a centered crop, as torchvision's `CenterCrop` computes it:
/// `int(round((size - crop) / 2))`, with Python's round-half-to-even.
pub fn crop_offset(size: u32, crop: u32) -> u32 {
    let diff = size.saturating_sub(crop);
    let half = diff / 2;
    if diff % 2 == 1 && half % 2 == 1 {
        half + 1
    } else {
        half
    }
}

/// Resizes and crops `img` to the preprocessing's output size, returning
/// packed RGB bytes of that size. Only the pixels that survive the crop are
/// computed: the source region under the crop window is resampled straight
/// to the output size, with the same scale factor (and so the same filter)
/// as resizing the whole image and cropping afterwards.
pub fn resize_rgb(img: &RgbImage, resize: &Resize) -> Result<Vec<u8>, RuntimeError> {
    let (sw, sh) = scaled_size(img.width, img.height, resize);
    let (ow, oh) = resize.output_size();
    if ow > sw || oh > sh {
        return Err(RuntimeError::Spec(format!(
            "crop {ow}x{oh} is larger than the scaled image {sw}x{sh}"
        )));
    }
    let src = fr::images::ImageRef::new(img.width, img.height, &img.pixels, fr::PixelType::U8x3)
        .map_err(|e| RuntimeError::InvalidInput(format!("bad image buffer: {e}")))?;
    let (fx, fy) = (
        f64::from(img.width) / f64::from(sw),
        f64::from(img.height) / f64::from(sh),
    );
    let (x0, y0) = (crop_offset(sw, ow), crop_offset(sh, oh));
    let mut out = fr::images::Image::new(ow, oh, fr::PixelType::U8x3);
    let options = fr::ResizeOptions::new()
        .resize_alg(fr::ResizeAlg::Convolution(fr::FilterType::Bilinear))
        .use_alpha(false)
        .crop(
            f64::from(x0) * fx,
            f64::from(y0) * fy,
            f64::from(ow) * fx,
            f64::from(oh) * fy,
        );
    fr::Resizer::new()
        .resize(&src, &mut out, &options)
        .map_err(|e| RuntimeError::InvalidInput(format!("resize failed: {e}")))?;
    Ok(out.into_vec())
}

/// Preprocesses one decoded image and writes its `3 * H * W` floats into
/// `out` (one batch item) in the spec's layout and channel order.
pub fn preprocess_into(
    img: &RgbImage,
    spec: &Preprocess,
    out: &mut [f32],
) -> Result<(), RuntimeError> {
    let (w, h) = spec.resize.output_size();
    let (w, h) = (w as usize, h as usize);
    if out.len() != w * h * 3 {
        return Err(RuntimeError::Spec(format!(
            "output buffer holds {} floats, the image needs {}",
            out.len(),
            w * h * 3
        )));
    }
    let rgb = resize_rgb(img, &spec.resize)?;
    // Source channel for each model channel.
    let src_c: [usize; 3] = match spec.channel_order {
        ChannelOrder::Rgb => [0, 1, 2],
        ChannelOrder::Bgr => [2, 1, 0],
    };
    // (p * scale - mean) / std  ==  p * a + b
    let a: [f32; 3] = std::array::from_fn(|c| spec.scale / spec.std[c]);
    let b: [f32; 3] = std::array::from_fn(|c| -spec.mean[c] / spec.std[c]);
    match spec.layout {
        Layout::Nchw => {
            let plane = w * h;
            for c in 0..3 {
                let dst = &mut out[c * plane..(c + 1) * plane];
                let s = src_c[c];
                for (d, px) in dst.iter_mut().zip(rgb.chunks_exact(3)) {
                    *d = f32::from(px[s]) * a[c] + b[c];
                }
            }
        }
        Layout::Nhwc => {
            for (d, px) in out.chunks_exact_mut(3).zip(rgb.chunks_exact(3)) {
                for c in 0..3 {
                    d[c] = f32::from(px[src_c[c]]) * a[c] + b[c];
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scaled_size_follows_torchvision() {
        let r = Resize::ShorterSideCenterCrop {
            shorter_side: 256,
            crop_width: 224,
            crop_height: 224,
        };
        // int(256 * 640 / 427) = 383
        assert_eq!(scaled_size(640, 427, &r), (383, 256));
        assert_eq!(scaled_size(427, 640, &r), (256, 383));
        assert_eq!(scaled_size(300, 300, &r), (256, 256));
    }

    #[test]
    fn crop_offset_rounds_half_to_even_like_python() {
        // round((256-224)/2) = 16; round((383-224)/2)=round(79.5)=80; round(78.5)=78
        assert_eq!(crop_offset(256, 224), 16);
        assert_eq!(crop_offset(383, 224), 80);
        assert_eq!(crop_offset(381, 224), 78);
    }
}

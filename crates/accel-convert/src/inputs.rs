//! Calibration and validation inputs: image folders read in file-name order,
//! optionally augmented (crops and mirror images), and preprocessed by the
//! model's own pipeline spec into batch-1 tensors.

use crate::ConvertError;
use accel_core::spec::Preprocess;
use accel_core::Tensor;
use accel_runtime::image::{decode_rgb, preprocess_into, RgbImage};
use accel_runtime::Limits;
use std::path::Path;

/// Encoded images of a folder (`.jpg`, `.jpeg`, `.png`, any case), sorted
/// by file name: (file name, bytes).
pub fn read_folder(dir: &Path) -> Result<Vec<(String, Vec<u8>)>, ConvertError> {
    let io = |e| ConvertError::Io {
        context: format!("reading {}", dir.display()),
        source: e,
    };
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map_err(io)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file()
                && p.extension().and_then(|e| e.to_str()).is_some_and(|e| {
                    matches!(e.to_ascii_lowercase().as_str(), "jpg" | "jpeg" | "png")
                })
        })
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(ConvertError::InvalidArgument(format!(
            "no images (.jpg, .jpeg, .png) in {}",
            dir.display()
        )));
    }
    files
        .into_iter()
        .map(|p| {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let bytes = std::fs::read(&p).map_err(|e| ConvertError::Io {
                context: format!("reading {}", p.display()),
                source: e,
            })?;
            Ok((name, bytes))
        })
        .collect()
}

fn crop(img: &RgbImage, x: u32, y: u32, w: u32, h: u32) -> RgbImage {
    let mut pixels = Vec::with_capacity(w as usize * h as usize * 3);
    for row in y..y + h {
        let start = (row as usize * img.width as usize + x as usize) * 3;
        pixels.extend_from_slice(&img.pixels[start..start + w as usize * 3]);
    }
    RgbImage {
        width: w,
        height: h,
        pixels,
    }
}

fn mirror(img: &RgbImage) -> RgbImage {
    let mut pixels = img.pixels.clone();
    for row in pixels.chunks_exact_mut(img.width as usize * 3) {
        let n = img.width as usize;
        for x in 0..n / 2 {
            for c in 0..3 {
                row.swap(x * 3 + c, (n - 1 - x) * 3 + c);
            }
        }
    }
    RgbImage {
        width: img.width,
        height: img.height,
        pixels,
    }
}

/// The image, its four corner crops and its center crop at 90 % of each
/// side, and the mirror image of each: 12 views.
pub fn augmented(img: &RgbImage) -> Vec<RgbImage> {
    let (w, h) = (img.width * 9 / 10, img.height * 9 / 10);
    let mut views = vec![img.clone()];
    if w > 0 && h > 0 {
        let (dx, dy) = (img.width - w, img.height - h);
        for (x, y) in [(0, 0), (dx, 0), (0, dy), (dx, dy), (dx / 2, dy / 2)] {
            views.push(crop(img, x, y, w, h));
        }
    }
    let mirrored: Vec<RgbImage> = views.iter().map(mirror).collect();
    views.extend(mirrored);
    views
}

/// Decodes and preprocesses `images` into batch-1 tensors (with
/// [`augmented`] views when `augment`); a bad image is an error naming it.
pub fn preprocess_all(
    images: &[(String, Vec<u8>)],
    spec: &Preprocess,
    nchw: bool,
    augment: bool,
) -> Result<Vec<Tensor>, ConvertError> {
    let (w, h) = spec.resize.output_size();
    let (w, h) = (w as usize, h as usize);
    let shape = if nchw {
        vec![1, 3, h, w]
    } else {
        vec![1, h, w, 3]
    };
    let limits = Limits::default();
    let mut out = Vec::new();
    for (name, bytes) in images {
        let img = decode_rgb(bytes, &limits)
            .map_err(|e| ConvertError::InvalidArgument(format!("{name}: {e}")))?;
        let views = if augment { augmented(&img) } else { vec![img] };
        for view in views {
            let mut data = vec![0f32; 3 * w * h];
            preprocess_into(&view, spec, &mut data)
                .map_err(|e| ConvertError::InvalidArgument(format!("{name}: {e}")))?;
            out.push(
                Tensor::from_f32(shape.clone(), data)
                    .map_err(|e| ConvertError::InvalidArgument(e.to_string()))?,
            );
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn img(w: u32, h: u32) -> RgbImage {
        RgbImage {
            width: w,
            height: h,
            pixels: (0..w * h * 3).map(|i| (i % 251) as u8).collect(),
        }
    }

    #[test]
    fn mirror_twice_is_identity_and_crops_have_the_right_size() {
        let a = img(7, 5);
        assert_eq!(mirror(&mirror(&a)).pixels, a.pixels);
        assert_ne!(mirror(&a).pixels, a.pixels);
        let views = augmented(&img(100, 50));
        assert_eq!(views.len(), 12);
        assert_eq!((views[1].width, views[1].height), (90, 45));
        // The bottom-right crop's last pixel is the image's last pixel.
        let full = &views[0].pixels;
        assert_eq!(views[4].pixels.last(), full.last());
    }
}

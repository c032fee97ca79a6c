//! Where the model's input pixels came from: maps a point given as a
//! fraction of the model input back to pixels of the original image,
//! undoing the resize (and the center crop).

use super::preprocess::{crop_offset, scaled_size};
use accel_core::spec::Resize;

/// The mapping from model-input fractions to original-image pixels of one
/// image of a batch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SourceGeometry {
    /// Original width in pixels.
    pub width: u32,
    /// Original height in pixels.
    pub height: u32,
    /// Model input width and height.
    input: (f32, f32),
    /// Crop offset in the scaled image.
    offset: (f32, f32),
    /// Original pixels per scaled pixel.
    factor: (f32, f32),
}

impl SourceGeometry {
    /// The geometry of an `width` × `height` image put through `resize`.
    pub fn of(width: u32, height: u32, resize: &Resize) -> Self {
        let (sw, sh) = scaled_size(width, height, resize);
        let (ow, oh) = resize.output_size();
        SourceGeometry {
            width,
            height,
            input: (ow as f32, oh as f32),
            offset: (crop_offset(sw, ow) as f32, crop_offset(sh, oh) as f32),
            factor: (width as f32 / sw as f32, height as f32 / sh as f32),
        }
    }

    /// The geometry when the model input *is* the image (raw tensor requests):
    /// fractions become pixels of the input.
    pub fn identity(width: u32, height: u32) -> Self {
        SourceGeometry {
            width,
            height,
            input: (width as f32, height as f32),
            offset: (0.0, 0.0),
            factor: (1.0, 1.0),
        }
    }

    /// `[ymin, xmin, ymax, xmax]` as fractions of the model input →
    /// pixels of the original image, clipped to it.
    pub fn to_original(&self, bbox: [f32; 4]) -> [f32; 4] {
        let x = |f: f32| {
            ((f * self.input.0 + self.offset.0) * self.factor.0).clamp(0.0, self.width as f32)
        };
        let y = |f: f32| {
            ((f * self.input.1 + self.offset.1) * self.factor.1).clamp(0.0, self.height as f32)
        };
        [y(bbox[0]), x(bbox[1]), y(bbox[2]), x(bbox[3])]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_resize_scales_fractions_to_the_original() {
        let g = SourceGeometry::of(
            640,
            427,
            &Resize::Plain {
                width: 300,
                height: 300,
            },
        );
        assert_eq!(
            g.to_original([0.0, 0.0, 1.0, 1.0]),
            [0.0, 0.0, 427.0, 640.0]
        );
        let b = g.to_original([0.25, 0.5, 0.75, 1.5]);
        assert!((b[0] - 106.75).abs() < 1e-3 && (b[1] - 320.0).abs() < 1e-3);
        assert_eq!(b[3], 640.0, "clipped to the image");
    }

    #[test]
    fn center_crop_adds_the_crop_offset_back() {
        // 640x427 → scaled 383x256 (factor 640/383), crop 224 at x 80, y 16.
        let r = Resize::ShorterSideCenterCrop {
            shorter_side: 256,
            crop_width: 224,
            crop_height: 224,
        };
        let g = SourceGeometry::of(640, 427, &r);
        let b = g.to_original([0.0, 0.0, 1.0, 1.0]);
        let fx = 640.0 / 383.0;
        let fy = 427.0 / 256.0;
        assert!((b[1] - 80.0 * fx).abs() < 1e-3, "{b:?}");
        assert!((b[0] - 16.0 * fy).abs() < 1e-3, "{b:?}");
        assert!((b[3] - 304.0 * fx).abs() < 1e-3, "{b:?}");
        assert!((b[2] - 240.0 * fy).abs() < 1e-3, "{b:?}");
    }
}

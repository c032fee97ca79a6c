//! Explicit, configurable limits on what one request may ask of the runtime.

/// Limits applied before any large allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest accepted image, in pixels (width × height from the header).
    pub max_image_pixels: u64,
    /// Largest accepted encoded image, in bytes.
    pub max_image_bytes: usize,
    /// Largest accepted batch.
    pub max_batch: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            // 64 megapixels: a 8000x8000 photo decodes, a 30000x30000 bomb does not.
            max_image_pixels: 64 * 1024 * 1024,
            max_image_bytes: 32 * 1024 * 1024,
            max_batch: 64,
        }
    }
}

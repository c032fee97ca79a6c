//! Image input: decoding encoded bytes (JPEG, PNG) into RGB pixels, and
//! turning pixels into the model's input tensor.

pub mod decode;
pub mod geometry;
pub mod preprocess;

pub use decode::{decode_rgb, RgbImage};
pub use preprocess::preprocess_into;

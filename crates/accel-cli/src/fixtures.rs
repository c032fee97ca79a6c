//! The pretrained model, labels and photos bundled into the binary, so that
//! `accel quickstart` works on a machine with nothing else installed.
//! Provenance and licences: `fixtures/PROVENANCE.md`.

/// ONNX Model Zoo ShuffleNetV2, QDQ int8 (Apache-2.0).
pub const MODEL: &[u8] = include_bytes!("../../../fixtures/models/shufflenet-v2-12-qdq.onnx");
/// File name of [`MODEL`].
pub const MODEL_FILE: &str = "shufflenet-v2-12-qdq.onnx";
/// ImageNet labels, short readable names (public domain).
pub const LABELS_JSON: &str = include_str!("../../../fixtures/labels/imagenet-simple-labels.json");

/// Bundled photos: (file name, bytes).
pub const PHOTOS: &[(&str, &[u8])] = &[
    (
        "skimage_chelsea.png",
        include_bytes!("../../../fixtures/images/skimage_chelsea.png"),
    ),
    (
        "skimage_coffee.png",
        include_bytes!("../../../fixtures/images/skimage_coffee.png"),
    ),
    (
        "sklearn_china.jpg",
        include_bytes!("../../../fixtures/images/sklearn_china.jpg"),
    ),
];

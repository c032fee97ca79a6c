//! The targets: bytes in, panic on a broken invariant.

use accel_core::name::{validate_name, NameRef};
use accel_core::spec::Preset;
use accel_core::PipelineSpec;
use accel_proto::inference::ModelInferRequest;
use accel_proto::tensorflow::serving::PredictRequest;
use accel_runtime::image::{decode_rgb, preprocess_into};
use accel_runtime::Limits;
use accel_server::fuzzing::Validator;
use accel_server::request::NamedInput;
use oci_spec::image::{ImageConfiguration, ImageIndex, ImageManifest};
use prost::Message;
use std::sync::LazyLock;

/// A target: a name (its corpus folder) and its body.
pub type Target = (&'static str, fn(&[u8]));

/// Every target.
pub const ALL: [Target; 6] = [
    ("tfs_predict", tfs_predict),
    ("kserve_infer", kserve_infer),
    ("rest_json", rest_json),
    ("image_preprocess", image_preprocess),
    ("pipeline_spec", pipeline_spec),
    ("metadata", metadata),
];

static VALIDATOR: LazyLock<Validator> = LazyLock::new(Validator::new);

/// Every converted tensor holds as many elements as its shape says; then
/// the core's validation runs against an image and a raw-tensor service.
fn check_inputs(inputs: &[NamedInput]) {
    for i in inputs {
        let n: usize = i.tensor.shape().iter().product();
        assert_eq!(n, i.tensor.data().len(), "input {:?}", i.name);
    }
    VALIDATOR.validate(inputs);
}

/// bytes → `tensorflow.serving.PredictRequest` → the gRPC adapter's
/// conversion into tensors → the core's input validation.
pub fn tfs_predict(data: &[u8]) {
    if let Ok(req) = PredictRequest::decode(data) {
        if let Ok(inputs) = accel_server::fuzzing::tfs_predict(&req) {
            check_inputs(&inputs);
        }
    }
}

/// bytes → `inference.ModelInferRequest` (typed or raw contents, BYTES
/// splitting) → tensors → validation.
pub fn kserve_infer(data: &[u8]) {
    if let Ok(req) = ModelInferRequest::decode(data) {
        if let Ok(inputs) = accel_server::fuzzing::kserve_infer(&req) {
            check_inputs(&inputs);
        }
    }
}

/// The first byte picks TF Serving REST `:predict` (even) or KServe REST
/// JSON (odd; the binary extension's part starts after the first NUL).
pub fn rest_json(data: &[u8]) {
    let Some((&sel, body)) = data.split_first() else {
        return;
    };
    let parsed = if sel % 2 == 0 {
        accel_server::fuzzing::tfs_rest(body, "data")
    } else {
        let (json, binary) = match body.iter().position(|&b| b == 0) {
            Some(i) => (&body[..i], &body[i + 1..]),
            None => (body, &[][..]),
        };
        accel_server::fuzzing::kserve_rest(json, binary)
    };
    if let Ok(inputs) = parsed {
        check_inputs(&inputs);
    }
}

const IMAGE_LIMITS: Limits = Limits {
    max_image_pixels: 4096 * 4096,
    max_image_bytes: 1 << 20,
    max_batch: 1,
};

/// bytes → `decode_rgb` → `preprocess_into` with a crop preset and a
/// plain-resize preset; every value finite.
pub fn image_preprocess(data: &[u8]) {
    let Ok(img) = decode_rgb(data, &IMAGE_LIMITS) else {
        return;
    };
    assert_eq!(
        img.pixels.len(),
        img.width as usize * img.height as usize * 3
    );
    for preset in [Preset::Torchvision, Preset::SsdVgg300] {
        let pre = preset.spec().preprocess.expect("image preset");
        let (w, h) = pre.resize.output_size();
        let mut out = vec![0f32; w as usize * h as usize * 3];
        if preprocess_into(&img, &pre, &mut out).is_ok() {
            assert!(out.iter().all(|v| v.is_finite()));
        }
    }
}

/// UTF-8 → `PipelineSpec::parse` (TOML or JSON); a parsed spec validates
/// and survives TOML and JSON round trips unchanged.
pub fn pipeline_spec(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(spec) = PipelineSpec::parse(text) else {
        return;
    };
    spec.validate().expect("a parsed spec validates");
    let toml = spec.to_toml();
    assert_eq!(
        PipelineSpec::parse(&toml).expect("TOML round trip"),
        spec,
        "{toml}"
    );
    let json = spec.to_json();
    assert_eq!(
        PipelineSpec::parse(&json).expect("JSON round trip"),
        spec,
        "{json}"
    );
}

/// The first byte picks: the zoo catalog parser, registry names and
/// references, OCI manifest/config/index JSON, a stored spec read back.
pub fn metadata(data: &[u8]) {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    match sel % 4 {
        0 => {
            let Ok(text) = std::str::from_utf8(rest) else {
                return;
            };
            if let Ok(catalog) = accel_zoo::Catalog::parse(text) {
                for m in &catalog.models {
                    let _ = (m.checksum(), m.file_name(), m.extension());
                    catalog.get(&m.name).expect("a listed name is found");
                }
                let _ = catalog.names();
            }
        }
        1 => {
            let Ok(text) = std::str::from_utf8(rest) else {
                return;
            };
            if validate_name(text).is_ok() {
                // Safe as one path component: no separator, not `.` or `..`
                // (inner dots, as in `a..b`, are allowed and harmless).
                assert!(!text.contains(['/', '\\', '\0']) && !text.starts_with('.'));
                assert!(!text.is_empty() && text.len() <= 128);
            }
            if let Ok(r) = text.parse::<NameRef>() {
                assert_eq!(r.to_string().parse::<NameRef>().expect("reparses"), r);
            }
        }
        2 => {
            let _ = serde_json::from_slice::<ImageManifest>(rest);
            let _ = serde_json::from_slice::<ImageConfiguration>(rest);
            let _ = serde_json::from_slice::<ImageIndex>(rest);
        }
        _ => {
            if let Ok(spec) = serde_json::from_slice::<PipelineSpec>(rest) {
                let _ = spec.validate();
                let _ = spec.to_json();
            }
        }
    }
}

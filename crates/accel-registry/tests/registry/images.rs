//! Image records (migration 5): building, blobs shared with other images
//! and models, clean-up in dependency order, dead builders, upgrading a
//! version-4 database.

use super::*;
use accel_registry::{
    DeploymentRecord, ImageBlob, ImageRecord, ModelRecord, NewDeployment, NewImage,
};
use serde_json::json;

pub(crate) const CONFIG_TYPE: &str = "application/vnd.oci.image.config.v1+json";
pub(crate) const LAYER_TYPE: &str = "application/vnd.oci.image.layer.v1.tar";
pub(crate) const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";

pub(crate) fn register(home: &Path, reg: &Registry, name: &str, content: &[u8]) -> ModelRecord {
    let f = model_file(home, &format!("{name}.onnx"), content);
    reg.register_model(new_model(name, f)).unwrap()
}

pub(crate) fn new_image(name: &str, model: &str) -> NewImage {
    NewImage {
        name: name.to_string(),
        model: r(model),
        description: format!("image {name}"),
        tags: BTreeMap::new(),
    }
}

/// Puts a config, the layers and a manifest naming them into a building
/// image; returns the manifest digest (`sha256:…`).
pub(crate) fn put_content(reg: &Registry, image: &ImageRecord, layers: &[&[u8]]) -> String {
    let config = format!("{{\"image\":\"{}\"}}", image.reference());
    let config_sha = reg
        .put_image_blob(image, config.as_bytes(), CONFIG_TYPE, "config")
        .unwrap();
    let mut descriptors = Vec::new();
    for layer in layers {
        let sha = reg
            .put_image_blob(image, layer, LAYER_TYPE, "layer")
            .unwrap();
        descriptors.push(json!({"mediaType": LAYER_TYPE, "digest": format!("sha256:{sha}"), "size": layer.len()}));
    }
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "config": {"mediaType": CONFIG_TYPE, "digest": format!("sha256:{config_sha}"), "size": config.len()},
        "layers": descriptors,
    });
    let manifest = serde_json::to_vec(&manifest).unwrap();
    let sha = reg
        .put_image_blob(image, &manifest, MANIFEST_TYPE, "manifest")
        .unwrap();
    format!("sha256:{sha}")
}

/// Builds image `name` from `model` with these layers, successfully.
pub(crate) fn build(reg: &Registry, name: &str, model: &str, layers: &[&[u8]]) -> ImageRecord {
    let image = reg.begin_image(&new_image(name, model)).unwrap();
    let digest = put_content(reg, &image, layers);
    reg.finish_image(&image, Ok(digest), "built\n").unwrap()
}

pub(crate) fn local(name: &str, image: &str, device: Option<&str>) -> NewDeployment {
    NewDeployment {
        name: name.to_string(),
        target: "local".into(),
        image: r(image),
        device: device.map(str::to_string),
        port: Some(8080),
        config: json!({"auth": true}),
    }
}

fn kubernetes(name: &str, image: &str) -> NewDeployment {
    NewDeployment {
        target: "kubernetes".into(),
        device: None,
        port: None,
        config: json!({"replicas": 2, "namespace": "ml"}),
        ..local(name, image, None)
    }
}

fn assert_kind(err: &RegistryError, kind: ErrorKind, msg: &str) {
    assert_eq!(err.kind(), kind, "{err}");
    assert_eq!(err.to_string(), msg);
}

fn assert_clean(reg: &Registry) {
    let report = reg.check(false).unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert!(
        report.orphan_blobs.is_empty() && report.dead_image_builds.is_empty(),
        "{report:?}"
    );
}

#[test]
fn image_lifecycle_build_show_list_push() {
    let (home, reg) = setup();
    register(home.path(), &reg, "m", b"model");
    let mut new = new_image("img", "m");
    new.tags.insert("team".into(), "vision".into());
    let image = reg.begin_image(&new).unwrap();
    assert_eq!(image.reference(), "img:1");
    assert_eq!(image.model, "m:1");
    assert_eq!(image.state, "building");
    assert_eq!(image.description, "image img");
    assert_eq!(image.tags.get("team").map(String::as_str), Some("vision"));
    assert!(
        image.created.ends_with('Z') && image.created.len() == 20,
        "{}",
        image.created
    );
    assert_eq!(
        (&image.finished, &image.manifest_digest, image.size),
        (&None, &None, 0)
    );
    assert!(image.blobs.is_empty() && image.locations.is_empty() && image.build_log.is_empty());
    // The builder is this (live) process: it reads as building.
    assert_eq!(reg.get_image(&r("img")).unwrap(), image);

    let layer_a: &[u8] = b"layer a";
    let layer_b: &[u8] = b"layer b, a bit longer";
    let digest = put_content(&reg, &image, &[layer_a, layer_b]);
    // The same content with the same role again changes nothing.
    let again = reg
        .put_image_blob(&image, layer_a, LAYER_TYPE, "layer")
        .unwrap();
    assert_eq!(again, sha256_hex(layer_a));
    let building = reg.get_image(&r("img:1")).unwrap();
    assert_eq!(building.state, "building");
    let roles: Vec<&str> = building.blobs.iter().map(|b| b.role.as_str()).collect();
    assert_eq!(roles, ["config", "layer", "layer", "manifest"]);
    let total: u64 = building.blobs.iter().map(|b| b.size).sum();
    assert_eq!(building.size, total);
    assert_eq!(
        building.blobs[1],
        ImageBlob {
            sha256: sha256_hex(layer_a),
            media_type: LAYER_TYPE.into(),
            role: "layer".into(),
            size: layer_a.len() as u64,
        }
    );
    assert_eq!(blob_files(home.path()).len(), 5); // model, config, 2 layers, manifest
    assert!(temp_files(home.path()).is_empty());

    let done = reg
        .finish_image(&image, Ok(digest.clone()), "step 1\nstep 2\n")
        .unwrap();
    assert_eq!(done.state, "succeeded");
    assert_eq!(done.manifest_digest.as_deref(), Some(digest.as_str()));
    assert_eq!(done.build_log, "step 1\nstep 2\n");
    assert_eq!(done.size, total);
    assert_eq!(done.blobs, building.blobs);
    assert!(done.finished.as_deref().is_some_and(|f| f.ends_with('Z')));
    assert_eq!(reg.get_image(&r("img")).unwrap(), done);
    assert_eq!(
        reg.read_blob_verified(&sha256_hex(layer_b)).unwrap(),
        layer_b
    );

    // A finished build takes no more blobs and cannot finish again.
    let err = reg
        .put_image_blob(&image, b"late", LAYER_TYPE, "layer")
        .unwrap_err();
    assert_kind(
        &err,
        ErrorKind::FailedPrecondition,
        "cannot add a blob to image \"img:1\": its build already ended (succeeded)",
    );
    let err = reg
        .finish_image(&image, Ok(digest.clone()), "")
        .unwrap_err();
    assert_kind(
        &err,
        ErrorKind::FailedPrecondition,
        "cannot finish image \"img:1\": its build already ended (succeeded)",
    );
    assert_eq!(blob_files(home.path()).len(), 5);

    // Pushes: a second push to the same reference replaces the first.
    let d1 = format!("sha256:{}", "1".repeat(64));
    let d2 = format!("sha256:{}", "2".repeat(64));
    reg.add_image_location(&done, "localhost:5000/team/img:1", &d1)
        .unwrap();
    reg.add_image_location(&done, "localhost:5000/team/img:latest", &d1)
        .unwrap();
    reg.add_image_location(&done, "localhost:5000/team/img:1", &d2)
        .unwrap();
    let pushed = reg.get_image(&r("img:1")).unwrap();
    let mut locations: Vec<(&str, &str)> = pushed
        .locations
        .iter()
        .map(|l| (l.reference.as_str(), l.digest.as_str()))
        .collect();
    // Oldest push first; both may carry the same second.
    locations.sort();
    assert_eq!(
        locations,
        [
            ("localhost:5000/team/img:1", d2.as_str()),
            ("localhost:5000/team/img:latest", d1.as_str())
        ]
    );
    assert!(pushed.locations.iter().all(|l| l.pushed.ends_with('Z')));
    let err = reg.add_image_location(&done, "has space", &d1).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    let err = reg
        .add_image_location(&done, "r/x:1", "nodigest")
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");

    // A second version; references, listing, JSON, reopening.
    let second = build(&reg, "img", "m:1", &[layer_a]);
    assert_eq!(second.version, 2);
    let other = build(&reg, "another", "m", &[]);
    assert_eq!(reg.get_image(&r("img")).unwrap(), second);
    assert_eq!(reg.get_image(&r("img:1")).unwrap(), pushed);
    let all = reg.list_images(None).unwrap();
    assert_eq!(all, vec![other.clone(), pushed.clone(), second.clone()]);
    assert_eq!(
        reg.list_images(Some("img")).unwrap(),
        vec![pushed.clone(), second.clone()]
    );
    assert!(reg.list_images(Some("nothing")).unwrap().is_empty());
    let value = serde_json::to_value(&pushed).unwrap();
    assert_eq!(value["model"], "m:1");
    assert_eq!(
        value["locations"][0]["reference"],
        "localhost:5000/team/img:1"
    );
    assert_eq!(
        serde_json::from_value::<ImageRecord>(value).unwrap(),
        pushed
    );
    drop(reg);
    let reg = Registry::open(home.path()).unwrap();
    assert_eq!(reg.list_images(None).unwrap(), all);
    assert_clean(&reg);
}

#[test]
fn image_errors_name_the_problem_and_write_nothing() {
    let (home, reg) = setup();
    register(home.path(), &reg, "m", b"model");
    let err = reg.begin_image(&new_image("img", "ghost")).unwrap_err();
    assert_kind(&err, ErrorKind::NotFound, "no model named \"ghost\"");
    let err = reg.begin_image(&new_image("img", "m:4")).unwrap_err();
    assert_kind(
        &err,
        ErrorKind::NotFound,
        "model \"m\" has no version 4 (latest is 1)",
    );
    let err = reg.begin_image(&new_image("../img", "m")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    let mut bad_tag = new_image("img", "m");
    bad_tag.tags.insert("a=b".into(), "x".into());
    assert_eq!(
        reg.begin_image(&bad_tag).unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
    assert!(reg.list_images(None).unwrap().is_empty());

    let err = reg.get_image(&r("nope")).unwrap_err();
    assert_kind(&err, ErrorKind::NotFound, "no image named \"nope\"");
    let image = reg.begin_image(&new_image("img", "m")).unwrap();
    let err = reg.get_image(&r("img:9")).unwrap_err();
    assert_kind(
        &err,
        ErrorKind::NotFound,
        "image \"img\" has no version 9 (latest is 1)",
    );

    let err = reg
        .put_image_blob(&image, b"x", LAYER_TYPE, "layers")
        .unwrap_err();
    assert_kind(
        &err,
        ErrorKind::InvalidArgument,
        "unknown image blob role \"layers\" (known: manifest, config, layer, index)",
    );
    let err = reg
        .put_image_blob(&image, b"x", "text plain", "layer")
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    let err = reg
        .put_image_blob_file(
            &image,
            &home.path().join("missing.tar"),
            LAYER_TYPE,
            "layer",
        )
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    let err = reg
        .put_image_blob_file(&image, home.path(), LAYER_TYPE, "layer")
        .unwrap_err();
    assert!(err.to_string().ends_with("is not a regular file"), "{err}");
    // Nothing was stored by the refusals.
    assert_eq!(blob_files(home.path()).len(), 1);
    assert!(temp_files(home.path()).is_empty());

    // Success needs the manifest blob, by its digest and role.
    let layer = reg
        .put_image_blob(&image, b"a layer", LAYER_TYPE, "layer")
        .unwrap();
    let err = reg
        .finish_image(&image, Ok(format!("sha256:{layer}")), "")
        .unwrap_err();
    assert_kind(
        &err,
        ErrorKind::FailedPrecondition,
        &format!(
            "image \"img:1\" has no manifest blob sha256:{layer}; put the manifest (role \"manifest\") first"
        ),
    );
    let err = reg.finish_image(&image, Ok(layer.clone()), "").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    assert_eq!(reg.get_image(&r("img")).unwrap().state, "building");

    // Pushing or deploying needs a succeeded image.
    let err = reg
        .add_image_location(&image, "r/x:1", &format!("sha256:{layer}"))
        .unwrap_err();
    assert_kind(
        &err,
        ErrorKind::FailedPrecondition,
        "image \"img:1\" is still building; only a succeeded image can be pushed",
    );
    let err = reg
        .create_deployment(&local("svc", "img", None))
        .unwrap_err();
    assert_kind(
        &err,
        ErrorKind::FailedPrecondition,
        "image \"img:1\" is still building; only a succeeded image can be deployed",
    );
}

#[test]
fn a_failed_build_keeps_its_record_and_log_but_not_its_blobs() {
    let (home, reg) = setup();
    let model = register(home.path(), &reg, "m", b"model");
    let shared: &[u8] = b"base layer";
    let good = build(&reg, "good", "m", &[shared]);
    let image = reg.begin_image(&new_image("bad", "m")).unwrap();
    reg.put_image_blob(&image, shared, LAYER_TYPE, "layer")
        .unwrap();
    let own = reg
        .put_image_blob(&image, b"bad's own layer", LAYER_TYPE, "layer")
        .unwrap();
    // A layer equal to the model file is stored once, too.
    reg.put_image_blob(&image, b"model", LAYER_TYPE, "layer")
        .unwrap();
    assert!(reg.blob_path(&own).is_file());
    let failed = reg
        .finish_image(&image, Err("no space left\u{7}".into()), "step 1\n")
        .unwrap();
    assert_eq!(failed.state, "failed");
    assert_eq!(
        failed.build_log,
        "step 1\nbuild failed: no space left\u{fffd}"
    );
    assert!(failed.blobs.is_empty() && failed.size == 0 && failed.manifest_digest.is_none());
    assert!(failed.finished.is_some());
    assert_eq!(reg.get_image(&r("bad")).unwrap(), failed);
    // Its own blob went; the shared one and the model file stay.
    assert!(!reg.blob_path(&own).exists());
    assert!(reg.blob_path(&sha256_hex(shared)).is_file());
    assert!(reg.blob_path(&model.sha256).is_file());
    assert_eq!(reg.get_image(&r("good")).unwrap(), good);
    assert_clean(&reg);
    let err = reg
        .put_image_blob(&image, b"more", LAYER_TYPE, "layer")
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition, "{err}");
    // A failed image is deleted without force.
    assert_eq!(reg.delete_image(&r("bad"), false).unwrap(), ["image bad:1"]);
}

#[test]
fn blobs_shared_between_images_and_models_are_stored_once() {
    let (home, reg) = setup();
    let model = register(home.path(), &reg, "m", b"model bytes");
    let shared: &[u8] = b"runtime layer";
    let a = build(&reg, "a", "m", &[shared, b"model bytes", b"a only"]);
    let b = build(&reg, "b", "m", &[shared, b"b only"]);
    // model, shared, a only, b only, two configs, two manifests.
    assert_eq!(blob_files(home.path()).len(), 8);
    assert!(a.blobs.iter().any(|x| x.sha256 == model.sha256));
    assert_clean(&reg);

    assert_eq!(reg.delete_image(&r("a"), false).unwrap(), ["image a:1"]);
    assert!(reg.blob_path(&sha256_hex(shared)).is_file());
    assert!(reg.blob_path(&model.sha256).is_file());
    assert!(!reg.blob_path(&sha256_hex(b"a only")).exists());
    assert_eq!(blob_files(home.path()).len(), 5);
    assert_eq!(reg.read_blob_verified(&sha256_hex(shared)).unwrap(), shared);
    assert_clean(&reg);

    assert_eq!(reg.delete_image(&r("b:1"), false).unwrap(), ["image b:1"]);
    assert_eq!(blob_files(home.path()), std::slice::from_ref(&model.sha256));
    reg.delete_model(&r("m"), false).unwrap();
    assert!(blob_files(home.path()).is_empty());
    assert_clean(&reg);
    let _ = b;
}

#[test]
fn big_layers_are_streamed_from_files() {
    let (home, reg) = setup();
    register(home.path(), &reg, "m", b"model");
    let image = reg.begin_image(&new_image("img", "m")).unwrap();
    // Larger than the 1 MiB copy buffer, not a multiple of it.
    let content: Vec<u8> = (0..(3 << 20) + 123).map(|i| (i % 251) as u8).collect();
    let path = home.path().join("layer.tar");
    fs::write(&path, &content).unwrap();
    let sha = reg
        .put_image_blob_file(&image, &path, LAYER_TYPE, "layer")
        .unwrap();
    assert_eq!(sha, sha256_hex(&content));
    assert_eq!(fs::read(reg.blob_path(&sha)).unwrap(), content);
    // An empty blob is a valid OCI blob.
    let empty = reg
        .put_image_blob(&image, b"", LAYER_TYPE, "layer")
        .unwrap();
    assert_eq!(empty, sha256_hex(b""));
    let got = reg.get_image(&r("img")).unwrap();
    assert_eq!(got.size, content.len() as u64);
    assert!(temp_files(home.path()).is_empty());
}

#[test]
fn recovery_keeps_blobs_that_images_use() {
    let (home, reg) = setup();
    register(home.path(), &reg, "m", b"model");
    let image = build(&reg, "img", "m", &[b"layer"]);
    drop(reg);
    // A dead writer's intent for the same content: recovery must not remove
    // the blob, an image uses it.
    let sha = sha256_hex(b"layer");
    let conn = rusqlite::Connection::open(home.path().join("registry.db")).unwrap();
    conn.execute(
        "INSERT INTO pending (pid, started, sha256, tmp_path) VALUES (?1, ?2, ?3, 'x.part')",
        rusqlite::params![i64::from(dead_pid()), 0, sha],
    )
    .unwrap();
    drop(conn);
    let reg = Registry::open(home.path()).unwrap();
    let report = reg.check(false).unwrap();
    assert_eq!(report.recovered.len(), 1, "{report:?}");
    assert!(report.is_clean(), "{report:?}");
    assert!(reg.blob_path(&sha).is_file());
    assert_eq!(reg.get_image(&r("img")).unwrap(), image);
}

fn dead_pid() -> u32 {
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    pid
}

#[test]
fn missing_and_corrupt_image_blobs_are_reported() {
    let (home, reg) = setup();
    register(home.path(), &reg, "m", b"model");
    build(&reg, "img", "m", &[b"gone", b"flipped"]);
    let gone = sha256_hex(b"gone");
    let flipped = sha256_hex(b"flipped");
    fs::remove_file(reg.blob_path(&gone)).unwrap();
    fs::write(reg.blob_path(&flipped), b"flapped").unwrap();
    let report = reg.check(true).unwrap();
    assert_eq!(report.missing_blobs, std::slice::from_ref(&gone));
    assert_eq!(report.corrupt_blobs, std::slice::from_ref(&flipped));
    assert!(report.orphan_blobs.is_empty(), "{report:?}");
    assert!(!report.is_clean());
    let err = reg.read_blob_verified(&gone).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DataLoss);
    assert!(
        err.to_string()
            .starts_with(&format!("blob {gone} of image \"img:1\" is missing (")),
        "{err}"
    );
    let err = reg.read_blob_verified(&flipped).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DataLoss);
}

/// The scene of the clean-up tests: `m:1`, `m-plan:1` converted from it,
/// `img:1` built from `m:1` and run by deployment `k8s`, `plan-img:1` built
/// from `m-plan:1` and run by deployment `edge` on `cuda:0`.
fn scene(home: &Path, reg: &Registry) -> (Vec<DeploymentRecord>, Vec<ImageRecord>) {
    register(home, reg, "m", b"fp32 model");
    reg.register_model(NewModel {
        parent: Some(r("m:1")),
        format: "accel-plan".into(),
        ..new_model("m-plan", model_file(home, "plan.onnx", b"plan"))
    })
    .unwrap();
    let img = build(reg, "img", "m", &[b"runtime", b"fp32 model"]);
    let plan_img = build(reg, "plan-img", "m-plan", &[b"runtime", b"plan"]);
    let k8s = reg.create_deployment(&kubernetes("k8s", "img:1")).unwrap();
    let edge = reg
        .create_deployment(&local("edge", "plan-img", Some("cuda:0")))
        .unwrap();
    (vec![edge, k8s], vec![img, plan_img])
}

#[test]
fn deleting_what_others_depend_on_is_refused_naming_them() {
    let (home, reg) = setup();
    let (deployments, images) = scene(home.path(), &reg);
    let blobs_before = blob_files(home.path());

    let err = reg.delete_model(&r("m-plan:1"), false).unwrap_err();
    assert_kind(
        &err,
        ErrorKind::FailedPrecondition,
        "model \"m-plan:1\" is used by image \"plan-img:1\" (deployment \"edge\"); \
         use --force to delete them too",
    );
    let err = reg.delete_model(&r("m"), false).unwrap_err();
    assert_kind(
        &err,
        ErrorKind::FailedPrecondition,
        "model \"m:1\" is the parent of \"m-plan:1\"; these models are used by images \
         \"img:1\" (deployment \"k8s\"), \"plan-img:1\" (deployment \"edge\"); \
         use --force to delete them too",
    );
    let err = reg.delete_image(&r("img"), false).unwrap_err();
    assert_kind(
        &err,
        ErrorKind::FailedPrecondition,
        "image \"img:1\" is used by deployment \"k8s\"; use --force to delete both",
    );
    // One model, one image, nothing deployed: "both".
    register(home.path(), &reg, "solo", b"solo model");
    build(&reg, "solo-img", "solo", &[]);
    let err = reg.delete_model(&r("solo"), false).unwrap_err();
    assert_kind(
        &err,
        ErrorKind::FailedPrecondition,
        "model \"solo:1\" is used by image \"solo-img:1\"; use --force to delete both",
    );
    // A second deployment of one image.
    reg.create_deployment(&local("edge2", "img", Some("cuda:1")))
        .unwrap();
    let err = reg.delete_image(&r("img:1"), false).unwrap_err();
    assert_kind(
        &err,
        ErrorKind::FailedPrecondition,
        "image \"img:1\" is used by deployments \"edge2\", \"k8s\"; use --force to delete them too",
    );
    reg.delete_deployment("edge2").unwrap();

    // What a forced delete would take.
    let deps = reg.dependents_of_model(&r("m")).unwrap();
    assert_eq!(deps.models, ["m-plan:1"]);
    assert_eq!(deps.images, ["img:1", "plan-img:1"]);
    assert_eq!(deps.deployments, deployments);
    let deps = reg.dependents_of_model(&r("m-plan:1")).unwrap();
    assert!(deps.models.is_empty());
    assert_eq!(deps.images, ["plan-img:1"]);
    assert_eq!(deps.deployments, [deployments[0].clone()]);
    let deps = reg.dependents_of_image(&r("plan-img")).unwrap();
    assert!(deps.models.is_empty() && deps.images.is_empty());
    assert_eq!(deps.deployments, [deployments[0].clone()]);
    assert!(reg.dependents_of_image(&r("solo-img")).unwrap().is_empty());
    assert_eq!(
        reg.dependents_of_model(&r("ghost"))
            .unwrap_err()
            .to_string(),
        "no model named \"ghost\""
    );
    assert_eq!(
        reg.dependents_of_image(&r("ghost"))
            .unwrap_err()
            .to_string(),
        "no image named \"ghost\""
    );

    // Nothing was deleted by the refusals.
    assert_eq!(reg.list_deployments().unwrap(), deployments);
    let listed: Vec<ImageRecord> = reg
        .list_images(None)
        .unwrap()
        .into_iter()
        .filter(|i| !i.name.starts_with("solo"))
        .collect();
    assert_eq!(listed, images);
    assert_eq!(reg.list_models(&ModelFilter::default()).unwrap().len(), 3);
    assert!(blobs_before.iter().all(|b| reg.blob_path(b).is_file()));
    assert_clean(&reg);
}

#[test]
fn forced_delete_cascades_and_leaves_an_empty_clean_store() {
    let (home, reg) = setup();
    let (deployments, images) = scene(home.path(), &reg);
    let models = reg.list_models(&ModelFilter::default()).unwrap();
    // Deleting the plan's image with force takes its deployment record.
    let gone = reg.delete_image(&r("plan-img"), true).unwrap();
    assert_eq!(gone, ["deployment edge", "image plan-img:1"]);
    assert_eq!(reg.deployment_on_device("cuda:0").unwrap(), None);
    let err = reg.get_deployment("edge").unwrap_err();
    assert_kind(&err, ErrorKind::NotFound, "no deployment named \"edge\"");
    // The shared runtime layer and the plan file stay (img:1 and m-plan use them).
    assert!(reg.blob_path(&sha256_hex(b"runtime")).is_file());
    assert!(reg.blob_path(&sha256_hex(b"plan")).is_file());
    let plan_img = build(&reg, "plan-img", "m-plan", &[b"plan"]);
    assert_eq!(plan_img.version, 1);
    let edge = reg
        .create_deployment(&local("edge", "plan-img", Some("cuda:0")))
        .unwrap();

    let gone = reg.delete_model(&r("m"), true).unwrap();
    assert_eq!(gone.deployments.len(), 2);
    assert_eq!(gone.deployments[0].name, edge.name);
    assert_eq!(gone.deployments[1], deployments[1]);
    assert_eq!(gone.images, vec![images[0].clone(), plan_img]);
    assert_eq!(gone.models, models);
    assert_eq!(
        gone.references(),
        [
            "deployment edge",
            "deployment k8s",
            "image img:1",
            "image plan-img:1",
            "model m:1",
            "model m-plan:1"
        ]
    );
    // Everything went: rows, blob files; check is clean.
    assert!(reg.list_deployments().unwrap().is_empty());
    assert!(reg.list_images(None).unwrap().is_empty());
    assert!(reg.list_models(&ModelFilter::default()).unwrap().is_empty());
    assert!(
        blob_files(home.path()).is_empty(),
        "{:?}",
        blob_files(home.path())
    );
    assert!(temp_files(home.path()).is_empty());
    for table in [
        "image_blobs",
        "image_tags",
        "image_locations",
        "model_blobs",
        "pending",
    ] {
        assert_eq!(count_rows(home.path(), table), 0, "{table}");
    }
    assert_clean(&reg);
    let report = reg.check(true).unwrap();
    assert!(
        report.is_clean() && report.orphan_blobs.is_empty(),
        "{report:?}"
    );
}

#[test]
fn deleting_an_image_a_live_process_builds_needs_force() {
    let (home, reg) = setup();
    register(home.path(), &reg, "m", b"model");
    let image = reg.begin_image(&new_image("img", "m")).unwrap();
    reg.put_image_blob(&image, b"layer", LAYER_TYPE, "layer")
        .unwrap();
    let err = reg.delete_image(&r("img"), false).unwrap_err();
    assert_kind(
        &err,
        ErrorKind::FailedPrecondition,
        &format!(
            "image \"img:1\" is being built by process {}; use --force to delete it anyway",
            std::process::id()
        ),
    );
    assert_eq!(reg.delete_image(&r("img"), true).unwrap(), ["image img:1"]);
    assert!(!reg.blob_path(&sha256_hex(b"layer")).exists());
    // The builder finds its image gone.
    let err = reg
        .put_image_blob(&image, b"more", LAYER_TYPE, "layer")
        .unwrap_err();
    assert_kind(&err, ErrorKind::NotFound, "image \"img:1\" does not exist");
    assert!(!reg.blob_path(&sha256_hex(b"more")).exists());
    let err = reg.finish_image(&image, Err("x".into()), "").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert_clean(&reg);
    assert_eq!(blob_files(home.path()).len(), 1);
}

// ---- a builder process that dies mid-build: a child process (this test
// ---- binary, re-executed) begins an image, adds blobs and exits.

const BUILDER_HOME: &str = "ACCEL_REGISTRY_TEST_BUILDER_HOME";

/// Not a test by itself: the body of the child process of
/// `a_build_whose_process_died_reads_as_failed_and_repair_cleans_it`. Does
/// nothing unless the parent set `ACCEL_REGISTRY_TEST_BUILDER_HOME`.
#[test]
fn image_builder_child() {
    let Some(home) = std::env::var_os(BUILDER_HOME) else {
        return;
    };
    let reg = Registry::open(Path::new(&home)).unwrap();
    let image = reg.begin_image(&new_image("img", "m")).unwrap();
    reg.put_image_blob(&image, b"shared layer", LAYER_TYPE, "layer")
        .unwrap();
    reg.put_image_blob(&image, b"own layer", LAYER_TYPE, "layer")
        .unwrap();
    println!("BUILDER LEFT {}", image.reference());
}

#[test]
fn a_build_whose_process_died_reads_as_failed_and_repair_cleans_it() {
    let (home, reg) = setup();
    register(home.path(), &reg, "m", b"model");
    build(&reg, "other", "m", &[b"shared layer"]);
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "images::image_builder_child",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(BUILDER_HOME, home.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("BUILDER LEFT img:1"),
        "{:?} {stdout} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let own = sha256_hex(b"own layer");
    let shared = sha256_hex(b"shared layer");

    // Reads as failed; its blobs stay referenced until a repair.
    let dead = reg.get_image(&r("img")).unwrap();
    assert_eq!(dead.state, "failed");
    assert_eq!(dead.build_log, "the build process ended without finishing");
    assert_eq!(dead.finished, None);
    assert_eq!(dead.blobs.len(), 2);
    assert_eq!(reg.list_images(Some("img")).unwrap(), vec![dead.clone()]);
    let err = reg
        .create_deployment(&local("svc", "img", None))
        .unwrap_err();
    assert_kind(
        &err,
        ErrorKind::FailedPrecondition,
        "image \"img:1\" failed to build; only a succeeded image can be deployed",
    );

    let report = reg.check(false).unwrap();
    assert_eq!(report.dead_image_builds, ["img:1"]);
    assert!(report.orphan_blobs.is_empty(), "{report:?}");
    assert!(!report.is_clean());
    assert!(reg.blob_path(&own).is_file());

    let report = reg.check(true).unwrap();
    assert_eq!(report.dead_image_builds, ["img:1"]);
    assert_eq!(report.orphan_blobs, std::slice::from_ref(&own));
    assert!(report.repaired && report.is_clean(), "{report:?}");
    assert!(!reg.blob_path(&own).exists());
    assert!(reg.blob_path(&shared).is_file());
    let repaired = reg.get_image(&r("img")).unwrap();
    assert_eq!(repaired.state, "failed");
    assert_eq!(
        repaired.build_log,
        "the build process ended without finishing"
    );
    assert!(repaired.blobs.is_empty() && repaired.size == 0);
    assert_clean(&reg);
    // Stored as failed: finishing it now is refused; deleting needs no force.
    let err = reg
        .finish_image(&dead, Ok(format!("sha256:{own}")), "")
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition, "{err}");
    assert_eq!(reg.delete_image(&r("img"), false).unwrap(), ["image img:1"]);
    assert_clean(&reg);
}

/// Creates a registry database as a build at schema version 4 (before
/// images and deployments) left it: `old:1` with its blob and a report, and
/// a finished operation.
fn version_4_home(home: &Path) -> String {
    fs::create_dir_all(home.join("blobs/sha256")).unwrap();
    let content = b"an old model";
    let sha = sha256_hex(content);
    fs::write(home.join("blobs/sha256").join(&sha), content).unwrap();
    let conn = rusqlite::Connection::open(home.join("registry.db")).unwrap();
    conn.execute_batch(include_str!("schema_v4.sql")).unwrap();
    conn.pragma_update(None, "user_version", 4).unwrap();
    conn.execute(
        "INSERT INTO models (id, name, version, description, format, sha256, size, created, parent_id, spec)
         VALUES (1, 'old', 1, 'from before images', 'onnx', ?1, ?2, '2024-05-01T12:00:00Z', NULL, ?3)",
        rusqlite::params![sha, content.len() as i64, serde_json::to_string(&spec()).unwrap()],
    )
    .unwrap();
    conn.execute_batch(&format!(
        "INSERT INTO model_tags VALUES (1, 'env', 'prod');
         INSERT INTO model_blobs VALUES (1, '{sha}', 'model');
         INSERT INTO model_reports VALUES (1, '{{\"chosen\": 0}}');
         INSERT INTO operations (id, kind, args, status, pid, started, finished, result)
         VALUES ('convert-0123456789ab', 'convert', '{{}}', 'succeeded', 1,
                 '2024-05-01T12:00:00Z', '2024-05-01T12:01:00Z', '{{\"model\": \"old:1\"}}');"
    ))
    .unwrap();
    sha
}

#[test]
fn a_version_4_database_is_upgraded_and_takes_images_and_deployments() {
    let home = TempDir::new().unwrap();
    let sha = version_4_home(home.path());
    let reg = Registry::open(home.path()).unwrap();
    let version: i64 = rusqlite::Connection::open(home.path().join("registry.db"))
        .unwrap()
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, 6);
    let old = reg.get_model(&r("old")).unwrap();
    assert_eq!(
        (old.reference(), old.sha256.as_str()),
        ("old:1".into(), sha.as_str())
    );
    assert_eq!(old.report, Some(json!({"chosen": 0})));
    assert_eq!(old.tags.get("env").map(String::as_str), Some("prod"));
    let op = reg.operation("convert-0123456789ab").unwrap();
    assert_eq!(op.result, Some(json!({"model": "old:1"})));
    assert!(reg.list_images(None).unwrap().is_empty());
    assert!(reg.list_deployments().unwrap().is_empty());
    assert_clean(&reg);

    // The new tables work with the old model.
    let image = build(&reg, "old-img", "old", &[b"an old model", b"runtime"]);
    assert_eq!(image.model, "old:1");
    let svc = reg
        .create_deployment(&local("svc", "old-img", Some("cpu")))
        .unwrap();
    drop(reg);
    let reg = Registry::open(home.path()).unwrap();
    assert_eq!(reg.get_image(&r("old-img")).unwrap(), image);
    assert_eq!(reg.get_deployment("svc").unwrap(), svc);
    assert_clean(&reg);
    let gone = reg.delete_model(&r("old"), true).unwrap();
    assert_eq!(
        gone.references(),
        ["deployment svc", "image old-img:1", "model old:1"]
    );
    assert!(blob_files(home.path()).is_empty());
    assert_clean(&reg);
}

#[test]
fn concurrent_builds_get_distinct_versions_and_share_layers() {
    let (home, reg) = setup();
    register(home.path(), &reg, "m", b"model");
    let reg = std::sync::Arc::new(reg);
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let reg = reg.clone();
            std::thread::spawn(move || {
                (0..3)
                    .map(|i| {
                        let own = format!("layer {t}/{i}");
                        build(&reg, "img", "m", &[b"shared", own.as_bytes()]).version
                    })
                    .collect::<Vec<u32>>()
            })
        })
        .collect();
    let mut versions: Vec<u32> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    versions.sort();
    assert_eq!(versions, (1..=12).collect::<Vec<u32>>());
    // model, shared, 12 own layers, 12 configs, 12 manifests.
    assert_eq!(blob_files(home.path()).len(), 2 + 3 * 12);
    assert_clean(&reg);
    let gone = reg.delete_model(&r("m"), true).unwrap();
    assert_eq!((gone.images.len(), gone.models.len()), (12, 1));
    assert!(blob_files(home.path()).is_empty());
}

//! Path handling: no name or hash a caller gives can make the registry read
//! or write outside its home. Names that could be paths (`..`, `../x`,
//! `a/b`, absolute paths, NUL, backslashes, control characters) are refused
//! with InvalidArgument by every entry point that takes a name, before
//! anything is written; so are "hashes" that are not 64 lower-case hex
//! digits (blob file names). Afterwards not one file was created, inside
//! the home or beside it.

use super::*;
use accel_registry::{KeySlot, NewDeployment, NewImage};
use std::collections::BTreeSet;

/// Names that are, or contain, paths or characters no file name should.
const HOSTILE_NAMES: &[&str] = &[
    "",
    ".",
    "..",
    "../evil",
    "../../evil",
    "ok/../../evil",
    "a/b",
    "/tmp/accel-evil",
    "/",
    "evil\0x",
    "a\\..\\b",
    ".evil",
    "-evil",
    "evil\n",
    "e vil",
];

/// Strings given where a sha256 (a blob's file name) is expected.
const HOSTILE_HASHES: &[&str] = &[
    "",
    "..",
    "../../evil",
    "/etc/passwd",
    "../blobs/sha256/../../../../evil",
    // 64 characters, but upper case / not hex / with a separator.
    "ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789",
    "g123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    "../3456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
];

fn hostile_ref(name: &str) -> NameRef {
    NameRef {
        name: name.to_string(),
        version: None,
    }
}

/// Every path under `root` (relative), directories included.
fn tree(root: &Path) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(dir) = todo.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                todo.push(path.clone());
            }
            out.insert(path.strip_prefix(root).unwrap().to_path_buf());
        }
    }
    out
}

#[track_caller]
fn refused<T: std::fmt::Debug>(what: &str, name: &str, result: Result<T, RegistryError>) {
    match result {
        Err(e) => assert_eq!(
            e.kind(),
            ErrorKind::InvalidArgument,
            "{what} {name:?}: expected InvalidArgument, got {e}"
        ),
        Ok(v) => panic!("{what} {name:?} was accepted: {v:?}"),
    }
}

#[test]
fn hostile_names_and_hashes_are_refused_and_write_nothing() {
    let outer = TempDir::new().unwrap();
    let home = outer.path().join("home");
    let src = outer.path().join("src");
    fs::create_dir(&src).unwrap();
    let reg = Registry::open(&home).unwrap();
    let file = model_file(&src, "good.onnx", b"good model bytes");
    reg.register_model(new_model("good", file.clone())).unwrap();
    let before = tree(outer.path());

    for &name in HOSTILE_NAMES {
        // Models.
        refused(
            "register_model",
            name,
            reg.register_model(new_model(name, file.clone())),
        );
        refused("get_model", name, reg.get_model(&hostile_ref(name)));
        refused(
            "delete_model",
            name,
            reg.delete_model(&hostile_ref(name), true),
        );
        refused(
            "dependents_of_model",
            name,
            reg.dependents_of_model(&hostile_ref(name)),
        );
        let filter = ModelFilter {
            name: Some(name.to_string()),
            ..ModelFilter::default()
        };
        refused("list_models", name, reg.list_models(&filter));
        let mut child = new_model("child", file.clone());
        child.parent = Some(hostile_ref(name));
        refused("register_model (parent)", name, reg.register_model(child));
        // Images: a hostile image name, or a hostile model reference.
        let image = |image: &str, model: NameRef| NewImage {
            name: image.to_string(),
            model,
            description: String::new(),
            tags: BTreeMap::new(),
        };
        refused(
            "begin_image",
            name,
            reg.begin_image(&image(name, r("good"))),
        );
        refused(
            "begin_image (model)",
            name,
            reg.begin_image(&image("img", hostile_ref(name))),
        );
        refused("get_image", name, reg.get_image(&hostile_ref(name)));
        refused("list_images", name, reg.list_images(Some(name)));
        refused(
            "delete_image",
            name,
            reg.delete_image(&hostile_ref(name), true),
        );
        // Deployments (whose name becomes `deployments/NAME/` in the CLI).
        let deployment = |deployment: &str, image: NameRef| NewDeployment {
            name: deployment.to_string(),
            target: "local".into(),
            image,
            device: None,
            port: None,
            config: serde_json::json!({}),
        };
        refused(
            "create_deployment",
            name,
            reg.create_deployment(&deployment(name, r("img"))),
        );
        refused(
            "create_deployment (image)",
            name,
            reg.create_deployment(&deployment("dep", hostile_ref(name))),
        );
        refused("get_deployment", name, reg.get_deployment(name));
        refused("delete_deployment", name, reg.delete_deployment(name));
        // Service keys.
        refused(
            "set_service_key",
            name,
            reg.set_service_key(name, KeySlot::Primary, &"a".repeat(64)),
        );
    }

    for &hash in HOSTILE_HASHES {
        refused("read_blob_verified", hash, reg.read_blob_verified(hash));
        refused(
            "set_service_key (hash)",
            hash,
            reg.set_service_key("svc", KeySlot::Primary, hash),
        );
        // A spec whose labels name a blob that is not a sha256.
        let mut m = new_model("labelled", file.clone());
        m.spec.labels = Some(LabelsRef {
            sha256: hash.to_string(),
            count: 1,
        });
        refused("register_model (labels ref)", hash, reg.register_model(m));
    }

    assert_eq!(
        tree(outer.path()),
        before,
        "files appeared or vanished (home is {})",
        home.display()
    );
    assert!(!Path::new("/tmp/accel-evil").exists());
    // Nothing half-done either: no model, image, deployment or key was
    // recorded, and the store is consistent.
    let models: Vec<String> = reg
        .list_models(&ModelFilter::default())
        .unwrap()
        .iter()
        .map(|m| m.reference())
        .collect();
    assert_eq!(models, ["good:1"]);
    assert!(reg.list_images(None).unwrap().is_empty());
    assert!(reg.list_deployments().unwrap().is_empty());
    assert!(reg.service_keys("svc").unwrap().is_empty());
    let report = reg.check(false).unwrap();
    assert!(
        report.orphan_blobs.is_empty()
            && report.missing_blobs.is_empty()
            && report.corrupt_blobs.is_empty()
            && report.stale_temp_files.is_empty(),
        "{report:?}"
    );
}

/// Blob files are named by the sha256 the store computes from the content,
/// never by a caller's string: whatever a model file is called, its blob
/// lands in `blobs/sha256/<hex>` and nowhere else.
#[test]
fn blob_files_are_named_by_their_content_only() {
    let outer = TempDir::new().unwrap();
    let home = outer.path().join("home");
    let reg = Registry::open(&home).unwrap();
    let odd = outer.path().join("..odd name; rm -rf ~.onnx");
    fs::write(&odd, b"weights").unwrap();
    let rec = reg.register_model(new_model("odd", odd)).unwrap();
    assert_eq!(blob_files(&home), [sha256_hex(b"weights")]);
    assert_eq!(
        reg.blob_path(&rec.sha256),
        home.join("blobs/sha256").join(sha256_hex(b"weights"))
    );
    assert!(temp_files(&home).is_empty());
}

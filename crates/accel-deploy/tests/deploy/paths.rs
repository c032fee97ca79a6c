//! Path handling of the image builder: whatever a caller puts in a spec
//! (file paths, the user's name and home, the working directory, layer
//! names, label and environment text, service names, export tags), no tar
//! entry of a layer or of an exported archive is absolute or climbs with
//! `..`, and nothing is written outside the scratch directory. Paths that
//! are not absolute and normalized are refused with InvalidArgument before
//! anything is written. No external tool is needed.

use accel_deploy::oci::{
    build_in, export_docker_archive, export_oci_archive, BuiltImage, FileEntry, ImageSpec,
    ImageUser, LayerSpec,
};
use accel_deploy::DeployError;
use serde_json::Value;
use std::collections::BTreeSet;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

/// A small valid spec: one host file, one in-memory file, a symlink.
fn spec(host_file: &Path) -> ImageSpec {
    let layer = LayerSpec::new("model")
        .file(FileEntry::host(
            "/opt/accel/bundle/model.onnx",
            host_file,
            0o644,
        ))
        .file(FileEntry::bytes(
            "/opt/accel/bundle/labels.txt",
            "cat\n",
            0o644,
        ))
        .file(FileEntry::symlink("/opt/accel/current", "bundle"));
    let mut spec = ImageSpec::new(ImageUser::default(), 1_704_164_645).layer(layer);
    spec.entrypoint = vec!["/usr/local/bin/accel".into(), "serve".into()];
    spec
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

/// The raw entry names (as stored, not as the tar crate would sanitize
/// them on unpacking) of a tar, or of a gzip'd tar.
fn entry_names(bytes: &[u8]) -> Vec<Vec<u8>> {
    let reader: Box<dyn Read + '_> = if bytes.starts_with(b"\x1f\x8b") {
        Box::new(flate2::read::GzDecoder::new(bytes))
    } else {
        Box::new(bytes)
    };
    let mut archive = tar::Archive::new(reader);
    let mut names = Vec::new();
    for entry in archive.entries().unwrap() {
        let entry = entry.unwrap();
        assert!(
            matches!(
                entry.header().entry_type(),
                tar::EntryType::Regular | tar::EntryType::Directory | tar::EntryType::Symlink
            ),
            "unexpected entry type {:?}",
            entry.header().entry_type()
        );
        names.push(entry.path_bytes().into_owned());
    }
    names
}

/// Fails unless every entry name is relative, without `.`/`..`
/// components, empty components or NUL.
#[track_caller]
fn assert_safe(names: &[Vec<u8>], what: &str) {
    assert!(!names.is_empty(), "{what}: no entries");
    for name in names {
        let text = String::from_utf8_lossy(name);
        let trimmed = name.strip_suffix(b"/").unwrap_or(name);
        assert!(
            !name.starts_with(b"/")
                && !name.contains(&0)
                && !trimmed.is_empty()
                && trimmed
                    .split(|&b| b == b'/')
                    .all(|c| !c.is_empty() && c != b"." && c != b".."),
            "{what}: unsafe tar entry {text:?}"
        );
    }
}

fn assert_image_safe(image: &BuiltImage, what: &str) {
    for layer in &image.layers {
        let names = entry_names(&fs::read(&layer.path).unwrap());
        assert_safe(&names, &format!("{what}, layer {}", layer.name));
    }
}

#[track_caller]
fn invalid(result: Result<BuiltImage, DeployError>, what: &str) {
    match result {
        Err(DeployError::InvalidArgument(_)) => {}
        other => panic!("{what}: expected InvalidArgument, got {other:?}"),
    }
}

#[test]
fn hostile_paths_are_refused_before_anything_is_written() {
    let outer = tempfile::tempdir().unwrap();
    let host = outer.path().join("model.onnx");
    fs::write(&host, b"weights").unwrap();
    let scratch = outer.path().join("scratch");
    fs::create_dir(&scratch).unwrap();
    let before = tree(outer.path());
    let bad_paths = [
        "",
        "/",
        "evil",
        "../evil",
        "/../evil",
        "/opt/../../evil",
        "/opt/accel/..",
        "/opt/./evil",
        "/opt//evil",
        "//evil",
        "/opt/evil/",
        "/opt/ev\0il",
    ];
    for path in bad_paths {
        let with = |entry: FileEntry| {
            let mut s = spec(&host);
            s.layers[0].files.push(entry);
            s
        };
        invalid(
            build_in(&with(FileEntry::bytes(path, "x", 0o644)), &scratch),
            &format!("file {path:?}"),
        );
        invalid(
            build_in(&with(FileEntry::host(path, &host, 0o644)), &scratch),
            &format!("host file {path:?}"),
        );
        invalid(
            build_in(&with(FileEntry::directory(path, 0o755)), &scratch),
            &format!("directory {path:?}"),
        );
        invalid(
            build_in(&with(FileEntry::symlink(path, "target")), &scratch),
            &format!("symlink {path:?}"),
        );
        let mut s = spec(&host);
        s.working_dir = Some(path.to_string());
        invalid(build_in(&s, &scratch), &format!("working dir {path:?}"));
        let mut s = spec(&host);
        s.user.home = path.to_string();
        invalid(build_in(&s, &scratch), &format!("user home {path:?}"));
    }
    // The user's name and group are written into /etc/passwd and
    // /etc/group: no separators, newlines or root.
    for name in [
        "evil:x:0:0::/:/bin/sh",
        "a\nroot2",
        "../evil",
        "a/b",
        "",
        "root",
    ] {
        let mut s = spec(&host);
        s.user.name = name.to_string();
        invalid(build_in(&s, &scratch), &format!("user {name:?}"));
        let mut s = spec(&host);
        s.user.group = name.to_string();
        invalid(build_in(&s, &scratch), &format!("group {name:?}"));
    }
    // A layer name is only a word in the history and in a scratch file
    // name: hostile ones fail (or build) without writing outside the
    // scratch directory.
    for name in ["../evil", "a/../../evil", "/tmp/accel-evil", "..", "x\0y"] {
        let mut s = spec(&host);
        s.layers[0].name = name.to_string();
        if let Ok(image) = build_in(&s, &scratch) {
            assert_image_safe(&image, &format!("layer name {name:?}"));
            for layer in &image.layers {
                assert!(layer.path.starts_with(&scratch), "{}", layer.path.display());
            }
        }
    }
    assert_eq!(tree(outer.path()), before, "files were left behind");
    assert!(!Path::new("/tmp/accel-evil").exists());
    assert!(!Path::new("/tmp/accel-evil.tar.gz").exists());
}

#[test]
fn hostile_text_never_becomes_a_tar_path() {
    let work = tempfile::tempdir().unwrap();
    let host = work.path().join("..model.onnx");
    fs::write(&host, b"weights").unwrap();
    let hostile = "../../../../etc/cron.d/evil\0/abs\n\"quoted\" ..\\..\\x";
    let mut s = spec(&host)
        .label("org.opencontainers.image.title", hostile)
        .label("org.opencontainers.image.description", hostile)
        .label("dev.accel.service", "../../svc")
        .label("../label-key", "v")
        .env_var("ACCEL_SERVICES", "../../svc,/abs")
        .env_var("ACCEL_BUNDLES", "/../../escape");
    s.annotations.insert("../annotation".into(), hostile.into());
    s.cmd = vec!["--bundle".into(), "../../x".into()];
    let image = build_in(&s, work.path()).unwrap();
    assert_image_safe(&image, "hostile labels");
    // The text is kept as data, escaped in the JSON, intact.
    let config: Value = serde_json::from_slice(&image.config.bytes).unwrap();
    assert_eq!(
        config["config"]["Labels"]["org.opencontainers.image.title"],
        hostile
    );
    assert_eq!(config["config"]["User"], "10001:10001");
    // Exports: entry names are digests and fixed file names.
    let oci = work.path().join("oci.tar");
    export_oci_archive(&image, &image.manifest.descriptor, "1", &oci).unwrap();
    assert_safe(&entry_names(&fs::read(&oci).unwrap()), "oci archive");
    for tag in ["evil/../../x:1", "../../evil:latest", "accel/ok:1"] {
        let out = work.path().join("docker.tar");
        match export_docker_archive(&image, &image.manifest.descriptor, &[tag.to_string()], &out) {
            Ok(()) => assert_safe(
                &entry_names(&fs::read(&out).unwrap()),
                &format!("docker archive {tag:?}"),
            ),
            Err(e) => assert!(
                matches!(e, DeployError::InvalidArgument(_)),
                "{tag:?}: {e:?}"
            ),
        }
    }
    for tag in ["../x", "/abs", "a/../b", ""] {
        let out = work.path().join("refused.tar");
        let err = export_oci_archive(&image, &image.manifest.descriptor, tag, &out);
        assert!(
            matches!(err, Err(DeployError::InvalidArgument(_))),
            "{tag:?}: {err:?}"
        );
        assert!(!out.exists());
    }
}

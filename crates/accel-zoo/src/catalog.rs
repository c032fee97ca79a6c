//! The catalog: which public models the zoo knows, where each is published,
//! and the hash and size it is checked against.

use crate::error::ZooError;
use crate::fetch::Checksum;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::path::Path;

/// The catalog checked in next to this crate (`catalog.toml`).
pub const BUNDLED: &str = include_str!("../catalog.toml");

/// What a model does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Task {
    /// Image classification.
    Classification,
    /// Object detection.
    Detection,
}

impl Task {
    /// The catalog's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Task::Classification => "classification",
            Task::Detection => "detection",
        }
    }
}

/// The file format a model is published in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// An ONNX model: registrable as is.
    Onnx,
    /// A PyTorch checkpoint: must be exported to ONNX before registration.
    Pytorch,
}

impl Format {
    /// The catalog's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Onnx => "onnx",
            Format::Pytorch => "pytorch",
        }
    }
}

/// Which class labels a model's outputs are indexed by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Labels {
    /// The 1000 ImageNet-1k classes in standard synset order.
    Imagenet,
    /// Pascal VOC (background + 20 classes).
    Voc,
    /// COCO.
    Coco,
}

impl Labels {
    /// The catalog's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Labels::Imagenet => "imagenet",
            Labels::Voc => "voc",
            Labels::Coco => "coco",
        }
    }
}

/// One published model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZooEntry {
    /// The zoo name (`accel zoo pull NAME`); also the default registry name.
    pub name: String,
    /// What the model does.
    pub task: Task,
    /// One line for humans.
    pub title: String,
    /// Where the file is published (pinned: a commit, or a hashed file name).
    pub url: String,
    /// The published sha256 of the file (64 lowercase hex digits).
    #[serde(default)]
    pub sha256: Option<String>,
    /// For publishers that give only a prefix of the sha256 (torchvision's
    /// file names): that prefix.
    #[serde(default)]
    pub sha256_prefix: Option<String>,
    /// The published size in bytes.
    #[serde(default)]
    pub size: Option<u64>,
    /// Where `url`, `sha256` and `size` were published: file, commit.
    pub source: String,
    /// SPDX licence of the model as its publisher states it.
    pub license: String,
    /// The file's format.
    pub format: Format,
    /// The model's input tensor name (none for a checkpoint).
    #[serde(default)]
    pub input: Option<String>,
    /// The model's output tensor names.
    #[serde(default)]
    pub output: Vec<String>,
    /// The pipeline preset to register it with (`torchvision`,
    /// `azureml-accel`, `ssd-vgg-300`); none: raw tensors.
    #[serde(default)]
    pub preset: Option<String>,
    /// The label set of its classes.
    #[serde(default)]
    pub labels: Option<Labels>,
    /// The seed's names for the (classifier or detector) output, registered
    /// as output aliases.
    #[serde(default)]
    pub aliases: Vec<String>,
    /// The pooled-features tensor (transfer learning), if published.
    #[serde(default)]
    pub features: Option<String>,
    /// The seed featurizer's names for the pooled features.
    #[serde(default)]
    pub feature_aliases: Vec<String>,
    /// Caveats; what is UNVERIFIED.
    #[serde(default)]
    pub notes: String,
}

impl ZooEntry {
    /// What the download is checked against: the full sha256 when
    /// published, else its prefix.
    pub fn checksum(&self) -> Checksum {
        match (&self.sha256, &self.sha256_prefix) {
            (Some(full), _) => Checksum::Sha256(full.clone()),
            (None, Some(prefix)) => Checksum::Sha256Prefix(prefix.clone()),
            // `validate` refuses an entry with neither.
            (None, None) => Checksum::Sha256Prefix(String::new()),
        }
    }

    /// The last path segment of `url` (e.g. `resnet50-v1-7.onnx`).
    pub fn file_name(&self) -> &str {
        file_name_of(&self.url)
    }

    /// The file extension the cached copy gets (`onnx`, `pth`, …; `bin` if
    /// the URL's file name has none).
    pub fn extension(&self) -> &str {
        extension_of(self.file_name())
    }

    fn validate(&self) -> Result<(), ZooError> {
        let bad = |reason: String| ZooError::Invalid {
            entry: self.name.clone(),
            reason,
        };
        if self.name.is_empty()
            || self.name.len() > 64
            || !self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            || self.name.starts_with(['.', '-'])
        {
            return Err(bad(
                "name must be 1-64 letters, digits, '-', '_' or '.', not starting with '.' or '-'"
                    .into(),
            ));
        }
        check_url(&self.url).map_err(|e| bad(e.to_string()))?;
        if file_name_of(&self.url).is_empty() {
            return Err(bad(format!("url {} has no file name", self.url)));
        }
        let is_hex = |s: &str| {
            s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        if let Some(sha) = &self.sha256 {
            if sha.len() != 64 || !is_hex(sha) {
                return Err(bad(format!(
                    "sha256 must be 64 lowercase hex digits, got {sha:?}"
                )));
            }
        }
        if let Some(prefix) = &self.sha256_prefix {
            if prefix.len() < 8 || prefix.len() > 64 || !is_hex(prefix) {
                return Err(bad(format!(
                    "sha256_prefix must be 8 to 64 lowercase hex digits, got {prefix:?}"
                )));
            }
            if let Some(sha) = &self.sha256 {
                if !sha.starts_with(prefix.as_str()) {
                    return Err(bad("sha256 does not start with sha256_prefix".into()));
                }
            }
        }
        if self.sha256.is_none() && self.sha256_prefix.is_none() {
            return Err(bad(
                "needs sha256 (or sha256_prefix where only a prefix is published)".into(),
            ));
        }
        if self.size == Some(0) {
            return Err(bad("size must be positive".into()));
        }
        for (field, value) in [
            ("title", &self.title),
            ("source", &self.source),
            ("license", &self.license),
        ] {
            if value.trim().is_empty() {
                return Err(bad(format!("{field} must not be empty")));
            }
        }
        if self.preset.as_deref().is_some_and(|p| p.trim().is_empty()) {
            return Err(bad("preset must not be empty (leave it out instead)".into()));
        }
        let mut seen = HashSet::new();
        for a in self.aliases.iter().chain(&self.feature_aliases) {
            if a.is_empty() || !seen.insert(a.as_str()) {
                return Err(bad(format!("alias {a:?} is empty or repeated")));
            }
        }
        Ok(())
    }
}

/// The whole catalog.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Catalog {
    /// The entries, in catalog order.
    pub models: Vec<ZooEntry>,
}

impl Catalog {
    /// The catalog built into this crate. It is checked by the unit tests,
    /// so parsing it cannot fail in a released build.
    pub fn bundled() -> Catalog {
        Catalog::parse_from(BUNDLED, "(bundled)")
            .expect("the bundled catalog is valid (checked by the accel-zoo tests)")
    }

    /// Parses and validates catalog text (TOML).
    pub fn parse(text: &str) -> Result<Catalog, ZooError> {
        Catalog::parse_from(text, "(text)")
    }

    /// Reads, parses and validates a catalog file.
    pub fn load(path: &Path) -> Result<Catalog, ZooError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ZooError::io("cannot read the zoo catalog", path, e))?;
        Catalog::parse_from(&text, &path.display().to_string())
    }

    fn parse_from(text: &str, origin: &str) -> Result<Catalog, ZooError> {
        let catalog: Catalog = toml::from_str(text).map_err(|e| ZooError::Parse {
            origin: origin.to_string(),
            source: Box::new(e),
        })?;
        catalog.validate()?;
        tracing::debug!(origin, models = catalog.models.len(), "zoo catalog");
        Ok(catalog)
    }

    /// Checks every entry, and that names are unique.
    pub fn validate(&self) -> Result<(), ZooError> {
        let mut names = HashSet::new();
        for (i, m) in self.models.iter().enumerate() {
            m.validate().map_err(|e| match e {
                ZooError::Invalid { entry, reason } if entry.is_empty() => ZooError::Invalid {
                    entry: format!("#{}", i + 1),
                    reason,
                },
                other => other,
            })?;
            if !names.insert(m.name.as_str()) {
                return Err(ZooError::Invalid {
                    entry: m.name.clone(),
                    reason: "the name appears more than once".into(),
                });
            }
        }
        Ok(())
    }

    /// The entry named `name`; the error lists the known names.
    pub fn get(&self, name: &str) -> Result<&ZooEntry, ZooError> {
        self.models
            .iter()
            .find(|m| m.name == name)
            .ok_or_else(|| ZooError::UnknownModel {
                name: name.to_string(),
                known: self.names(),
            })
    }

    /// The names, in catalog order.
    pub fn names(&self) -> Vec<String> {
        self.models.iter().map(|m| m.name.clone()).collect()
    }
}

/// Checks that `url` is an absolute http(s) URL with a host.
pub(crate) fn check_url(url: &str) -> Result<reqwest::Url, ZooError> {
    let invalid = |reason: &str| ZooError::InvalidUrl {
        url: url.to_string(),
        reason: reason.to_string(),
    };
    let parsed = reqwest::Url::parse(url).map_err(|e| invalid(&e.to_string()))?;
    if !matches!(parsed.scheme(), "https" | "http") {
        return Err(invalid("only https and http URLs are supported"));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(invalid("no host"));
    }
    Ok(parsed)
}

/// The last path segment of a URL, without query or fragment.
pub(crate) fn file_name_of(url: &str) -> &str {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let path = path.split_once("://").map_or(path, |(_, rest)| rest);
    match path.split_once('/') {
        Some((_host, p)) => p.rsplit('/').next().unwrap_or(""),
        None => "",
    }
}

/// The extension of a file name (`bin` if none).
pub(crate) fn extension_of(file_name: &str) -> &str {
    match file_name.rsplit_once('.') {
        Some((stem, ext))
            if !stem.is_empty()
                && !ext.is_empty()
                && ext.bytes().all(|b| b.is_ascii_alphanumeric()) =>
        {
            ext
        }
        _ => "bin",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str) -> String {
        format!(
            r#"
[[models]]
name = "{name}"
task = "classification"
title = "t"
url = "https://example.com/a/{name}.onnx"
sha256 = "{}"
source = "s"
license = "MIT"
format = "onnx"
"#,
            "ab".repeat(32)
        )
    }

    #[test]
    fn the_bundled_catalog_parses_and_has_the_seed_models() {
        let c = Catalog::bundled();
        for name in [
            "resnet50",
            "resnet152",
            "densenet121",
            "vgg16",
            "ssd-vgg",
            "mobilenetv2",
            "mobilenetv2-int8",
            "shufflenetv2",
            "shufflenetv2-qdq",
            "ssd-resnet34",
        ] {
            c.get(name).unwrap();
        }
        let r = c.get("resnet50").unwrap();
        assert_eq!(r.preset.as_deref(), Some("torchvision"));
        assert!(r
            .aliases
            .contains(&"classifier_1/resnet_v1_50/predictions/Softmax:0".to_string()));
        assert_eq!(r.extension(), "onnx");
        let ssd = c.get("ssd-vgg").unwrap();
        assert_eq!(ssd.format, Format::Pytorch);
        assert_eq!(ssd.sha256, None);
        assert_eq!(ssd.checksum(), Checksum::Sha256Prefix("b556d3b4".into()));
        assert_eq!(ssd.preset.as_deref(), Some("ssd-vgg-300"));
        assert_eq!(ssd.extension(), "pth");
        // Every onnx/models URL pins a commit on the LFS media endpoint.
        for m in &c.models {
            if m.url.contains("onnx/models") {
                let commit = m
                    .url
                    .strip_prefix("https://media.githubusercontent.com/media/onnx/models/")
                    .and_then(|rest| rest.split('/').next())
                    .unwrap_or_default();
                assert_eq!(commit.len(), 40, "{}: {}", m.name, m.url);
            }
        }
    }

    #[test]
    fn fixture_hashes_are_the_published_ones() {
        let c = Catalog::bundled();
        let m = c.get("mobilenetv2-int8").unwrap();
        assert_eq!(
            m.sha256.as_deref(),
            Some("cc028fe6cae7bc11a4ff53cfc9b79c920e8be65ce33a904ec3e2a8f66d77f95f")
        );
        assert_eq!(m.size, Some(3_655_033));
        let s = c.get("shufflenetv2-qdq").unwrap();
        assert_eq!(
            s.sha256.as_deref(),
            Some("7c536d02e2f6af9569e5f3c7a4d8282060072119524c93c8da71e63876b4722b")
        );
        assert_eq!(s.size, Some(2_415_805));
    }

    #[test]
    fn unknown_names_list_the_known_ones() {
        let c = Catalog::parse(&(entry("a") + &entry("b"))).unwrap();
        let e = c.get("zz").unwrap_err().to_string();
        assert_eq!(e, "no model \"zz\" in the zoo catalog (known: a, b)");
    }

    #[test]
    fn validation_rejects_bad_entries() {
        let dup = Catalog::parse(&(entry("a") + &entry("a"))).unwrap_err();
        assert!(dup.to_string().contains("more than once"), "{dup}");
        let cases = [
            (
                entry("a").replace(&"ab".repeat(32), "abc"),
                "64 lowercase hex",
            ),
            (
                entry("a").replace(&"ab".repeat(32), &"AB".repeat(32)),
                "64 lowercase hex",
            ),
            (
                entry("a").replace("https://example.com", "ftp://example.com"),
                "only https and http",
            ),
            (
                entry("a").replace("name = \"a\"", "name = \"a b\""),
                "name must",
            ),
            (
                entry("a").replace(&format!("sha256 = \"{}\"", "ab".repeat(32)), ""),
                "needs sha256",
            ),
            (
                entry("a").replace("sha256 = ", "sha256_prefix = \"abc\"\nsha256 = "),
                "8 to 64",
            ),
            (
                entry("a").replace("sha256 = ", "sha256_prefix = \"cdcdcdcd\"\nsha256 = "),
                "does not start",
            ),
            (entry("a") + "size = 0\n", "size must be positive"),
            (entry("a").replace("onnx\"\n", "tflite\"\n"), "cannot parse"),
            (entry("a") + "colour = \"red\"\n", "cannot parse"),
        ];
        for (text, needle) in cases {
            let e = Catalog::parse(&text).unwrap_err();
            let mut msg = e.to_string();
            if let Some(s) = std::error::Error::source(&e) {
                msg = format!("{msg}: {s}");
            }
            assert!(
                msg.contains(needle),
                "{needle:?} not in {msg:?} for\n{text}"
            );
        }
    }

    #[test]
    fn a_prefix_alone_is_accepted() {
        let text = entry("a").replace(
            &format!("sha256 = \"{}\"", "ab".repeat(32)),
            "sha256_prefix = \"b556d3b4\"",
        );
        let c = Catalog::parse(&text).unwrap();
        assert_eq!(
            c.get("a").unwrap().checksum(),
            Checksum::Sha256Prefix("b556d3b4".into())
        );
    }

    #[test]
    fn file_names_and_extensions() {
        assert_eq!(file_name_of("https://h/x/y/model.onnx?raw=1"), "model.onnx");
        assert_eq!(file_name_of("https://h"), "");
        assert_eq!(file_name_of("https://h/"), "");
        assert_eq!(extension_of("a.pth"), "pth");
        assert_eq!(extension_of("a"), "bin");
        assert_eq!(extension_of(".hidden"), "bin");
    }
}

//! What goes into an image.

use crate::DeployError;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

/// Everything [`build`](super::build) needs to produce an image.
///
/// The layers are: a base layer made from [`user`](Self::user) (`/etc/passwd`,
/// `/etc/group`, `/tmp` with mode 1777, the user's home), then
/// [`layers`](Self::layers) in order (empty ones are left out). Typical
/// order: `runtime` (the `accel` binary and the shared libraries
/// [`shared_libraries`](super::shared_libraries) lists), `engine` (ONNX
/// Runtime's `.so` files when the plan needs them), `model` (the bundle).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSpec {
    /// Platform the binaries in the image run on.
    pub platform: Platform,
    /// The non-root user the entrypoint runs as; it is written into the
    /// base layer's `/etc/passwd` and `/etc/group`.
    pub user: ImageUser,
    /// The file layers after the base layer, bottom first.
    pub layers: Vec<LayerSpec>,
    /// `Entrypoint`: the executable and its first arguments.
    pub entrypoint: Vec<String>,
    /// `Cmd`: default arguments after the entrypoint.
    pub cmd: Vec<String>,
    /// `Env`: (name, value), in this order.
    pub env: Vec<(String, String)>,
    /// `WorkingDir`, an absolute path; `None` for the runtime's default.
    pub working_dir: Option<String>,
    /// `ExposedPorts`: `"8080"` (meaning `8080/tcp`), `"8080/tcp"`,
    /// `"5353/udp"`.
    pub exposed_ports: Vec<String>,
    /// Image configuration labels (`org.opencontainers.image.title`,
    /// `.version`, `.description`, …). Labels in the
    /// `org.opencontainers.image.` namespace are also written as manifest
    /// annotations.
    pub labels: BTreeMap<String, String>,
    /// Further manifest-only annotations.
    pub annotations: BTreeMap<String, String>,
    /// Creation time in seconds since the Unix epoch (give
    /// `SOURCE_DATE_EPOCH`, or a recorded time: never the clock of the
    /// build, or builds stop being reproducible). It sets the
    /// configuration's `created`, each history entry's `created` and the
    /// `org.opencontainers.image.created` label unless one is given.
    /// Layer file times do not depend on it (they are all zero), so an
    /// unchanged layer keeps its digest from one image to the next.
    pub created: i64,
}

impl ImageSpec {
    /// A spec for the host platform with `user`, created at `created`
    /// (seconds since the epoch), with no layers yet.
    pub fn new(user: ImageUser, created: i64) -> Self {
        ImageSpec {
            platform: Platform::host(),
            user,
            layers: Vec::new(),
            entrypoint: Vec::new(),
            cmd: Vec::new(),
            env: Vec::new(),
            working_dir: None,
            exposed_ports: Vec::new(),
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            created,
        }
    }

    /// Appends a layer.
    pub fn layer(mut self, layer: LayerSpec) -> Self {
        self.layers.push(layer);
        self
    }

    /// Sets a label.
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    /// Appends an environment variable.
    pub fn env_var(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((name.into(), value.into()));
        self
    }

    /// Checks what the spec says before anything is written.
    pub(crate) fn validate(&self) -> Result<(), DeployError> {
        let invalid = |m: String| Err(DeployError::InvalidArgument(m));
        self.user.validate()?;
        if self.platform.os.is_empty() || self.platform.architecture.is_empty() {
            return invalid("the image platform needs an os and an architecture".into());
        }
        if self.entrypoint.is_empty() && self.cmd.is_empty() {
            return invalid("the image needs an entrypoint or a cmd".into());
        }
        if let Some(dir) = &self.working_dir {
            check_image_path(dir)?;
        }
        for (name, _) in &self.env {
            if name.is_empty() || name.contains('=') || name.contains('\0') {
                return invalid(format!("invalid environment variable name {name:?}"));
            }
        }
        for port in &self.exposed_ports {
            normalize_port(port)?;
        }
        for key in self.labels.keys().chain(self.annotations.keys()) {
            if key.is_empty() {
                return invalid("a label or annotation key is empty".into());
            }
        }
        let mut names = BTreeSet::new();
        for layer in &self.layers {
            if layer.name.is_empty() || layer.name == "base" || !names.insert(&layer.name) {
                return invalid(format!(
                    "layer names must be non-empty, unique and not \"base\": {:?}",
                    layer.name
                ));
            }
            let mut paths = BTreeSet::new();
            for file in &layer.files {
                check_image_path(&file.path)?;
                if file.mode > 0o7777 {
                    return invalid(format!(
                        "{}: mode {:o} is not a file mode",
                        file.path, file.mode
                    ));
                }
                if !paths.insert(file.path.as_str()) {
                    return invalid(format!(
                        "{} appears twice in layer {:?}",
                        file.path, layer.name
                    ));
                }
            }
        }
        Ok(())
    }

    /// `ExposedPorts` entries, normalized (`8080` → `8080/tcp`).
    pub(crate) fn normalized_ports(&self) -> Result<Vec<String>, DeployError> {
        let ports: BTreeSet<String> = self
            .exposed_ports
            .iter()
            .map(|p| normalize_port(p))
            .collect::<Result<_, _>>()?;
        Ok(ports.into_iter().collect())
    }
}

fn normalize_port(port: &str) -> Result<String, DeployError> {
    let (number, protocol) = port.split_once('/').unwrap_or((port, "tcp"));
    match (number.parse::<u16>(), protocol) {
        (Ok(n), "tcp" | "udp" | "sctp") if n > 0 => Ok(format!("{n}/{protocol}")),
        _ => Err(DeployError::InvalidArgument(format!(
            "invalid exposed port {port:?}: expected PORT or PORT/tcp|udp|sctp"
        ))),
    }
}

/// An absolute, normalized path inside the image (`/usr/bin/accel`).
pub(crate) fn check_image_path(path: &str) -> Result<(), DeployError> {
    let ok = path.starts_with('/')
        && path.len() > 1
        && !path.ends_with('/')
        && !path.contains('\0')
        && path[1..]
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..");
    if ok {
        Ok(())
    } else {
        Err(DeployError::InvalidArgument(format!(
            "{path:?} is not an absolute, normalized path inside the image"
        )))
    }
}

/// Operating system and CPU architecture, in Go's `GOOS`/`GOARCH` words
/// as OCI uses them (`linux`, `amd64`, `arm64`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    /// `GOOS`: `linux`.
    pub os: String,
    /// `GOARCH`: `amd64`, `arm64`, …
    pub architecture: String,
    /// CPU variant (`v8` for arm64), if any.
    pub variant: Option<String>,
}

impl Platform {
    /// The platform this process runs on.
    pub fn host() -> Self {
        let architecture = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "x86" => "386",
            "aarch64" => "arm64",
            "arm" => "arm",
            "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
            "powerpc64" => "ppc64",
            "s390x" => "s390x",
            "riscv64" => "riscv64",
            "loongarch64" => "loong64",
            other => other,
        };
        Platform {
            os: std::env::consts::OS.to_string(),
            architecture: architecture.to_string(),
            variant: None,
        }
    }
}

/// The non-root user (and its primary group) the image runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageUser {
    /// User name in `/etc/passwd`.
    pub name: String,
    /// Numeric user id; not 0.
    pub uid: u32,
    /// Group name in `/etc/group`.
    pub group: String,
    /// Numeric group id; not 0.
    pub gid: u32,
    /// Home directory, created owned by the user (mode 0755).
    pub home: String,
}

impl ImageUser {
    /// A user `name` with group `name`, home `/home/NAME`.
    pub fn new(name: impl Into<String>, uid: u32, gid: u32) -> Self {
        let name = name.into();
        ImageUser {
            group: name.clone(),
            home: format!("/home/{name}"),
            name,
            uid,
            gid,
        }
    }

    fn validate(&self) -> Result<(), DeployError> {
        let bad_name = |s: &str| {
            s.is_empty()
                || s == "root"
                || !s
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        };
        if self.uid == 0 || self.gid == 0 {
            return Err(DeployError::InvalidArgument(
                "the image user must not be root (uid and gid must not be 0)".into(),
            ));
        }
        if bad_name(&self.name) || bad_name(&self.group) {
            return Err(DeployError::InvalidArgument(format!(
                "invalid image user/group name {:?}/{:?} (letters, digits, '.', '_', '-'; not root)",
                self.name, self.group
            )));
        }
        check_image_path(&self.home)
    }
}

impl Default for ImageUser {
    /// `accel`, uid and gid 10001, home `/home/accel`.
    fn default() -> Self {
        ImageUser::new("accel", 10001, 10001)
    }
}

/// One layer's files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerSpec {
    /// Short name (`runtime`, `engine`, `model`): written in the image
    /// history and the build log.
    pub name: String,
    /// The entries; parent directories are added as needed (root-owned,
    /// 0755, unless an earlier layer or this one declares them).
    pub files: Vec<FileEntry>,
}

impl LayerSpec {
    /// An empty layer named `name`.
    pub fn new(name: impl Into<String>) -> Self {
        LayerSpec {
            name: name.into(),
            files: Vec::new(),
        }
    }

    /// Adds an entry.
    pub fn file(mut self, entry: FileEntry) -> Self {
        self.files.push(entry);
        self
    }

    /// Adds entries.
    pub fn files(mut self, entries: impl IntoIterator<Item = FileEntry>) -> Self {
        self.files.extend(entries);
        self
    }
}

/// One entry of a layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    /// Absolute path in the image (`/usr/local/bin/accel`).
    pub path: String,
    /// Where the content comes from.
    pub source: FileSource,
    /// Permission bits (`0o755`; `0o1777` for a sticky directory). Ignored
    /// for symbolic links (always 0777).
    pub mode: u32,
    /// Owner uid (0 by default).
    pub uid: u32,
    /// Owner gid (0 by default).
    pub gid: u32,
}

impl FileEntry {
    /// A file with the given content.
    pub fn bytes(path: impl Into<String>, content: impl Into<Vec<u8>>, mode: u32) -> Self {
        Self::with_source(path, FileSource::Bytes(content.into()), mode)
    }

    /// A file copied from the host (symbolic links on the host are
    /// followed: the image gets a regular file).
    pub fn host(path: impl Into<String>, host_path: impl Into<PathBuf>, mode: u32) -> Self {
        Self::with_source(path, FileSource::HostFile(host_path.into()), mode)
    }

    /// A host file at the same path in the image (a shared library from
    /// [`shared_libraries`](super::shared_libraries)), mode 0755.
    pub fn host_same_path(host_path: impl Into<PathBuf>) -> Result<Self, DeployError> {
        let host_path = host_path.into();
        let path = host_path.to_str().map(str::to_owned).ok_or_else(|| {
            DeployError::InvalidArgument(format!("{} is not UTF-8", host_path.display()))
        })?;
        Ok(Self::host(path, host_path, 0o755))
    }

    /// A directory.
    pub fn directory(path: impl Into<String>, mode: u32) -> Self {
        Self::with_source(path, FileSource::Directory, mode)
    }

    /// A symbolic link to `target`.
    pub fn symlink(path: impl Into<String>, target: impl Into<String>) -> Self {
        Self::with_source(path, FileSource::Symlink(target.into()), 0o777)
    }

    /// The same entry owned by `uid:gid`.
    pub fn owned_by(mut self, uid: u32, gid: u32) -> Self {
        self.uid = uid;
        self.gid = gid;
        self
    }

    fn with_source(path: impl Into<String>, source: FileSource, mode: u32) -> Self {
        FileEntry {
            path: path.into(),
            source,
            mode,
            uid: 0,
            gid: 0,
        }
    }
}

/// Where an entry's content comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileSource {
    /// These bytes.
    Bytes(Vec<u8>),
    /// This file on the host, read at build time.
    HostFile(PathBuf),
    /// A directory.
    Directory,
    /// A symbolic link with this target.
    Symlink(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_ports_are_checked() {
        assert!(check_image_path("/usr/bin/accel").is_ok());
        for bad in [
            "",
            "/",
            "usr/bin",
            "/usr/../etc",
            "/usr//bin",
            "/usr/",
            "/./x",
        ] {
            assert!(check_image_path(bad).is_err(), "{bad}");
        }
        assert_eq!(normalize_port("8080").unwrap(), "8080/tcp");
        assert_eq!(normalize_port("53/udp").unwrap(), "53/udp");
        assert!(normalize_port("0").is_err());
        assert!(normalize_port("80/http").is_err());
    }

    #[test]
    fn root_user_is_refused() {
        let spec = ImageSpec::new(ImageUser::new("accel", 0, 0), 0).layer(LayerSpec::new("x"));
        let mut spec = spec;
        spec.entrypoint = vec!["/x".into()];
        assert!(
            matches!(spec.validate(), Err(DeployError::InvalidArgument(m)) if m.contains("root"))
        );
    }
}

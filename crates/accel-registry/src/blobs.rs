//! The content-addressed blob store on disk.
//!
//! Model files and label lists live under `<home>/blobs/sha256/<hex>`, named
//! by the sha256 of their content, so identical content is stored once and
//! corruption is detectable by re-hashing. New content is first streamed into
//! `<home>/tmp/`, hashed and fsynced while it is copied, and only then renamed
//! into place, so a blob file under its final name is always complete. This
//! module only moves bytes; which blobs are in use is the database's business.

use crate::error::{RegistryError, Result};
use sha2::{Digest, Sha256};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Size of the copy and hash buffer.
const CHUNK: usize = 1 << 20;

/// True for a lower-case, 64-digit hexadecimal sha256.
pub(crate) fn is_valid_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Paths of the blob store and its scratch directory.
#[derive(Debug, Clone)]
pub(crate) struct BlobStore {
    dir: PathBuf,
    tmp: PathBuf,
}

/// A blob's content hash and length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Digested {
    /// Lower-case hex sha256.
    pub sha256: String,
    /// Length in bytes.
    pub size: u64,
}

impl BlobStore {
    /// The store under `home` (`blobs/sha256/` and `tmp/`).
    pub fn new(home: &Path) -> Self {
        BlobStore {
            dir: home.join("blobs").join("sha256"),
            tmp: home.join("tmp"),
        }
    }

    /// Creates the directories if they are missing.
    pub fn create_dirs(&self) -> Result<()> {
        for d in [&self.dir, &self.tmp] {
            fs::create_dir_all(d)
                .map_err(|e| RegistryError::io(format!("creating {}", d.display()), e))?;
        }
        Ok(())
    }

    /// Where the blob with this hash lives (whether or not it exists).
    pub fn path(&self, sha256: &str) -> PathBuf {
        self.dir.join(sha256)
    }

    /// Where the temp file with this name lives.
    pub fn temp_path(&self, name: &str) -> PathBuf {
        self.tmp.join(name)
    }

    /// A temp-file name no other writer (thread or process) will pick.
    pub fn new_temp_name() -> String {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        format!("{}-{nanos:x}-{n}.part", std::process::id())
    }

    /// Streams `src` into a new temp file `name`, hashing while copying, and
    /// fsyncs it. `src_desc` names the source in read errors.
    pub fn write_temp(&self, name: &str, src: &mut dyn Read, src_desc: &str) -> Result<Digested> {
        let path = self.temp_path(name);
        let mut out = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| RegistryError::io(format!("creating {}", path.display()), e))?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; CHUNK];
        let mut size = 0u64;
        loop {
            let n = match src.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(RegistryError::io(format!("reading {src_desc}"), e)),
            };
            hasher.update(&buf[..n]);
            out.write_all(&buf[..n])
                .map_err(|e| RegistryError::io(format!("writing {}", path.display()), e))?;
            size += n as u64;
        }
        out.sync_all()
            .map_err(|e| RegistryError::io(format!("syncing {}", path.display()), e))?;
        Ok(Digested {
            sha256: hex::encode(hasher.finalize()),
            size,
        })
    }

    /// Moves temp file `name` to the blob named `sha256` and fsyncs the blob
    /// directory. When that blob exists already the temp file is removed
    /// instead (same content). Returns whether a new blob file was created.
    pub fn install(&self, name: &str, sha256: &str) -> Result<bool> {
        let tmp = self.temp_path(name);
        let dst = self.path(sha256);
        if dst.exists() {
            remove_if_exists(&tmp)?;
            return Ok(false);
        }
        fs::rename(&tmp, &dst).map_err(|e| {
            RegistryError::io(format!("moving {} to {}", tmp.display(), dst.display()), e)
        })?;
        sync_dir(&self.dir)?;
        Ok(true)
    }

    /// Removes the blob file; returns whether it existed.
    pub fn remove(&self, sha256: &str) -> Result<bool> {
        remove_if_exists(&self.path(sha256))
    }

    /// Removes a temp file; returns whether it existed.
    pub fn remove_temp(&self, name: &str) -> Result<bool> {
        remove_if_exists(&self.temp_path(name))
    }

    /// Reads a whole blob, checking its content against its name.
    /// A missing file is reported as `Ok(None)`.
    pub fn read_verified(&self, sha256: &str) -> Result<Option<Vec<u8>>> {
        let path = self.path(sha256);
        let data = match fs::read(&path) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(RegistryError::io(format!("reading {}", path.display()), e)),
        };
        let actual = hex::encode(Sha256::digest(&data));
        if actual != sha256 {
            return Err(corrupt(sha256, &actual, &path));
        }
        Ok(Some(data))
    }

    /// Re-hashes a blob file; `Ok(None)` when it is missing.
    pub fn hash(&self, sha256: &str) -> Result<Option<Digested>> {
        let path = self.path(sha256);
        let mut f = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(RegistryError::io(format!("opening {}", path.display()), e)),
        };
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; CHUNK];
        let mut size = 0u64;
        loop {
            let n = match f.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(RegistryError::io(format!("reading {}", path.display()), e)),
            };
            hasher.update(&buf[..n]);
            size += n as u64;
        }
        Ok(Some(Digested {
            sha256: hex::encode(hasher.finalize()),
            size,
        }))
    }

    /// Names of the regular files in the blob directory, sorted.
    pub fn list(&self) -> Result<Vec<String>> {
        list_dir(&self.dir)
    }

    /// Names of the regular files in the temp directory, sorted.
    pub fn list_temp(&self) -> Result<Vec<String>> {
        list_dir(&self.tmp)
    }
}

/// The error for a blob whose content does not match its name.
pub(crate) fn corrupt(sha256: &str, actual: &str, path: &Path) -> RegistryError {
    RegistryError::DataLoss(format!(
        "blob {sha256} is corrupt: its content hashes to {actual} ({})",
        path.display()
    ))
}

fn remove_if_exists(path: &Path) -> Result<bool> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(RegistryError::io(format!("removing {}", path.display()), e)),
    }
}

fn list_dir(dir: &Path) -> Result<Vec<String>> {
    let ctx = || format!("listing {}", dir.display());
    let mut names = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| RegistryError::io(ctx(), e))? {
        let entry = entry.map_err(|e| RegistryError::io(ctx(), e))?;
        if !entry.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        names.push(entry.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    Ok(names)
}

/// Makes a rename inside `dir` durable.
#[cfg(unix)]
fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| RegistryError::io(format!("syncing {}", dir.display()), e))
}

/// Directories cannot be opened for syncing here; renames are durable enough.
#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ABC: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

    #[test]
    fn temp_write_hashes_and_install_dedups() {
        let home = tempfile::tempdir().unwrap();
        let store = BlobStore::new(home.path());
        store.create_dirs().unwrap();
        for round in 0..2 {
            let name = BlobStore::new_temp_name();
            let d = store.write_temp(&name, &mut &b"abc"[..], "test").unwrap();
            assert_eq!(
                d,
                Digested {
                    sha256: ABC.into(),
                    size: 3
                }
            );
            assert_eq!(store.install(&name, ABC).unwrap(), round == 0);
            assert!(!store.temp_path(&name).exists());
        }
        assert_eq!(store.list().unwrap(), vec![ABC.to_string()]);
        assert!(store.list_temp().unwrap().is_empty());
        assert_eq!(store.read_verified(ABC).unwrap().unwrap(), b"abc");
        assert_eq!(store.hash(ABC).unwrap().unwrap().size, 3);
    }

    #[test]
    fn flipped_byte_is_data_loss_and_missing_is_none() {
        let home = tempfile::tempdir().unwrap();
        let store = BlobStore::new(home.path());
        store.create_dirs().unwrap();
        fs::write(store.path(ABC), b"abd").unwrap();
        let err = store.read_verified(ABC).unwrap_err();
        assert!(matches!(err, RegistryError::DataLoss(_)));
        assert!(
            err.to_string()
                .starts_with(&format!("blob {ABC} is corrupt")),
            "{err}"
        );
        store.remove(ABC).unwrap();
        assert!(store.read_verified(ABC).unwrap().is_none());
        assert!(store.hash(ABC).unwrap().is_none());
    }

    #[test]
    fn sha_syntax() {
        assert!(is_valid_sha256(ABC));
        assert!(!is_valid_sha256(&ABC.to_uppercase()));
        assert!(!is_valid_sha256(&ABC[1..]));
        assert!(!is_valid_sha256("../../etc/passwd"));
    }
}

//! The shared libraries a dynamically linked binary needs, from `ldd`.

use crate::DeployError;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The shared libraries `binary` loads at start-up, as `ldd` resolves them on
/// this host, including the dynamic loader (`/lib64/ld-linux-x86-64.so.2`)
/// at the absolute path the binary names. Paths are as `ldd` prints them
/// (the names the loader looks for; symbolic links are not resolved), sorted
/// and without duplicates. A statically linked binary needs none: the list
/// is empty. The virtual `linux-vdso.so.1` is left out.
///
/// Put each at the same path in the image
/// ([`FileEntry::host_same_path`](super::FileEntry::host_same_path)) and
/// the binary runs without a base image. Libraries opened later with
/// `dlopen` (ONNX Runtime under `load-dynamic`) are not listed: call this on
/// them too and merge.
///
/// `ldd` may run the binary's loader on it: use it on binaries you trust
/// (Accel's own).
///
/// Errors: `NotFound` when a library cannot be found (all are named);
/// `Io` when `ldd` cannot be run; `InvalidArgument` when `binary` is not
/// a file.
pub fn shared_libraries(binary: &Path) -> Result<Vec<PathBuf>, DeployError> {
    if !binary.is_file() {
        return Err(DeployError::InvalidArgument(format!(
            "{} is not a file",
            binary.display()
        )));
    }
    let output = Command::new("ldd")
        .arg(binary)
        .env("LC_ALL", "C")
        .output()
        .map_err(|e| DeployError::io("running ldd (from libc-bin)", e))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        // glibc's ldd exits 1 for "not a dynamic executable".
        if stdout.contains("not a dynamic executable")
            || stderr.contains("not a dynamic executable")
        {
            return Ok(Vec::new());
        }
        return Err(DeployError::FailedPrecondition(format!(
            "ldd {} failed ({}): {}",
            binary.display(),
            output.status,
            stderr.trim()
        )));
    }
    parse_ldd_output(&stdout).map_err(|missing| {
        DeployError::NotFound(format!(
            "{} needs shared libraries that are not found: {}",
            binary.display(),
            missing.join(", ")
        ))
    })
}

/// Parses `ldd`'s output: the paths of
/// `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)` and
/// `/lib64/ld-linux-x86-64.so.2 (0x…)` lines, sorted, without duplicates.
/// `Err` lists the names of `=> not found` lines.
pub fn parse_ldd_output(output: &str) -> Result<Vec<PathBuf>, Vec<String>> {
    let mut paths = Vec::new();
    let mut missing = Vec::new();
    for line in output.lines().map(str::trim) {
        let without_address = match line.rfind(" (0x") {
            Some(i) if line.ends_with(')') => &line[..i],
            _ => line,
        };
        let target = match without_address.split_once("=>") {
            Some((name, target)) => {
                let target = target.trim();
                if target == "not found" {
                    missing.push(name.trim().to_string());
                    continue;
                }
                target
            }
            None => without_address.trim(),
        };
        // "linux-vdso.so.1 =>" (empty target), "statically linked", …
        if target.starts_with('/') {
            paths.push(PathBuf::from(target));
        }
    }
    if !missing.is_empty() {
        return Err(missing);
    }
    paths.sort();
    paths.dedup();
    Ok(paths)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_glibc_ldd_output() {
        let out = "\tlinux-vdso.so.1 (0x00007ffd4b5f2000)\n\
                   \tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f1)\n\
                   \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f2)\n\
                   \t/lib64/ld-linux-x86-64.so.2 (0x00007f3)\n\
                   \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f2)\n";
        assert_eq!(
            parse_ldd_output(out).unwrap(),
            vec![
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib/x86_64-linux-gnu/libgcc_s.so.1"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2"),
            ]
        );
        assert_eq!(
            parse_ldd_output("\tstatically linked\n").unwrap(),
            Vec::<PathBuf>::new()
        );
        assert_eq!(
            parse_ldd_output("\tlibfoo.so.1 => not found\n\tlibc.so.6 => /lib/libc.so.6 (0x1)\n"),
            Err(vec!["libfoo.so.1".to_string()])
        );
    }

    #[test]
    fn lists_the_loader_of_a_dynamic_binary() {
        let libs = shared_libraries(Path::new("/bin/true")).unwrap();
        assert!(
            libs.iter().any(|p| p.to_string_lossy().contains("libc.so")),
            "{libs:?}"
        );
        assert!(
            libs.iter().any(|p| p.to_string_lossy().contains("ld-")),
            "{libs:?}"
        );
    }
}

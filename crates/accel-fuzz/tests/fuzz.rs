//! Every fuzz target on its checked-in corpus (`fuzz/corpus/<target>/`),
//! then on mutations of it for `ACCEL_FUZZ_SECONDS` seconds per target
//! (default 3; `.ci/run` sets it). A panic fails the test and writes the
//! input to `target/fuzz-crashes/` for `fuzz/` (libFuzzer) or a
//! regression corpus entry.

use accel_fuzz::driver::{run, Crash};
use accel_fuzz::targets::ALL;
use sha2::Digest;
use std::path::{Path, PathBuf};
use std::time::Duration;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = root().join("fuzz/corpus").join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("no corpus at {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files.iter().map(|p| std::fs::read(p).unwrap()).collect()
}

fn save(target: &str, crash: &Crash) -> PathBuf {
    let dir = root().join("target/fuzz-crashes");
    std::fs::create_dir_all(&dir).unwrap();
    let name = format!(
        "{target}-{}",
        &hex::encode(sha2::Sha256::digest(&crash.input))[..16]
    );
    let path = dir.join(name);
    std::fs::write(&path, &crash.input).unwrap();
    path
}

#[test]
fn every_target_survives_its_corpus_and_mutations_of_it() {
    let seconds: f64 = std::env::var("ACCEL_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    let seed: u64 = std::env::var("ACCEL_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed);
    let mut failures = Vec::new();
    for (name, target) in ALL {
        let corpus = corpus(name);
        assert!(!corpus.is_empty(), "empty corpus for {name}");
        match run(target, &corpus, Duration::from_secs_f64(seconds), seed) {
            Ok(stats) => eprintln!(
                "{name}: {} corpus entries, {} mutated inputs in {seconds} s, no panic",
                stats.replayed, stats.mutated
            ),
            Err(crash) => {
                let path = save(name, &crash);
                failures.push(format!(
                    "{name}: {} ({}): input saved to {}",
                    crash.message,
                    if crash.from_corpus {
                        "a corpus entry"
                    } else {
                        "a mutation"
                    },
                    path.display()
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

//! A bounded-time mutation fuzzer on stable Rust: replays a corpus, then
//! mutates its entries (bit flips, interesting bytes, inserts, deletes,
//! duplicated chunks, truncations, splices) until the time is up. Not
//! coverage-guided (libFuzzer in `fuzz/` is); deterministic for a seed.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

/// Longest mutated input, in bytes.
pub const MAX_LEN: usize = 64 * 1024;

/// How a run went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stats {
    /// Corpus entries replayed.
    pub replayed: usize,
    /// Mutated inputs run.
    pub mutated: u64,
}

/// An input that made the target panic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Crash {
    /// The input.
    pub input: Vec<u8>,
    /// The panic message.
    pub message: String,
    /// Whether it was a corpus entry as checked in (else a mutation).
    pub from_corpus: bool,
}

/// xorshift64*: small, deterministic, good enough to pick mutations.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed` (0 is replaced: xorshift needs a non-zero state).
    pub fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }

    /// The next value.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A value below `n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

const INTERESTING: [u8; 8] = [0x00, 0x01, 0x7f, 0x80, 0xff, b'"', b'{', b'\n'];

/// One random mutation of `input` (`other` is a corpus entry to splice from).
pub fn mutate(rng: &mut Rng, input: &[u8], other: &[u8]) -> Vec<u8> {
    let mut v = input.to_vec();
    for _ in 0..=rng.below(4) {
        match rng.below(8) {
            0 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] ^= 1 << rng.below(8);
            }
            1 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] = INTERESTING[rng.below(INTERESTING.len())];
            }
            2 => {
                let i = rng.below(v.len() + 1);
                let n = 1 + rng.below(8);
                let bytes: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
                v.splice(i..i, bytes);
            }
            3 if !v.is_empty() => {
                let i = rng.below(v.len());
                let n = 1 + rng.below((v.len() - i).min(64));
                v.drain(i..i + n);
            }
            4 if !v.is_empty() => {
                let i = rng.below(v.len());
                let n = 1 + rng.below((v.len() - i).min(256));
                let chunk = v[i..i + n].to_vec();
                let at = rng.below(v.len() + 1);
                v.splice(at..at, chunk);
            }
            5 if !v.is_empty() => {
                v.truncate(rng.below(v.len()));
            }
            6 if !other.is_empty() => {
                let cut = rng.below(v.len() + 1);
                let from = rng.below(other.len());
                v.truncate(cut);
                v.extend_from_slice(&other[from..]);
            }
            _ => {
                // Overwrite a little-endian length-like field with an extreme value.
                if v.len() >= 4 {
                    let i = rng.below(v.len() - 3);
                    let x = [0u32, 1, 0x7fff_ffff, u32::MAX][rng.below(4)];
                    v[i..i + 4].copy_from_slice(&x.to_le_bytes());
                }
            }
        }
    }
    v.truncate(MAX_LEN);
    v
}

fn run_one(target: fn(&[u8]), input: &[u8]) -> Result<(), String> {
    catch_unwind(AssertUnwindSafe(|| target(input))).map_err(|p| {
        p.downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "a panic without a message".into())
    })
}

/// Replays `corpus`, then runs mutations of it until `budget` is spent.
/// Stops at the first panic.
pub fn run(
    target: fn(&[u8]),
    corpus: &[Vec<u8>],
    budget: Duration,
    seed: u64,
) -> Result<Stats, Crash> {
    for input in corpus {
        run_one(target, input).map_err(|message| Crash {
            input: input.clone(),
            message,
            from_corpus: true,
        })?;
    }
    let mut stats = Stats {
        replayed: corpus.len(),
        mutated: 0,
    };
    let seeds: Vec<&[u8]> = if corpus.is_empty() {
        vec![&[]]
    } else {
        corpus.iter().map(Vec::as_slice).collect()
    };
    let mut rng = Rng::new(seed);
    let until = Instant::now() + budget;
    while Instant::now() < until {
        for _ in 0..64 {
            let base = seeds[rng.below(seeds.len())];
            let other = seeds[rng.below(seeds.len())];
            let input = mutate(&mut rng, base, other);
            run_one(target, &input).map_err(|message| Crash {
                input: input.clone(),
                message,
                from_corpus: false,
            })?;
            stats.mutated += 1;
        }
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn picky(data: &[u8]) {
        assert!(!data.starts_with(b"BUG"), "found it");
    }

    #[test]
    fn a_planted_bug_is_found_and_reported_with_its_input() {
        let corpus = vec![b"BUF".to_vec(), b"xBUG".to_vec()];
        let crash = run(picky, &corpus, Duration::from_secs(20), 7).unwrap_err();
        assert!(crash.input.starts_with(b"BUG"), "{crash:?}");
        assert_eq!(crash.message, "found it");
        assert!(!crash.from_corpus);
    }

    #[test]
    fn a_crashing_corpus_entry_is_reported_as_such() {
        let crash = run(picky, &[b"BUG!".to_vec()], Duration::ZERO, 1).unwrap_err();
        assert!(crash.from_corpus);
    }

    #[test]
    fn mutations_are_deterministic_and_bounded() {
        let (mut a, mut b) = (Rng::new(3), Rng::new(3));
        let big = vec![7u8; MAX_LEN];
        for _ in 0..200 {
            let x = mutate(&mut a, &big, b"tail");
            assert_eq!(x, mutate(&mut b, &big, b"tail"));
            assert!(x.len() <= MAX_LEN);
        }
    }
}

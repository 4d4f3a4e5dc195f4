//! The fuzz targets' short pass (`shardgate::fuzz_logic`): every target over its corpus
//! (`tests/fuzz-corpus/<target>/`: seeds and the crashing inputs found so far, kept as
//! regressions) and over structured mutations of the fixtures (byte flips, dictionary tokens,
//! splices, cuts, repeats), deterministic from a fixed seed. `SHARDGATE_FUZZ_CASES` raises the
//! number of mutated cases per target (default 400); `SHARDGATE_FUZZ_SEED` changes the seed.
//! The long, coverage-guided runs are `scripts/fuzz.sh`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]

use std::path::PathBuf;

use shardgate::fuzz_logic::{TARGETS, Target, target};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests")
}

/// Files matching a `kind/pattern` seed spec under `tests/fixtures/` (`*` in the kind matches
/// every kind; the file pattern is `prefix*suffix`).
fn fixture_seeds(spec: &str) -> Vec<PathBuf> {
    let (kind, file) = spec.split_once('/').unwrap();
    let (prefix, suffix) = file.split_once('*').unwrap_or((file, ""));
    let mut out = Vec::new();
    for dir in std::fs::read_dir(root().join("fixtures")).unwrap() {
        let dir = dir.unwrap().path();
        if !dir.is_dir() || (kind != "*" && dir.file_name().unwrap() != kind) {
            continue;
        }
        for f in std::fs::read_dir(&dir).unwrap() {
            let f = f.unwrap().path();
            let name = f.file_name().unwrap().to_string_lossy().into_owned();
            if name.starts_with(prefix) && name.ends_with(suffix) {
                out.push(f);
            }
        }
    }
    out.sort();
    out
}

fn corpus_files(t: &Target) -> Vec<PathBuf> {
    let dir = root().join("fuzz-corpus").join(t.name);
    let mut out: Vec<PathBuf> = match std::fs::read_dir(&dir) {
        Ok(d) => d
            .map(|f| f.unwrap().path())
            .filter(|p| p.is_file())
            .collect(),
        Err(_) => Vec::new(),
    };
    out.sort();
    out
}

fn seeds(t: &Target) -> Vec<(PathBuf, Vec<u8>)> {
    t.seeds
        .iter()
        .flat_map(|s| fixture_seeds(s))
        .chain(corpus_files(t))
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect()
}

/// The AFL dictionary (`name="value"` lines, `\xNN` escapes), also used by the mutator here.
fn dictionary() -> Vec<Vec<u8>> {
    let text = std::fs::read_to_string(root().join("fuzz-corpus/fuzz.dict")).unwrap();
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (Some(a), Some(b)) = (line.find('"'), line.rfind('"')) else {
            panic!("bad dictionary line {line:?}");
        };
        let raw = &line.as_bytes()[a + 1..b];
        let mut v = Vec::new();
        let mut i = 0;
        while i < raw.len() {
            if raw[i] == b'\\' && raw.get(i + 1) == Some(&b'x') {
                v.push(
                    u8::from_str_radix(std::str::from_utf8(&raw[i + 2..i + 4]).unwrap(), 16)
                        .unwrap(),
                );
                i += 4;
            } else if raw[i] == b'\\' {
                v.push(raw[i + 1]);
                i += 2;
            } else {
                v.push(raw[i]);
                i += 1;
            }
        }
        out.push(v);
    }
    out
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // splitmix64
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

/// One structured mutation of `input`, with `other` for splices and `dict` for tokens.
fn mutate(input: &[u8], other: &[u8], dict: &[Vec<u8>], rng: &mut Rng) -> Vec<u8> {
    let mut v = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        let len = v.len();
        match rng.below(9) {
            0 if len > 0 => {
                let i = rng.below(len);
                v[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                const BYTES: &[u8] = b"\"{}[]:,\\\n\r 0-9eE.\x00\xff\xc3";
                let i = rng.below(len);
                v[i] = BYTES[rng.below(BYTES.len())];
            }
            2 | 3 => {
                let tok = &dict[rng.below(dict.len())];
                let i = rng.below(len + 1);
                v.splice(i..i, tok.iter().copied());
            }
            4 if len > 0 => {
                let a = rng.below(len);
                let b = (a + 1 + rng.below(64)).min(len);
                v.drain(a..b);
            }
            5 if len > 0 => {
                let a = rng.below(len);
                let b = (a + 1 + rng.below(256)).min(len);
                let piece = v[a..b].to_vec();
                let at = rng.below(len + 1);
                v.splice(at..at, piece);
            }
            6 if !other.is_empty() => {
                let a = rng.below(other.len());
                let b = (a + 1 + rng.below(512)).min(other.len());
                let at = rng.below(len + 1);
                v.splice(at..at, other[a..b].iter().copied());
            }
            7 if len > 0 => v.truncate(rng.below(len)),
            _ if len > 0 => {
                // Overwrite a number-like run with an extreme value.
                const NUMS: &[&[u8]] = &[
                    b"18446744073709551615",
                    b"-1",
                    b"1e999",
                    b"0",
                    b"4294967296",
                ];
                let n = NUMS[rng.below(NUMS.len())];
                let i = rng.below(len);
                let j = (i + v[i..].iter().take_while(|b| b.is_ascii_digit()).count()).max(i);
                v.splice(i..j, n.iter().copied());
            }
            _ => v.push(rng.below(256) as u8),
        }
    }
    v
}

fn run(t: &Target, input: &[u8], what: &dyn std::fmt::Display) {
    let out = std::panic::catch_unwind(|| (t.run)(input));
    match out {
        Ok(Ok(())) => {}
        Ok(Err(v)) => panic!(
            "{v}\ninput ({what}, {} bytes): {:?}",
            input.len(),
            String::from_utf8_lossy(input)
        ),
        Err(_) => panic!(
            "{}: panicked on {what} ({} bytes): {:?}",
            t.name,
            input.len(),
            String::from_utf8_lossy(input)
        ),
    }
}

#[test]
fn every_target_has_seeds_and_a_corpus_folder() {
    for t in TARGETS {
        assert!(!seeds(t).is_empty(), "{}: no seed", t.name);
        assert!(
            root().join("fuzz-corpus").join(t.name).is_dir(),
            "{}: no tests/fuzz-corpus/{0}/",
            t.name
        );
        assert_eq!(target(t.name).map(|x| x.name), Some(t.name));
    }
}

#[test]
fn corpus_and_regressions_replay_clean() {
    for t in TARGETS {
        for (path, bytes) in seeds(t) {
            run(t, &bytes, &path.display());
        }
    }
}

#[test]
fn mutated_fixtures_break_no_promise() {
    let env = |k: &str| std::env::var(k).ok();
    let cases: usize = env("SHARDGATE_FUZZ_CASES")
        .and_then(|v| v.parse().ok())
        .unwrap_or(400);
    let seed: u64 = env("SHARDGATE_FUZZ_SEED")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed);
    // scripts/fuzz.sh with FUZZ_ENGINE=mutate: run each target for a time instead.
    let secs: Option<u64> = env("SHARDGATE_FUZZ_SECS").and_then(|v| v.parse().ok());
    let only = env("SHARDGATE_FUZZ_TARGETS").unwrap_or_default();
    let only: Vec<&str> = only.split_whitespace().collect();
    let dict = dictionary();
    let mut ran = 0;
    for t in TARGETS {
        if !only.is_empty() && !only.contains(&t.name) {
            continue;
        }
        let pool = seeds(t);
        let mut rng =
            Rng(seed
                ^ ((t.name.len() as u64) << 32 | u64::from(t.name.as_bytes()[7 % t.name.len()])));
        let deadline = secs.map(|s| std::time::Instant::now() + std::time::Duration::from_secs(s));
        let mut case = 0;
        loop {
            let more = match deadline {
                Some(d) => std::time::Instant::now() < d,
                None => case < cases,
            };
            if !more {
                break;
            }
            let (_, a) = &pool[rng.below(pool.len())];
            let (_, b) = &pool[rng.below(pool.len())];
            let input = mutate(a, b, &dict, &mut rng);
            run(t, &input, &format_args!("case {case}, seed {seed}"));
            case += 1;
        }
        if secs.is_some() {
            println!("{:<28} execs {case:>10}  crashes 0", t.name);
        }
        assert!(case > 0, "{}: no case ran", t.name);
        ran += 1;
    }
    assert!(ran > 0, "no target matched SHARDGATE_FUZZ_TARGETS={only:?}");
}

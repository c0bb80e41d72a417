//! The fuzz targets in the normal test run, on stable Rust: every seed (and crash reproducer)
//! in `fuzz/corpus/<target>/`, then pseudo-random inputs — the seeds mutated, spliced and
//! truncated, and plain random bytes — through the same `run` functions libFuzzer calls
//! (`fuzz/src/`, compiled here as modules). No coverage guidance: this keeps the invariants and
//! the corpus honest on every run; `scripts/fuzz.sh` does the searching.

#[path = "../fuzz/src/authentik_json.rs"]
mod authentik_json;
#[path = "../fuzz/src/config_yaml.rs"]
mod config_yaml;
#[path = "../fuzz/src/cookie_unseal.rs"]
mod cookie_unseal;
#[path = "../fuzz/src/forwarded_url.rs"]
mod forwarded_url;
#[path = "../fuzz/src/redirect.rs"]
mod redirect;
#[path = "../fuzz/src/skip_path.rs"]
mod skip_path;

use std::path::PathBuf;

/// Inputs per target beyond the seeds; `AK_FUZZ_SMOKE_INPUTS` overrides.
const DEFAULT_INPUTS: usize = 10_000;

/// Bytes worth splicing in: separators and the tokens the parsers branch on.
const TOKENS: &[&[u8]] = &[
    b"/",
    b"//",
    b"\\",
    b"..",
    b"%2F",
    b"%2e",
    b"%00",
    b"%",
    b"@",
    b":",
    b"?",
    b"#",
    b"&",
    b";",
    b"=",
    b"\n",
    b"\t",
    b" ",
    b"\"",
    b"http://",
    b"https://",
    b"xn--",
    b"[::1]",
    b"\xc3\xbc",
    b"\xff",
    b"rd=",
    b"&attempt=",
    b"_1",
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b"null",
    b"0",
    b"-1",
    b"1e308",
    b"env://",
    b"file://",
    b"- ",
    b"&a",
    b"*a",
    b"!!",
];

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let seeds: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(f).unwrap()).collect();
    assert!(seeds.len() >= 5, "{target}: only {} seeds", seeds.len());
    seeds
}

/// One pseudo-random input: a seed with 1–8 edits, or (one in eight) random bytes.
fn mutate(rng: &mut Rng, seeds: &[Vec<u8>]) -> Vec<u8> {
    if rng.below(8) == 0 {
        let len = rng.below(64);
        return (0..len).map(|_| rng.next() as u8).collect();
    }
    let mut v = seeds[rng.below(seeds.len())].clone();
    for _ in 0..=rng.below(8) {
        let at = rng.below(v.len() + 1);
        match rng.below(7) {
            0 if at < v.len() => v[at] = rng.next() as u8,
            1 if at < v.len() => v[at] ^= 1 << rng.below(8),
            2 => v.insert(at, rng.next() as u8),
            3 if at < v.len() => {
                v.remove(at);
            }
            4 => {
                let t = TOKENS[rng.below(TOKENS.len())];
                v.splice(at..at, t.iter().copied());
            }
            5 => {
                let other = &seeds[rng.below(seeds.len())];
                let from = rng.below(other.len());
                v.truncate(at);
                v.extend_from_slice(&other[from..]);
            }
            _ => v.truncate(at),
        }
    }
    v
}

/// Runs `run` on every seed, then on `inputs` mutations; a failing input is printed whole.
fn replay(target: &str, run: fn(&[u8])) {
    let seeds = corpus(target);
    let inputs = std::env::var("AK_FUZZ_SMOKE_INPUTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(DEFAULT_INPUTS);
    // A fixed seed per target: a failure reproduces.
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ target.len() as u64);
    let generated = (0..inputs).map(|_| mutate(&mut rng, &seeds));
    for (i, input) in seeds.clone().into_iter().chain(generated).enumerate() {
        if let Err(e) = std::panic::catch_unwind(|| run(&input)) {
            eprintln!(
                "{target}: input #{i} failed ({} bytes): {:?}",
                input.len(),
                String::from_utf8_lossy(&input)
            );
            std::panic::resume_unwind(e);
        }
    }
}

#[test]
fn authentik_json_corpus() {
    replay("authentik_json", authentik_json::run);
}

#[test]
fn config_yaml_corpus() {
    replay("config_yaml", config_yaml::run);
}

#[test]
fn cookie_unseal_corpus() {
    replay("cookie_unseal", cookie_unseal::run);
}

#[test]
fn forwarded_url_corpus() {
    replay("forwarded_url", forwarded_url::run);
}

#[test]
fn redirect_corpus() {
    replay("redirect", redirect::run);
}

#[test]
fn skip_path_corpus() {
    replay("skip_path", skip_path::run);
}

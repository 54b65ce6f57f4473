//! A small seeded mutator for the fuzz tests (ordinary `cargo test`, no nightly): a
//! xorshift RNG, byte-level mutations (flips, inserts, deletions, splices, interesting
//! numbers written at random offsets) and JSON-aware ones (a random value of an app file
//! replaced by an edge value, removed or duplicated). `FUZZ_SEED=` replays a run.

use serde_json::{json, Value};

/// xorshift64*: fast, seeded, good enough to pick mutations.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    /// The seed from `FUZZ_SEED`, else `default`.
    pub fn seed_from_env(default: u64) -> u64 {
        std::env::var("FUZZ_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(default)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// Integers at the edges of the types SmartPipe reads numbers into.
pub const EDGE_INTS: &[u64] = &[
    0,
    1,
    2,
    63,
    64,
    255,
    1024,
    1025,
    65500,
    65535,
    65536,
    60000,
    (1 << 31) - 1,
    1 << 31,
    u32::MAX as u64,
    1 << 32,
    (1 << 53) + 1,
    u64::MAX,
];

/// Tokens worth inserting into JSON text.
const TOKENS: &[&[u8]] = &[
    b"4294967295",
    b"1e-320",
    b"-1",
    b"1e308",
    b"null",
    b"\"\"",
    b"[]",
    b"{}",
    b"0",
];

/// Mutate `bytes` in place with 1–4 random byte-level changes.
pub fn mutate_bytes(rng: &mut Rng, bytes: &mut Vec<u8>) {
    for _ in 0..1 + rng.below(4) {
        let len = bytes.len();
        match rng.below(7) {
            0 if len > 0 => {
                let i = rng.below(len);
                bytes[i] ^= 1 << rng.below(8);
            }
            1 => {
                let i = rng.below(len + 1);
                bytes.insert(i, rng.next_u64() as u8);
            }
            2 if len > 0 => {
                let i = rng.below(len);
                let n = 1 + rng.below((len - i).min(16));
                bytes.drain(i..i + n);
            }
            3 if len > 0 => {
                // Splice a copy of one range somewhere else.
                let i = rng.below(len);
                let n = 1 + rng.below((len - i).min(32));
                let piece: Vec<u8> = bytes[i..i + n].to_vec();
                let at = rng.below(bytes.len() + 1);
                bytes.splice(at..at, piece);
            }
            4 if len >= 4 => {
                // An edge value as a big-endian u16 or u32 (image headers use both).
                let v = *rng.pick(EDGE_INTS);
                let at = rng.below(len - 3);
                if rng.below(2) == 0 {
                    bytes[at..at + 2].copy_from_slice(&(v as u16).to_be_bytes());
                } else {
                    bytes[at..at + 4].copy_from_slice(&(v as u32).to_be_bytes());
                }
            }
            5 if len > 0 => bytes.truncate(rng.below(len)),
            _ => {
                let i = rng.below(len + 1);
                let token = *rng.pick(TOKENS);
                bytes.splice(i..i, token.iter().copied());
            }
        }
    }
}

/// An edge value for a field that holds `old`: mostly of the same JSON type (so that
/// typed parsing gets past it and the checks behind it are reached), else anything.
fn edge_value(rng: &mut Rng, old: &Value) -> Value {
    if rng.below(4) != 0 {
        match old {
            Value::Number(_) if rng.below(3) == 0 => {
                return json!(*rng.pick(&[1e-320, -1.0, 0.5, 1e308, 1e-3, 1e6, 30.0]))
            }
            Value::Number(_) => return json!(*rng.pick(EDGE_INTS)),
            Value::String(_) => {
                return match rng.below(3) {
                    0 => json!("n".repeat(1 + rng.below(400))),
                    1 => json!(*rng.pick(&["", "x", "a.b", "score >", "mtcnn-pnet", "frames"])),
                    _ => json!(*rng.pick(&[
                        "image.gen",
                        "image.resize",
                        "image.crop",
                        "table.print",
                        "table.filter",
                        "model.preprocess",
                        "model.inference",
                        "bench.blob",
                        "core.forward",
                        "head",
                        "tail",
                        "cpu",
                        "gpu",
                        "request-guarantee",
                        "strong",
                    ])),
                }
            }
            _ => {}
        }
    }
    any_edge_value(rng)
}

/// An edge value of any JSON type.
fn any_edge_value(rng: &mut Rng) -> Value {
    match rng.below(10) {
        0..=3 => json!(*rng.pick(EDGE_INTS)),
        4 => json!(*rng.pick(&[1e-320, -1.0, 0.5, 1e308, -0.0, 1e-3, 1e6, 30.0])),
        5 => json!(*rng.pick(&[
            "",
            "x",
            "image.gen",
            "table.print",
            "head",
            "tail",
            "cpu",
            "gpu"
        ])),
        6 => json!("n".repeat(1 + rng.below(400))),
        7 => json!(null),
        8 => json!([]),
        _ => json!({}),
    }
}

/// Every path to a value in `v` (object keys and array indices).
fn paths(v: &Value, at: &mut Vec<Value>, out: &mut Vec<Vec<Value>>) {
    out.push(at.clone());
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                at.push(json!(k));
                paths(child, at, out);
                at.pop();
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                at.push(json!(i));
                paths(child, at, out);
                at.pop();
            }
        }
        _ => {}
    }
}

fn at_path<'a>(v: &'a mut Value, path: &[Value]) -> Option<&'a mut Value> {
    path.iter().try_fold(v, |v, k| match k {
        Value::String(s) => v.get_mut(s.as_str()),
        Value::Number(n) => n.as_u64().and_then(|i| v.get_mut(i as usize)),
        _ => None,
    })
}

/// Mutate a JSON document in place with 1–3 structure-aware changes.
pub fn mutate_json(rng: &mut Rng, doc: &mut Value) {
    for _ in 0..1 + rng.below(3) {
        let mut all = Vec::new();
        paths(doc, &mut Vec::new(), &mut all);
        // Mostly a leaf: replacing a whole task or list mostly tests the parser.
        let mut path = rng.pick(&all).clone();
        for _ in 0..4 {
            let leaf = at_path(doc, &path).is_some_and(|v| !v.is_object() && !v.is_array());
            if leaf || rng.below(5) == 0 {
                break;
            }
            path = rng.pick(&all).clone();
        }
        let Some((last, parent_path)) = path.split_last() else {
            continue;
        };
        let choice = rng.below(4);
        let Some(parent) = at_path(doc, parent_path) else {
            continue;
        };
        match (choice, parent, last) {
            (0, Value::Object(map), Value::String(k)) => {
                map.remove(k);
            }
            (1, Value::Array(items), Value::Number(i)) => {
                // Duplicate an element (a task twice, an input twice).
                if let Some(item) = i.as_u64().and_then(|i| items.get(i as usize)).cloned() {
                    items.push(item);
                }
            }
            (_, parent, _) => {
                if let Some(slot) = at_path(parent, std::slice::from_ref(last)) {
                    *slot = edge_value(rng, slot);
                }
            }
        }
    }
}

/// The number of cases from `FUZZ_CASES`, else `default`.
pub fn cases_from_env(default: usize) -> usize {
    std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// The files of a corpus folder, sorted (none when it does not exist).
pub fn corpus_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out: Vec<std::path::PathBuf> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| p.is_file())
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// Follow a fuzz loop's heartbeats (one per case, carrying its input) until the loop
/// ends; panic naming the input (by `describe`) when no case finished for 20 s: a hang.
/// Returns the last input seen (the one to save when the loop panicked).
pub fn watch_for_hangs<T: Default>(
    beats: std::sync::mpsc::Receiver<T>,
    describe: impl Fn(&T) -> String,
) -> T {
    use std::sync::mpsc::RecvTimeoutError;
    let mut last = T::default();
    loop {
        match beats.recv_timeout(std::time::Duration::from_secs(20)) {
            Ok(input) => last = input,
            Err(RecvTimeoutError::Disconnected) => return last,
            Err(RecvTimeoutError::Timeout) => {
                panic!("no progress for 20 s (a hang) on {}", describe(&last))
            }
        }
    }
}

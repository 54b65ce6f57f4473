//! Fuzzing what a stage can send the supervisor: mutated and truncated `Up` messages
//! through the codec decode to Ok or a typed `CodecError`, never a panic. (What the
//! supervisor does with one that does not decode, restarting that stage only, is
//! `supervisor/src/bad_up.rs`.) Run by plain `cargo test` with a fixed seed
//! (`FUZZ_SEED`, `FUZZ_CASES`); inputs that ever panicked are kept in
//! `tests/corpus/up/` and replayed first.
// Test code: a failed unwrap or expect is a failed test (clippy.toml allows them only
// inside #[test] functions, and these are helpers too).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use protocol::codec;
use protocol::messages::{observe, NewDeliveries, SourceTotal, StageMetrics, StageReport, Up};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/corpus/up")
}

fn seeds() -> Vec<Vec<u8>> {
    let mut m = StageMetrics {
        items_in: 1234,
        items_out: 1200,
        lost: [1, 2, 3, 4],
        busy_ns: 987_654_321,
        services: 77,
        busy_sq_ms2: 12.5,
        queue_depth: 3,
        batch_size: 4,
        ..StageMetrics::default()
    };
    observe(&mut m.service_buckets, 0.004);
    observe(&mut m.latency_buckets, 0.03);
    let totals = vec![
        SourceTotal {
            source: "frames".into(),
            total: 99,
        },
        SourceTotal {
            source: "cam-2".into(),
            total: 7,
        },
    ];
    let report = StageReport {
        metrics: m.clone(),
        latencies_ms: vec![1.5, 2.5, 30.0],
        latencies_seen: 3,
        latency_max_ms: 30.0,
        hop_us: vec![vec![10.0, 12.0], vec![7.0]],
        received: totals.clone(),
        first_created_ns: 1,
        last_arrival_ns: 2_000_000,
        arrivals_ns: vec![5, 6, 7],
        announced: totals.clone(),
        stays: vec![],
    };
    let messages = [
        Up::Heartbeat(m),
        Up::Finished(report),
        Up::Failed {
            error: "cannot decode image: bad".into(),
        },
        Up::Delivered {
            frontier: totals.clone(),
            output_len: Some(4096),
            received: totals,
            since: NewDeliveries {
                latencies_ms: vec![1.5, 2.0],
                seen: 2,
                max_ms: 2.0,
                arrivals_ns: vec![8, 9],
                first_created_ns: 3,
            },
        },
    ];
    messages
        .iter()
        .map(|msg| codec::encode("up", msg).expect("encode a seed"))
        .collect()
}

/// xorshift64*: small, seeded, reproducible.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn mutate(seed: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut b = seed.to_vec();
    for _ in 0..=rng.below(3) {
        let len = b.len().max(1);
        match rng.below(5) {
            0 => {
                if let Some(x) = b.get_mut(rng.below(len)) {
                    *x ^= 1 << rng.below(8);
                }
            }
            1 => {
                if let Some(x) = b.get_mut(rng.below(len)) {
                    *x = rng.next() as u8;
                }
            }
            2 => b.truncate(rng.below(len)),
            3 => {
                // A huge varint (bincode's 0xFB..0xFF prefixes): lengths and counts.
                let i = rng.below(len).min(b.len());
                let run: Vec<u8> = [0xFB + rng.below(5) as u8]
                    .into_iter()
                    .chain((0..8).map(|_| 0xFF))
                    .collect();
                b.splice(i..i, run);
            }
            _ => {
                let i = rng.below(len).min(b.len());
                let run: Vec<u8> = (0..rng.below(12)).map(|_| rng.next() as u8).collect();
                b.splice(i..i, run);
            }
        }
    }
    b
}

/// Decode `bytes`: Some(decoded or not) unless it panicked.
fn decode(bytes: &[u8]) -> Option<bool> {
    catch_unwind(AssertUnwindSafe(|| {
        codec::decode::<Up>("up", bytes).is_ok()
    }))
    .ok()
}

#[test]
fn mutated_up_messages_decode_or_give_a_typed_error_never_a_panic() {
    let seeds = seeds();
    let mut corpus: Vec<PathBuf> = std::fs::read_dir(corpus_dir())
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    corpus.sort();
    for f in corpus
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "bin"))
    {
        let bytes = std::fs::read(f).expect("corpus entry");
        assert!(decode(&bytes).is_some(), "{} panics", f.display());
    }
    let seed: u64 = std::env::var("FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5EED_0000_00C0_DEC0);
    let cases: usize = std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(50_000);
    let mut rng = Rng(seed.max(1));
    let mut decoded = 0usize;
    for case in 0..cases {
        let bytes = mutate(&seeds[rng.below(seeds.len())], &mut rng);
        match decode(&bytes) {
            Some(true) => decoded += 1,
            Some(false) => {}
            None => {
                let path = corpus_dir().join(format!("crash-{case}-{seed}.bin"));
                let _ = std::fs::write(&path, &bytes);
                panic!(
                    "case {case} (FUZZ_SEED={seed}) panics; saved as {}",
                    path.display()
                );
            }
        }
    }
    // The unmutated seeds decode: the fuzzer starts from real messages.
    assert!(seeds.iter().all(|s| decode(s) == Some(true)));
    println!(
        "up-message fuzz: {cases} cases (FUZZ_SEED={seed}): no panic; {decoded} decoded, the rest gave typed errors"
    );
}

//! Fuzzing the ONNX reader and rewriter (`vision::onnx_graph`): mutated and truncated
//! model bytes never panic; parsing and rewriting give Ok or a typed error. Run by plain
//! `cargo test` with a fixed seed (`FUZZ_SEED` replays another, `FUZZ_CASES` sets the
//! count). The corpus is `tests/corpus/onnx/` (seed models, and every input that ever
//! made it panic, saved there as `crash-*.onnx` and replayed first).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use vision::onnx_graph::{rewrite, rewrite_for_cpu, Attribute, Node, OnnxModel, Tensor};

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/corpus/onnx")
}

fn names(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// A small model with the patterns the rewriter folds: Conv → Mul → Add, a hard swish
/// (Add 3, Clip 0..6, Mul, Div 6), a Constant node and a 1×1 Conv; and a second output
/// through an NHWC normalisation before a transpose and a PReLU; a third through a 16-channel
/// convolution, a Relu and a scale (a depthwise 1×1 convolution on the CPU).
fn built_seed() -> Vec<u8> {
    let transpose = |input: &str, perm: &[i64], output: &str| {
        let mut t = Node::new("Transpose", names(&[input]), names(&[output]));
        t.attributes = vec![Attribute::new_ints("perm", perm)];
        t
    };
    let c = |name: &str, dims: Vec<i64>, v: &[f32]| {
        let mut n = Node::new("Constant", vec![], names(&[name]));
        n.attributes = vec![Attribute::new_tensor(
            "value",
            &Tensor::new_f32(format!("{name}_v"), dims, v),
        )];
        n
    };
    let mut conv = Node::new("Conv", names(&["x", "w", "b"]), names(&["c"]));
    conv.attributes = vec![
        Attribute::new_ints("pads", &[1, 1, 1, 1]),
        Attribute::new_ints("kernel_shape", &[3, 3]),
    ];
    let nodes = vec![
        c("s", vec![1], &[0.5]),
        c("t", vec![2, 1, 1], &[0.1, -0.1]),
        c("three", vec![], &[3.0]),
        c("zero", vec![], &[0.0]),
        c("six", vec![], &[6.0]),
        conv,
        Node::new("Mul", names(&["c", "s"]), names(&["m"])),
        Node::new("Add", names(&["m", "t"]), names(&["a"])),
        Node::new("Add", names(&["a", "three"]), names(&["h1"])),
        Node::new("Clip", names(&["h1", "zero", "six"]), names(&["h2"])),
        Node::new("Mul", names(&["a", "h2"]), names(&["h3"])),
        Node::new("Div", names(&["h3", "six"]), names(&["h4"])),
        Node::new("Conv", names(&["h4", "w2"]), names(&["y"])),
        transpose("x", &[0, 2, 3, 1], "nhwc"),
        Node::new("Sub", names(&["nhwc", "mean"]), names(&["n1"])),
        transpose("n1", &[0, 3, 1, 2], "n2"),
        Node::new("PRelu", names(&["n2", "slope"]), names(&["p"])),
        Node::new("Conv", names(&["x", "w16"]), names(&["c16"])),
        Node::new("Relu", names(&["c16"]), names(&["r16"])),
        Node::new("Mul", names(&["r16", "s"]), names(&["d"])),
    ];
    let w: Vec<f32> = (0..54).map(|i| (i as f32 * 0.37).sin()).collect();
    let inits = vec![
        Tensor::new_f32("w".into(), vec![2, 3, 3, 3], &w),
        Tensor::new_f32("b".into(), vec![2], &[0.2, -0.3]),
        Tensor::new_f32("w2".into(), vec![1, 2, 1, 1], &[1.5, -0.5]),
        Tensor::new_f32("mean".into(), vec![1, 1, 1, 3], &[0.5, 1.0, -2.0]),
        Tensor::new_f32("slope".into(), vec![3, 1, 1], &[0.25, -1.5, 2.0]),
        Tensor::new_f32("w16".into(), vec![16, 3, 1, 1], &w[..48]),
    ];
    OnnxModel::build(13, &[("x", &[1, 3, 4, 4])], &["y", "p", "d"], nodes, inits).encode()
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

/// One to four mutations of `seed`: byte flips and overwrites, truncation, inserted or
/// removed runs, copied slices and varint-breaking 0xFF runs.
fn mutate(seed: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut b = seed.to_vec();
    for _ in 0..=rng.below(4) {
        let len = b.len().max(1);
        match rng.below(7) {
            0 => {
                let i = rng.below(len);
                if let Some(x) = b.get_mut(i) {
                    *x ^= 1 << rng.below(8);
                }
            }
            1 => {
                let i = rng.below(len);
                if let Some(x) = b.get_mut(i) {
                    *x = rng.next() as u8;
                }
            }
            2 => b.truncate(rng.below(len)),
            3 => {
                let i = rng.below(len);
                let run: Vec<u8> = (0..rng.below(16)).map(|_| rng.next() as u8).collect();
                b.splice(i.min(b.len())..i.min(b.len()), run);
            }
            4 => {
                let i = rng.below(len).min(b.len());
                let j = (i + rng.below(32)).min(b.len());
                b.drain(i..j);
            }
            5 => {
                let i = rng.below(len).min(b.len());
                let j = (i + rng.below(64)).min(b.len());
                let part = b[i..j].to_vec();
                let at = rng.below(len).min(b.len());
                b.splice(at..at, part);
            }
            _ => {
                let i = rng.below(len).min(b.len());
                let j = (i + 1 + rng.below(10)).min(b.len());
                b[i..j].iter_mut().for_each(|x| *x = 0xFF);
            }
        }
    }
    b
}

/// Parse, re-encode and rewrite `bytes`; a panic is the only failure.
fn exercise(bytes: &[u8]) -> std::thread::Result<()> {
    catch_unwind(AssertUnwindSafe(|| {
        if let Ok(model) = OnnxModel::parse(bytes) {
            let again = model.encode();
            let _ = OnnxModel::parse(&again);
        }
        let _ = rewrite(bytes);
        // and what the agent on the CPU does (f16 widening, PReLU, Winograd on every 3×3)
        if let Ok(mut model) = OnnxModel::parse(bytes) {
            let _ = rewrite_for_cpu(&mut model, Some(1));
            let _ = model.encode();
        }
    }))
}

fn save_crash(bytes: &[u8]) -> PathBuf {
    let hash = bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    let path = corpus_dir().join(format!("crash-{hash:016x}.onnx"));
    let _ = std::fs::write(&path, bytes);
    path
}

#[test]
fn mutated_and_truncated_models_never_panic_the_reader_or_the_rewriter() {
    let mut seeds: Vec<(String, Vec<u8>)> = vec![("built".into(), built_seed())];
    let mut files: Vec<PathBuf> = std::fs::read_dir(corpus_dir())
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.sort();
    for f in files
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "onnx"))
    {
        if let Ok(b) = std::fs::read(f) {
            seeds.push((f.display().to_string(), b));
        }
    }
    // The smallest provisioned model, when there (git-ignored, not in the corpus).
    let pnet = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.smartpipe/models/mtcnn-pnet.onnx");
    if let Ok(b) = std::fs::read(&pnet) {
        seeds.push(("mtcnn-pnet".into(), b));
    }
    // The built seed has every pattern, so the mutations start from graphs each pass rewrites.
    let mut built = OnnxModel::parse(&seeds[0].1).expect("the built seed parses");
    let report = rewrite_for_cpu(&mut built, Some(1));
    assert!(
        report.affine_into_conv > 0
            && report.hard_swish > 0
            && report.transposes_moved > 0
            && report.affine_as_depthwise > 0
            && report.prelu_as_relu > 0
            && report.winograd > 0,
        "the built seed exercises every rewrite: {report}"
    );
    // The corpus as it is (crashes found earlier first): none may panic.
    for (name, bytes) in &seeds {
        assert!(exercise(bytes).is_ok(), "corpus entry {name} panics");
    }
    let seed: u64 = std::env::var("FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5EED_0A11_CE55_0001);
    let cases: usize = std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_000);
    let mut rng = Rng(seed.max(1));
    let mut ok_parses = 0usize;
    for case in 0..cases {
        let (_, base) = &seeds[rng.below(seeds.len())];
        let bytes = mutate(base, &mut rng);
        if OnnxModel::parse(&bytes).is_ok() {
            ok_parses += 1;
        }
        if exercise(&bytes).is_err() {
            let path = save_crash(&bytes);
            panic!(
                "case {case} (FUZZ_SEED={seed}) panics; input saved as {}",
                path.display()
            );
        }
    }
    println!(
        "onnx fuzz: {cases} cases from {} seeds (FUZZ_SEED={seed}): no panic; {ok_parses} still parsed, the rest gave typed errors",
        seeds.len()
    );
}

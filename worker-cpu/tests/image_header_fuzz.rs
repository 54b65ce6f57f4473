//! Fuzz test of image headers through the head's decoder path (`media::decode_image`):
//! seeded mutants of the PNG and JPEG seeds in `tests/corpus/images` (byte-level, plus
//! edge sizes written into the IHDR and SOF fields) never panic, never hang, never
//! decode a frame over the pixel limit and never make one allocation larger than the
//! decoder's cap (8 bytes per allowed pixel), measured by a counting global allocator.
//! `FUZZ_SEED=` replays a run; `FUZZ_CASES=` changes the count.

use protocol::limits::Limits;
use smartpipe_tests::mutate::{
    cases_from_env, corpus_files, mutate_bytes, watch_for_hangs, Rng, EDGE_INTS,
};
use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use worker_cpu::media::decode_image;

/// The system allocator, remembering the largest single allocation asked for.
struct Counting;

static LARGEST: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is passed on to the system allocator unchanged; only sizes are noted.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's guarantees, passed on as they came.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's guarantees, passed on as they came.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's guarantees, passed on as they came.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST.fetch_max(new_size, Ordering::Relaxed);
        // SAFETY: the caller's guarantees, passed on as they came.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// A small limit, so that a mutant over it would show as a large allocation.
const MAX_PIXELS: u64 = 250_000;
/// The decoder's cap (8 bytes per allowed pixel) and room for its fixed buffers.
const MAX_ALLOCATION: usize = MAX_PIXELS as usize * 8 + (1 << 20);

fn images() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/corpus/images")
}

/// Offsets of a header's size fields: PNG's IHDR width and height, JPEG's SOF height
/// and width (u16 each).
fn size_fields(bytes: &[u8]) -> Vec<(usize, usize)> {
    if bytes.starts_with(b"\x89PNG") {
        return vec![(16, 4), (20, 4)];
    }
    let mut fields = Vec::new();
    let mut i = 2;
    while i + 9 <= bytes.len() && bytes[i] == 0xFF {
        let marker = bytes[i + 1];
        let len = usize::from(u16::from_be_bytes([bytes[i + 2], bytes[i + 3]]));
        if (0xC0..=0xC3).contains(&marker) {
            fields.extend([(i + 5, 2), (i + 7, 2)]);
            break;
        }
        i += 2 + len;
    }
    fields
}

/// One mutant of `seed`: byte-level changes, or an edge size in a header field.
fn mutant(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut bytes = seed.to_vec();
    let fields = size_fields(&bytes);
    if rng.below(2) == 0 && !fields.is_empty() {
        for _ in 0..1 + rng.below(2) {
            let (at, width) = *rng.pick(&fields);
            let v = *rng.pick(EDGE_INTS);
            let be = v.to_be_bytes();
            bytes[at..at + width].copy_from_slice(&be[8 - width..]);
        }
    } else {
        mutate_bytes(rng, &mut bytes);
    }
    bytes
}

/// Decode one input; panics when it decodes past the limit or allocates past the cap.
fn check(bytes: &[u8], limits: &Limits) -> bool {
    LARGEST.store(0, Ordering::Relaxed);
    let decoded = decode_image("mutant", Cursor::new(bytes), None, limits);
    let largest = LARGEST.load(Ordering::Relaxed);
    assert!(
        largest <= MAX_ALLOCATION,
        "one allocation of {largest} bytes (cap {MAX_ALLOCATION})"
    );
    match decoded {
        Ok((w, h, rgb)) => {
            assert!(u64::from(w) * u64::from(h) <= MAX_PIXELS, "{w}×{h} decoded");
            assert_eq!(rgb.len(), w as usize * h as usize * 3);
            true
        }
        Err(_) => false,
    }
}

fn run(cases: usize, seed: u64, beat: mpsc::Sender<Vec<u8>>) -> (usize, usize) {
    let limits = Limits {
        max_pixels: MAX_PIXELS,
        ..Limits::default()
    };
    let mut decoded = 0;
    let mut refused = 0;
    let mut tally = |ok: bool| {
        if ok {
            decoded += 1
        } else {
            refused += 1
        }
    };
    for crash in corpus_files(&images().join("crashes")) {
        let bytes = std::fs::read(&crash).unwrap_or_default();
        let _ = beat.send(bytes.clone());
        tally(check(&bytes, &limits));
    }
    let seeds: Vec<Vec<u8>> = corpus_files(&images())
        .iter()
        .filter_map(|p| std::fs::read(p).ok())
        .collect();
    assert!(seeds.len() >= 4, "the seed images of tests/corpus/images");
    let mut rng = Rng::new(seed);
    for _ in 0..cases {
        let seed = seeds[rng.below(seeds.len())].clone();
        let bytes = mutant(&mut rng, &seed);
        let _ = beat.send(bytes.clone());
        tally(check(&bytes, &limits));
    }
    (decoded, refused)
}

#[test]
fn image_header_mutants_never_panic_hang_or_allocate_past_the_limit() {
    let cases = cases_from_env(5_000);
    let seed = Rng::seed_from_env(0x1a6e_5eed);
    let (beat, beats) = mpsc::channel::<Vec<u8>>();
    let worker = std::thread::spawn(move || run(cases, seed, beat));
    let last = watch_for_hangs(beats, |bytes| {
        format!("{} bytes: {bytes:02x?}", bytes.len())
    });
    match worker.join() {
        Ok((decoded, refused)) => {
            println!(
                "image header fuzz (seed {seed}): {} cases: {decoded} decoded, {refused} refused",
                decoded + refused
            );
            assert!(
                decoded > 0 && refused > 0,
                "the mutants reach both outcomes"
            );
        }
        Err(_) => panic!(
            "a mutant failed (save it to tests/corpus/images/crashes): {} bytes: {last:02x?}",
            last.len()
        ),
    }
}

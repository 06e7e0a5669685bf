//! Robustness of the parser: truncated, bit-flipped and length-corrupted variants of real
//! files must give `Ok` or `Err`, never a panic, a hang or unbounded memory.
//!
//! Seeds: the files of `../shared/corpus` (gzipped ones inflated) when present, plus
//! hand-built datasets that are always there. A fast subset runs in plain `cargo test`;
//! the full run (>= 100,000 variants) is `cargo test --release --test fuzz -- --ignored`,
//! which `make fuzz` runs. `DUCKPACS_FUZZ_CASES` overrides the count.
//!
//! Memory is measured with a counting global allocator (this test binary only): the peak
//! allocated while parsing one variant must stay within a fixed multiple of its size.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use duckpacs_core::parse::{self, json, ParseOptions};

struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let now = CURRENT.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK.fetch_max(now, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// xorshift64*: deterministic, so a failing case can be replayed from its number.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpus")
}

fn read_seed(path: &Path) -> Option<Vec<u8>> {
    let raw = std::fs::read(path).ok()?;
    if path.extension().is_some_and(|e| e == "gz") {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .ok()?;
        return Some(out);
    }
    Some(raw)
}

/// A few files of every folder of the shared corpus (the big series contribute 3 each).
fn corpus_seeds() -> Vec<Vec<u8>> {
    let mut seeds = Vec::new();
    let Ok(folders) = std::fs::read_dir(corpus_dir()) else {
        return seeds;
    };
    let mut folders: Vec<PathBuf> = folders
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    folders.sort();
    for folder in folders {
        let mut files: Vec<PathBuf> = walk(&folder);
        files.sort();
        let take = if files.len() > 50 { 3 } else { files.len() };
        for f in files.into_iter().take(take) {
            if let Some(bytes) = read_seed(&f) {
                if bytes.len() <= 4 << 20 {
                    seeds.push(bytes);
                }
            }
        }
    }
    seeds
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else if !p.file_name().is_some_and(|n| {
                let n = n.to_string_lossy().to_ascii_uppercase();
                n.starts_with("LICENSE")
                    || n.starts_with("README")
                    || n.ends_with(".MD")
                    || n.ends_with(".TXT")
            }) {
                out.push(p);
            }
        }
    }
    out
}

/// Hand-built seeds: explicit VR with a nested undefined-length sequence, an implicit VR
/// dataset, and encapsulated pixel data with an offset table.
fn builtin_seeds() -> Vec<Vec<u8>> {
    let mut explicit = vec![0u8; 128];
    explicit.extend_from_slice(b"DICM");
    // (0002,0010) UI "1.2.840.10008.1.2.1" + pad
    explicit.extend_from_slice(&[0x02, 0, 0x10, 0, b'U', b'I', 20, 0]);
    explicit.extend_from_slice(b"1.2.840.10008.1.2.1\0");
    // (0008,0005) CS "\ISO 2022 IR 87"
    explicit.extend_from_slice(&[0x08, 0, 0x05, 0, b'C', b'S', 16, 0]);
    explicit.extend_from_slice(b"\\ISO 2022 IR 87 ");
    // (0008,1115) SQ undefined length > item undefined > (0010,0010) PN > delimiters
    explicit.extend_from_slice(&[
        0x08, 0, 0x15, 0x11, b'S', b'Q', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF,
    ]);
    explicit.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF]);
    explicit.extend_from_slice(&[0x10, 0, 0x10, 0, b'P', b'N', 12, 0]);
    explicit.extend_from_slice(b"\x1b$B;3ED\x1b(B^A");
    explicit.extend_from_slice(&[
        0xFE, 0xFF, 0x0D, 0xE0, 0, 0, 0, 0, 0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0,
    ]);
    // (0009,0010) UN undefined length holding an implicit VR sequence with one empty item
    explicit.extend_from_slice(&[0x09, 0, 0x10, 0, b'U', b'N', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF]);
    explicit.extend_from_slice(&[
        0xFE, 0xFF, 0x00, 0xE0, 0, 0, 0, 0, 0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0,
    ]);
    // (7FE0,0010) OB undefined: BOT with one offset, one fragment, delimiter
    explicit.extend_from_slice(&[
        0xE0, 0x7F, 0x10, 0, b'O', b'B', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF,
    ]);
    explicit.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 4, 0, 0, 0, 0, 0, 0, 0]);
    explicit.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 4, 0, 0, 0, 1, 2, 3, 4]);
    explicit.extend_from_slice(&[0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0]);

    let mut implicit = Vec::new();
    // (0008,0060) "MR", (0028,0010) rows 2, (0028,0011) cols 2, (0028,0100) 8 bits, pixels
    implicit.extend_from_slice(&[0x08, 0, 0x60, 0, 2, 0, 0, 0, b'M', b'R']);
    implicit.extend_from_slice(&[0x28, 0, 0x10, 0, 2, 0, 0, 0, 2, 0]);
    implicit.extend_from_slice(&[0x28, 0, 0x11, 0, 2, 0, 0, 0, 2, 0]);
    implicit.extend_from_slice(&[0x28, 0, 0x00, 0x01, 2, 0, 0, 0, 8, 0]);
    implicit.extend_from_slice(&[0xE0, 0x7F, 0x10, 0, 4, 0, 0, 0, 9, 9, 9, 9]);
    vec![explicit, implicit]
}

/// Offsets of length fields, found by parsing the intact seed.
fn length_fields(buf: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    if let Ok(p) = parse::parse(buf, ParseOptions::default()) {
        if p.deflated {
            return out;
        }
        fn walk(ds: &parse::Dataset, out: &mut Vec<(usize, usize)>) {
            for el in &ds.elements {
                let header = el.value.start - el.offset;
                match header {
                    12 => out.push((el.offset + 8, 4)),
                    8 if !el.implicit => out.push((el.offset + 6, 2)),
                    _ => out.push((el.offset + 4, 4)),
                }
                for item in el.items() {
                    out.push((item.offset + 4, 4));
                    walk(&item.dataset, out);
                }
            }
        }
        walk(&p.meta, &mut out);
        walk(&p.dataset, &mut out);
    }
    out
}

fn mutate(seed: &[u8], fields: &[(usize, usize)], rng: &mut Rng) -> Vec<u8> {
    let mut v = seed.to_vec();
    match rng.below(4) {
        0 => v.truncate(rng.below(seed.len() + 1)),
        1 => {
            for _ in 0..1 + rng.below(8) {
                let i = rng.below(v.len());
                if let Some(b) = v.get_mut(i) {
                    *b ^= 1 << rng.below(8);
                }
            }
        }
        2 if !fields.is_empty() => {
            let (at, width) = fields[rng.below(fields.len())];
            let value: u32 = match rng.below(5) {
                0 => 0xFFFF_FFFF,
                1 => 0,
                2 => rng.next() as u32,
                3 => (rng.below(64) as u32).wrapping_sub(32),
                _ => 0xFFFF_FFF0 + rng.below(16) as u32,
            };
            let bytes = value.to_le_bytes();
            for (k, byte) in bytes.iter().take(width).enumerate() {
                if let Some(b) = v.get_mut(at + k) {
                    *b = *byte;
                }
            }
        }
        _ => {
            // Splice: repeat or drop a slice (shifts every following element).
            let a = rng.below(v.len());
            let b = (a + rng.below(64)).min(v.len());
            if rng.below(2) == 0 {
                let chunk: Vec<u8> = v[a..b].to_vec();
                v.splice(a..a, chunk);
            } else {
                v.drain(a..b);
            }
        }
    }
    v
}

/// Parses one variant every way the archive does, checking time and memory.
fn exercise(case: usize, data: &[u8]) {
    let base = CURRENT.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let start = Instant::now();
    let full = parse::parse(data, ParseOptions::default());
    if let Ok(p) = &full {
        let _ = parse::layout_of(p);
        let _ = json::to_json(p, &json::JsonOptions::default());
        let _ = parse::dump::to_text(p);
        // Every element consumes at least 8 bytes: the tree cannot outgrow the input.
        fn count(ds: &parse::Dataset) -> usize {
            ds.elements
                .iter()
                .map(|e| {
                    1 + e
                        .items()
                        .iter()
                        .map(|i| 1 + count(&i.dataset))
                        .sum::<usize>()
                })
                .sum()
        }
        let n = count(&p.meta) + count(&p.dataset);
        assert!(
            n <= p.data().len() / 8 + 1,
            "case {case}: {n} nodes from {} bytes",
            p.data().len()
        );
    }
    let _ = parse::parse(
        data,
        ParseOptions {
            transfer_syntax: None,
            stop_at_pixel_data: true,
        },
    );
    let _ = parse::describe(data, Some(parse::IMPLICIT_VR_LE));
    let elapsed = start.elapsed();
    let peak = PEAK.load(Ordering::Relaxed).saturating_sub(base);
    // Tree, JSON and text dump together stay within a fixed multiple of the input (deflated
    // inputs inflate to at most 1032x, and are not mutated into bigger ones here).
    let limit = 64 * data.len() + (1 << 20);
    let deflated = full.as_ref().map(|p| p.deflated).unwrap_or(false);
    assert!(
        deflated || peak <= limit,
        "case {case}: peak {peak} bytes for {} input bytes",
        data.len()
    );
    assert!(
        elapsed < Duration::from_secs(5),
        "case {case}: took {elapsed:?}"
    );
}

fn run(cases: usize) {
    let mut seeds = builtin_seeds();
    seeds.extend(corpus_seeds());
    let fields: Vec<Vec<(usize, usize)>> = seeds.iter().map(|s| length_fields(s)).collect();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for seed in &seeds {
        exercise(usize::MAX, seed);
    }
    for case in 0..cases {
        let k = case % seeds.len();
        let variant = mutate(&seeds[k], &fields[k], &mut rng);
        exercise(case, &variant);
    }
    eprintln!("fuzz: {cases} variants of {} seeds, no panic", seeds.len());
}

fn cases(default: usize) -> usize {
    std::env::var("DUCKPACS_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn fuzz_fast_subset() {
    run(cases(3_000));
}

#[test]
#[ignore = "long: run with `make fuzz` (cargo test --release --test fuzz -- --ignored)"]
fn fuzz_full_100k() {
    run(cases(120_000).max(100_000));
}

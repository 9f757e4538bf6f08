//! What several benches share: the embedded base model's paths, GGUF files made from it at bench
//! start, weight-like test data and a plain memory-read baseline to hold GB/s figures against.
//!
//! Not a bench target itself (cargo only discovers `benches/*.rs` and `benches/*/main.rs`); each
//! bench includes it with `mod common;` and uses part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use shuku::model::export::{convert_hf_dir, ExportOptions, OutType, PlainEncoder};
use shuku::quantize::{preset, Quantizer};

/// Criterion with the benches' settings: 10 samples of `measure` each after `warm_up`, no plots and
/// 10 000 bootstrap resamples, so criterion's analysis takes a fraction of a second per benchmark
/// instead of seconds on a small machine; command-line options override these
/// (`--plotting-backend plotters` for the HTML report).
pub fn criterion(
    warm_up: std::time::Duration,
    measure: std::time::Duration,
) -> criterion::Criterion {
    criterion::Criterion::default()
        .sample_size(10)
        .warm_up_time(warm_up)
        .measurement_time(measure)
        .without_plots()
        .nresamples(10_000)
        .configure_from_args()
}

/// The workspace root (the root package's manifest directory).
pub fn workspace() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `assets/shuku-base`: the embedded HF folder (f16 safetensors, 4 layers × 256, vocabulary 4096).
pub fn base_model() -> PathBuf {
    workspace().join("assets/shuku-base")
}

/// The first `bytes` bytes of `assets/corpus/shakespeare.txt` (cut at a character boundary).
pub fn corpus(bytes: usize) -> String {
    let path = workspace().join("assets/corpus/shakespeare.txt");
    let mut text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let mut end = bytes.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text
}

/// A GGUF encoding of the base model, written into `dir`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BaseGguf {
    /// `shuku convert --outtype f16`: matrices F16, norms F32.
    F16,
    /// `shuku quantize` with the Q8_0 preset.
    Q8_0,
    /// `shuku quantize` with the Q4_K_M preset (no importance matrix).
    Q4KM,
}

impl BaseGguf {
    /// The label used in benchmark ids.
    pub fn label(self) -> &'static str {
        match self {
            BaseGguf::F16 => "F16",
            BaseGguf::Q8_0 => "Q8_0",
            BaseGguf::Q4KM => "Q4_K_M",
        }
    }

    /// Writes the file into `dir` from `assets/shuku-base` and returns its path: the F16 file
    /// through shuku-model's HF → GGUF converter (as `shuku convert` does), the quantized ones
    /// through shuku-quantize's [`Quantizer`] reading the HF folder directly.
    pub fn make(self, dir: &Path) -> PathBuf {
        let out = dir.join(format!("shuku-base-{}.gguf", self.label().to_lowercase()));
        match self {
            BaseGguf::F16 => {
                let options = ExportOptions {
                    name: Some("shuku-base".into()),
                    overwrite: true,
                    tokenizer_pre: None,
                };
                convert_hf_dir(
                    base_model(),
                    &out,
                    &PlainEncoder(OutType::F16),
                    &options,
                    &mut |_, _, _| {},
                )
                .expect("converting assets/shuku-base to F16 GGUF");
            }
            BaseGguf::Q8_0 | BaseGguf::Q4KM => {
                Quantizer::new(preset(self.label()).expect("known preset"))
                    .overwrite(true)
                    .run(base_model(), &out)
                    .expect("quantizing assets/shuku-base");
            }
        }
        out
    }
}

/// Deterministic weight-like values (a sum of sines: smooth, signed, varied magnitudes).
pub fn weight_like(n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| {
            let x = i as f32;
            0.02 * ((x * 0.618).sin() + 0.5 * (x * 0.0131).cos() + 0.25 * (x * 1.7).sin())
        })
        .collect()
}

/// Sums `bytes` as little-endian `u64` words on every core: a plain streaming read, the ceiling a
/// bandwidth-bound kernel can approach on this machine. Threads take 256 KiB pieces from a shared
/// counter, as rayon's work stealing would, so one descheduled thread on a busy machine does not
/// hold up the others.
pub fn parallel_read(bytes: &[u8]) -> u64 {
    const PIECE: usize = 256 << 10;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let next = AtomicUsize::new(0);
    let worker = || {
        let mut sum = 0u64;
        loop {
            let start = next.fetch_add(PIECE, Ordering::Relaxed);
            if start >= bytes.len() {
                return sum;
            }
            let end = (start + PIECE).min(bytes.len());
            sum = sum.wrapping_add(read_sum(&bytes[start..end]));
        }
    };
    std::thread::scope(|s| {
        let helpers: Vec<_> = (1..threads).map(|_| s.spawn(worker)).collect();
        helpers
            .into_iter()
            .map(|h| h.join().expect("reader thread"))
            .fold(worker(), u64::wrapping_add)
    })
}

/// Sum of a slice as `u64` words, with four independent accumulators so the loop is bound by
/// loads, not by the add chain.
fn read_sum(bytes: &[u8]) -> u64 {
    let mut acc = [0u64; 4];
    let mut words = bytes.chunks_exact(32);
    for w in &mut words {
        for (k, a) in acc.iter_mut().enumerate() {
            let v = u64::from_le_bytes(w[8 * k..8 * k + 8].try_into().expect("8 bytes"));
            *a = a.wrapping_add(v);
        }
    }
    let tail = words
        .remainder()
        .iter()
        .fold(0u64, |s, &b| s.wrapping_add(u64::from(b)));
    acc.iter().fold(tail, |s, &a| s.wrapping_add(a))
}

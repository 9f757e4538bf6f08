//! The inference engine's matrix × activation kernels (`shuku::infer::engine::kernels::QMatrix`)
//! for every weight type it decodes, in GB/s of weight bytes read, next to a plain parallel read of
//! the same bytes (`raw_read`). Decoding one token is a matrix-vector product per weight, bound by
//! memory bandwidth, so a kernel's GB/s against `raw_read` (and against the machine's DRAM
//! bandwidth) says how much of the ceiling it reaches; `batch8` (eight tokens per call, on a
//! quarter of the rows) shows how well a weight row, read once, serves several tokens (prompt
//! processing); `vec_packed` is `vec` on the lane-layout copy the engine makes at load. `prompt128` is a 128-token batch on the matrix as the engine loads
//! it (packed where the type is packed), in elements per second where an element is one
//! floating-point operation (two per weight and token): criterion's `Gelem/s` there reads as
//! GFLOP/s, the figure to hold against the cores' multiply-add peak, which is what bounds prompt
//! processing.
//!
//! Every matrix is 4096 columns wide with as many rows as make 64 MiB of weights, twice the
//! 32 MiB L3 of the machine this was written on, so the weights stream from DRAM every call.
//! Threads: one per core, the engine's worker pool (`kernels::pool::Pool`) for the kernels and
//! rayon's global pool for `raw_read`.
//!
//! `cargo bench --bench kernels` (one type: `cargo bench --bench kernels -- Q4_K`)

mod common;

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput};
use shuku::gguf::GgmlType;
use shuku::infer::engine::kernels::pool::Pool;
use shuku::infer::engine::kernels::repack::PackedMatrix;
use shuku::infer::engine::kernels::{is_supported, QMatrix, SUPPORTED_TYPES};
use shuku::quants::QuantType;

const COLS: usize = 4096;
/// Weight bytes per matrix.
const WEIGHT_BYTES: usize = 64 << 20;
/// Distinct rows quantized at start; the matrix repeats them (speed does not depend on values).
const DISTINCT_ROWS: usize = 64;
/// Tokens of the batched product.
const BATCH: usize = 8;
/// Tokens of the prompt-sized product.
const PROMPT: usize = 128;

/// Weight bytes at a 32-byte aligned offset of their buffer, as a mapped GGUF's tensors are (the
/// kernels need each block type's alignment).
struct Weights {
    buf: Vec<u8>,
    start: usize,
    len: usize,
    rows: usize,
}

impl Weights {
    /// `ty` weights, `COLS` wide, as many rows (a multiple of 16) as make `WEIGHT_BYTES`.
    fn new(ty: GgmlType) -> Weights {
        let qt = QuantType::from_ggml_id(ty.id()).expect("a type shuku-quants writes");
        let row_bytes = qt.row_bytes(COLS).expect("whole blocks");
        let rows = WEIGHT_BYTES.div_ceil(row_bytes).next_multiple_of(16);
        let distinct = qt
            .quantize(&common::weight_like(DISTINCT_ROWS * COLS), COLS, None)
            .expect("valid shape");
        let len = rows * row_bytes;
        let mut buf = vec![0u8; len + 32];
        let start = buf.as_ptr().align_offset(32);
        for (i, row) in buf[start..start + len]
            .chunks_exact_mut(row_bytes)
            .enumerate()
        {
            let r = i % DISTINCT_ROWS;
            row.copy_from_slice(&distinct[r * row_bytes..(r + 1) * row_bytes]);
        }
        Weights {
            buf,
            start,
            len,
            rows,
        }
    }

    fn bytes(&self) -> &[u8] {
        &self.buf[self.start..self.start + self.len]
    }
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("matmul");
    group.sampling_mode(SamplingMode::Flat);
    group.throughput(Throughput::Bytes(WEIGHT_BYTES as u64));
    let x: Vec<f32> = common::weight_like(PROMPT * COLS)
        .iter()
        .map(|v| v * 50.0)
        .collect();

    let baseline = vec![1u8; WEIGHT_BYTES];
    group.bench_function("raw_read", |b| {
        b.iter(|| common::parallel_read(black_box(&baseline)))
    });
    drop(baseline);

    for &ty in SUPPORTED_TYPES {
        assert!(is_supported(ty), "the engine has no kernel for {ty}");
        let w = Weights::new(ty);
        let m = QMatrix::new(w.bytes(), ty, w.rows, COLS).expect("a valid matrix");
        group.throughput(Throughput::Bytes(w.len as u64));
        let mut out = vec![0f32; BATCH * w.rows];
        group.bench_function(BenchmarkId::new("vec", ty.name()), |b| {
            b.iter(|| m.matmul(black_box(&x[..COLS]), 1, &mut out[..w.rows]))
        });
        // The same matrix with its rows interleaved, as the engine loads it where the tiled
        // kernels run (`EngineOptions::repack`).
        if let Some(packed) = PackedMatrix::pack(&m) {
            let p = packed.matrix().expect("a valid packed matrix");
            group.bench_function(BenchmarkId::new("vec_packed", ty.name()), |b| {
                b.iter(|| p.matmul(black_box(&x[..COLS]), 1, &mut out[..w.rows]))
            });
        }
        // The batched product does eight times the arithmetic per weight byte and is bound by it,
        // not by memory: a quarter of the rows keeps the slowest types within the time budget.
        let rows = w.rows / 4;
        let part = &w.bytes()[..w.len / 4];
        let m = QMatrix::new(part, ty, rows, COLS).expect("a valid matrix");
        group.throughput(Throughput::Bytes(part.len() as u64));
        group.bench_function(BenchmarkId::new("batch8", ty.name()), |b| {
            b.iter(|| {
                m.matmul(
                    black_box(&x[..BATCH * COLS]),
                    BATCH,
                    &mut out[..BATCH * rows],
                )
            })
        });
        // A prompt's batch on a sixteenth of the rows, packed as the engine loads it.
        let rows = w.rows / 16;
        let part = &w.bytes()[..w.len / 16];
        let m = QMatrix::new(part, ty, rows, COLS).expect("a valid matrix");
        let packed = PackedMatrix::pack(&m);
        let m = match &packed {
            Some(p) => p.matrix().expect("a valid packed matrix"),
            None => m,
        };
        let mut out = vec![0f32; PROMPT * rows];
        group.throughput(Throughput::Elements((2 * rows * COLS * PROMPT) as u64));
        group.bench_function(BenchmarkId::new("prompt128", ty.name()), |b| {
            b.iter(|| m.matmul(black_box(&x), PROMPT, &mut out))
        });
    }
    group.finish();
}

/// The group with the benches' common settings (what `criterion_group!` expands to, documented:
/// the workspace denies missing docs).
fn benches() {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let pool = Pool::new(threads, "bench").expect("worker threads");
    pool.install(|| {
        bench(&mut common::criterion(
            Duration::from_millis(300),
            Duration::from_secs(2),
        ))
    });
}
criterion_main!(benches);

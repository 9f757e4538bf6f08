//! Every tensor type shuku-quants writes, in GB/s of f32 values: its reference row quantizer
//! (what `llama-quantize` runs without an importance matrix), its importance-weighted one (with an
//! imatrix; the types that read one) and its dequantizer, on weight-like rows 4096 wide. The
//! quantizers bound how fast `shuku quantize` can go; the dequantizers bound GGUF → f32 loading.
//!
//! `cargo bench --bench quant_types` (one type: `cargo bench --bench quant_types -- Q4_K`)

mod common;

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput};
use shuku::quants::QuantType;

const N_PER_ROW: usize = 4096;
const ROWS: usize = 64;

/// One importance weight per column, varied over two orders of magnitude.
fn importance() -> Vec<f32> {
    (0..N_PER_ROW)
        .map(|i| 0.1 + ((i as f32) * 0.37).sin().abs() * 4.0)
        .collect()
}

/// The types to measure: every block type plus the two half-precision floats (F32 is a copy).
fn types() -> impl Iterator<Item = QuantType> {
    QuantType::ALL
        .iter()
        .copied()
        .filter(|&t| t != QuantType::F32)
}

fn bench(c: &mut Criterion) {
    let src = common::weight_like(N_PER_ROW * ROWS);
    let qw = importance();
    // Throughput is the f32 side of every conversion: bytes read by the quantizers, bytes written
    // by the dequantizer.
    let f32_bytes = (src.len() * std::mem::size_of::<f32>()) as u64;

    let mut group = c.benchmark_group("quantize_rows");
    group.throughput(Throughput::Bytes(f32_bytes));
    // The importance-weighted k-quant searches take tens of ms a call: the same iteration count
    // per sample keeps them within the measurement time.
    group.sampling_mode(SamplingMode::Flat);
    for ty in types() {
        let mut dst = vec![0u8; ty.row_bytes(N_PER_ROW).expect("whole blocks") * ROWS];
        group.bench_with_input(BenchmarkId::new("reference", ty), &ty, |b, &ty| {
            b.iter(|| {
                ty.quantize_into(black_box(&src), N_PER_ROW, None, &mut dst)
                    .expect("valid shape")
            })
        });
        if ty.uses_importance() {
            group.bench_with_input(BenchmarkId::new("imatrix", ty), &ty, |b, &ty| {
                b.iter(|| {
                    ty.quantize_into(black_box(&src), N_PER_ROW, Some(&qw), &mut dst)
                        .expect("valid shape")
                })
            });
        }
    }
    group.finish();

    let mut group = c.benchmark_group("dequantize_rows");
    group.throughput(Throughput::Bytes(f32_bytes));
    let mut out = vec![0f32; src.len()];
    for ty in types() {
        let bytes = ty.quantize(&src, N_PER_ROW, None).expect("valid shape");
        group.bench_with_input(BenchmarkId::new("dequantize", ty), &ty, |b, &ty| {
            b.iter(|| {
                ty.dequantize(black_box(&bytes), &mut out)
                    .expect("whole blocks");
                black_box(&out);
            })
        });
    }
    group.finish();
}

/// The group with the benches' common settings (what `criterion_group!` expands to, documented:
/// the workspace denies missing docs).
fn benches() {
    bench(&mut common::criterion(
        Duration::from_millis(300),
        Duration::from_secs(1),
    ));
}
criterion_main!(benches);

//! Row quantizers in GB/s of f32 input: each type's reference quantizer and its
//! importance-weighted one, on weight-like rows 4096 wide (`cargo bench -p shuku-quants`).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use shuku_quants::QuantType;

const N_PER_ROW: usize = 4096;
const ROWS: usize = 64;

/// Deterministic weight-like values (a sum of sines: smooth, signed, varied magnitudes).
fn rows() -> Vec<f32> {
    (0..N_PER_ROW * ROWS)
        .map(|i| {
            let x = i as f32;
            0.02 * ((x * 0.618).sin() + 0.5 * (x * 0.0131).cos() + 0.25 * (x * 1.7).sin())
        })
        .collect()
}

fn importance() -> Vec<f32> {
    (0..N_PER_ROW)
        .map(|i| 0.1 + ((i as f32) * 0.37).sin().abs() * 4.0)
        .collect()
}

fn bench(c: &mut Criterion) {
    let src = rows();
    let qw = importance();
    let mut group = c.benchmark_group("quantize_rows");
    group.throughput(Throughput::Bytes((src.len() * 4) as u64));
    group.sample_size(20);
    for &ty in QuantType::ALL.iter().filter(|t| t.is_quantized()) {
        let mut dst = vec![0u8; ty.row_bytes(N_PER_ROW).unwrap() * ROWS];
        group.bench_with_input(BenchmarkId::new("reference", ty), &ty, |b, &ty| {
            b.iter(|| ty.quantize_into(&src, N_PER_ROW, None, &mut dst).unwrap())
        });
        if ty.uses_importance() {
            group.bench_with_input(BenchmarkId::new("imatrix", ty), &ty, |b, &ty| {
                b.iter(|| {
                    ty.quantize_into(&src, N_PER_ROW, Some(&qw), &mut dst)
                        .unwrap()
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

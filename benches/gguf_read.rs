//! GGUF reading in GB/s: opening and validating a file (header, metadata and tensor table) and
//! reading its tensors back as f32, on F16 and Q4_K_M files made from `assets/shuku-base` at bench
//! start. Every tool starts by opening a GGUF and most then decode every tensor, so these set the
//! floor of `shuku convert`/`quantize`/`perplexity` start-up; the `raw_read` line is a plain
//! parallel sum over the same bytes, the memory ceiling the decoders are held against.
//!
//! `cargo bench --bench gguf_read`

mod common;

use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

use common::BaseGguf;
use criterion::{criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput};
use shuku::candle::{DType, Device};
use shuku::gguf::{GgufFile, TensorType};
use shuku::quants::QuantType;

/// Opening: `GgufFile::open` (mmap + parse + validate) and `shuku::gguf::parse` on bytes already
/// in memory, in bytes of header (everything before the tensor data: metadata incl. the
/// vocabulary, and the tensor table).
fn open(c: &mut Criterion, files: &[(BaseGguf, &Path)]) {
    let mut group = c.benchmark_group("gguf_open");
    for &(kind, path) in files {
        let bytes = std::fs::read(path).expect("reading the GGUF file");
        let header = GgufFile::open(path).expect("valid GGUF").data_offset();
        group.throughput(Throughput::Bytes(header));
        group.bench_with_input(BenchmarkId::new("open", kind.label()), path, |b, path| {
            b.iter(|| GgufFile::open(black_box(path)).expect("valid GGUF"))
        });
        group.bench_with_input(
            BenchmarkId::new("parse", kind.label()),
            &bytes,
            |b, bytes| b.iter(|| shuku::gguf::parse(black_box(bytes)).expect("valid GGUF")),
        );
    }
    group.finish();
}

/// Reading every tensor as f32, in bytes of tensor data: shuku-quants' ggml-exact dequantizers
/// (what the quantizer and the GGUF → HF import run), candle's path (`TensorView::to_tensor`,
/// then f32), and the raw parallel read of the same bytes.
fn read_tensors(c: &mut Criterion, files: &[(BaseGguf, &Path)]) {
    let mut group = c.benchmark_group("gguf_tensors");
    group.sampling_mode(SamplingMode::Flat);
    for &(kind, path) in files {
        let file = GgufFile::open(path).expect("valid GGUF");
        let data = &file.bytes()[file.data_offset() as usize..];
        let tensor_bytes: u64 = file
            .tensor_infos()
            .iter()
            .map(|t| t.n_bytes().expect("known type"))
            .sum();
        let largest = file
            .tensor_infos()
            .iter()
            .map(|t| t.n_elements() as usize)
            .max()
            .unwrap_or(0);
        let mut out = vec![0f32; largest];
        group.throughput(Throughput::Bytes(tensor_bytes));
        group.bench_function(BenchmarkId::new("dequantize", kind.label()), |b| {
            b.iter(|| {
                for view in file.tensors() {
                    let view = view.expect("tensor in range");
                    let TensorType::Known(t) = view.info.ttype else {
                        panic!("unknown tensor type in {}", view.info.name);
                    };
                    let ty = QuantType::from_ggml_id(t.id()).expect("a type shuku-quants reads");
                    let n = view.info.n_elements() as usize;
                    ty.dequantize(view.bytes, &mut out[..n])
                        .expect("whole blocks");
                }
                black_box(&out);
            })
        });
        group.bench_function(BenchmarkId::new("candle_to_tensor", kind.label()), |b| {
            b.iter(|| {
                for view in file.tensors() {
                    let t = view
                        .expect("tensor in range")
                        .to_tensor(&Device::Cpu)
                        .and_then(|t| Ok(t.to_dtype(DType::F32)?))
                        .expect("candle reads the tensor");
                    black_box(t);
                }
            })
        });
        group.bench_function(BenchmarkId::new("raw_read", kind.label()), |b| {
            b.iter(|| common::parallel_read(black_box(data)))
        });
    }
    group.finish();
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let kinds = [BaseGguf::F16, BaseGguf::Q4KM];
    let paths: Vec<_> = kinds.iter().map(|k| k.make(dir.path())).collect();
    let files: Vec<(BaseGguf, &Path)> = kinds
        .iter()
        .copied()
        .zip(paths.iter().map(|p| p.as_path()))
        .collect();
    open(c, &files);
    read_tensors(c, &files);
}

/// The group with the benches' common settings (what `criterion_group!` expands to, documented:
/// the workspace denies missing docs).
fn benches() {
    bench(&mut common::criterion(
        Duration::from_millis(500),
        Duration::from_secs(2),
    ));
}
criterion_main!(benches);

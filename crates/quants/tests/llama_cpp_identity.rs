//! Byte identity with llama.cpp: every type's quantizer, with and without an importance matrix,
//! against llama.cpp's own `ggml_quantize_chunk` (the function `llama-quantize` calls), run through
//! `shuku-quantize-chunk` (`tests/peer/build.sh`). Ignored in a plain `cargo test` because it needs
//! llama.cpp's build; `scripts/test.sh` runs it.

use std::path::Path;
use std::process::Command;

use shuku_quants::QuantType;
use shuku_testkit::TestRng;

/// Rows that exercise the quantizers' branches: weight-like Gaussians, heavy outliers, one-signed
/// rows, zero and constant blocks, tiny and huge scales.
fn test_rows(n_per_row: usize, seed: u64) -> Vec<f32> {
    let mut g = TestRng(seed);
    let mut rows = Vec::new();
    let kinds = 8;
    for kind in 0..kinds {
        for _ in 0..3 {
            let row: Vec<f32> = (0..n_per_row)
                .map(|i| match kind {
                    0 => 0.02 * g.normal(),
                    1 => {
                        let v = 0.02 * g.normal();
                        if g.unit() < 0.01 {
                            v * 40.0
                        } else {
                            v
                        }
                    }
                    2 => g.unit() * 0.5,
                    3 => -g.unit() * 3.0,
                    4 => {
                        if (i / 32) % 3 == 0 {
                            0.0
                        } else {
                            g.normal()
                        }
                    }
                    5 => {
                        if (i / 16) % 4 == 1 {
                            1.25
                        } else {
                            1e-3 * g.normal()
                        }
                    }
                    6 => 1e-6 * g.normal(),
                    _ => 300.0 * g.normal() * g.unit(),
                })
                .collect();
            rows.extend(row);
        }
    }
    rows
}

/// Importance weights like llama-imatrix's mean squared activations: positive, spread over two
/// orders of magnitude, with a few zero columns.
fn test_weights(n: usize, seed: u64) -> Vec<f32> {
    let mut g = TestRng(seed ^ 0x5eed);
    (0..n)
        .map(|_| {
            if g.unit() < 0.02 {
                0.0
            } else {
                let v = g.normal() * 3.0;
                v * v + 0.01
            }
        })
        .collect()
}

fn write_f32(path: &Path, v: &[f32]) {
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    std::fs::write(path, bytes).unwrap();
}

fn llama_cpp_bytes(ty: QuantType, n_per_row: usize, src: &[f32], qw: Option<&[f32]>) -> Vec<u8> {
    let dir = tempfile_dir();
    let (inp, out, imx) = (
        dir.join("in.f32"),
        dir.join("out.bin"),
        dir.join("imatrix.f32"),
    );
    write_f32(&inp, src);
    let mut cmd = Command::new(shuku_testkit::llamacpp("shuku-quantize-chunk"));
    cmd.arg(ty.name().to_lowercase().replace("_k", "_K"))
        .arg(n_per_row.to_string())
        .arg(&inp)
        .arg(&out);
    if let Some(w) = qw {
        write_f32(&imx, w);
        cmd.arg(&imx);
    }
    shuku_testkit::run(&mut cmd);
    let bytes = std::fs::read(&out).unwrap();
    std::fs::remove_dir_all(&dir).ok();
    bytes
}

fn tempfile_dir() -> std::path::PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let d = std::env::temp_dir().join(format!(
        "shuku-quants-peer-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The first differing block of two encodings, for the failure message.
fn first_difference(ty: QuantType, a: &[u8], b: &[u8]) -> String {
    let ts = ty.type_size();
    match a.chunks(ts).zip(b.chunks(ts)).position(|(x, y)| x != y) {
        Some(i) => format!(
            "block {i} differs:\n shuku     {:?}\n llama.cpp {:?}",
            &a[i * ts..(i + 1) * ts],
            &b[i * ts..(i + 1) * ts]
        ),
        None => format!("lengths {} vs {}", a.len(), b.len()),
    }
}

fn check(ty: QuantType, n_per_row: usize, weighted: bool) {
    let seed = ty.ggml_id() as u64 * 1000 + n_per_row as u64;
    let src = test_rows(n_per_row, seed);
    let qw = weighted.then(|| test_weights(n_per_row, seed));
    let ours = ty.quantize(&src, n_per_row, qw.as_deref()).unwrap();
    let theirs = llama_cpp_bytes(ty, n_per_row, &src, qw.as_deref());
    assert!(
        ours == theirs,
        "{ty} n_per_row {n_per_row} weighted {weighted}: {}",
        first_difference(ty, &ours, &theirs)
    );
}

fn check_type(ty: QuantType) {
    let lens: &[usize] = if ty.block_size() == 256 {
        &[256, 768, 2048]
    } else {
        &[32, 96, 576, 2048]
    };
    for &n in lens {
        check(ty, n, false);
        if ty.uses_importance() {
            check(ty, n, true);
        }
    }
}

macro_rules! identity_tests {
    ($($name:ident => $ty:ident,)*) => {$(
        #[test]
        #[ignore = "needs llama.cpp's build: bash crates/quants/tests/peer/build.sh"]
        fn $name() {
            check_type(QuantType::$ty);
        }
    )*};
}

identity_tests! {
    f16_matches_llama_cpp => F16,
    bf16_matches_llama_cpp => BF16,
    q4_0_matches_llama_cpp => Q4_0,
    q4_1_matches_llama_cpp => Q4_1,
    q5_0_matches_llama_cpp => Q5_0,
    q5_1_matches_llama_cpp => Q5_1,
    q8_0_matches_llama_cpp => Q8_0,
    q2_k_matches_llama_cpp => Q2_K,
    q3_k_matches_llama_cpp => Q3_K,
    q4_k_matches_llama_cpp => Q4_K,
    q5_k_matches_llama_cpp => Q5_K,
    q6_k_matches_llama_cpp => Q6_K,
}

/// Rows aimed at the k-quants' rarer branches: values on a grid (ties in `nearest_int`), sparse
/// rows with a few spikes, a lone outlier per super-block, two-valued rows, one-signed rows with
/// an offset, negative zeros, tiny and huge magnitudes.
fn edge_rows(n_per_row: usize, seed: u64) -> Vec<f32> {
    let mut g = TestRng(seed ^ 0xed9e);
    let kinds = 10;
    let mut rows = Vec::with_capacity(kinds * 2 * n_per_row);
    for kind in 0..kinds {
        for _ in 0..2 {
            rows.extend((0..n_per_row).map(|i| match kind {
                0 => ((g.normal() * 4.0).round()) * 0.25,
                1 => (g.normal() * 8.0).round() * 0.5,
                2 => {
                    if g.unit() < 0.03 {
                        g.normal() * 5.0
                    } else {
                        0.0
                    }
                }
                3 => {
                    if i % 256 == (seed as usize * 37) % 256 {
                        50.0
                    } else {
                        0.01 * g.normal()
                    }
                }
                4 => {
                    if g.unit() < 0.5 {
                        0.75
                    } else {
                        -0.5
                    }
                }
                5 => 2.0 + 0.1 * g.normal(),
                6 => -(1.0 + g.unit()),
                7 => {
                    if i % 2 == 0 {
                        -0.0
                    } else {
                        1e-30 * g.normal()
                    }
                }
                8 => 1e4 * g.normal(),
                _ => (g.unit() * 7.0).floor() - 3.0,
            }));
        }
    }
    rows
}

/// Importance weights with whole sub-blocks of zeros (columns no token reached), a few huge
/// weights, and weights on a grid.
fn edge_weights(n: usize, seed: u64) -> Vec<f32> {
    let mut g = TestRng(seed ^ 0x3e1);
    (0..n)
        .map(|i| match (i / 16) % 5 {
            0 => 0.0,
            1 => {
                if g.unit() < 0.05 {
                    1e6
                } else {
                    g.unit()
                }
            }
            2 => (g.unit() * 4.0).floor(),
            _ => {
                let v = g.normal();
                v * v
            }
        })
        .collect()
}

fn check_src(ty: QuantType, n_per_row: usize, src: &[f32], qw: Option<&[f32]>, what: &str) {
    let ours = ty.quantize(src, n_per_row, qw).unwrap();
    let theirs = llama_cpp_bytes(ty, n_per_row, src, qw);
    assert!(
        ours == theirs,
        "{ty} {what} n_per_row {n_per_row} weighted {}: {}",
        qw.is_some(),
        first_difference(ty, &ours, &theirs)
    );
}

/// The k-quants on [`edge_rows`], unweighted, with ordinary weights and with [`edge_weights`],
/// and on many seeds of [`test_rows`].
fn check_k_quant_edges(ty: QuantType) {
    for n in [256, 1024] {
        let seed = ty.ggml_id() as u64 * 7919 + n as u64;
        let src = edge_rows(n, seed);
        check_src(ty, n, &src, None, "edge rows");
        check_src(ty, n, &src, Some(&test_weights(n, seed)), "edge rows");
        check_src(ty, n, &src, Some(&edge_weights(n, seed)), "both edges");
        let src = test_rows(n, seed);
        check_src(ty, n, &src, Some(&edge_weights(n, seed)), "edge weights");
    }
    for seed in 0..16u64 {
        let n = 512;
        let src = test_rows(n, seed * 104_729 + 1);
        check_src(ty, n, &src, None, "seed sweep");
        check_src(ty, n, &src, Some(&test_weights(n, seed + 99)), "seed sweep");
    }
}

macro_rules! k_quant_edge_tests {
    ($($name:ident => $ty:ident,)*) => {$(
        #[test]
        #[ignore = "needs llama.cpp's build: bash crates/quants/tests/peer/build.sh"]
        fn $name() {
            check_k_quant_edges(QuantType::$ty);
        }
    )*};
}

k_quant_edge_tests! {
    q2_k_edges_match_llama_cpp => Q2_K,
    q3_k_edges_match_llama_cpp => Q3_K,
    q4_k_edges_match_llama_cpp => Q4_K,
    q5_k_edges_match_llama_cpp => Q5_K,
    q6_k_edges_match_llama_cpp => Q6_K,
}

//! Matrix × activation kernels over weights borrowed from the memory-mapped GGUF file.
//!
//! One file per concern, as candle's `quantized` module: this one holds [`QMatrix`] (the weight
//! matrix over the mapped bytes, its activation quantizers and the matmul dispatch), and the
//! submodules hold the dot products written here, each with an AVX2 path beside the scalar
//! reference it is tested against (`dot_q4`, `dot_q5`, `dot_q8_0`, `dot_float`), the AVX2 pieces
//! they share (`x86`) and the run-time CPU check that picks the path (`cpu`). The k-quant products
//! are candle's, run on the mapped weights by reinterpreting the file's bytes as its ggml block
//! structs (`BlockQ4K`, ...) without a copy; every such cast goes through `cast_blocks`, which checks
//! size, alignment and length first. `unsafe` code lives in these modules and in attention's
//! FMA-compiled inner loop, nowhere else in the crate.
//!
//! Activations are quantized to the weight type's "vec-dot type" exactly as llama.cpp's CPU backend
//! does on x86 (`ggml-cpu.c`'s `type_traits_cpu`): Q8_0 for Q4_0/Q5_0/Q8_0, Q8_1 for Q4_1/Q5_1,
//! Q8_K for the k-quants, f16 for F16 and bf16 for BF16 weights. The quantizers are written here
//! (not candle's `from_float`) because llama.cpp's AVX path rounds half to even with `127/amax` as
//! the multiplier and stores Q8_1's block sum as `fp16(d * Σq)`; candle differs in those last
//! bits, and last bits decide near-ties in greedy decoding.

use candle_core::quantized::k_quants::{
    BlockQ2K, BlockQ3K, BlockQ4K, BlockQ4_0, BlockQ4_1, BlockQ5K, BlockQ5_0, BlockQ5_1, BlockQ6K,
    BlockQ8K, BlockQ8_0, BlockQ8_1, GgmlType as Block,
};
use half::{bf16, f16};
use rayon::prelude::*;
use shuku_gguf::GgmlType;

pub(crate) mod cpu;
pub(crate) mod dot_float;
mod dot_q4;
mod dot_q5;
mod dot_q8_0;
#[cfg(test)]
mod test_blocks;
#[cfg(target_arch = "x86_64")]
mod x86;

/// Rows handed to one rayon task: enough work per task to amortise scheduling.
const ROWS_PER_TASK: usize = 16;

/// Reinterprets `bytes` as a slice of ggml blocks, or `None` when the size, alignment or length
/// does not fit.
fn cast_blocks<T: Block>(bytes: &[u8], ggml_type_size: usize) -> Option<&[T]> {
    let size = std::mem::size_of::<T>();
    if size != ggml_type_size
        || size == 0
        || bytes.len() % size != 0
        || (bytes.as_ptr() as usize) % std::mem::align_of::<T>() != 0
    {
        return None;
    }
    // SAFETY: the block types are `#[repr(C)]` structs of plain integers, `f16` and `f32` (no
    // padding: size_of equals ggml's packed type size, checked above), so every bit pattern is a
    // valid value; the pointer is aligned for `T` and the length is a whole number of blocks, both
    // checked above; the returned slice borrows `bytes`, so it cannot outlive the mapping.
    Some(unsafe { std::slice::from_raw_parts(bytes.as_ptr().cast::<T>(), bytes.len() / size) })
}

/// The bytes of a block slice, read-only (for the kernels written over ggml's byte layout).
fn blocks_as_bytes<T: Block>(blocks: &[T]) -> &[u8] {
    // SAFETY: `T` is a padding-free `#[repr(C)]` block of plain integer/float fields (see
    // `cast_blocks`), so every byte is initialised; the byte slice covers exactly the blocks and
    // borrows them.
    unsafe {
        std::slice::from_raw_parts(blocks.as_ptr().cast::<u8>(), std::mem::size_of_val(blocks))
    }
}

/// The bytes of a block slice (for writing activation blocks in ggml's layout).
fn blocks_as_bytes_mut<T: Block>(blocks: &mut [T]) -> &mut [u8] {
    let len = std::mem::size_of_val(blocks);
    // SAFETY: `T` is a padding-free `#[repr(C)]` block of plain integer/float fields (see
    // `cast_blocks`), so viewing it as bytes exposes no uninitialised memory and any bytes written
    // form a valid `T`; the byte slice covers exactly the blocks and borrows them mutably.
    unsafe { std::slice::from_raw_parts_mut(blocks.as_mut_ptr().cast::<u8>(), len) }
}

/// Why a tensor cannot be used as a matrix by these kernels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelError {
    /// No kernel for this ggml type.
    UnsupportedType(GgmlType),
    /// The bytes are not `rows × cols` of the type, the row length is not a whole number of
    /// blocks, or the data is misaligned for the block type.
    BadLayout(String),
}

/// A `rows × cols` weight matrix (row-major, each row `cols` elements of `ttype`) borrowed from
/// the memory map.
#[derive(Debug, Clone, Copy)]
pub struct QMatrix<'a> {
    bytes: &'a [u8],
    ttype: GgmlType,
    rows: usize,
    cols: usize,
}

/// Activations already converted to a weight type's vec-dot type, one row per token.
pub enum QActs {
    /// For F32 weights.
    F32(Vec<f32>),
    /// For F16 weights: activations rounded to f16.
    F16(Vec<f16>),
    /// For BF16 weights.
    Bf16(Vec<bf16>),
    /// Q8_0 blocks.
    Q8_0(Vec<BlockQ8_0>),
    /// Q8_1 blocks.
    Q8_1(Vec<BlockQ8_1>),
    /// Q8_K blocks.
    Q8K(Vec<BlockQ8K>),
}

/// Whether the engine has a kernel for `t`.
pub fn is_supported(t: GgmlType) -> bool {
    matches!(
        t,
        GgmlType::F32
            | GgmlType::F16
            | GgmlType::BF16
            | GgmlType::Q4_0
            | GgmlType::Q4_1
            | GgmlType::Q5_0
            | GgmlType::Q5_1
            | GgmlType::Q8_0
            | GgmlType::Q2_K
            | GgmlType::Q3_K
            | GgmlType::Q4_K
            | GgmlType::Q5_K
            | GgmlType::Q6_K
    )
}

impl<'a> QMatrix<'a> {
    /// Checks that `bytes` hold `rows × cols` elements of `ttype` that the kernels can read.
    pub fn new(
        bytes: &'a [u8],
        ttype: GgmlType,
        rows: usize,
        cols: usize,
    ) -> Result<Self, KernelError> {
        if !is_supported(ttype) {
            return Err(KernelError::UnsupportedType(ttype));
        }
        let bs = ttype.block_size() as usize;
        if cols % bs != 0 {
            return Err(KernelError::BadLayout(format!(
                "row length {cols} is not a multiple of the {ttype} block size {bs}"
            )));
        }
        let need = rows
            .checked_mul(cols / bs)
            .and_then(|b| b.checked_mul(ttype.type_size() as usize));
        if need != Some(bytes.len()) {
            return Err(KernelError::BadLayout(format!(
                "{} bytes for {rows}×{cols} {ttype}",
                bytes.len()
            )));
        }
        let m = QMatrix {
            bytes,
            ttype,
            rows,
            cols,
        };
        // Check the block cast once here so the hot loops can rely on it.
        if !m.layout_ok() {
            return Err(KernelError::BadLayout(format!(
                "{ttype} data is not aligned for its block type"
            )));
        }
        Ok(m)
    }

    /// A 0 × 0 matrix (placeholder that reads nothing).
    pub fn empty() -> QMatrix<'a> {
        QMatrix {
            bytes: &[],
            ttype: GgmlType::F32,
            rows: 0,
            cols: 0,
        }
    }

    fn layout_ok(&self) -> bool {
        let ts = self.ttype.type_size() as usize;
        let b = self.bytes;
        match self.ttype {
            GgmlType::F32 => bytemuck::try_cast_slice::<u8, f32>(b).is_ok(),
            GgmlType::F16 => bytemuck::try_cast_slice::<u8, f16>(b).is_ok(),
            GgmlType::BF16 => true,
            GgmlType::Q4_0 => cast_blocks::<BlockQ4_0>(b, ts).is_some(),
            GgmlType::Q4_1 => cast_blocks::<BlockQ4_1>(b, ts).is_some(),
            GgmlType::Q5_0 => cast_blocks::<BlockQ5_0>(b, ts).is_some(),
            GgmlType::Q5_1 => cast_blocks::<BlockQ5_1>(b, ts).is_some(),
            GgmlType::Q8_0 => cast_blocks::<BlockQ8_0>(b, ts).is_some(),
            GgmlType::Q2_K => cast_blocks::<BlockQ2K>(b, ts).is_some(),
            GgmlType::Q3_K => cast_blocks::<BlockQ3K>(b, ts).is_some(),
            GgmlType::Q4_K => cast_blocks::<BlockQ4K>(b, ts).is_some(),
            GgmlType::Q5_K => cast_blocks::<BlockQ5K>(b, ts).is_some(),
            GgmlType::Q6_K => cast_blocks::<BlockQ6K>(b, ts).is_some(),
            _ => false,
        }
    }

    /// Output width.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Input width.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The weight type.
    pub fn ttype(&self) -> GgmlType {
        self.ttype
    }

    fn row_bytes(&self) -> usize {
        self.cols / self.ttype.block_size() as usize * self.ttype.type_size() as usize
    }

    /// Dequantizes row `r` into `out` (`cols` values): the embedding lookup.
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        let rb = self.row_bytes();
        let bytes = &self.bytes[r * rb..(r + 1) * rb];
        let ts = self.ttype.type_size() as usize;
        fn deq<T: Block>(bytes: &[u8], ts: usize, out: &mut [f32]) {
            if let Some(b) = cast_blocks::<T>(bytes, ts) {
                T::to_float(b, out);
            }
        }
        match self.ttype {
            GgmlType::F32 => {
                for (o, c) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                    *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                }
            }
            GgmlType::F16 => {
                for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                    *o = f16::from_le_bytes([c[0], c[1]]).to_f32();
                }
            }
            GgmlType::BF16 => {
                for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                    *o = bf16::from_le_bytes([c[0], c[1]]).to_f32();
                }
            }
            GgmlType::Q4_0 => deq::<BlockQ4_0>(bytes, ts, out),
            GgmlType::Q4_1 => deq::<BlockQ4_1>(bytes, ts, out),
            GgmlType::Q5_0 => deq::<BlockQ5_0>(bytes, ts, out),
            GgmlType::Q5_1 => deq::<BlockQ5_1>(bytes, ts, out),
            GgmlType::Q8_0 => deq::<BlockQ8_0>(bytes, ts, out),
            GgmlType::Q2_K => deq::<BlockQ2K>(bytes, ts, out),
            GgmlType::Q3_K => deq::<BlockQ3K>(bytes, ts, out),
            GgmlType::Q4_K => deq::<BlockQ4K>(bytes, ts, out),
            GgmlType::Q5_K => deq::<BlockQ5K>(bytes, ts, out),
            GgmlType::Q6_K => deq::<BlockQ6K>(bytes, ts, out),
            _ => out.fill(0.0),
        }
    }

    /// Converts `n` activation rows (`x`: `n × cols`) to this matrix's vec-dot type.
    pub fn quantize_acts(&self, x: &[f32], n: usize) -> QActs {
        let cols = self.cols;
        debug_assert_eq!(x.len(), n * cols);
        match self.ttype {
            GgmlType::F32 => QActs::F32(x.to_vec()),
            GgmlType::F16 => QActs::F16(x.iter().map(|&v| f16::from_f32(v)).collect()),
            GgmlType::BF16 => QActs::Bf16(x.iter().map(|&v| bf16::from_f32(v)).collect()),
            GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 => {
                let mut q = vec![BlockQ8_0::zeros(); x.len() / 32];
                quantize_q8_0(x, blocks_as_bytes_mut(&mut q));
                QActs::Q8_0(q)
            }
            GgmlType::Q4_1 | GgmlType::Q5_1 => {
                let mut q = vec![BlockQ8_1::zeros(); x.len() / 32];
                quantize_q8_1(x, blocks_as_bytes_mut(&mut q));
                QActs::Q8_1(q)
            }
            _ => {
                let mut q = vec![BlockQ8K::zeros(); x.len() / 256];
                quantize_q8_k(x, blocks_as_bytes_mut(&mut q));
                QActs::Q8K(q)
            }
        }
    }

    /// `out[t][r] = Σ_c W[r][c] · x[t][c]` for `n` tokens: `out` is `n × rows`, row-major.
    ///
    /// Rows are split over the current rayon pool; each task computes all tokens for its rows so a
    /// weight row is read from memory once per call, however many tokens are in the batch.
    pub fn matmul(&self, x: &[f32], n: usize, out: &mut [f32]) {
        let acts = self.quantize_acts(x, n);
        self.matmul_q(&acts, n, out);
    }

    /// [`QMatrix::matmul`] with activations already converted by [`QMatrix::quantize_acts`]
    /// (lets Q, K and V, or gate and up, share one conversion).
    pub fn matmul_q(&self, acts: &QActs, n: usize, out: &mut [f32]) {
        debug_assert_eq!(out.len(), n * self.rows);
        let ts = self.ttype.type_size() as usize;
        let b = self.bytes;
        match (self.ttype, acts) {
            (GgmlType::F32, QActs::F32(a)) => {
                let Ok(w) = bytemuck::try_cast_slice::<u8, f32>(b) else {
                    return out.fill(0.0);
                };
                self.run_rows(n, out, |r, t| {
                    let cols = self.cols;
                    dot_float::dot_f32(&w[r * cols..(r + 1) * cols], &a[t * cols..(t + 1) * cols])
                })
            }
            (GgmlType::F16, QActs::F16(a)) => {
                let Ok(w) = bytemuck::try_cast_slice::<u8, f16>(b) else {
                    return out.fill(0.0);
                };
                self.run_rows(n, out, |r, t| {
                    let cols = self.cols;
                    dot_float::dot_f16(&w[r * cols..(r + 1) * cols], &a[t * cols..(t + 1) * cols])
                })
            }
            (GgmlType::BF16, QActs::Bf16(a)) => self.run_rows(n, out, |r, t| {
                dot_bf16_bytes(self.row(r), &a[t * self.cols..(t + 1) * self.cols])
            }),
            (GgmlType::Q4_0, QActs::Q8_0(a)) => {
                let a = blocks_as_bytes(a);
                let row = self.cols / 32 * dot_q4::Q8_0_BLOCK;
                self.run_rows(n, out, |r, t| {
                    dot_q4::vec_dot_q4_0_q8_0(self.row(r), &a[t * row..(t + 1) * row])
                })
            }
            (GgmlType::Q5_0, QActs::Q8_0(a)) => {
                let a = blocks_as_bytes(a);
                let row = self.cols / 32 * dot_q5::Q8_0_BLOCK;
                self.run_rows(n, out, |r, t| {
                    dot_q5::vec_dot_q5_0_q8_0(self.row(r), &a[t * row..(t + 1) * row])
                })
            }
            (GgmlType::Q8_0, QActs::Q8_0(a)) => {
                let a = blocks_as_bytes(a);
                let row = self.cols / 32 * dot_q8_0::Q8_0_BLOCK;
                self.run_rows(n, out, |r, t| {
                    dot_q8_0::vec_dot_q8_0_q8_0(self.row(r), &a[t * row..(t + 1) * row])
                })
            }
            (GgmlType::Q4_1, QActs::Q8_1(a)) => {
                let a = blocks_as_bytes(a);
                let row = self.cols / 32 * dot_q4::Q8_1_BLOCK;
                self.run_rows(n, out, |r, t| {
                    dot_q4::vec_dot_q4_1_q8_1(self.row(r), &a[t * row..(t + 1) * row])
                })
            }
            (GgmlType::Q5_1, QActs::Q8_1(a)) => {
                let a = blocks_as_bytes(a);
                let row = self.cols / 32 * dot_q5::Q8_1_BLOCK;
                self.run_rows(n, out, |r, t| {
                    dot_q5::vec_dot_q5_1_q8_1(self.row(r), &a[t * row..(t + 1) * row])
                })
            }
            (GgmlType::Q2_K, QActs::Q8K(a)) => self.blocks::<BlockQ2K>(b, ts, a, n, out),
            (GgmlType::Q3_K, QActs::Q8K(a)) => self.blocks::<BlockQ3K>(b, ts, a, n, out),
            (GgmlType::Q4_K, QActs::Q8K(a)) => self.blocks::<BlockQ4K>(b, ts, a, n, out),
            (GgmlType::Q5_K, QActs::Q8K(a)) => self.blocks::<BlockQ5K>(b, ts, a, n, out),
            (GgmlType::Q6_K, QActs::Q8K(a)) => self.blocks::<BlockQ6K>(b, ts, a, n, out),
            // Activations converted for another type: a programming error; leave zeros.
            _ => out.fill(0.0),
        }
    }

    fn row(&self, r: usize) -> &[u8] {
        let rb = self.row_bytes();
        &self.bytes[r * rb..(r + 1) * rb]
    }

    fn blocks<T: Block>(
        &self,
        bytes: &[u8],
        ts: usize,
        acts: &[T::VecDotType],
        n: usize,
        out: &mut [f32],
    ) {
        let Some(w) = cast_blocks::<T>(bytes, ts) else {
            out.fill(0.0);
            return;
        };
        let bpr = self.cols / T::BLCK_SIZE;
        let cols = self.cols;
        self.run_rows(n, out, |r, t| {
            T::vec_dot(
                cols,
                &w[r * bpr..(r + 1) * bpr],
                &acts[t * bpr..(t + 1) * bpr],
            )
        });
    }

    /// Runs `dot(row, token)` for every row and token, rows in parallel, writing `out[t*rows + r]`.
    fn run_rows(&self, n: usize, out: &mut [f32], dot: impl Fn(usize, usize) -> f32 + Sync) {
        let rows = self.rows;
        if n == 1 {
            out.par_chunks_mut(ROWS_PER_TASK)
                .enumerate()
                .for_each(|(ci, chunk)| {
                    for (i, o) in chunk.iter_mut().enumerate() {
                        *o = dot(ci * ROWS_PER_TASK + i, 0);
                    }
                });
            return;
        }
        // Batched: each task owns a row range and writes a `n × len` tile, scattered afterwards.
        let tiles: Vec<(usize, Vec<f32>)> = (0..rows.div_ceil(ROWS_PER_TASK))
            .into_par_iter()
            .map(|ci| {
                let r0 = ci * ROWS_PER_TASK;
                let r1 = (r0 + ROWS_PER_TASK).min(rows);
                let mut tile = vec![0f32; n * (r1 - r0)];
                for r in r0..r1 {
                    for t in 0..n {
                        tile[t * (r1 - r0) + (r - r0)] = dot(r, t);
                    }
                }
                (r0, tile)
            })
            .collect();
        for (r0, tile) in tiles {
            let len = tile.len() / n;
            for t in 0..n {
                out[t * rows + r0..t * rows + r0 + len]
                    .copy_from_slice(&tile[t * len..(t + 1) * len]);
            }
        }
    }
}

/// bf16 weight row · bf16 activations.
fn dot_bf16_bytes(w: &[u8], x: &[bf16]) -> f32 {
    let mut acc = [0f32; 8];
    for (wc, xc) in w.chunks_exact(16).zip(x.chunks_exact(8)) {
        for k in 0..8 {
            let wv = bf16::from_le_bytes([wc[2 * k], wc[2 * k + 1]]).to_f32();
            acc[k] = wv.mul_add(xc[k].to_f32(), acc[k]);
        }
    }
    let done = x.len() / 8 * 8;
    let mut s: f32 = acc.iter().sum();
    for (i, xv) in x.iter().enumerate().skip(done) {
        s += bf16::from_le_bytes([w[2 * i], w[2 * i + 1]]).to_f32() * xv.to_f32();
    }
    s
}

fn amax(xs: &[f32]) -> f32 {
    xs.iter().fold(0f32, |m, x| m.max(x.abs()))
}

/// llama.cpp's x86 `quantize_row_q8_0`: `d = amax/127`, `q = round_half_even(x · 127/amax)`.
/// Writes ggml's `block_q8_0` layout (`d: f16, qs: [i8; 32]`, 34 bytes).
fn quantize_q8_0(x: &[f32], out: &mut [u8]) {
    for (xb, ob) in x.chunks_exact(32).zip(out.chunks_exact_mut(34)) {
        let m = amax(xb);
        let d = m / 127.0;
        let id = if m != 0.0 { 127.0 / m } else { 0.0 };
        ob[0..2].copy_from_slice(&f16::from_f32(d).to_le_bytes());
        for (o, &v) in ob[2..].iter_mut().zip(xb) {
            *o = q8(v * id) as u8;
        }
    }
}

/// llama.cpp's x86 `quantize_row_q8_1`: as Q8_0 plus `s = fp16(d · Σq)`.
/// Writes `block_q8_1` (`d: f16, s: f16, qs: [i8; 32]`, 36 bytes).
fn quantize_q8_1(x: &[f32], out: &mut [u8]) {
    for (xb, ob) in x.chunks_exact(32).zip(out.chunks_exact_mut(36)) {
        let m = amax(xb);
        let d = m / 127.0;
        let id = if m != 0.0 { 127.0 / m } else { 0.0 };
        let mut sum = 0i32;
        for (o, &v) in ob[4..].iter_mut().zip(xb) {
            let q = q8(v * id);
            sum += i32::from(q);
            *o = q as u8;
        }
        ob[0..2].copy_from_slice(&f16::from_f32(d).to_le_bytes());
        ob[2..4].copy_from_slice(&f16::from_f32(d * sum as f32).to_le_bytes());
    }
}

/// Rounds half to even and saturates to i8 (`_mm256_round_ps` + `packs`).
fn q8(v: f32) -> i8 {
    v.round_ties_even().clamp(-128.0, 127.0) as i8
}

/// llama.cpp's `quantize_row_q8_K_ref` (used on x86): scale from the signed extreme,
/// `iscale = -127/max`, `nearest_int` (half to even), block sums of 16.
/// Writes `block_q8_K` (`d: f32, qs: [i8; 256], bsums: [i16; 16]`, 292 bytes).
fn quantize_q8_k(x: &[f32], out: &mut [u8]) {
    for (xb, ob) in x.chunks_exact(256).zip(out.chunks_exact_mut(292)) {
        let mut max = 0f32;
        let mut am = 0f32;
        for &v in xb {
            if v.abs() > am {
                am = v.abs();
                max = v;
            }
        }
        if am == 0.0 {
            ob.fill(0);
            continue;
        }
        let iscale = -127.0 / max;
        let mut qs = [0i8; 256];
        for (q, &v) in qs.iter_mut().zip(xb) {
            *q = (iscale * v).round_ties_even().min(127.0) as i8;
        }
        ob[0..4].copy_from_slice(&(1.0 / iscale).to_le_bytes());
        for (o, q) in ob[4..260].iter_mut().zip(qs) {
            *o = q as u8;
        }
        for (j, g) in qs.chunks_exact(16).enumerate() {
            let s: i16 = g.iter().map(|&q| i16::from(q)).sum();
            ob[260 + 2 * j..262 + 2 * j].copy_from_slice(&s.to_le_bytes());
        }
    }
}

/// Quantizes `x` (a multiple of the block size) with candle's reference quantizer and returns
/// the bytes in ggml layout: builds test weights for the kernel tests and the engine's own tests.
#[doc(hidden)]
pub fn quantize_for_tests(ttype: GgmlType, x: &[f32]) -> Option<Vec<u8>> {
    fn q<T: Block>(x: &[f32]) -> Vec<u8> {
        let mut b = vec![T::zeros(); x.len() / T::BLCK_SIZE];
        T::from_float(x, &mut b);
        blocks_as_bytes_mut(&mut b).to_vec()
    }
    Some(match ttype {
        GgmlType::F32 => x.iter().flat_map(|v| v.to_le_bytes()).collect(),
        GgmlType::F16 => x
            .iter()
            .flat_map(|v| f16::from_f32(*v).to_le_bytes())
            .collect(),
        GgmlType::BF16 => x
            .iter()
            .flat_map(|v| bf16::from_f32(*v).to_le_bytes())
            .collect(),
        GgmlType::Q4_0 => q::<BlockQ4_0>(x),
        GgmlType::Q4_1 => q::<BlockQ4_1>(x),
        GgmlType::Q5_0 => q::<BlockQ5_0>(x),
        GgmlType::Q5_1 => q::<BlockQ5_1>(x),
        GgmlType::Q8_0 => q::<BlockQ8_0>(x),
        GgmlType::Q2_K => q::<BlockQ2K>(x),
        GgmlType::Q3_K => q::<BlockQ3K>(x),
        GgmlType::Q4_K => q::<BlockQ4K>(x),
        GgmlType::Q5_K => q::<BlockQ5K>(x),
        GgmlType::Q6_K => q::<BlockQ6K>(x),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic pseudo-random values in [-1, 1) (xorshift).
    fn rand_vec(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
            })
            .collect()
    }

    /// Buffer with 4-byte alignment, as the mmap's 32-byte aligned tensor data has.
    fn aligned(bytes: &[u8]) -> Vec<u32> {
        let mut v = vec![0u32; bytes.len().div_ceil(4)];
        for (i, b) in bytes.iter().enumerate() {
            v[i / 4] |= u32::from(*b) << (8 * (i % 4));
        }
        v
    }

    fn as_bytes(v: &[u32], len: usize) -> &[u8] {
        // SAFETY: u32 has no padding; `len` ≤ 4·v.len() bytes are in bounds.
        unsafe { std::slice::from_raw_parts(v.as_ptr().cast::<u8>(), len) }
    }

    const TYPES: &[GgmlType] = &[
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::BF16,
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q8_0,
        GgmlType::Q2_K,
        GgmlType::Q3_K,
        GgmlType::Q4_K,
        GgmlType::Q5_K,
        GgmlType::Q6_K,
    ];

    /// The engine's matmul against the scalar reference (dequantize the weights, f32 dot) for every
    /// type, over several tokens. The tolerance covers the activation quantization (8-bit for the
    /// block types, f16/bf16 for the float types).
    #[test]
    fn matmul_matches_dequantized_reference_for_every_type() {
        let (rows, cols, n) = (19, 512, 3);
        let w = rand_vec(rows * cols, 1);
        let x = rand_vec(n * cols, 2);
        for &t in TYPES {
            let bytes = quantize_for_tests(t, &w).unwrap();
            let store = aligned(&bytes);
            let m = QMatrix::new(as_bytes(&store, bytes.len()), t, rows, cols).unwrap();
            let mut out = vec![0f32; n * rows];
            m.matmul(&x, n, &mut out);
            let mut row = vec![0f32; cols];
            let mut max_err = 0f32;
            let mut max_ref = 0f32;
            for r in 0..rows {
                m.dequantize_row(r, &mut row);
                for tok in 0..n {
                    let xr = &x[tok * cols..(tok + 1) * cols];
                    let reference: f32 = row.iter().zip(xr).map(|(a, b)| a * b).sum();
                    max_err = max_err.max((out[tok * rows + r] - reference).abs());
                    max_ref = max_ref.max(reference.abs());
                }
            }
            let tol = match t {
                GgmlType::F32 => 1e-4,
                GgmlType::F16 => 2e-2,
                GgmlType::BF16 => 0.15,
                _ => 0.25,
            };
            assert!(
                max_err < tol,
                "{t}: max error {max_err} (largest |ref| {max_ref})"
            );
        }
    }

    /// Dequantized weights stay close to the originals (checks the block casts read the right
    /// bytes, not just self-consistency).
    #[test]
    fn dequantize_row_recovers_weights() {
        let (rows, cols) = (4, 256);
        let w = rand_vec(rows * cols, 7);
        for &t in TYPES {
            let bytes = quantize_for_tests(t, &w).unwrap();
            let store = aligned(&bytes);
            let m = QMatrix::new(as_bytes(&store, bytes.len()), t, rows, cols).unwrap();
            let mut row = vec![0f32; cols];
            m.dequantize_row(2, &mut row);
            let err = row
                .iter()
                .zip(&w[2 * cols..3 * cols])
                .fold(0f32, |e, (a, b)| e.max((a - b).abs()));
            let tol = if t == GgmlType::Q2_K { 0.6 } else { 0.3 };
            assert!(err < tol, "{t}: max abs error {err}");
        }
    }

    #[test]
    fn activation_quantizers_follow_llama_cpp_rounding() {
        // 63.5 lands exactly on .5 after scaling by 127/amax when amax = 127: half to even.
        let mut x = vec![0f32; 32];
        x[0] = 127.0;
        x[1] = 2.5;
        x[2] = -3.5;
        let mut out = vec![0u8; 34];
        quantize_q8_0(&x, &mut out);
        assert_eq!(out[2] as i8, 127);
        assert_eq!(out[3] as i8, 2);
        assert_eq!(out[4] as i8, -4);
        let mut out1 = vec![0u8; 36];
        quantize_q8_1(&x, &mut out1);
        let s = f16::from_le_bytes([out1[2], out1[3]]).to_f32();
        assert_eq!(s, 125.0);
    }

    #[test]
    fn rejects_bad_layouts() {
        let store = aligned(&[0u8; 64]);
        let b = as_bytes(&store, 36);
        assert!(matches!(
            QMatrix::new(b, GgmlType::IQ4_NL, 1, 32),
            Err(KernelError::UnsupportedType(_))
        ));
        assert!(matches!(
            QMatrix::new(b, GgmlType::Q8_0, 1, 33),
            Err(KernelError::BadLayout(_))
        ));
        assert!(matches!(
            QMatrix::new(b, GgmlType::Q8_0, 1, 32),
            Err(KernelError::BadLayout(_))
        ));
        let odd = &as_bytes(&store, 35)[1..];
        assert!(matches!(
            QMatrix::new(odd, GgmlType::Q8_0, 1, 32),
            Err(KernelError::BadLayout(_))
        ));
    }
}

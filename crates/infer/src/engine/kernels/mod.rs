//! Matrix × activation kernels over weights borrowed from the memory-mapped GGUF file.
//!
//! One file per concern, as candle's `quantized` module: this one holds [`QMatrix`] (the weight
//! matrix over the mapped bytes, its activation quantizers and the matmul dispatch), and the
//! submodules hold the dot products written here, each with an AVX2 path beside the scalar
//! reference it is tested against (`dot_q4`, `dot_q5`, `dot_q8_0`, `dot_float`; on AArch64 the
//! block products take `neon`'s paths), the AVX2 pieces
//! they share (`x86`) and the run-time CPU check that picks the path (`cpu`). Where the CPU has
//! AVX-512 VNNI, matrices are packed at load ([`repack`]) for the tiled products (`tile`,
//! `tile_k` and `tile_k235` for the k-quants, `tile_f16`) and, for Q4_0, Q4_1, Q5_0, Q5_1, Q8_0,
//! and the k-quants, for the lane kernels ([`lanes`], [`lanes_k`], [`lanes_k45`], [`lanes_k23`],
//! `lanes_x86`).
//!
//! The block layouts are `shuku_quants`' plain-old-data structs ([`shuku_quants::blocks`]): the
//! file's bytes are viewed as blocks with [`bytemuck::try_cast_slice`], which checks size,
//! alignment and length, so the products written here (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0) get their
//! weights as typed blocks without an `unsafe` cast, the activation quantizers build typed blocks,
//! and the embedding lookup dequantizes with `shuku_quants`' ggml-exact
//! [`BlockFormat::dequantize`]. The k-quant products (Q2_K … Q6_K) are the tiles where the CPU
//! has AVX-512 VNNI, and candle's `vec_dot` elsewhere (other x86 CPUs, AArch64), which takes
//! candle's own block structs; `as_candle` hands the checked `shuku_quants` views to it as
//! candle's structs of the same ggml layout, the one `unsafe` cast left here. Otherwise `unsafe` code lives in the SIMD paths of these modules and in attention's
//! FMA-compiled inner loop, nowhere else in the crate.
//!
//! Activations are quantized to the weight type's "vec-dot type" exactly as llama.cpp's CPU backend
//! does on x86 (`ggml-cpu.c`'s `type_traits_cpu`): Q8_0 for Q4_0/Q5_0/Q8_0, Q8_1 for Q4_1/Q5_1,
//! Q8_K for the k-quants, f16 for F16 and bf16 for BF16 weights. The quantizers are written here
//! (not candle's `from_float`, nor `shuku_quants`' reference `quantize_row_q8_*_ref`) because
//! llama.cpp's AVX path rounds half to even with `127/amax` as the multiplier and stores Q8_1's
//! block sum as `fp16(d * Σq)`; the others differ in those last bits, and last bits decide
//! near-ties in greedy decoding.

use bytemuck::Pod;
use candle_core::quantized::k_quants as candle;
use half::{bf16, f16};
use shuku_gguf::GgmlType;
use shuku_quants::blocks::{
    BlockQ2K, BlockQ3K, BlockQ4K, BlockQ4_0, BlockQ4_1, BlockQ5K, BlockQ5_0, BlockQ5_1, BlockQ6K,
    BlockQ8K, BlockQ8_0, BlockQ8_1, QK, QK_K,
};
use shuku_quants::{BlockFormat, QuantType};

use out::{RowsOut, SharedOut};

mod acts;
pub(crate) mod cpu;
pub(crate) mod dot_float;
mod dot_q4;
mod dot_q5;
mod dot_q8_0;
#[cfg(target_arch = "x86_64")]
mod gemm_f16;
mod half_float;
pub mod lanes;
pub mod lanes_k;
pub mod lanes_k23;
pub mod lanes_k45;
#[cfg(target_arch = "x86_64")]
mod lanes_x86;
#[cfg(target_arch = "aarch64")]
mod neon;
mod out;
pub mod pool;
pub mod repack;
#[cfg(test)]
mod test_blocks;
#[cfg(target_arch = "x86_64")]
mod tile;
#[cfg(target_arch = "x86_64")]
mod tile_f16;
#[cfg(any(test, target_arch = "x86_64"))]
mod tile_k;
#[cfg(any(test, target_arch = "x86_64"))]
mod tile_k235;
#[cfg(target_arch = "x86_64")]
mod tile_k_wide;
#[cfg(target_arch = "x86_64")]
mod x86;

/// Rows handed to one task of the pool at least, and the multiple every task's rows are of (so
/// packed groups stay whole).
const ROWS_PER_TASK: usize = 16;

/// Rows per task for a product of `rows` rows: about four tasks per thread, so a thread that
/// finishes early takes another, without a task so small that taking it costs more than it
/// computes.
fn rows_per_task(rows: usize) -> usize {
    rows.div_ceil(4 * pool::current_threads())
        .next_multiple_of(ROWS_PER_TASK)
        .max(ROWS_PER_TASK)
}

/// Weight rows of one tile.
pub const TILE_ROWS: usize = 4;

/// Tokens of one tile in a batch.
#[cfg(target_arch = "x86_64")]
const TILE_TOKENS: usize = tile::WIDE_TOKENS;
#[cfg(not(target_arch = "x86_64"))]
const TILE_TOKENS: usize = 8;

/// The tiled products for weight blocks `W` against activation blocks `A`: `wide` for
/// [`TILE_TOKENS`] tokens of a batch, `narrow` for one token. Built only where
/// `cpu::has_avx512_vnni()` holds (their functions are compiled for those features).
/// A tile function's weights are one slice in which block `b` of tile row `r` is
/// `w[r * rs + b * bs]` (see `tile`).
struct Tiles<W, A> {
    wide: TileFn<W, A, TILE_TOKENS>,
    narrow: TileFn<W, A, 1>,
}

/// A tile function over `T` tokens: weights, row stride, block stride, the tokens' activations.
type TileFn<W, A, const T: usize> =
    unsafe fn(&[W], usize, usize, [&[A]; T]) -> [[f32; T]; TILE_ROWS];

/// `Some(Tiles)` of the tile functions `$narrow` (one token) and `$wide` (a batch's
/// [`TILE_TOKENS`]) where the CPU runs them, else `None`.
macro_rules! tiles {
    ($narrow:path, $wide:path) => {{
        #[cfg(target_arch = "x86_64")]
        let t = cpu::has_avx512_vnni().then(|| Tiles {
            wide: $wide,
            narrow: $narrow,
        });
        #[cfg(not(target_arch = "x86_64"))]
        let t = None;
        t
    }};
}

/// The lane kernels for group blocks `G` against activation blocks `A`: `wide` for
/// [`lanes::LANE_TOKENS`] tokens of a batch, `narrow` for one. Built only where
/// `cpu::has_avx512_vnni()` holds; elsewhere `lanes::reference` computes the same numbers.
struct LaneKernels<G, A> {
    wide: LaneFn<G, A, { lanes::LANE_TOKENS }>,
    narrow: LaneFn<G, A, 1>,
}

/// A lane kernel over `T` tokens: one group's blocks, the tokens' activations and their terms.
type LaneFn<G, A, const T: usize> =
    unsafe fn(&[G], [&[A]; T], [&[lanes::ActTerms]; T]) -> [[f32; lanes::LANE_ROWS]; T];

/// The scalar reference a lane kernel equals: one group × one token.
type LaneReference<G, A> = fn(&[G], &[A], &[lanes::ActTerms]) -> [f32; lanes::LANE_ROWS];

/// `Some(LaneKernels)` of `lanes_x86::$name` where the CPU runs them, else `None`.
macro_rules! lane_kernels {
    ($name:ident) => {{
        #[cfg(target_arch = "x86_64")]
        let k = cpu::has_avx512_vnni().then(|| LaneKernels {
            wide: lanes_x86::$name::<{ lanes::LANE_TOKENS }>,
            narrow: lanes_x86::$name::<1>,
        });
        #[cfg(not(target_arch = "x86_64"))]
        let k = None;
        k
    }};
}

// A task's rows are whole lane groups.
const _: () = assert!(ROWS_PER_TASK.is_multiple_of(lanes::LANE_ROWS));

/// Views `bytes` as blocks of `T`, or `None` when `T` is not ggml's `ggml_type_size` bytes or the
/// bytes are misaligned for `T` or not a whole number of blocks.
fn view<T: Pod>(bytes: &[u8], ggml_type_size: usize) -> Option<&[T]> {
    if std::mem::size_of::<T>() != ggml_type_size {
        return None;
    }
    bytemuck::try_cast_slice(bytes).ok()
}

/// A `shuku_quants` block struct whose ggml block candle also declares, as `Candle`: the k-quants,
/// whose products are candle's `vec_dot` where the tiles do not run, and their Q8_K activations.
trait CandleTwin: Pod {
    /// candle's struct for the same `ggml-common.h` block.
    type Candle: candle::GgmlType;
}

macro_rules! candle_twins {
    ($($t:ident),*) => {
        $(impl CandleTwin for $t {
            type Candle = candle::$t;
        })*
    };
}

candle_twins!(BlockQ2K, BlockQ3K, BlockQ4K, BlockQ5K, BlockQ6K, BlockQ8K);

/// `shuku_quants` blocks as candle's structs for the same ggml blocks, for candle's `vec_dot`.
fn as_candle<S: CandleTwin>(blocks: &[S]) -> &[S::Candle] {
    const {
        assert!(std::mem::size_of::<S>() == std::mem::size_of::<S::Candle>());
        assert!(std::mem::align_of::<S::Candle>() <= std::mem::align_of::<S>());
    }
    // SAFETY: candle's block types are `#[repr(C)]` structs of plain integers, `f16` and `f32`, so
    // every bit pattern is a valid `S::Candle` (and `S` is `Pod`: its bytes are all initialised);
    // both structs declare the same `ggml-common.h` fields in the same order, and the sizes match
    // with no stricter alignment for candle's (checked at compile time above), so the pointer to
    // `blocks.len()` values of `S` is a valid, aligned pointer to as many `S::Candle`; the returned
    // slice borrows `blocks` immutably, so it cannot outlive them or see them change.
    unsafe { std::slice::from_raw_parts(blocks.as_ptr().cast::<S::Candle>(), blocks.len()) }
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
    /// How the rows are laid out.
    layout: Layout,
    /// Compute on the calling thread: a view made by [`QMatrix::rows_view`] for one task of a
    /// parallel loop that already spans several matrices.
    serial: bool,
}

/// How a matrix's rows lie in its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// Row after row, as the file stores them.
    Rows,
    /// [`lanes::LANE_ROWS`] rows per group, one row per lane ([`lanes`], [`repack`]).
    Lanes,
}

impl Layout {
    /// Rows of one group (1 for row-major).
    fn group_rows(self) -> usize {
        match self {
            Layout::Rows => 1,
            Layout::Lanes => lanes::LANE_ROWS,
        }
    }
}

/// Activations already converted to a weight type's vec-dot type, one row per token.
pub enum QActs {
    /// For F32 weights.
    F32(Vec<f32>),
    /// For F16 weights: activations rounded to f16, the same values as f32, and, for the batch
    /// kernels of `gemm_f16` (batches of 8 tokens or more on CPUs with AVX-512 F, otherwise empty),
    /// the first `n / 16 · 16` tokens of those packed by passes of 16: packed once, they serve every
    /// product of the same activations (Q, K and V; gate and up).
    F16(Vec<f16>, Vec<f32>, Vec<f32>),
    /// For BF16 weights: as for F16, rounded to bf16.
    Bf16(Vec<bf16>, Vec<f32>, Vec<f32>),
    /// Q8_0 blocks (for Q4_0, Q5_0 and Q8_0 weights) and their terms for the lane kernels.
    Q8_0(Vec<BlockQ8_0>, Vec<lanes::ActTerms>),
    /// Q8_1 blocks (for Q4_1 and Q5_1 weights) and their terms for the lane kernels.
    Q8_1(Vec<BlockQ8_1>, Vec<lanes::ActTerms>),
    /// Q8_K blocks (for the k-quants) and their terms for the lane kernels.
    Q8K(Vec<BlockQ8K>, Vec<lanes::ActTerms>),
}

/// Whether the engine has a kernel for `t`.
pub fn is_supported(t: GgmlType) -> bool {
    SUPPORTED_TYPES.contains(&t)
}

/// Every weight type the kernels read, in ggml id order.
pub const SUPPORTED_TYPES: &[GgmlType] = &[
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
        if !cols.is_multiple_of(bs) {
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
        QMatrix {
            bytes,
            ttype,
            rows,
            cols,
            layout: Layout::Rows,
            serial: false,
        }
        .checked()
    }

    /// A matrix packed by [`repack`] in its lane layout ([`lanes`]); `bytes` hold `rows` rounded up
    /// to whole groups.
    pub fn packed(
        bytes: &'a [u8],
        ttype: GgmlType,
        rows: usize,
        cols: usize,
    ) -> Result<Self, KernelError> {
        if !repack::in_lanes(ttype) {
            return Err(KernelError::UnsupportedType(ttype));
        }
        let bs = ttype.block_size() as usize;
        if !cols.is_multiple_of(bs) {
            return Err(KernelError::BadLayout(format!(
                "row length {cols} is not a multiple of the {ttype} block size {bs}"
            )));
        }
        let layout = Layout::Lanes;
        let group = layout.group_rows();
        let row_bytes = (cols / bs).checked_mul(ttype.type_size() as usize);
        if row_bytes.and_then(|rb| repack::padded_len(rows, group, rb)) != Some(bytes.len()) {
            return Err(KernelError::BadLayout(format!(
                "{} bytes for {rows}×{cols} {ttype} in groups of {group} rows",
                bytes.len()
            )));
        }
        QMatrix {
            bytes,
            ttype,
            rows,
            cols,
            layout,
            serial: false,
        }
        .checked()
    }

    fn checked(self) -> Result<Self, KernelError> {
        let m = self;
        // Check the block cast once here so the hot loops can rely on it.
        if !m.layout_ok() {
            return Err(KernelError::BadLayout(format!(
                "{} data is not aligned for its block type",
                m.ttype
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
            layout: Layout::Rows,
            serial: false,
        }
    }

    fn layout_ok(&self) -> bool {
        let ts = self.ttype.type_size() as usize;
        let b = self.bytes;
        match self.ttype {
            GgmlType::F32 => bytemuck::try_cast_slice::<u8, f32>(b).is_ok(),
            GgmlType::F16 => bytemuck::try_cast_slice::<u8, f16>(b).is_ok(),
            GgmlType::BF16 => bytemuck::try_cast_slice::<u8, bf16>(b).is_ok(),
            GgmlType::Q4_0 => view::<BlockQ4_0>(b, ts).is_some(),
            GgmlType::Q4_1 => view::<BlockQ4_1>(b, ts).is_some(),
            GgmlType::Q5_0 => view::<BlockQ5_0>(b, ts).is_some(),
            GgmlType::Q5_1 => view::<BlockQ5_1>(b, ts).is_some(),
            GgmlType::Q8_0 => view::<BlockQ8_0>(b, ts).is_some(),
            GgmlType::Q2_K => view::<BlockQ2K>(b, ts).is_some(),
            GgmlType::Q3_K => view::<BlockQ3K>(b, ts).is_some(),
            GgmlType::Q4_K => view::<BlockQ4K>(b, ts).is_some(),
            GgmlType::Q5_K => view::<BlockQ5K>(b, ts).is_some(),
            GgmlType::Q6_K => view::<BlockQ6K>(b, ts).is_some(),
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
    ///
    /// Block types decode with ggml's `dequantize_row_*` arithmetic (`shuku_quants`), on a view of
    /// the mapped row: no copy, no allocation per token.
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        let rb = self.row_bytes();
        let gathered;
        let bytes = match self.layout {
            Layout::Rows => &self.bytes[r * rb..(r + 1) * rb],
            Layout::Lanes => {
                gathered = self.lane_row(r);
                &gathered[..]
            }
        };
        let ts = self.ttype.type_size() as usize;
        fn deq<T: BlockFormat>(bytes: &[u8], ts: usize, out: &mut [f32]) {
            match view::<T>(bytes, ts) {
                Some(b) => T::dequantize(b, out),
                None => out.fill(0.0),
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
        let mut acts = QActs::F32(Vec::new());
        self.quantize_acts_into(x, n, &mut acts);
        acts
    }

    /// [`QMatrix::quantize_acts`] into `acts`, reusing its buffers where it holds the same vec-dot
    /// type (F16's three batch-sized buffers; the block types are a quarter of that or less and
    /// are made afresh).
    pub fn quantize_acts_into(&self, x: &[f32], n: usize, acts: &mut QActs) {
        let cols = self.cols;
        debug_assert_eq!(x.len(), n * cols);
        *acts = match (self.ttype, std::mem::replace(acts, QActs::F32(Vec::new()))) {
            (GgmlType::F32, QActs::F32(mut a)) => {
                a.clear();
                a.extend_from_slice(x);
                QActs::F32(a)
            }
            (GgmlType::F16, QActs::F16(mut h, mut r, mut packed)) => {
                convert_half(x, n, cols, (&mut h, &mut r, &mut packed));
                QActs::F16(h, r, packed)
            }
            (GgmlType::BF16, QActs::Bf16(mut h, mut r, mut packed)) => {
                convert_half(x, n, cols, (&mut h, &mut r, &mut packed));
                QActs::Bf16(h, r, packed)
            }
            (_, _) => self.quantize_acts_fresh(x, n),
        };
    }

    fn quantize_acts_fresh(&self, x: &[f32], n: usize) -> QActs {
        let cols = self.cols;
        match self.ttype {
            GgmlType::F32 => QActs::F32(x.to_vec()),
            GgmlType::F16 => {
                let (h, r, packed) = half_acts(x, n, cols);
                QActs::F16(h, r, packed)
            }
            GgmlType::BF16 => {
                let (h, r, packed) = half_acts(x, n, cols);
                QActs::Bf16(h, r, packed)
            }
            GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 => {
                let (blocks, terms) =
                    quantize_blocks(x, QK, acts::quantize_q8_0, lanes::terms_q8_0);
                QActs::Q8_0(blocks, terms)
            }
            GgmlType::Q4_1 | GgmlType::Q5_1 => {
                let (blocks, terms) =
                    quantize_blocks(x, QK, acts::quantize_q8_1, lanes::terms_q8_1);
                QActs::Q8_1(blocks, terms)
            }
            _ => {
                let (blocks, terms) =
                    quantize_blocks(x, QK_K, acts::quantize_q8_k, lanes_k::terms_q8_k);
                QActs::Q8K(blocks, terms)
            }
        }
    }

    /// `out[t][r] = Σ_c W[r][c] · x[t][c]` for `n` tokens: `out` is `n × rows`, row-major.
    ///
    /// Rows are split over the installed [`pool::Pool`]; each task computes all tokens for its rows so a
    /// weight row is read from memory once per call, however many tokens are in the batch.
    pub fn matmul(&self, x: &[f32], n: usize, out: &mut [f32]) {
        let acts = self.quantize_acts(x, n);
        self.matmul_q(&acts, n, out);
    }

    /// [`QMatrix::matmul`] with activations already converted by [`QMatrix::quantize_acts`]
    /// (lets Q, K and V, or gate and up, share one conversion).
    pub fn matmul_q(&self, acts: &QActs, n: usize, out: &mut [f32]) {
        debug_assert_eq!(out.len(), n * self.rows);
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
            (GgmlType::F16, QActs::F16(_, rounded, packed)) if self.layout == Layout::Lanes => {
                self.run_half_lanes::<f16>(rounded, packed, n, out)
            }
            (GgmlType::BF16, QActs::Bf16(_, rounded, packed)) if self.layout == Layout::Lanes => {
                self.run_half_lanes::<bf16>(rounded, packed, n, out)
            }
            (GgmlType::BF16, QActs::Bf16(a, rounded, packed)) => {
                self.run_half_rows(a, rounded, packed, n, out)
            }
            (GgmlType::F16, QActs::F16(a, rounded, packed)) => {
                let Ok(w) = bytemuck::try_cast_slice::<u8, f16>(b) else {
                    return out.fill(0.0);
                };
                if self.run_half_batch(w, rounded, packed, n, out) {
                    return;
                }
                #[cfg(target_arch = "x86_64")]
                if self.cols.is_multiple_of(32) {
                    let tiles = tiles!(tile_f16::f16::<TILE_ROWS, 1>, tile_f16::f16_wide);
                    if let (Some(tiles), Ok(wc), Ok(ac)) = (
                        tiles,
                        bytemuck::try_cast_slice::<f16, tile_f16::Chunk>(w),
                        bytemuck::try_cast_slice::<f16, tile_f16::Chunk>(a),
                    ) {
                        return self.run_tiled(wc, ac, self.cols / 32, n, out, &tiles);
                    }
                }
                self.run_rows(n, out, |r, t| {
                    let cols = self.cols;
                    dot_float::dot_half(&w[r * cols..(r + 1) * cols], &a[t * cols..(t + 1) * cols])
                })
            }
            (GgmlType::Q4_0, QActs::Q8_0(a, terms)) if self.layout == Layout::Lanes => {
                self.run_lanes::<lanes::Q4_0x16, _>(a, terms, n, out, lane_kernels!(q4_0))
            }
            (GgmlType::Q8_0, QActs::Q8_0(a, terms)) if self.layout == Layout::Lanes => {
                self.run_lanes::<lanes::Q8_0x16, _>(a, terms, n, out, lane_kernels!(q8_0))
            }
            (GgmlType::Q4_1, QActs::Q8_1(a, terms)) if self.layout == Layout::Lanes => {
                self.run_lanes::<lanes::Q4_1x16, _>(a, terms, n, out, lane_kernels!(q4_1))
            }
            (GgmlType::Q5_0, QActs::Q8_0(a, terms)) if self.layout == Layout::Lanes => {
                self.run_lanes::<lanes::Q5_0x16, _>(a, terms, n, out, lane_kernels!(q5_0))
            }
            (GgmlType::Q5_1, QActs::Q8_1(a, terms)) if self.layout == Layout::Lanes => {
                self.run_lanes::<lanes::Q5_1x16, _>(a, terms, n, out, lane_kernels!(q5_1))
            }
            (GgmlType::Q6_K, QActs::Q8K(a, terms)) if self.layout == Layout::Lanes => {
                let k = lane_kernels!(q6_k);
                self.run_lanes_with(a, terms, QK_K, n, out, k, lanes_k::reference)
            }
            (GgmlType::Q4_K, QActs::Q8K(a, terms)) if self.layout == Layout::Lanes => {
                let k = lane_kernels!(q4_k);
                let reference = lanes_k45::reference::<lanes_k45::Q4Kx16>;
                self.run_lanes_with(a, terms, QK_K, n, out, k, reference)
            }
            (GgmlType::Q5_K, QActs::Q8K(a, terms)) if self.layout == Layout::Lanes => {
                let k = lane_kernels!(q5_k);
                let reference = lanes_k45::reference::<lanes_k45::Q5Kx16>;
                self.run_lanes_with(a, terms, QK_K, n, out, k, reference)
            }
            (GgmlType::Q2_K, QActs::Q8K(a, terms)) if self.layout == Layout::Lanes => {
                let k = lane_kernels!(q2_k);
                self.run_lanes_with(a, terms, QK_K, n, out, k, lanes_k23::reference_q2_k)
            }
            (GgmlType::Q3_K, QActs::Q8K(a, terms)) if self.layout == Layout::Lanes => {
                let k = lane_kernels!(q3_k);
                self.run_lanes_with(a, terms, QK_K, n, out, k, lanes_k23::reference_q3_k)
            }
            (GgmlType::Q4_0, QActs::Q8_0(a, _)) => self.legacy(
                a,
                n,
                out,
                tiles!(tile::q4_0::<TILE_ROWS, 1>, tile::q4_0_wide),
                dot_q4::vec_dot_q4_0_q8_0,
            ),
            (GgmlType::Q5_0, QActs::Q8_0(a, _)) => self.legacy(
                a,
                n,
                out,
                tiles!(tile::q5_0::<TILE_ROWS, 1>, tile::q5_0_wide),
                dot_q5::vec_dot_q5_0_q8_0,
            ),
            (GgmlType::Q8_0, QActs::Q8_0(a, _)) => self.legacy(
                a,
                n,
                out,
                tiles!(tile::q8_0::<TILE_ROWS, 1>, tile::q8_0_wide),
                dot_q8_0::vec_dot_q8_0_q8_0,
            ),
            (GgmlType::Q4_1, QActs::Q8_1(a, _)) => self.legacy(
                a,
                n,
                out,
                tiles!(tile::q4_1::<TILE_ROWS, 1>, tile::q4_1_wide),
                dot_q4::vec_dot_q4_1_q8_1,
            ),
            (GgmlType::Q5_1, QActs::Q8_1(a, _)) => self.legacy(
                a,
                n,
                out,
                tiles!(tile::q5_1::<TILE_ROWS, 1>, tile::q5_1_wide),
                dot_q5::vec_dot_q5_1_q8_1,
            ),
            (GgmlType::Q2_K, QActs::Q8K(a, _)) => self.k_quant::<BlockQ2K>(
                a,
                n,
                out,
                tiles!(tile_k235::q2_k::<TILE_ROWS, 1>, tile_k235::q2_k_wide),
            ),
            (GgmlType::Q3_K, QActs::Q8K(a, _)) => self.k_quant::<BlockQ3K>(
                a,
                n,
                out,
                tiles!(tile_k235::q3_k::<TILE_ROWS, 1>, tile_k235::q3_k_wide),
            ),
            (GgmlType::Q4_K, QActs::Q8K(a, _)) => self.k_quant::<BlockQ4K>(
                a,
                n,
                out,
                tiles!(tile_k::q4_k::<TILE_ROWS, 1>, tile_k::q4_k_wide),
            ),
            (GgmlType::Q5_K, QActs::Q8K(a, _)) => self.k_quant::<BlockQ5K>(
                a,
                n,
                out,
                tiles!(tile_k235::q5_k::<TILE_ROWS, 1>, tile_k235::q5_k_wide),
            ),
            (GgmlType::Q6_K, QActs::Q8K(a, _)) => self.k_quant::<BlockQ6K>(
                a,
                n,
                out,
                tiles!(tile_k::q6_k::<TILE_ROWS, 1>, tile_k::q6_k_wide),
            ),
            // Activations converted for another type: a programming error; leave zeros.
            _ => out.fill(0.0),
        }
    }

    /// Rows `r0..r1` as a matrix computed on the calling thread (`r0` a multiple of
    /// [`ROWS_PER_TASK`], so packed groups stay whole).
    fn rows_view(&self, r0: usize, r1: usize) -> QMatrix<'a> {
        let group = self.layout.group_rows();
        debug_assert!(r0.is_multiple_of(group) && r0 <= r1 && r1 <= self.rows);
        let rb = self.row_bytes();
        let end = r0 + (r1 - r0).div_ceil(group) * group;
        QMatrix {
            bytes: &self.bytes[r0 * rb..end * rb],
            rows: r1 - r0,
            serial: true,
            ..*self
        }
    }

    /// Row `r` of a matrix in the lane layout, as the file's bytes.
    fn lane_row(&self, r: usize) -> Vec<u8> {
        fn row<G: lanes::LaneGroup>(bytes: &[u8], ts: usize, bpr: usize, r: usize) -> Vec<u8> {
            let Some(groups) = view::<G>(bytes, lanes::LANE_ROWS * ts) else {
                return Vec::new();
            };
            groups[r / lanes::LANE_ROWS * bpr..][..bpr]
                .iter()
                .flat_map(|g| bytemuck::bytes_of(&g.block(r % lanes::LANE_ROWS)).to_vec())
                .collect()
        }
        let (ts, bpr) = (self.ttype.type_size() as usize, self.cols / QK);
        match self.ttype {
            GgmlType::Q4_0 => row::<lanes::Q4_0x16>(self.bytes, ts, bpr, r),
            GgmlType::Q4_1 => row::<lanes::Q4_1x16>(self.bytes, ts, bpr, r),
            GgmlType::Q5_0 => row::<lanes::Q5_0x16>(self.bytes, ts, bpr, r),
            GgmlType::Q5_1 => row::<lanes::Q5_1x16>(self.bytes, ts, bpr, r),
            GgmlType::Q8_0 => row::<lanes::Q8_0x16>(self.bytes, ts, bpr, r),
            GgmlType::Q6_K => row::<lanes_k::Q6Kx16>(self.bytes, ts, self.cols / QK_K, r),
            GgmlType::Q4_K => row::<lanes_k45::Q4Kx16>(self.bytes, ts, self.cols / QK_K, r),
            GgmlType::Q5_K => row::<lanes_k45::Q5Kx16>(self.bytes, ts, self.cols / QK_K, r),
            GgmlType::Q2_K => row::<lanes_k23::Q2Kx16>(self.bytes, ts, self.cols / QK_K, r),
            GgmlType::Q3_K => row::<lanes_k23::Q3Kx16>(self.bytes, ts, self.cols / QK_K, r),
            GgmlType::F16 | GgmlType::BF16 => {
                // Value k of row r sits at k · 16 + r % 16 of its group (`repack::half_group`).
                let group = 2 * self.cols * lanes::LANE_ROWS;
                self.bytes[r / lanes::LANE_ROWS * group..][..group]
                    .chunks_exact(2 * lanes::LANE_ROWS)
                    .flat_map(|col| {
                        let at = 2 * (r % lanes::LANE_ROWS);
                        [col[at], col[at + 1]]
                    })
                    .collect()
            }
            _ => Vec::new(),
        }
    }

    /// Weights of one of the 32-value block types (`W`) against activation blocks `A`, with the
    /// tiled products where the CPU has them, else with the per-row product `dot`.
    fn legacy<W: Pod + Sync, A: Sync>(
        &self,
        acts: &[A],
        n: usize,
        out: &mut [f32],
        tiles: Option<Tiles<W, A>>,
        dot: impl Fn(&[W], &[A]) -> f32 + Sync,
    ) {
        let Some(w) = view::<W>(self.bytes, self.ttype.type_size() as usize) else {
            return out.fill(0.0);
        };
        let bpr = self.cols / QK;
        if let Some(tiles) = tiles {
            return self.run_tiled(w, acts, bpr, n, out, &tiles);
        }
        if self.layout != Layout::Rows {
            // Packed only where the tiles run: unreachable, but never read packed rows as
            // row-major ones.
            return out.fill(0.0);
        }
        self.run_rows(n, out, |r, t| {
            dot(&w[r * bpr..(r + 1) * bpr], &acts[t * bpr..(t + 1) * bpr])
        });
    }

    /// k-quant weights (`W`) against Q8_K activations, with the tiles where there are tiles for
    /// the type and the CPU runs them, else with candle's product.
    fn k_quant<W: CandleTwin + Sync>(
        &self,
        acts: &[BlockQ8K],
        n: usize,
        out: &mut [f32],
        tiles: Option<Tiles<W, BlockQ8K>>,
    ) where
        W::Candle: candle::GgmlType<VecDotType = candle::BlockQ8K>,
    {
        let Some(w) = view::<W>(self.bytes, self.ttype.type_size() as usize) else {
            return out.fill(0.0);
        };
        if let Some(tiles) = tiles {
            return self.run_tiled(w, acts, self.cols / QK_K, n, out, &tiles);
        }
        if self.layout != Layout::Rows {
            // Packed only where the tiles run.
            return out.fill(0.0);
        }
        let (w, acts) = (as_candle(w), as_candle(acts));
        let bpr = self.cols / QK_K;
        let cols = self.cols;
        self.run_rows(n, out, |r, t| {
            <W::Candle as candle::GgmlType>::vec_dot(
                cols,
                &w[r * bpr..(r + 1) * bpr],
                &acts[t * bpr..(t + 1) * bpr],
            )
        });
    }

    /// A matrix in the lane layout (group blocks `G`) against activation blocks `A` and their
    /// terms: every group of [`lanes::LANE_ROWS`] rows × [`lanes::LANE_TOKENS`] tokens with the
    /// wide kernel, the batch's last tokens one at a time, groups in parallel.
    fn run_lanes<G: lanes::LaneCodes + Sync, A: lanes::ActCodes + Sync>(
        &self,
        acts: &[A],
        terms: &[lanes::ActTerms],
        n: usize,
        out: &mut [f32],
        kernels: Option<LaneKernels<G, A>>,
    ) {
        self.run_lanes_with(acts, terms, QK, n, out, kernels, lanes::reference::<G, A>);
    }

    /// [`QMatrix::run_lanes`] for any lane layout: `block` values per block, `reference` the
    /// scalar product the kernels equal (and that runs where they cannot).
    #[allow(clippy::too_many_arguments)]
    fn run_lanes_with<G: Pod + Sync, A: Sync>(
        &self,
        acts: &[A],
        terms: &[lanes::ActTerms],
        block: usize,
        n: usize,
        out: &mut [f32],
        kernels: Option<LaneKernels<G, A>>,
        reference: LaneReference<G, A>,
    ) {
        use lanes::{LANE_ROWS, LANE_TOKENS};
        let ts = self.ttype.type_size() as usize;
        let Some(w) = view::<G>(self.bytes, LANE_ROWS * ts) else {
            return out.fill(0.0);
        };
        let bpr = self.cols / block;
        let acts_of = |t: usize| &acts[t * bpr..][..bpr];
        let terms_of = |t: usize| &terms[t * bpr..][..bpr];
        self.by_row_ranges(n, out, |r0, r1, dst| {
            for g in (r0..r1).step_by(LANE_ROWS) {
                let wg = &w[g / LANE_ROWS * bpr..][..bpr];
                let live = LANE_ROWS.min(r1 - g);
                let mut put = |t: usize, v: &[f32; LANE_ROWS]| {
                    let to = &mut dst.token(t)[g - r0..];
                    if live == LANE_ROWS {
                        to[..LANE_ROWS].copy_from_slice(v); // a fixed-size copy, no call
                    } else {
                        to[..live].copy_from_slice(&v[..live]);
                    }
                };
                let Some(k) = &kernels else {
                    for t in 0..n {
                        put(t, &reference(wg, acts_of(t), terms_of(t)));
                    }
                    continue;
                };
                let mut t0 = 0;
                while n - t0 >= LANE_TOKENS {
                    let a = std::array::from_fn(|j| acts_of(t0 + j));
                    let tm = std::array::from_fn(|j| terms_of(t0 + j));
                    // SAFETY: `LaneKernels` are built only where `cpu::has_avx512_vnni()` holds,
                    // the features the kernels are compiled for.
                    let v = unsafe { (k.wide)(wg, a, tm) };
                    for (j, v) in v.iter().enumerate() {
                        put(t0 + j, v);
                    }
                    t0 += LANE_TOKENS;
                }
                for t in t0..n {
                    // SAFETY: as above.
                    let v = unsafe { (k.narrow)(wg, [acts_of(t)], [terms_of(t)]) };
                    put(t, &v[0]);
                }
            }
        });
    }

    /// Row-major BF16 weights × `n` tokens (`a`, rounded to bf16; `rounded`, the same as f32;
    /// `packed`, those packed for the batch kernels): batches by [`QMatrix::run_half_batch`] where
    /// it runs, otherwise the per-row product.
    fn run_half_rows(
        &self,
        a: &[bf16],
        rounded: &[f32],
        packed: &[f32],
        n: usize,
        out: &mut [f32],
    ) {
        let Ok(w) = bytemuck::try_cast_slice::<u8, bf16>(self.bytes) else {
            return out.fill(0.0);
        };
        if self.run_half_batch(w, rounded, packed, n, out) {
            return;
        }
        let cols = self.cols;
        self.run_rows(n, out, |r, t| {
            dot_float::dot_half(&w[r * cols..(r + 1) * cols], &a[t * cols..(t + 1) * cols])
        })
    }

    /// F16 or BF16 weights (`w`, row-major) × a batch of tokens rounded to the weights' format (as
    /// f32) with `gemm_f16`'s AVX-512 kernels: the tokens packed by passes of 16 and each group of
    /// 16 rows transposed once, then every pass, and the last tokens by 4 and 1.
    ///
    /// Returns `false`, computing nothing, for batches of fewer than `gemm_f16::MIN_TOKENS` tokens
    /// and where the CPU has no AVX-512 F.
    #[cfg(target_arch = "x86_64")]
    fn run_half_batch<H: half_float::HalfFloat>(
        &self,
        w: &[H],
        acts: &[f32],
        packed: &[f32],
        n: usize,
        out: &mut [f32],
    ) -> bool {
        use gemm_f16::{GROUP, TOKENS};
        if n < gemm_f16::MIN_TOKENS || !cpu::has_avx512f() {
            return false;
        }
        let (rows, cols) = (self.rows, self.cols);
        let token = |t: usize| &acts[t * cols..(t + 1) * cols];
        let passes = n / TOKENS;
        let packed = packed_batch(packed, acts, n, cols);
        self.by_row_ranges(n, out, |r0, r1, dst| {
            let mut group = vec![0f32; cols * GROUP];
            for g in (r0..r1).step_by(GROUP) {
                // SAFETY: as below.
                unsafe { gemm_f16::transpose_group_avx512(w, rows, cols, g, &mut group) };
                let live = GROUP.min(r1 - g);
                let mut put = |t0: usize, v: &[[f32; GROUP]]| {
                    for (j, v) in v.iter().enumerate() {
                        dst.token(t0 + j)[g - r0..][..live].copy_from_slice(&v[..live]);
                    }
                    t0 + v.len()
                };
                for (p, pass) in packed.chunks_exact(TOKENS * cols).enumerate() {
                    // SAFETY: `run_f16_batch` runs only where `cpu::has_avx512f()` holds, the
                    // features the kernels are compiled for.
                    put(p * TOKENS, &unsafe { gemm_f16::tile_packed(&group, pass) });
                }
                let mut t0 = passes * TOKENS;
                while t0 < n {
                    // SAFETY (both): as above.
                    t0 = if n - t0 >= 4 {
                        let ts = std::array::from_fn(|j| token(t0 + j));
                        put(t0, &unsafe { gemm_f16::tile::<4>(&group, ts) })
                    } else {
                        put(t0, &unsafe { gemm_f16::tile::<1>(&group, [token(t0)]) })
                    };
                }
            }
        });
        true
    }

    /// F16 or BF16 weights packed in transposed groups (`repack::half_group`) × `n` tokens rounded
    /// to the weights' format (`acts`, as f32). With AVX-512 F: batches of `gemm_f16::MIN_TOKENS`
    /// or more by packed passes of 16 tokens, the rest 4 tokens at a time, single tokens on up to
    /// four groups at a time (independent chains). Every path computes `gemm_f16`'s reference order; without AVX-512 F,
    /// that reference itself.
    fn run_half_lanes<H: half_float::HalfFloat>(
        &self,
        acts: &[f32],
        packed: &[f32],
        n: usize,
        out: &mut [f32],
    ) {
        const G: usize = lanes::LANE_ROWS;
        let Ok(w) = bytemuck::try_cast_slice::<u8, H>(self.bytes) else {
            return out.fill(0.0);
        };
        let cols = self.cols;
        let group = |g: usize| &w[g * cols * G..(g + 1) * cols * G];
        let token = |t: usize| &acts[t * cols..(t + 1) * cols];
        #[cfg(target_arch = "x86_64")]
        if cpu::has_avx512f() {
            use gemm_f16::{tile_lanes, TOKENS};
            let packed = packed_batch(packed, acts, n, cols);
            let passes = if n >= gemm_f16::MIN_TOKENS {
                n / TOKENS
            } else {
                0
            };
            self.by_row_ranges(n, out, |r0, r1, dst| {
                // Group `g`'s results for tokens `t0..`, the rows it has in `r0..r1`.
                let put = |dst: &mut RowsOut, g: usize, t0: usize, v: &[[f32; G]]| {
                    let live = G.min(r1 - g * G);
                    for (j, v) in v.iter().enumerate() {
                        dst.token(t0 + j)[g * G - r0..][..live].copy_from_slice(&v[..live]);
                    }
                };
                let groups = r0 / G..r1.div_ceil(G);
                for g in groups.clone() {
                    for (p, pass) in packed.chunks_exact(TOKENS * cols).enumerate() {
                        // SAFETY (every kernel call here): the CPU has AVX-512 F (checked above).
                        let v = unsafe { gemm_f16::tile_packed_lanes(group(g), pass) };
                        put(dst, g, p * TOKENS, &v);
                    }
                }
                let mut t0 = passes * TOKENS;
                while t0 + 4 <= n {
                    let ts = std::array::from_fn(|j| token(t0 + j));
                    for g in groups.clone() {
                        // SAFETY: as above.
                        put(
                            dst,
                            g,
                            t0,
                            &unsafe { tile_lanes::<H, 1, 4>([group(g)], ts) }[0],
                        );
                    }
                    t0 += 4;
                }
                for t in t0..n {
                    let mut g = groups.start;
                    while g < groups.end {
                        let left = groups.end - g;
                        let v: &[[[f32; G]; 1]] = if left >= 4 {
                            // SAFETY: as above.
                            &unsafe {
                                tile_lanes::<H, 4, 1>(
                                    std::array::from_fn(|i| group(g + i)),
                                    [token(t)],
                                )
                            }
                        } else if left >= 2 {
                            // SAFETY: as above.
                            &unsafe { tile_lanes::<H, 2, 1>([group(g), group(g + 1)], [token(t)]) }
                        } else {
                            // SAFETY: as above.
                            &unsafe { tile_lanes::<H, 1, 1>([group(g)], [token(t)]) }
                        };
                        for (i, v) in v.iter().enumerate() {
                            put(dst, g + i, t, v);
                        }
                        g += v.len();
                    }
                }
            });
            return;
        }
        let _ = packed; // the batch kernels' input, unused by the reference
        self.run_rows(n, out, |r, t| {
            let i = r % G;
            group(r / G)
                .chunks_exact(G)
                .zip(token(t))
                .fold(0f32, |acc, (col, &x)| col[i].widen().mul_add(x, acc))
        });
    }

    /// The F16 and BF16 batch kernels are x86-64's: elsewhere the per-row products run.
    #[cfg(not(target_arch = "x86_64"))]
    fn run_half_batch<H>(&self, _: &[H], _: &[f32], _: &[f32], _: usize, _: &mut [f32]) -> bool {
        false
    }

    /// Runs `dot(row, token)` for every row and token, rows in parallel, writing `out[t*rows + r]`.
    fn run_rows(&self, n: usize, out: &mut [f32], dot: impl Fn(usize, usize) -> f32 + Sync) {
        self.by_row_ranges(n, out, |r0, r1, dst| {
            for t in 0..n {
                for (r, o) in (r0..r1).zip(dst.token(t)) {
                    *o = dot(r, t);
                }
            }
        });
    }

    /// Runs `tiles` over every group of [`TILE_ROWS`] rows and [`TILE_TOKENS`] tokens (the last
    /// tokens of a batch, and single tokens, one at a time), rows in parallel. `w` holds `bpr`
    /// blocks per row, row after row, `acts` as many per token. A short last row group is copied
    /// interleaved block by block with its last row repeated; the extra results are dropped.
    fn run_tiled<W: Copy + Sync, A: Sync>(
        &self,
        w: &[W],
        acts: &[A],
        bpr: usize,
        n: usize,
        out: &mut [f32],
        tiles: &Tiles<W, A>,
    ) {
        let rows = self.rows;
        let token = |t: usize| &acts[t * bpr..][..bpr];
        self.by_row_ranges(n, out, |r0, r1, dst| {
            let mut t0 = 0;
            let mut padded = Vec::new();
            while t0 < n {
                let wide = n - t0 >= TILE_TOKENS;
                for g in (r0..r1).step_by(TILE_ROWS) {
                    let (ws, rs, bs) = if g + TILE_ROWS <= rows {
                        (&w[g * bpr..(g + TILE_ROWS) * bpr], bpr, 1)
                    } else {
                        padded.clear();
                        padded.extend((0..bpr).flat_map(|b| {
                            (0..TILE_ROWS).map(move |i| w[(g + i).min(rows - 1) * bpr + b])
                        }));
                        (&padded[..], 1, TILE_ROWS)
                    };
                    let live = TILE_ROWS.min(r1 - g);
                    if wide {
                        let ts: [&[A]; TILE_TOKENS] = std::array::from_fn(|j| token(t0 + j));
                        // SAFETY: `Tiles` are built only where `cpu::has_avx512_vnni()` holds, the
                        // features the tile functions are compiled for.
                        let v = unsafe { (tiles.wide)(ws, rs, bs, ts) };
                        for j in 0..TILE_TOKENS {
                            let row = &mut dst.token(t0 + j)[g - r0..];
                            for (o, vr) in row.iter_mut().zip(&v[..live]) {
                                *o = vr[j];
                            }
                        }
                    } else {
                        // SAFETY: as above.
                        let v = unsafe { (tiles.narrow)(ws, rs, bs, [token(t0)]) };
                        let row = &mut dst.token(t0)[g - r0..];
                        for (o, vr) in row.iter_mut().zip(&v[..live]) {
                            *o = vr[0];
                        }
                    }
                }
                t0 += if wide { TILE_TOKENS } else { 1 };
            }
        });
    }

    /// Splits the rows into ranges of [`ROWS_PER_TASK`] and runs `fill(r0, r1, dst)` for each in
    /// parallel, where `dst` is the view of `out` (`n × rows`, token-major) holding rows `r0..r1`
    /// of every token.
    fn by_row_ranges(
        &self,
        n: usize,
        out: &mut [f32],
        fill: impl Fn(usize, usize, &mut RowsOut) + Sync,
    ) {
        let rows = self.rows;
        if self.serial {
            return fill(0, rows, &mut RowsOut::tokens(out, n));
        }
        let per_task = rows_per_task(rows);
        if n == 1 {
            pool::for_each_chunk(out, per_task, |ci, chunk| {
                let r0 = ci * per_task;
                fill(r0, r0 + chunk.len(), &mut RowsOut::whole(chunk));
            });
            return;
        }
        let shared = SharedOut::new(out, n, rows);
        pool::for_each(rows.div_ceil(per_task), |ci| {
            let r0 = ci * per_task;
            let r1 = (r0 + per_task).min(rows);
            // SAFETY: each task takes its own range `r0..r1`; the ranges are disjoint.
            fill(r0, r1, &mut unsafe { shared.rows(r0, r1) });
        });
    }
}

/// Values from which work over a batch (activation conversion here, the element-wise operations of
/// `engine::ops`) is split over the pool: below it, one thread's work is shorter than waking
/// the others.
pub(crate) const PARALLEL_ITEMS: usize = 1 << 14;

/// `f` of each `len`-item chunk of `x`, in order; in parallel for large inputs (each chunk is
/// independent, so the result is the same either way).
fn per_block<T: Sync, B: Send>(x: &[T], len: usize, f: impl Fn(&[T]) -> B + Sync + Send) -> Vec<B> {
    if x.len() >= PARALLEL_ITEMS {
        pool::map(x.len() / len, |i| f(&x[i * len..(i + 1) * len]))
    } else {
        x.chunks_exact(len).map(f).collect()
    }
}

/// `x` quantized by blocks of `len` values with `quantize`, and each block's terms for the lane
/// kernels, in one pass (in parallel for large inputs).
fn quantize_blocks<B: Send>(
    x: &[f32],
    len: usize,
    quantize: fn(&[f32]) -> B,
    terms: fn(&B) -> lanes::ActTerms,
) -> (Vec<B>, Vec<lanes::ActTerms>) {
    per_block(x, len, |x| {
        let b = quantize(x);
        let t = terms(&b);
        (b, t)
    })
    .into_iter()
    .unzip()
}

/// Whether [`pack_batch`] packs a batch of `n` tokens: batches of `gemm_f16::MIN_TOKENS` or more
/// where the CPU has AVX-512 F (where the F16 batch kernels run).
fn packs_batch(n: usize) -> bool {
    #[cfg(target_arch = "x86_64")]
    return n >= gemm_f16::MIN_TOKENS && cpu::has_avx512f();
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = n;
        false
    }
}

/// Tokens of one task of [`convert_half`] and [`pack_batch`], and of one packed pass.
#[cfg(target_arch = "x86_64")]
const PASS_TOKENS: usize = gemm_f16::TOKENS;
#[cfg(not(target_arch = "x86_64"))]
const PASS_TOKENS: usize = 16;

/// The first `n / 16 · 16` tokens of `acts` (`n × cols`) packed by passes of 16 for the F16 batch
/// kernels where [`packs_batch`]; empty elsewhere.
#[cfg(target_arch = "x86_64")]
fn pack_batch(acts: &[f32], n: usize, cols: usize) -> Vec<f32> {
    if !packs_batch(n) {
        return Vec::new();
    }
    let mut packed = vec![0f32; n / PASS_TOKENS * PASS_TOKENS * cols];
    pool::for_each_chunk(&mut packed, PASS_TOKENS * cols, |p, pass| {
        pack_pass(
            &acts[p * PASS_TOKENS * cols..][..PASS_TOKENS * cols],
            cols,
            pass,
        );
    });
    packed
}

/// One pass of 16 tokens (`tokens`: `16 × cols`) packed into `pass`.
fn pack_pass(tokens: &[f32], cols: usize, pass: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: packing runs only where `packs_batch` holds, which checks AVX-512 F.
    unsafe {
        gemm_f16::pack_tokens_avx512(tokens, cols, pass)
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (tokens, cols, pass);
}

/// `packed` where it holds [`pack_batch`]'s packing of `acts` (converted with the activations),
/// that packing made now otherwise.
#[cfg(target_arch = "x86_64")]
fn packed_batch<'p>(
    packed: &'p [f32],
    acts: &[f32],
    n: usize,
    cols: usize,
) -> std::borrow::Cow<'p, [f32]> {
    use gemm_f16::TOKENS;
    let want = if n >= gemm_f16::MIN_TOKENS {
        n / TOKENS * TOKENS * cols
    } else {
        0
    };
    if packed.len() == want {
        std::borrow::Cow::Borrowed(packed)
    } else {
        std::borrow::Cow::Owned(pack_batch(acts, n, cols))
    }
}

/// [`convert_half`] into new buffers.
fn half_acts<H: half_float::HalfFloat>(
    x: &[f32],
    n: usize,
    cols: usize,
) -> (Vec<H>, Vec<f32>, Vec<f32>) {
    let mut bufs = (Vec::new(), Vec::new(), Vec::new());
    convert_half(x, n, cols, (&mut bufs.0, &mut bufs.1, &mut bufs.2));
    bufs
}

/// The F16 or BF16 weights' activations from `x` (`n × cols`) into `h`, `r` and `packed` (resized
/// to fit): `x` rounded to the weights' format, the rounded values back as f32, and those packed
/// by [`pack_batch`].
/// One parallel loop over passes of 16 tokens does all three for large batches (`half`'s
/// vectorised slice conversions); small ones run here.
fn convert_half<H: half_float::HalfFloat>(
    x: &[f32],
    n: usize,
    cols: usize,
    (h, r, packed): (&mut Vec<H>, &mut Vec<f32>, &mut Vec<f32>),
) {
    h.resize(x.len(), H::round(0.0));
    r.resize(x.len(), 0.0);
    let passes = if packs_batch(n) { n / PASS_TOKENS } else { 0 };
    let span = PASS_TOKENS * cols;
    packed.resize(passes * span, 0.0);
    // One task: a pass's (or the last tokens') values, and its packing if it is a whole pass.
    type Task<'b, H> = (&'b mut [H], &'b mut [f32], Option<&'b mut [f32]>);
    let mut tasks: Vec<Task<H>> = h
        .chunks_mut(span)
        .zip(r.chunks_mut(span))
        .zip(
            packed
                .chunks_exact_mut(span)
                .map(Some)
                .chain(std::iter::repeat_with(|| None)),
        )
        .map(|((h, r), pass)| (h, r, pass))
        .collect();
    let convert = |p: usize, (h, r, pass): &mut Task<H>| {
        H::round_slice(&x[p * span..][..h.len()], h);
        H::widen_slice(h, r);
        if let Some(pass) = pass {
            pack_pass(r, cols, pass);
        }
    };
    if x.len() >= PARALLEL_ITEMS {
        pool::for_each_chunk(&mut tasks, 1, |p, task| convert(p, &mut task[0]));
    } else {
        tasks
            .iter_mut()
            .enumerate()
            .for_each(|(p, task)| convert(p, task));
    }
}

/// Several matrix × one-token products in one parallel loop: `out_j = W_j · x` for each job
/// `(W_j, x converted for W_j, out_j)`. Decoding runs Q, K and V (or gate and up) this way, so the
/// worker threads meet once per group instead of once per matrix.
pub fn matmul_many(jobs: Vec<(QMatrix<'_>, &QActs, &mut [f32])>) {
    let per_task = rows_per_task(jobs.iter().map(|(m, _, _)| m.rows).sum());
    let mut tasks: Vec<(usize, usize)> = Vec::new();
    let mut inputs = Vec::with_capacity(jobs.len());
    for (j, (m, acts, out)) in jobs.into_iter().enumerate() {
        debug_assert_eq!(out.len(), m.rows);
        tasks.extend((0..m.rows).step_by(per_task).map(|r0| (j, r0)));
        let rows = m.rows;
        inputs.push((m, acts, SharedOut::new(out, 1, rows)));
    }
    pool::for_each(tasks.len(), |i| {
        let (j, r0) = tasks[i];
        let (m, acts, out) = &inputs[j];
        let r1 = (r0 + per_task).min(m.rows);
        // SAFETY: each task takes its own range `r0..r1` of job `j`'s output; they are disjoint.
        let mut rows = unsafe { out.rows(r0, r1) };
        m.rows_view(r0, r1).matmul_q(acts, 1, rows.token(0));
    });
}

/// Quantizes `x` (a multiple of the block size) with llama.cpp's reference quantizer
/// (`quantize_row_*_ref`, what `llama-quantize` writes without an importance matrix) and returns
/// the bytes in ggml layout: builds test weights for the kernel tests and the engine's own tests.
#[doc(hidden)]
pub fn quantize_for_tests(ttype: GgmlType, x: &[f32]) -> Option<Vec<u8>> {
    if !is_supported(ttype) {
        return None;
    }
    let t = QuantType::from_ggml_id(ttype.id())?;
    if x.is_empty() {
        return Some(Vec::new());
    }
    t.quantize(x, x.len(), None).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic pseudo-random values in [-1, 1).
    fn rand_vec(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = shuku_testkit::TestRng(seed);
        (0..n).map(|_| rng.signed()).collect()
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
        &bytemuck::cast_slice(v)[..len]
    }

    /// The engine's matmul against the scalar reference (dequantize the weights, f32 dot) for every
    /// type, over several tokens, on the file's layout and on the packed copy where this CPU packs
    /// the type (37 rows: a short last group). The tolerance covers the activation quantization
    /// (8-bit for the block types, f16/bf16 for the float types).
    #[test]
    fn matmul_matches_dequantized_reference_for_every_type() {
        let (rows, cols, n) = (37, 1536, 21);
        let w = rand_vec(rows * cols, 1);
        let x = rand_vec(n * cols, 2);
        for &t in SUPPORTED_TYPES {
            let bytes = quantize_for_tests(t, &w).unwrap();
            let store = aligned(&bytes);
            let plain = QMatrix::new(as_bytes(&store, bytes.len()), t, rows, cols).unwrap();
            let packed = repack::PackedMatrix::pack(&plain);
            let packed = packed.as_ref().map(|p| p.matrix().unwrap());
            for m in std::iter::once(plain).chain(packed) {
                check_against_dequantized(&m, &x, n);
                check_against_dequantized(&m, &x[..cols], 1);
            }
        }
    }

    fn check_against_dequantized(m: &QMatrix, x: &[f32], n: usize) {
        let (t, rows, cols) = (m.ttype, m.rows, m.cols);
        let mut out = vec![0f32; n * rows];
        m.matmul(x, n, &mut out);
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
            "{t} ({:?}): max error {max_err} (largest |ref| {max_ref})",
            m.layout
        );
    }

    /// Converting into activations of an earlier, larger or smaller batch (or of another type)
    /// gives the same products as converting afresh: reused buffers keep no stale values. 40
    /// tokens (two packed passes and a remainder), then 21, then 40 again.
    #[test]
    fn reused_activation_buffers_give_fresh_products() {
        let (rows, cols) = (37, 512);
        let w = rand_vec(rows * cols, 3);
        let x = rand_vec(40 * cols, 4);
        let mut acts = QActs::Q8_0(Vec::new(), Vec::new());
        for t in [GgmlType::F32, GgmlType::F16, GgmlType::BF16, GgmlType::Q4_0] {
            let bytes = quantize_for_tests(t, &w).unwrap();
            let store = aligned(&bytes);
            let plain = QMatrix::new(as_bytes(&store, bytes.len()), t, rows, cols).unwrap();
            let packed = repack::PackedMatrix::pack(&plain);
            let packed = packed.as_ref().map(|p| p.matrix().unwrap());
            for m in std::iter::once(plain).chain(packed) {
                for n in [40, 21, 40] {
                    let x = &x[..n * cols];
                    let mut fresh = vec![0f32; n * rows];
                    m.matmul(x, n, &mut fresh);
                    m.quantize_acts_into(x, n, &mut acts);
                    let mut reused = vec![0f32; n * rows];
                    m.matmul_q(&acts, n, &mut reused);
                    assert_eq!(fresh, reused, "{t} ({:?}), {n} tokens", m.layout);
                }
            }
        }
    }

    /// Dequantized weights stay close to the originals (checks the block casts read the right
    /// bytes, not just self-consistency).
    #[test]
    fn dequantize_row_recovers_weights() {
        let (rows, cols) = (4, 256);
        let w = rand_vec(rows * cols, 7);
        for &t in SUPPORTED_TYPES {
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

    /// `matmul_many` (one parallel loop over row ranges of several matrices, each range a
    /// `rows_view`) equals one `matmul` per matrix bit for bit, for packed matrices (where this
    /// CPU packs the type) whose row counts are not multiples of the group.
    #[test]
    fn matmul_many_equals_separate_products() {
        let cols = 512;
        let x = rand_vec(cols, 5);
        for &t in SUPPORTED_TYPES {
            let shapes = [37usize, 16, 5];
            let stores: Vec<(Vec<u32>, usize)> = shapes
                .iter()
                .enumerate()
                .map(|(i, &rows)| {
                    let bytes =
                        quantize_for_tests(t, &rand_vec(rows * cols, 10 + i as u64)).unwrap();
                    (aligned(&bytes), bytes.len())
                })
                .collect();
            let plain: Vec<QMatrix> = stores
                .iter()
                .zip(shapes)
                .map(|((s, len), rows)| QMatrix::new(as_bytes(s, *len), t, rows, cols).unwrap())
                .collect();
            let packed: Vec<Option<repack::PackedMatrix>> =
                plain.iter().map(repack::PackedMatrix::pack).collect();
            let mats: Vec<QMatrix> = plain
                .iter()
                .zip(&packed)
                .map(|(m, p)| p.as_ref().map_or(*m, |p| p.matrix().unwrap()))
                .collect();
            let acts = mats[0].quantize_acts(&x, 1);
            let product = |m: &QMatrix| {
                let mut out = vec![0f32; m.rows()];
                m.matmul_q(&acts, 1, &mut out);
                out
            };
            let want: Vec<Vec<f32>> = mats.iter().map(product).collect();
            let mut got: Vec<Vec<f32>> = shapes.iter().map(|&r| vec![0f32; r]).collect();
            matmul_many(
                mats.iter()
                    .zip(got.iter_mut())
                    .map(|(m, o)| (*m, &acts, o.as_mut_slice()))
                    .collect(),
            );
            assert_eq!(got, want, "{t}");
        }
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

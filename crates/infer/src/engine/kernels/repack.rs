//! Weight matrices copied at load time into the layouts of the engine's kernels.
//!
//! The block types (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 and the k-quants Q2_K … Q6_K) go to the lane
//! layouts of [`lanes`], [`lanes_k`], [`lanes_k45`] and [`lanes_k23`]: 16 rows per group, one row
//! per 32-bit lane, whose kernels sum each block exactly in integers for 16 rows at once (their
//! products differ from the per-row ones in the last bits). F16 and BF16 go to the same grouping,
//! each group transposed (a column's 16 values side by side, `gemm_f16`), so their batches
//! multiply without transposing the weights in every product. A group's blocks lie together, so the whole
//! matrix is one forward stream that the hardware prefetcher keeps ahead of the arithmetic.
//!
//! Types are packed only where the CPU runs the lane kernels; a packed matrix has the size of its
//! rows (rounded up to whole groups), and the caller releases the file pages of a packed tensor,
//! so the weights are held once.

use super::half_float::HalfFloat;
use super::{cpu, lanes, lanes_k, lanes_k23, lanes_k45, KernelError, QMatrix};
use half::{bf16, f16};
use shuku_gguf::GgmlType;

/// A matrix in its lane layout: groups of [`lanes::LANE_ROWS`] rows; a short last group repeats
/// the last row.
#[derive(Debug)]
pub struct PackedMatrix {
    /// 8-byte words so every block struct is aligned.
    words: Vec<u64>,
    len: usize,
    ttype: GgmlType,
    rows: usize,
    cols: usize,
}

/// Whether matrices of type `t` are packed on this CPU: the types with lane layouts, where their
/// kernels run.
pub fn packs(t: GgmlType) -> bool {
    cpu::has_avx512_vnni() && in_lanes(t)
}

/// The types with a lane layout ([`lanes`]).
pub(super) fn in_lanes(t: GgmlType) -> bool {
    matches!(
        t,
        GgmlType::Q4_0
            | GgmlType::Q4_1
            | GgmlType::Q5_0
            | GgmlType::Q5_1
            | GgmlType::Q8_0
            | GgmlType::Q2_K
            | GgmlType::Q3_K
            | GgmlType::Q4_K
            | GgmlType::Q5_K
            | GgmlType::Q6_K
            | GgmlType::F16
            | GgmlType::BF16
    )
}

/// Bytes of `rows` rows padded to whole groups of `group` rows.
pub(super) fn padded_len(rows: usize, group: usize, row_bytes: usize) -> Option<usize> {
    rows.div_ceil(group)
        .checked_mul(group)?
        .checked_mul(row_bytes)
}

impl PackedMatrix {
    /// `m`'s rows in their lane layout, or `None` when its type is not packed on this CPU or `m`
    /// is already packed.
    pub fn pack(m: &QMatrix<'_>) -> Option<PackedMatrix> {
        if !packs(m.ttype) || m.layout != super::Layout::Rows || m.rows == 0 {
            return None;
        }
        let row_bytes = m.row_bytes();
        match m.ttype {
            GgmlType::F16 => return pack_half::<f16>(m),
            GgmlType::BF16 => return pack_half::<bf16>(m),
            _ => {}
        }
        let bpr = m.cols / m.ttype.block_size() as usize;
        let groups = match m.ttype {
            GgmlType::Q6_K => lane_words::<lanes_k::Q6Kx16>(m.bytes, bpr)?,
            GgmlType::Q4_K => lane_words::<lanes_k45::Q4Kx16>(m.bytes, bpr)?,
            GgmlType::Q5_K => lane_words::<lanes_k45::Q5Kx16>(m.bytes, bpr)?,
            GgmlType::Q2_K => lane_words::<lanes_k23::Q2Kx16>(m.bytes, bpr)?,
            GgmlType::Q3_K => lane_words::<lanes_k23::Q3Kx16>(m.bytes, bpr)?,
            GgmlType::Q4_0 => lane_words::<lanes::Q4_0x16>(m.bytes, bpr)?,
            GgmlType::Q4_1 => lane_words::<lanes::Q4_1x16>(m.bytes, bpr)?,
            GgmlType::Q5_0 => lane_words::<lanes::Q5_0x16>(m.bytes, bpr)?,
            GgmlType::Q5_1 => lane_words::<lanes::Q5_1x16>(m.bytes, bpr)?,
            GgmlType::Q8_0 => lane_words::<lanes::Q8_0x16>(m.bytes, bpr)?,
            _ => return None,
        };
        let len = padded_len(m.rows, lanes::LANE_ROWS, row_bytes)?;
        Some(PackedMatrix::holding(m, groups, len))
    }

    /// `m`'s packed form: `len` bytes of `words`.
    fn holding(m: &QMatrix<'_>, words: Vec<u64>, len: usize) -> PackedMatrix {
        PackedMatrix {
            words,
            len,
            ttype: m.ttype,
            rows: m.rows,
            cols: m.cols,
        }
    }

    /// The packed matrix for the kernels.
    pub fn matrix(&self) -> Result<QMatrix<'_>, KernelError> {
        let bytes = &bytemuck::cast_slice::<u64, u8>(&self.words)[..self.len];
        QMatrix::packed(bytes, self.ttype, self.rows, self.cols)
    }
}

/// An F16 or BF16 matrix as transposed groups of [`lanes::LANE_ROWS`] rows ([`half_group`]).
fn pack_half<H: HalfFloat>(m: &QMatrix<'_>) -> Option<PackedMatrix> {
    let w = bytemuck::try_cast_slice::<u8, H>(m.bytes).ok()?;
    let group = m.cols.checked_mul(lanes::LANE_ROWS)?;
    let len = padded_len(m.rows, lanes::LANE_ROWS, m.row_bytes())?;
    let mut words = vec![0u64; len.div_ceil(8)];
    let out = &mut bytemuck::cast_slice_mut::<u64, H>(&mut words)[..len / 2];
    for (g, dst) in out.chunks_exact_mut(group).enumerate() {
        half_group(w, m.rows, m.cols, g * lanes::LANE_ROWS, dst);
    }
    Some(PackedMatrix::holding(m, words, len))
}

/// Rows `r0 … r0 + 15` of the row-major `rows × cols` F16 or BF16 matrix `w` (a short last group
/// repeats the last row) transposed into `out`: `out[k · 16 + i] = w[r0 + i][k]`. The packed
/// layout of F16 and BF16 matrices: a column of the group is one vector.
pub(super) fn half_group<H: HalfFloat>(
    w: &[H],
    rows: usize,
    cols: usize,
    r0: usize,
    out: &mut [H],
) {
    assert_eq!(out.len(), cols * lanes::LANE_ROWS);
    for i in 0..lanes::LANE_ROWS {
        let r = (r0 + i).min(rows - 1);
        for (k, &x) in w[r * cols..(r + 1) * cols].iter().enumerate() {
            out[k * lanes::LANE_ROWS + i] = x;
        }
    }
}

/// The rows in `bytes` (`bpr` blocks each) as lane group blocks, in 8-byte words.
fn lane_words<G: lanes::LaneGroup>(bytes: &[u8], bpr: usize) -> Option<Vec<u64>> {
    let rows = bytemuck::try_cast_slice::<u8, G::Block>(bytes).ok()?;
    let len = (rows.len() / bpr).div_ceil(lanes::LANE_ROWS) * bpr * size_of::<G>();
    let mut words = vec![0u64; len.div_ceil(8)];
    let out = &mut bytemuck::cast_slice_mut::<u64, u8>(&mut words)[..len];
    lanes::gather_rows::<G>(rows, bpr, bytemuck::try_cast_slice_mut(out).ok()?);
    Some(words)
}

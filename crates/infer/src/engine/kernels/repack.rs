//! Weight matrices copied at load time with their rows interleaved for the tiles.
//!
//! A tile reads block `b` of [`TILE_ROWS`] consecutive rows together. In the file's row-major
//! layout those blocks lie a row apart, so a single-token product walks `TILE_ROWS` separate
//! streams through memory; interleaved (block `b` of rows `4g…4g+3`, then block `b + 1` of the
//! same rows, …) the whole matrix is one forward stream, which the hardware prefetcher keeps ahead
//! of the arithmetic. On SmolLM2 Q4_0 this is what separates a decoding loop that waits on memory
//! from one that does not (llama.cpp's `--repack` measures the same effect on its own layouts).
//!
//! The blocks themselves are unchanged (same structs, same bytes), so every product over a packed
//! matrix equals the one over the file's bytes bit for bit. Only types with tiles are packed, and
//! only where the CPU runs the tiles; the caller releases the file pages of a packed tensor, so the
//! weights are held once.

use shuku_gguf::GgmlType;

use super::{cpu, KernelError, QMatrix, TILE_ROWS};

/// A matrix's blocks interleaved by groups of [`TILE_ROWS`] rows; a short last group repeats the
/// last row.
#[derive(Debug)]
pub struct PackedMatrix {
    /// 8-byte words so every block struct is aligned.
    words: Vec<u64>,
    len: usize,
    ttype: GgmlType,
    rows: usize,
    cols: usize,
}

/// Whether matrices of type `t` are packed on this CPU: the types with tiles, where they run.
pub fn packs(t: GgmlType) -> bool {
    cpu::has_avx512_vnni() && has_tiles(t)
}

/// The types the tiles read.
pub(super) fn has_tiles(t: GgmlType) -> bool {
    matches!(
        t,
        GgmlType::Q4_0
            | GgmlType::Q4_1
            | GgmlType::Q5_0
            | GgmlType::Q5_1
            | GgmlType::Q8_0
            | GgmlType::Q4_K
            | GgmlType::Q6_K
    )
}

/// Bytes of `rows` rows padded to whole tile groups.
pub(super) fn padded_len(rows: usize, row_bytes: usize) -> Option<usize> {
    rows.div_ceil(TILE_ROWS)
        .checked_mul(TILE_ROWS)?
        .checked_mul(row_bytes)
}

impl PackedMatrix {
    /// `m`'s rows interleaved, or `None` when its type is not packed on this CPU or `m` is
    /// already interleaved.
    pub fn pack(m: &QMatrix<'_>) -> Option<PackedMatrix> {
        if !packs(m.ttype) || m.interleaved || m.rows == 0 {
            return None;
        }
        let block = m.ttype.type_size() as usize;
        let row_bytes = m.row_bytes();
        let len = padded_len(m.rows, row_bytes)?;
        let mut words = vec![0u64; len.div_ceil(8)];
        let out = &mut bytemuck::cast_slice_mut::<u64, u8>(&mut words)[..len];
        for (g, group) in out.chunks_exact_mut(TILE_ROWS * row_bytes).enumerate() {
            for (k, dst) in group.chunks_exact_mut(block).enumerate() {
                let (b, i) = (k / TILE_ROWS, k % TILE_ROWS);
                let r = (g * TILE_ROWS + i).min(m.rows - 1);
                let src = r * row_bytes + b * block;
                dst.copy_from_slice(&m.bytes[src..src + block]);
            }
        }
        Some(PackedMatrix {
            words,
            len,
            ttype: m.ttype,
            rows: m.rows,
            cols: m.cols,
        })
    }

    /// The packed matrix for the kernels.
    pub fn matrix(&self) -> Result<QMatrix<'_>, KernelError> {
        let bytes = &bytemuck::cast_slice::<u64, u8>(&self.words)[..self.len];
        QMatrix::interleaved(bytes, self.ttype, self.rows, self.cols)
    }
}

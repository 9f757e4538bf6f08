//! The "row per lane" layout of Q4_0, Q4_1, Q5_0, Q5_1 and Q8_0 matrices, and its scalar reference
//! products.
//!
//! Why: the tiles of `tile` keep llama.cpp's per-row arithmetic (eight partial sums per block, each
//! scaled and accumulated in float), so for every 32 weights × one token they spend a conversion,
//! a multiply and a fused multiply-add per 8 lanes besides the integer product. Here a 512-bit
//! vector holds 16 weight rows, one row per 32-bit lane, four codes of a row per lane: eight
//! `vpdpbusd` against the token's bytes broadcast to every lane sum a whole block for 16 rows at
//! once, and one conversion and one fused multiply-add scale those 16 sums. The float work per
//! block falls eightfold, which is what prompt processing is bound by.
//!
//! The layout: a group of [`LANE_ROWS`] rows is stored block after block; each group block holds
//! the 16 rows' scales side by side, then the codes in 4-byte chunks, chunk `c` of every row
//! together (`qs[c][4i + k]` is byte `4c + k` of row `i`'s block). Q8_0's codes are stored plus
//! 128 (unsigned, as `vpdpbusd` reads its first operand). Q5_0/Q5_1's 32 high bits are stored per
//! row with their bits reordered ([`spread_high_bits`]) so that one shift and one mask put the four
//! high bits of each 4-byte chunk at bit 4 of its bytes. A group block has the size of its 16
//! blocks, so a packed matrix holds the weights once.
//!
//! The arithmetic, which the SIMD kernels (`lanes_x86`) follow exactly and the tests check bit for
//! bit: per (row, token) and block, the integer `Σ (code − offset) · a` (exact), then
//! `acc = fma(f32(sum), d_w · d_a, acc)`, blocks in order; Q4_1 adds `fma(m_w, s_a, acc)`.
//! The integer block sums are exact, so these products are at least as close to the real ones as
//! the per-row kernels'; they differ from those in the last bits.

use bytemuck::{Pod, Zeroable};
use half::f16;
use shuku_quants::blocks::{BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8_0, BlockQ8_1, QK};

/// Rows of one lane group: the 16 32-bit lanes of a 512-bit vector.
pub const LANE_ROWS: usize = 16;

/// Tokens of one batch tile of the lane kernels.
pub const LANE_TOKENS: usize = 8;

/// Code chunks of 4 bytes in a block of 32 values.
const CHUNKS: usize = QK / 4;

/// Block `b` of 16 Q4_0 rows.
#[derive(Debug, Clone, Copy, PartialEq, Pod, Zeroable)]
#[repr(C)]
pub struct Q4_0x16 {
    /// Each row's scale.
    pub d: [f16; LANE_ROWS],
    /// `qs[c][4i + k]` = byte `4c + k` of row `i`'s nibbles (low nibble: value `4c + k`, high
    /// nibble: value `16 + 4c + k`).
    pub qs: [[u8; 4 * LANE_ROWS]; CHUNKS / 2],
}

/// Block `b` of 16 Q4_1 rows.
#[derive(Debug, Clone, Copy, PartialEq, Pod, Zeroable)]
#[repr(C)]
pub struct Q4_1x16 {
    /// Each row's scale.
    pub d: [f16; LANE_ROWS],
    /// Each row's minimum.
    pub m: [f16; LANE_ROWS],
    /// As [`Q4_0x16::qs`].
    pub qs: [[u8; 4 * LANE_ROWS]; CHUNKS / 2],
}

/// Block `b` of 16 Q5_0 rows.
#[derive(Debug, Clone, Copy, PartialEq, Pod, Zeroable)]
#[repr(C)]
pub struct Q5_0x16 {
    /// Each row's scale.
    pub d: [f16; LANE_ROWS],
    /// Each row's high bits, reordered by [`spread_high_bits`].
    pub qh: [u32; LANE_ROWS],
    /// As [`Q4_0x16::qs`].
    pub qs: [[u8; 4 * LANE_ROWS]; CHUNKS / 2],
}

/// Block `b` of 16 Q5_1 rows.
#[derive(Debug, Clone, Copy, PartialEq, Pod, Zeroable)]
#[repr(C)]
pub struct Q5_1x16 {
    /// Each row's scale.
    pub d: [f16; LANE_ROWS],
    /// Each row's minimum.
    pub m: [f16; LANE_ROWS],
    /// Each row's high bits, reordered by [`spread_high_bits`].
    pub qh: [u32; LANE_ROWS],
    /// As [`Q4_0x16::qs`].
    pub qs: [[u8; 4 * LANE_ROWS]; CHUNKS / 2],
}

/// A 5-bit block's high bits (bit `j` for value `j`) reordered so that bit `c` of byte `k` is the
/// high bit of value `4c + k`: chunk `c`'s four high bits are then bit `c` of the word's four bytes,
/// which one shift by `4 − c` and a mask with `0x10101010` move to bit 4 of each byte.
pub fn spread_high_bits(qh: u32) -> u32 {
    (0..QK as u32).fold(0, |w, j| w | ((qh >> j) & 1) << (8 * (j % 4) + j / 4))
}

/// The inverse of [`spread_high_bits`].
pub fn gather_high_bits(w: u32) -> u32 {
    (0..QK as u32).fold(0, |qh, j| qh | ((w >> (8 * (j % 4) + j / 4)) & 1) << j)
}

/// Block `b` of 16 Q8_0 rows.
#[derive(Debug, Clone, Copy, PartialEq, Pod, Zeroable)]
#[repr(C)]
pub struct Q8_0x16 {
    /// Each row's scale.
    pub d: [f16; LANE_ROWS],
    /// `qs[c][4i + k]` = code `4c + k` of row `i`, plus 128.
    pub qs: [[u8; 4 * LANE_ROWS]; CHUNKS],
}

/// A group block of the lane layout and the file block it interleaves.
pub trait LaneGroup: Pod {
    /// The file's block.
    type Block: Pod;
    /// Block `b` of 16 rows as one group block.
    fn gather(rows: &[Self::Block; LANE_ROWS]) -> Self;
    /// Row `i`'s block back, byte for byte.
    fn block(&self, i: usize) -> Self::Block;
}

impl LaneGroup for Q4_0x16 {
    type Block = BlockQ4_0;
    fn gather(rows: &[BlockQ4_0; LANE_ROWS]) -> Self {
        Q4_0x16 {
            d: rows.map(|r| r.d),
            qs: std::array::from_fn(|c| std::array::from_fn(|j| rows[j / 4].qs[4 * c + j % 4])),
        }
    }
    fn block(&self, i: usize) -> BlockQ4_0 {
        BlockQ4_0 {
            d: self.d[i],
            qs: std::array::from_fn(|j| self.qs[j / 4][4 * i + j % 4]),
        }
    }
}

impl LaneGroup for Q4_1x16 {
    type Block = BlockQ4_1;
    fn gather(rows: &[BlockQ4_1; LANE_ROWS]) -> Self {
        Q4_1x16 {
            d: rows.map(|r| r.d),
            m: rows.map(|r| r.m),
            qs: std::array::from_fn(|c| std::array::from_fn(|j| rows[j / 4].qs[4 * c + j % 4])),
        }
    }
    fn block(&self, i: usize) -> BlockQ4_1 {
        BlockQ4_1 {
            d: self.d[i],
            m: self.m[i],
            qs: std::array::from_fn(|j| self.qs[j / 4][4 * i + j % 4]),
        }
    }
}

impl LaneGroup for Q5_0x16 {
    type Block = BlockQ5_0;
    fn gather(rows: &[BlockQ5_0; LANE_ROWS]) -> Self {
        Q5_0x16 {
            d: rows.map(|r| r.d),
            qh: rows.map(|r| spread_high_bits(u32::from_le_bytes(r.qh))),
            qs: std::array::from_fn(|c| std::array::from_fn(|j| rows[j / 4].qs[4 * c + j % 4])),
        }
    }
    fn block(&self, i: usize) -> BlockQ5_0 {
        BlockQ5_0 {
            d: self.d[i],
            qh: gather_high_bits(self.qh[i]).to_le_bytes(),
            qs: std::array::from_fn(|j| self.qs[j / 4][4 * i + j % 4]),
        }
    }
}

impl LaneGroup for Q5_1x16 {
    type Block = BlockQ5_1;
    fn gather(rows: &[BlockQ5_1; LANE_ROWS]) -> Self {
        Q5_1x16 {
            d: rows.map(|r| r.d),
            m: rows.map(|r| r.m),
            qh: rows.map(|r| spread_high_bits(u32::from_le_bytes(r.qh))),
            qs: std::array::from_fn(|c| std::array::from_fn(|j| rows[j / 4].qs[4 * c + j % 4])),
        }
    }
    fn block(&self, i: usize) -> BlockQ5_1 {
        BlockQ5_1 {
            d: self.d[i],
            m: self.m[i],
            qh: gather_high_bits(self.qh[i]).to_le_bytes(),
            qs: std::array::from_fn(|j| self.qs[j / 4][4 * i + j % 4]),
        }
    }
}

impl LaneGroup for Q8_0x16 {
    type Block = BlockQ8_0;
    fn gather(rows: &[BlockQ8_0; LANE_ROWS]) -> Self {
        Q8_0x16 {
            d: rows.map(|r| r.d),
            qs: std::array::from_fn(|c| {
                std::array::from_fn(|j| rows[j / 4].qs[4 * c + j % 4] as u8 ^ 0x80)
            }),
        }
    }
    fn block(&self, i: usize) -> BlockQ8_0 {
        BlockQ8_0 {
            d: self.d[i],
            qs: std::array::from_fn(|j| (self.qs[j / 4][4 * i + j % 4] ^ 0x80) as i8),
        }
    }
}

/// 16 rows' bytes in 4-byte chunks: `out[v][4i + k]` is byte `4v + k` of `bytes(row i)`.
pub(super) fn chunked<B, const V: usize>(
    rows: &[B; LANE_ROWS],
    bytes: impl Fn(&B) -> &[u8],
) -> [[u8; 4 * LANE_ROWS]; V] {
    std::array::from_fn(|v| std::array::from_fn(|b| bytes(&rows[b / 4])[4 * v + b % 4]))
}

/// Row `i`'s bytes back from [`chunked`] vectors.
pub(super) fn unchunked<const N: usize>(vectors: &[[u8; 4 * LANE_ROWS]], i: usize) -> [u8; N] {
    std::array::from_fn(|b| vectors[b / 4][4 * i + b % 4])
}

/// 16 rows' bytes as little-endian words: `out[w][i]` is bytes `4w … 4w + 3` of `bytes(row i)`.
pub(super) fn words<B, const W: usize>(
    rows: &[B; LANE_ROWS],
    bytes: impl Fn(&B) -> &[u8],
) -> [[u32; LANE_ROWS]; W] {
    std::array::from_fn(|w| {
        std::array::from_fn(|i| {
            let s = &bytes(&rows[i])[4 * w..4 * w + 4];
            u32::from_le_bytes([s[0], s[1], s[2], s[3]])
        })
    })
}

/// Row `i`'s bytes back from [`words`].
pub(super) fn unworded<const N: usize>(words: &[[u32; LANE_ROWS]], i: usize) -> [u8; N] {
    std::array::from_fn(|b| words[b / 4][i].to_le_bytes()[b % 4])
}

/// Writes rows `rows` (`bpr` blocks each, row after row) into `out` as group blocks of 16 rows; a
/// short last group repeats the last row. `out` holds `⌈rows / 16⌉ · bpr` group blocks.
pub fn gather_rows<G: LaneGroup>(rows: &[G::Block], bpr: usize, out: &mut [G]) {
    let n = rows.len() / bpr;
    assert_eq!(
        out.len(),
        n.div_ceil(LANE_ROWS) * bpr,
        "lane groups for {n} rows"
    );
    for (k, dst) in out.iter_mut().enumerate() {
        let (g, b) = (k / bpr * LANE_ROWS, k % bpr);
        *dst = G::gather(&std::array::from_fn(|i| rows[(g + i).min(n - 1) * bpr + b]));
    }
}

/// Gathering 16 rows and reading each row's block back gives the file's bytes (compared as bytes:
/// random f16 fields may be NaN), and a group block is exactly its 16 blocks' size: the test of
/// every [`LaneGroup`].
#[cfg(test)]
pub fn assert_gather_round_trips<G: LaneGroup>() {
    use super::test_blocks::random;
    assert_eq!(size_of::<G>(), LANE_ROWS * size_of::<G::Block>());
    let (rows, bpr) = (19, 2);
    let blocks = random::<G::Block>(rows * bpr, 5);
    let mut groups = vec![G::zeroed(); 2 * bpr];
    gather_rows(&blocks, bpr, &mut groups);
    for r in 0..32 {
        for b in 0..bpr {
            let want = blocks[r.min(rows - 1) * bpr + b];
            let got = groups[(r / LANE_ROWS) * bpr + b].block(r % LANE_ROWS);
            assert_eq!(
                bytemuck::bytes_of(&got),
                bytemuck::bytes_of(&want),
                "row {r}"
            );
        }
    }
}

/// What the lane kernels read of an activation block besides its codes, worked out once per batch:
/// the scale as f32, the sum of the codes (to take the weights' code offset off in integers) and,
/// for Q8_1, its stored `d · Σq`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ActTerms {
    /// The block's scale.
    pub d: f32,
    /// `Σ qs`.
    pub sum: i32,
    /// Q8_1's stored `s` (0 for Q8_0).
    pub s: f32,
}

/// The codes of an activation block.
pub trait ActCodes {
    /// The 32 codes.
    fn codes(&self) -> &[i8; QK];
}

impl ActCodes for BlockQ8_0 {
    fn codes(&self) -> &[i8; QK] {
        &self.qs
    }
}

impl ActCodes for BlockQ8_1 {
    fn codes(&self) -> &[i8; QK] {
        &self.qs
    }
}

/// [`ActTerms`] of a Q8_0 block.
pub fn terms_q8_0(a: &BlockQ8_0) -> ActTerms {
    ActTerms {
        d: a.d.to_f32(),
        sum: code_sum(&a.qs),
        s: 0.0,
    }
}

/// [`ActTerms`] of a Q8_1 block.
pub fn terms_q8_1(a: &BlockQ8_1) -> ActTerms {
    ActTerms {
        d: a.d.to_f32(),
        sum: code_sum(&a.qs),
        s: a.s.to_f32(),
    }
}

fn code_sum(qs: &[i8; QK]) -> i32 {
    qs.iter().map(|&q| i32::from(q)).sum()
}

/// The codes of one row of a group block with the offset each type's values carry, as the kernels
/// see them: `(codes, offset)` with value = `d · (code − offset)` (+ `m` for Q4_1).
pub trait LaneCodes: LaneGroup {
    /// The codes' offset.
    const OFFSET: i32;
    /// Whether values carry a per-block minimum `m` (the product adds `m · s` per block).
    const HAS_MIN: bool = false;
    /// Row `i`'s 32 unsigned codes in value order.
    fn codes(&self, i: usize) -> [u8; QK];
    /// Row `i`'s scale.
    fn scale(&self, i: usize) -> f32;
    /// Row `i`'s minimum (0 for the types without one).
    fn min(&self, _i: usize) -> f32 {
        0.0
    }
}

fn nibbles(qs: &[[u8; 4 * LANE_ROWS]; CHUNKS / 2], i: usize) -> [u8; QK] {
    std::array::from_fn(|j| {
        let byte = qs[(j % 16) / 4][4 * i + j % 4];
        if j < 16 {
            byte & 0x0f
        } else {
            byte >> 4
        }
    })
}

impl LaneCodes for Q4_0x16 {
    const OFFSET: i32 = 8;
    fn codes(&self, i: usize) -> [u8; QK] {
        nibbles(&self.qs, i)
    }
    fn scale(&self, i: usize) -> f32 {
        self.d[i].to_f32()
    }
}

impl LaneCodes for Q4_1x16 {
    const OFFSET: i32 = 0;
    const HAS_MIN: bool = true;
    fn codes(&self, i: usize) -> [u8; QK] {
        nibbles(&self.qs, i)
    }
    fn scale(&self, i: usize) -> f32 {
        self.d[i].to_f32()
    }
    fn min(&self, i: usize) -> f32 {
        self.m[i].to_f32()
    }
}

/// A 5-bit row's codes: the nibbles with the high bits (in [`spread_high_bits`] order) at bit 4.
fn codes5(qs: &[[u8; 4 * LANE_ROWS]; CHUNKS / 2], w: u32, i: usize) -> [u8; QK] {
    let qh = gather_high_bits(w);
    let low = nibbles(qs, i);
    std::array::from_fn(|j| low[j] | (((qh >> j) & 1) as u8) << 4)
}

impl LaneCodes for Q5_0x16 {
    const OFFSET: i32 = 16;
    fn codes(&self, i: usize) -> [u8; QK] {
        codes5(&self.qs, self.qh[i], i)
    }
    fn scale(&self, i: usize) -> f32 {
        self.d[i].to_f32()
    }
}

impl LaneCodes for Q5_1x16 {
    const OFFSET: i32 = 0;
    const HAS_MIN: bool = true;
    fn codes(&self, i: usize) -> [u8; QK] {
        codes5(&self.qs, self.qh[i], i)
    }
    fn scale(&self, i: usize) -> f32 {
        self.d[i].to_f32()
    }
    fn min(&self, i: usize) -> f32 {
        self.m[i].to_f32()
    }
}

impl LaneCodes for Q8_0x16 {
    const OFFSET: i32 = 128;
    fn codes(&self, i: usize) -> [u8; QK] {
        std::array::from_fn(|j| self.qs[j / 4][4 * i + j % 4])
    }
    fn scale(&self, i: usize) -> f32 {
        self.d[i].to_f32()
    }
}

/// The scalar reference of the lane kernels: one group's 16 rows × one token (`a` and `terms` its
/// blocks), with the arithmetic in the module doc.
pub fn reference<G: LaneCodes, A: ActCodes>(
    w: &[G],
    a: &[A],
    terms: &[ActTerms],
) -> [f32; LANE_ROWS] {
    std::array::from_fn(|i| {
        let mut acc = 0f32;
        for ((g, a), t) in w.iter().zip(a).zip(terms) {
            let dot: i32 = g
                .codes(i)
                .iter()
                .zip(a.codes())
                .map(|(&c, &q)| i32::from(c) * i32::from(q))
                .sum();
            let sum = dot - G::OFFSET * t.sum;
            acc = (sum as f32).mul_add(g.scale(i) * t.d, acc);
            if G::HAS_MIN {
                acc = g.min(i).mul_add(t.s, acc);
            }
        }
        acc
    })
}

#[cfg(test)]
mod tests {
    use super::super::test_blocks::{random, with_scales};
    use super::*;

    fn round_trip<G: LaneCodes + std::fmt::Debug>(fields: &[f32])
    where
        G::Block: PartialEq + std::fmt::Debug,
    {
        let (rows, bpr) = (21, 3);
        let blocks = with_scales(random::<G::Block>(rows * bpr, 9), fields);
        let mut groups = vec![G::zeroed(); 2 * bpr];
        gather_rows::<G>(&blocks, bpr, &mut groups);
        assert_eq!(size_of::<G>(), LANE_ROWS * size_of::<G::Block>());
        for r in 0..32 {
            for b in 0..bpr {
                let want = blocks[r.min(rows - 1) * bpr + b];
                assert_eq!(groups[(r / LANE_ROWS) * bpr + b].block(r % LANE_ROWS), want);
            }
        }
    }

    /// Gathering 16 rows and reading each row's block back gives the file's bytes, and a group
    /// block is exactly its 16 blocks' size.
    #[test]
    fn gather_keeps_every_block() {
        round_trip::<Q4_0x16>(&[0.5]);
        round_trip::<Q4_1x16>(&[0.5, -0.25]);
        round_trip::<Q8_0x16>(&[0.5]);
        round_trip::<Q5_0x16>(&[0.5]);
        round_trip::<Q5_1x16>(&[0.5, -0.25]);
    }

    /// Chunk `c`'s high bits, moved to bit 4 of each byte as the kernels move them, are the high
    /// bits of values `4c … 4c + 3`.
    #[test]
    fn spread_high_bits_serve_each_chunk() {
        for qh in [0u32, u32::MAX, 0x8000_0001, 0x1234_5678, 0xdead_beef] {
            let w = spread_high_bits(qh);
            assert_eq!(gather_high_bits(w), qh);
            for c in 0..8 {
                let moved = if c <= 4 { w << (4 - c) } else { w >> (c - 4) } & 0x1010_1010;
                for k in 0..4 {
                    let bit = (moved >> (8 * k + 4)) & 1;
                    assert_eq!(
                        bit,
                        (qh >> (4 * c + k)) & 1,
                        "qh {qh:#x} chunk {c} byte {k}"
                    );
                }
            }
        }
    }

    /// The reference equals the dequantized dot product where every partial sum is exact
    /// (unit activation scales, small codes).
    #[test]
    fn reference_equals_the_dequantized_product() {
        let bpr = 4;
        let blocks = with_scales(random::<BlockQ4_1>(LANE_ROWS * bpr, 3), &[0.5, 0.25]);
        let mut groups = vec![Q4_1x16::zeroed(); bpr];
        gather_rows(&blocks, bpr, &mut groups);
        let mut acts = random::<BlockQ8_1>(bpr, 4);
        for a in &mut acts {
            a.d = f16::ONE;
            a.s = f16::from_f32(code_sum(&a.qs) as f32);
        }
        let terms: Vec<ActTerms> = acts.iter().map(terms_q8_1).collect();
        let got = reference(&groups, &acts, &terms);
        for (i, &g) in got.iter().enumerate() {
            let mut want = 0f64;
            for b in 0..bpr {
                let w = &blocks[i * bpr + b];
                let (d, m) = (f64::from(w.d.to_f32()), f64::from(w.m.to_f32()));
                for j in 0..QK {
                    let code = if j < 16 {
                        w.qs[j] & 15
                    } else {
                        w.qs[j - 16] >> 4
                    };
                    want += (d * f64::from(code) + m) * f64::from(acts[b].qs[j]);
                }
            }
            assert!((f64::from(g) - want).abs() < 1e-3, "row {i}: {g} vs {want}");
        }
    }
}

//! The lane layout ([`super::lanes`]) for Q6_K: 16 rows per group, one row per 32-bit lane, and its
//! scalar reference product against Q8_K.
//!
//! A group super-block holds the 16 rows' `d`, then their 256 six-bit codes as 64 chunks of four
//! values (chunk `c` is values `4c … 4c + 3`, sub-block `c / 4`): the low four bits in the vector
//! `ql(c % 32)` (low nibbles for `c < 32`, high nibbles for the rest), the top two bits in
//! `qh(c / 4)` with bits reordered so that one shift and a mask with `0x30303030` put chunk `c`'s
//! at bits 4–5 of its four bytes ([`spread_top_bits`]), and the sixteen sub-block scales of the 16
//! rows (`scales(k)[i]`). They are stored by pairs of sub-blocks `p` and `p + 8`, which share
//! their `ql` vectors, in the order the kernel reads them, so a product reads one forward stream.
//! Same size as the 16 blocks.
//!
//! The arithmetic, which the SIMD kernel follows exactly and the tests check bit for bit: per
//! (row, token) and super-block the exact integer `Σ_k sc_k · (Σ_{j ∈ k} q_j · a_j − 32 · bsum_k)`,
//! then `acc = fma(f32(sum), d_w · d_a, acc)`. llama.cpp's kernels compute the same integers.

use bytemuck::{Pod, Zeroable};
use half::f16;
use shuku_quants::blocks::{BlockQ6K, BlockQ8K, QK_K};

use super::lanes::{ActTerms, LaneGroup, LANE_ROWS};

/// Sub-blocks of 16 values in a super-block.
const SUBS: usize = QK_K / 16;

/// Block `b` of 16 Q6_K rows.
#[derive(Debug, Clone, Copy, PartialEq, Pod, Zeroable)]
#[repr(C)]
pub struct Q6Kx16 {
    /// Each row's super-block scale.
    pub d: [f16; LANE_ROWS],
    /// Sub-blocks `p` and `p + 8`, for `p` in 0…8.
    pub pairs: [Q6KPair; SUBS / 2],
}

/// Sub-blocks `p` and `p + 8` of a [`Q6Kx16`].
#[derive(Debug, Clone, Copy, PartialEq, Pod, Zeroable)]
#[repr(C)]
pub struct Q6KPair {
    /// `ql[j][4i + k]`: row `i`'s low four bits of value `16p + 4j + k` (low nibble) and of value
    /// `128 + 16p + 4j + k` (high nibble).
    pub ql: [[u8; 4 * LANE_ROWS]; 4],
    /// `qh[h][i]`: row `i`'s top bits of sub-block `p + 8h`, in [`spread_top_bits`] order.
    pub qh: [[u32; LANE_ROWS]; 2],
    /// `scales[h][i]`: row `i`'s scale of sub-block `p + 8h`.
    pub scales: [[i8; LANE_ROWS]; 2],
}

impl Q6Kx16 {
    /// Low-bit vector `v` (0…32): chunk `v` in the low nibbles, chunk `v + 32` in the high ones.
    pub fn ql(&self, v: usize) -> &[u8; 4 * LANE_ROWS] {
        &self.pairs[v / 4].ql[v % 4]
    }
    /// Top-bit words of sub-block `k` (chunks `4k … 4k + 3`).
    pub fn qh(&self, k: usize) -> &[u32; LANE_ROWS] {
        &self.pairs[k % 8].qh[k / 8]
    }
    /// Scales of sub-block `k`.
    pub fn scales(&self, k: usize) -> &[i8; LANE_ROWS] {
        &self.pairs[k % 8].scales[k / 8]
    }
}

/// A Q6_K block's 256 codes (0…63) in value order, as ggml's `dequantize_row_q6_K` reads them.
fn codes(b: &BlockQ6K) -> [u8; QK_K] {
    let mut q = [0u8; QK_K];
    for n in 0..2 {
        let (ql, qh) = (&b.ql[64 * n..], &b.qh[32 * n..]);
        for l in 0..32 {
            let at = 128 * n + l;
            q[at] = (ql[l] & 15) | (qh[l] & 3) << 4;
            q[at + 32] = (ql[l + 32] & 15) | ((qh[l] >> 2) & 3) << 4;
            q[at + 64] = (ql[l] >> 4) | ((qh[l] >> 4) & 3) << 4;
            q[at + 96] = (ql[l + 32] >> 4) | ((qh[l] >> 6) & 3) << 4;
        }
    }
    q
}

/// The inverse of [`codes`]: the block's `ql` and `qh` from 256 codes.
fn encode(q: &[u8; QK_K]) -> ([u8; QK_K / 2], [u8; QK_K / 4]) {
    let mut ql = [0u8; QK_K / 2];
    let mut qh = [0u8; QK_K / 4];
    for n in 0..2 {
        for l in 0..32 {
            let at = 128 * n + l;
            let (q1, q2, q3, q4) = (q[at], q[at + 32], q[at + 64], q[at + 96]);
            ql[64 * n + l] = (q1 & 15) | (q3 & 15) << 4;
            ql[64 * n + l + 32] = (q2 & 15) | (q4 & 15) << 4;
            qh[32 * n + l] = (q1 >> 4) | (q2 >> 4) << 2 | (q3 >> 4) << 4 | (q4 >> 4) << 6;
        }
    }
    (ql, qh)
}

/// Four chunks' top bits (`top[j][k]`: value `4j + k` of the four chunks, 0…3) as one word in which
/// bits `2j, 2j + 1` of byte `k` are `top[j][k]`: a shift by `4 − 2j` and a mask with
/// `0x30303030` then move chunk `j`'s to bits 4–5 of each byte.
pub fn spread_top_bits(top: [[u8; 4]; 4]) -> u32 {
    let mut w = 0u32;
    for (j, chunk) in top.iter().enumerate() {
        for (k, &t) in chunk.iter().enumerate() {
            w |= u32::from(t & 3) << (8 * k + 2 * j);
        }
    }
    w
}

/// The inverse of [`spread_top_bits`].
fn gather_top_bits(w: u32) -> [[u8; 4]; 4] {
    std::array::from_fn(|j| std::array::from_fn(|k| ((w >> (8 * k + 2 * j)) & 3) as u8))
}

impl LaneGroup for Q6Kx16 {
    type Block = BlockQ6K;
    fn gather(rows: &[BlockQ6K; LANE_ROWS]) -> Self {
        let q: [[u8; QK_K]; LANE_ROWS] = std::array::from_fn(|i| codes(&rows[i]));
        let qh = |k: usize| -> [u32; LANE_ROWS] {
            std::array::from_fn(|i| {
                spread_top_bits(std::array::from_fn(|j| {
                    std::array::from_fn(|b| q[i][4 * (4 * k + j) + b] >> 4)
                }))
            })
        };
        let ql = |v: usize| -> [u8; 4 * LANE_ROWS] {
            std::array::from_fn(|b| {
                let (i, k) = (b / 4, b % 4);
                (q[i][4 * v + k] & 15) | (q[i][128 + 4 * v + k] & 15) << 4
            })
        };
        let scales = |k: usize| -> [i8; LANE_ROWS] { std::array::from_fn(|i| rows[i].scales[k]) };
        Q6Kx16 {
            d: rows.map(|r| r.d),
            pairs: std::array::from_fn(|p| Q6KPair {
                ql: std::array::from_fn(|j| ql(4 * p + j)),
                qh: [qh(p), qh(p + 8)],
                scales: [scales(p), scales(p + 8)],
            }),
        }
    }
    fn block(&self, i: usize) -> BlockQ6K {
        let q = self.codes(i);
        let (ql, qh) = encode(&q);
        BlockQ6K {
            ql,
            qh,
            scales: std::array::from_fn(|k| self.scales(k)[i]),
            d: self.d[i],
        }
    }
}

impl Q6Kx16 {
    /// Row `i`'s 256 codes in value order.
    fn codes(&self, i: usize) -> [u8; QK_K] {
        std::array::from_fn(|v| {
            let (c, k) = (v / 4, v % 4);
            let byte = self.ql(c % 32)[4 * i + k];
            let low = if c < 32 { byte & 15 } else { byte >> 4 };
            low | gather_top_bits(self.qh(c / 4)[i])[c % 4][k] << 4
        })
    }
}

/// [`ActTerms`] of a Q8_K block: its scale (the block sums are the block's own `bsums`).
pub fn terms_q8_k(a: &BlockQ8K) -> ActTerms {
    ActTerms {
        d: a.d,
        sum: 0,
        s: 0.0,
    }
}

/// The scalar reference of the Q6_K lane kernel: one group's 16 rows × one token (`a`: its Q8_K
/// blocks, `terms` theirs), with the arithmetic in the module doc.
pub fn reference(w: &[Q6Kx16], a: &[BlockQ8K], terms: &[ActTerms]) -> [f32; LANE_ROWS] {
    std::array::from_fn(|i| {
        let mut acc = 0f32;
        for ((g, a), t) in w.iter().zip(a).zip(terms) {
            let q = g.codes(i);
            let mut sum = 0i32;
            for k in 0..SUBS {
                let dot: i32 = (16 * k..16 * (k + 1))
                    .map(|v| i32::from(q[v]) * i32::from(a.qs[v]))
                    .sum();
                sum += i32::from(g.scales(k)[i]) * (dot - 32 * i32::from(a.bsums[k]));
            }
            acc = (sum as f32).mul_add(g.d[i].to_f32() * t.d, acc);
        }
        acc
    })
}

#[cfg(test)]
mod tests {
    use super::super::lanes::gather_rows;
    use super::super::test_blocks::random;
    use super::super::tile_k::vec_dot_q6_k_scalar;
    use super::*;

    #[test]
    fn gather_keeps_every_block() {
        super::super::lanes::assert_gather_round_trips::<Q6Kx16>();
    }

    /// The reference equals the per-row scalar product (the same integers; unit activation scales
    /// keep every float step exact).
    #[test]
    fn reference_equals_the_per_row_product() {
        let bpr = 3;
        let blocks = random::<BlockQ6K>(LANE_ROWS * bpr, 8);
        let blocks: Vec<BlockQ6K> = blocks
            .into_iter()
            .map(|mut b| {
                b.d = f16::ONE;
                b
            })
            .collect();
        let mut groups = vec![Q6Kx16::zeroed(); bpr];
        gather_rows(&blocks, bpr, &mut groups);
        let mut acts = random::<BlockQ8K>(bpr, 9);
        for a in &mut acts {
            a.d = 1.0;
            for k in 0..SUBS {
                a.bsums[k] = a.qs[16 * k..16 * (k + 1)]
                    .iter()
                    .map(|&q| i16::from(q))
                    .sum();
            }
        }
        let terms: Vec<ActTerms> = acts.iter().map(terms_q8_k).collect();
        let got = reference(&groups, &acts, &terms);
        for (i, &g) in got.iter().enumerate() {
            let want = vec_dot_q6_k_scalar(&blocks[i * bpr..(i + 1) * bpr], &acts);
            assert_eq!(g, want, "row {i}");
        }
    }
}

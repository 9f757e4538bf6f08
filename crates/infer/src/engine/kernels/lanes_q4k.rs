//! The lane layout ([`super::lanes`]) for Q4_K: 16 rows per group, one row per 32-bit lane, and its
//! scalar reference product against Q8_K.
//!
//! Why: Q4_K's 4-row tiles (`tile_k`, `tile_k_wide`) keep llama.cpp's per-row arithmetic, two
//! instructions per 32 codes and token for the integer product and eight lanes of float work per
//! row; here eight `vpdpbusd` sum a 32-value sub-block for 16 rows at once and one `vpmulld` scales
//! it, as the Q6_K lanes do (`lanes_k`).
//!
//! A group super-block holds the 16 rows' `d` and `dmin`, their packed 6-bit scales and minimums
//! as three 32-bit words per row (`scales[w][i]`: bytes `4w … 4w + 3` of row `i`'s 12, unpacked
//! in the kernel by llama.cpp's `kmask` steps on 16 rows at once), and the codes as 32 vectors of
//! 16 × 4 bytes: `qs[v][4i + k]` is byte `4v + k` of row `i`'s `qs`, whose low nibble is value
//! `64j + 4c + k` (sub-block `2j`) and high nibble value `64j + 32 + 4c + k` (sub-block `2j + 1`),
//! `v = 8j + c`. Same size as the 16 blocks.
//!
//! The arithmetic, which the SIMD kernel follows exactly and the tests check bit for bit: per
//! (row, token) and super-block the exact integers `S = Σ_k sc_k · Σ_{i ∈ k} q_i · a_i` and
//! `M = Σ_k m_k · (bsum_{2k} + bsum_{2k+1})`, then `acc = fma(f32(S), d_w · d_a, acc)` and
//! `acc_m = fma(f32(M), dmin_w · d_a, acc_m)`, super-blocks in order; the product is
//! `acc − acc_m`. llama.cpp's kernels compute the same integers.

use bytemuck::{Pod, Zeroable};
use half::f16;
use shuku_quants::blocks::{get_scale_min_k4, BlockQ4K, BlockQ8K, K_SCALE_SIZE, QK_K};

use super::lanes::{ActTerms, LaneGroup, LANE_ROWS};

/// Code vectors of a group super-block: 4-byte chunks of 128 bytes of nibbles.
const VECTORS: usize = QK_K / 8;

/// Super-block `b` of 16 Q4_K rows.
#[derive(Debug, Clone, Copy, PartialEq, Pod, Zeroable)]
#[repr(C)]
pub struct Q4Kx16 {
    /// Each row's scale of the sub-block scales.
    pub d: [f16; LANE_ROWS],
    /// Each row's scale of the sub-block minimums.
    pub dmin: [f16; LANE_ROWS],
    /// `scales[w][i]`: bytes `4w … 4w + 3` of row `i`'s packed scales and minimums, little-endian.
    pub scales: [[u32; LANE_ROWS]; K_SCALE_SIZE / 4],
    /// `qs[v][4i + k]`: byte `4v + k` of row `i`'s nibbles.
    pub qs: [[u8; 4 * LANE_ROWS]; VECTORS],
}

impl LaneGroup for Q4Kx16 {
    type Block = BlockQ4K;
    fn gather(rows: &[BlockQ4K; LANE_ROWS]) -> Self {
        Q4Kx16 {
            d: rows.map(|r| r.d),
            dmin: rows.map(|r| r.dmin),
            scales: std::array::from_fn(|w| {
                std::array::from_fn(|i| {
                    let s = &rows[i].scales[4 * w..4 * w + 4];
                    u32::from_le_bytes([s[0], s[1], s[2], s[3]])
                })
            }),
            qs: std::array::from_fn(|v| std::array::from_fn(|b| rows[b / 4].qs[4 * v + b % 4])),
        }
    }
    fn block(&self, i: usize) -> BlockQ4K {
        BlockQ4K {
            d: self.d[i],
            dmin: self.dmin[i],
            scales: std::array::from_fn(|b| self.scales[b / 4][i].to_le_bytes()[b % 4]),
            qs: std::array::from_fn(|b| self.qs[b / 4][4 * i + b % 4]),
        }
    }
}

/// The scalar reference of the Q4_K lane kernel: one group's 16 rows × one token (`a`: its Q8_K
/// blocks, `terms` theirs), with the arithmetic in the module doc.
pub fn reference(w: &[Q4Kx16], a: &[BlockQ8K], terms: &[ActTerms]) -> [f32; LANE_ROWS] {
    std::array::from_fn(|i| {
        let (mut acc, mut acc_m) = (0f32, 0f32);
        for ((g, a), t) in w.iter().zip(a).zip(terms) {
            let b = g.block(i);
            let (mut s, mut m) = (0i32, 0i32);
            for k in 0..8 {
                let (sc, mk) = get_scale_min_k4(k, &b.scales);
                let dot: i32 = (0..32)
                    .map(|l| {
                        let byte = b.qs[32 * (k / 2) + l];
                        let q = if k % 2 == 0 { byte & 15 } else { byte >> 4 };
                        i32::from(q) * i32::from(a.qs[32 * k + l])
                    })
                    .sum();
                s += i32::from(sc) * dot;
                m += i32::from(mk) * (i32::from(a.bsums[2 * k]) + i32::from(a.bsums[2 * k + 1]));
            }
            acc = (s as f32).mul_add(g.d[i].to_f32() * t.d, acc);
            acc_m = (m as f32).mul_add(g.dmin[i].to_f32() * t.d, acc_m);
        }
        acc - acc_m
    })
}

#[cfg(test)]
mod tests {
    use super::super::lanes::gather_rows;
    use super::super::lanes_k::terms_q8_k;
    use super::super::test_blocks::random;
    use super::super::tile_k::tests::acts;
    use super::super::tile_k::vec_dot_q4_k_scalar;
    use super::*;

    /// Gathering 16 rows and reading each row's block back gives the file's bytes, and a group
    /// block is exactly its 16 blocks' size.
    #[test]
    fn gather_keeps_every_block() {
        assert_eq!(size_of::<Q4Kx16>(), LANE_ROWS * size_of::<BlockQ4K>());
        let (rows, bpr) = (19, 2);
        let blocks = random::<BlockQ4K>(rows * bpr, 5);
        let mut groups = vec![Q4Kx16::zeroed(); 2 * bpr];
        gather_rows(&blocks, bpr, &mut groups);
        for r in 0..32 {
            for b in 0..bpr {
                let want = blocks[r.min(rows - 1) * bpr + b];
                assert_eq!(groups[(r / LANE_ROWS) * bpr + b].block(r % LANE_ROWS), want);
            }
        }
    }

    /// The reference against the per-row scalar product (the same integers; unit scales and
    /// activation codes within ±7 keep every sum below 2^24, every float step exact, so the two
    /// agree bit for bit).
    #[test]
    fn reference_equals_the_per_row_product() {
        let bpr = 3;
        let blocks: Vec<BlockQ4K> = random::<BlockQ4K>(LANE_ROWS * bpr, 8)
            .into_iter()
            .map(|mut b| {
                (b.d, b.dmin) = (f16::ONE, f16::ONE);
                b
            })
            .collect();
        let mut groups = vec![Q4Kx16::zeroed(); bpr];
        gather_rows(&blocks, bpr, &mut groups);
        let mut a = acts(bpr, 9);
        for a in &mut a {
            a.d = 1.0;
            a.qs.iter_mut().for_each(|q| *q %= 8);
            a.bsums = std::array::from_fn(|g| {
                a.qs[16 * g..16 * (g + 1)]
                    .iter()
                    .map(|&q| i16::from(q))
                    .sum()
            });
        }
        let terms: Vec<ActTerms> = a.iter().map(terms_q8_k).collect();
        let got = reference(&groups, &a, &terms);
        for (i, &g) in got.iter().enumerate() {
            let want = vec_dot_q4_k_scalar(&blocks[i * bpr..(i + 1) * bpr], &a);
            assert_eq!(g, want, "row {i}");
        }
    }
}

//! The lane layout ([`super::lanes`]) for Q2_K and Q3_K: 16 rows per group, one row per 32-bit
//! lane, and its scalar reference product against Q8_K.
//!
//! Why: as for Q4_K and Q5_K (`lanes_k45`): four `vpdpbusd` sum a 16-value sub-block for 16 rows
//! at once and one `vpmulld` scales it, where the 4-row tiles (`tile_k235`, `tile_k_wide`) spend
//! two instructions per 32 codes, token and row.
//!
//! Both types hold 16 sub-blocks of 16 values with 2-bit codes: byte `l` (0…32) of half `h` of a
//! row's `qs` holds values `128h + 32c + l` at bits `2c`. A group super-block stores them as 16
//! vectors of 16 × 4 bytes, `qs[v][4i + k]` = byte `4v + k` of row `i`'s `qs`, so vector
//! `8h + 4·(s % 2) + u` holds, at bits `2c` of its lanes, codes `4u … 4u + 3` of sub-block
//! `s = 8h + 2c + (0 or 1)`.
//! * Q2_K: value = `d·sc·q − dmin·m` with a 4-bit scale and minimum per sub-block, stored as the
//!   16 bytes of each row in four 32-bit words (`scales[w][i]`).
//! * Q3_K: value = `d·sc·(q − 4)` with the third bit of `q` in `hmask` (clear: minus 4) and
//!   sixteen signed 6-bit scales packed in 12 bytes, stored as three words per row and unpacked by
//!   llama.cpp's `kmask` steps; the high bits as 8 vectors, `hmask[u][4i + k]` = byte `4u + k` of
//!   row `i`'s `hmask`, whose bit `4h + c` belongs to value `128h + 32c + 4u + k`.
//!
//! Same size as the 16 blocks. The arithmetic, which the SIMD kernel follows exactly and the tests
//! check bit for bit: per (row, token) and super-block the exact integers `S = Σ_s sc_s ·
//! Σ_{i ∈ s} q_i · a_i` (Q3_K's `q` from −4 to 3) and, for Q2_K, `M = Σ_s m_s · bsum_s`; then
//! `acc = fma(f32(S), d_w · d_a, acc)` and `acc_m = fma(f32(M), dmin_w · d_a, acc_m)`,
//! super-blocks in order; the product is `acc − acc_m`. llama.cpp's kernels compute the same
//! integers.

use bytemuck::{Pod, Zeroable};
use half::f16;
use shuku_quants::blocks::{q3_scale, BlockQ2K, BlockQ3K, BlockQ8K, K_SCALE_SIZE, QK_K};

use super::lanes::{chunked, unchunked, unworded, words, ActTerms, LaneGroup, LANE_ROWS};

/// Code vectors of a group super-block: 4-byte chunks of 64 bytes of 2-bit codes.
pub const VECTORS: usize = QK_K / 16;

/// Super-block `b` of 16 Q2_K rows.
#[derive(Debug, Clone, Copy, PartialEq, Pod, Zeroable)]
#[repr(C)]
pub struct Q2Kx16 {
    /// `scales[w][i]`: bytes `4w … 4w + 3` of row `i`'s scales (low nibbles) and minimums.
    pub scales: [[u32; LANE_ROWS]; 4],
    /// `qs[v][4i + k]`: byte `4v + k` of row `i`'s codes.
    pub qs: [[u8; 4 * LANE_ROWS]; VECTORS],
    /// Each row's scale of the sub-block scales.
    pub d: [f16; LANE_ROWS],
    /// Each row's scale of the sub-block minimums.
    pub dmin: [f16; LANE_ROWS],
}

/// Super-block `b` of 16 Q3_K rows.
#[derive(Debug, Clone, Copy, PartialEq, Pod, Zeroable)]
#[repr(C)]
pub struct Q3Kx16 {
    /// `hmask[u][4i + k]`: byte `4u + k` of row `i`'s high bits.
    pub hmask: [[u8; 4 * LANE_ROWS]; QK_K / 32],
    /// As [`Q2Kx16::qs`].
    pub qs: [[u8; 4 * LANE_ROWS]; VECTORS],
    /// `scales[w][i]`: bytes `4w … 4w + 3` of row `i`'s 12 bytes of packed scales.
    pub scales: [[u32; LANE_ROWS]; K_SCALE_SIZE / 4],
    /// Each row's super-block scale.
    pub d: [f16; LANE_ROWS],
}

impl LaneGroup for Q2Kx16 {
    type Block = BlockQ2K;
    fn gather(rows: &[BlockQ2K; LANE_ROWS]) -> Self {
        Q2Kx16 {
            scales: words(rows, |r| &r.scales),
            qs: chunked(rows, |r| &r.qs),
            d: rows.map(|r| r.d),
            dmin: rows.map(|r| r.dmin),
        }
    }
    fn block(&self, i: usize) -> BlockQ2K {
        BlockQ2K {
            scales: unworded(&self.scales, i),
            qs: unchunked(&self.qs, i),
            d: self.d[i],
            dmin: self.dmin[i],
        }
    }
}

impl LaneGroup for Q3Kx16 {
    type Block = BlockQ3K;
    fn gather(rows: &[BlockQ3K; LANE_ROWS]) -> Self {
        Q3Kx16 {
            hmask: chunked(rows, |r| &r.hmask),
            qs: chunked(rows, |r| &r.qs),
            scales: words(rows, |r| &r.scales),
            d: rows.map(|r| r.d),
        }
    }
    fn block(&self, i: usize) -> BlockQ3K {
        BlockQ3K {
            hmask: unchunked(&self.hmask, i),
            qs: unchunked(&self.qs, i),
            scales: unworded(&self.scales, i),
            d: self.d[i],
        }
    }
}

/// Value `v`'s 2-bit code in a row's `qs`.
fn low_code(qs: &[u8; QK_K / 4], v: usize) -> u8 {
    let (h, c, l) = (v / 128, v % 128 / 32, v % 32);
    (qs[32 * h + l] >> (2 * c)) & 3
}

/// The scalar reference of the Q2_K lane kernel: one group's 16 rows × one token (`a`: its Q8_K
/// blocks, `terms` theirs), with the arithmetic in the module doc.
pub fn reference_q2_k(w: &[Q2Kx16], a: &[BlockQ8K], terms: &[ActTerms]) -> [f32; LANE_ROWS] {
    std::array::from_fn(|i| {
        let (mut acc, mut acc_m) = (0f32, 0f32);
        for ((g, a), t) in w.iter().zip(a).zip(terms) {
            let b = g.block(i);
            let (mut s, mut m) = (0i32, 0i32);
            for sub in 0..16 {
                let dot: i32 = (16 * sub..16 * (sub + 1))
                    .map(|v| i32::from(low_code(&b.qs, v)) * i32::from(a.qs[v]))
                    .sum();
                s += i32::from(b.scales[sub] & 15) * dot;
                m += i32::from(b.scales[sub] >> 4) * i32::from(a.bsums[sub]);
            }
            acc = (s as f32).mul_add(b.d.to_f32() * t.d, acc);
            acc_m = (m as f32).mul_add(b.dmin.to_f32() * t.d, acc_m);
        }
        acc - acc_m
    })
}

/// The scalar reference of the Q3_K lane kernel, as [`reference_q2_k`].
pub fn reference_q3_k(w: &[Q3Kx16], a: &[BlockQ8K], terms: &[ActTerms]) -> [f32; LANE_ROWS] {
    std::array::from_fn(|i| {
        let mut acc = 0f32;
        for ((g, a), t) in w.iter().zip(a).zip(terms) {
            let b = g.block(i);
            let mut s = 0i32;
            for sub in 0..16 {
                let dot: i32 = (16 * sub..16 * (sub + 1))
                    .map(|v| {
                        let high = (b.hmask[v % 32] >> (v / 32)) & 1;
                        let q = i32::from(low_code(&b.qs, v)) - if high == 1 { 0 } else { 4 };
                        q * i32::from(a.qs[v])
                    })
                    .sum();
                s += i32::from(q3_scale(&b.scales, sub)) * dot;
            }
            acc = (s as f32).mul_add(b.d.to_f32() * t.d, acc);
        }
        acc
    })
}

#[cfg(test)]
mod tests {
    use super::super::lanes::{assert_gather_round_trips, gather_rows};
    use super::super::lanes_k::terms_q8_k;
    use super::super::test_blocks::random;
    use super::super::tile_k::tests::exact_acts;
    use super::super::tile_k235::{vec_dot_q2_k_scalar, vec_dot_q3_k_scalar};
    use super::*;

    #[test]
    fn gather_keeps_every_block() {
        assert_gather_round_trips::<Q2Kx16>();
        assert_gather_round_trips::<Q3Kx16>();
    }

    /// The references against the per-row scalar products (the same integers; unit scales and
    /// activation codes within ±7 keep every sum below 2^24, every float step exact).
    #[test]
    fn references_equal_the_per_row_products() {
        let bpr = 3;
        let a = exact_acts(bpr, 9);
        let terms: Vec<ActTerms> = a.iter().map(terms_q8_k).collect();

        let mut b2 = random::<BlockQ2K>(LANE_ROWS * bpr, 8);
        b2.iter_mut()
            .for_each(|b| (b.d, b.dmin) = (f16::ONE, f16::ONE));
        let mut g2 = vec![Q2Kx16::zeroed(); bpr];
        gather_rows(&b2, bpr, &mut g2);
        let mut b3 = random::<BlockQ3K>(LANE_ROWS * bpr, 18);
        b3.iter_mut().for_each(|b| b.d = f16::ONE);
        let mut g3 = vec![Q3Kx16::zeroed(); bpr];
        gather_rows(&b3, bpr, &mut g3);
        let (got2, got3) = (
            reference_q2_k(&g2, &a, &terms),
            reference_q3_k(&g3, &a, &terms),
        );
        for i in 0..LANE_ROWS {
            let rows = i * bpr..(i + 1) * bpr;
            assert_eq!(
                got2[i],
                vec_dot_q2_k_scalar(&b2[rows.clone()], &a),
                "Q2_K row {i}"
            );
            assert_eq!(got3[i], vec_dot_q3_k_scalar(&b3[rows], &a), "Q3_K row {i}");
        }
    }
}

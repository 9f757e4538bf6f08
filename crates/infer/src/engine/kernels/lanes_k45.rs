//! The lane layout ([`super::lanes`]) for Q4_K and Q5_K: 16 rows per group, one row per 32-bit
//! lane, and its scalar reference product against Q8_K.
//!
//! Why: the k-quants' 4-row tiles (`tile_k`, `tile_k235`, `tile_k_wide`) keep llama.cpp's per-row
//! arithmetic, two instructions per 32 codes and token for the integer product and eight lanes of
//! float work per row; here eight `vpdpbusd` sum a 32-value sub-block for 16 rows at once and one
//! `vpmulld` scales it, as the Q6_K lanes do (`lanes_k`).
//!
//! A group super-block holds the 16 rows' `d` and `dmin`, their packed 6-bit scales and minimums
//! as three 32-bit words per row (`scales[w][i]`: bytes `4w … 4w + 3` of row `i`'s 12, unpacked
//! in the kernel by llama.cpp's `kmask` steps on 16 rows at once), and the codes' low four bits
//! as 32 vectors of 16 × 4 bytes: `qs[v][4i + k]` is byte `4v + k` of row `i`'s `qs`, whose low
//! nibble is value `64j + 4c + k` (sub-block `2j`) and high nibble value `64j + 32 + 4c + k`
//! (sub-block `2j + 1`), `v = 8j + c`. Q5_K adds its fifth bits the same way, 8 vectors:
//! `qh[c][4i + k]` is byte `4c + k` of row `i`'s `qh`, whose bit `s` is the fifth bit of value
//! `32s + 4c + k`. Same size as the 16 blocks.
//!
//! The arithmetic, which the SIMD kernel follows exactly and the tests check bit for bit: per
//! (row, token) and super-block the exact integers `S = Σ_k sc_k · Σ_{i ∈ k} q_i · a_i` and
//! `M = Σ_k m_k · (bsum_{2k} + bsum_{2k+1})`, then `acc = fma(f32(S), d_w · d_a, acc)` and
//! `acc_m = fma(f32(M), dmin_w · d_a, acc_m)`, super-blocks in order; the product is
//! `acc − acc_m`. llama.cpp's kernels compute the same integers.

use bytemuck::{Pod, Zeroable};
use half::f16;
use shuku_quants::blocks::{get_scale_min_k4, BlockQ4K, BlockQ5K, BlockQ8K, K_SCALE_SIZE, QK_K};

use super::lanes::{chunked, unchunked, unworded, words, ActTerms, LaneGroup, LANE_ROWS};

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

/// Super-block `b` of 16 Q5_K rows.
#[derive(Debug, Clone, Copy, PartialEq, Pod, Zeroable)]
#[repr(C)]
pub struct Q5Kx16 {
    /// Each row's scale of the sub-block scales.
    pub d: [f16; LANE_ROWS],
    /// Each row's scale of the sub-block minimums.
    pub dmin: [f16; LANE_ROWS],
    /// As [`Q4Kx16::scales`].
    pub scales: [[u32; LANE_ROWS]; K_SCALE_SIZE / 4],
    /// `qh[c][4i + k]`: byte `4c + k` of row `i`'s fifth bits.
    pub qh: [[u8; 4 * LANE_ROWS]; QK_K / 32],
    /// As [`Q4Kx16::qs`].
    pub qs: [[u8; 4 * LANE_ROWS]; VECTORS],
}

/// What the Q4_K and Q5_K lane kernel reads of a group super-block.
pub trait K45Lanes: LaneGroup {
    /// Each row's `d`.
    fn d(&self) -> &[f16; LANE_ROWS];
    /// Each row's `dmin`.
    fn dmin(&self) -> &[f16; LANE_ROWS];
    /// The packed scales and minimums, three words per row.
    fn scale_words(&self) -> &[[u32; LANE_ROWS]; K_SCALE_SIZE / 4];
    /// The codes' low four bits.
    fn nibbles(&self) -> &[[u8; 4 * LANE_ROWS]; VECTORS];
    /// Q5_K's fifth bits; `None` for Q4_K.
    fn fifth_bits(&self) -> Option<&[[u8; 4 * LANE_ROWS]; QK_K / 32]>;
}

impl K45Lanes for Q4Kx16 {
    fn d(&self) -> &[f16; LANE_ROWS] {
        &self.d
    }
    fn dmin(&self) -> &[f16; LANE_ROWS] {
        &self.dmin
    }
    fn scale_words(&self) -> &[[u32; LANE_ROWS]; K_SCALE_SIZE / 4] {
        &self.scales
    }
    fn nibbles(&self) -> &[[u8; 4 * LANE_ROWS]; VECTORS] {
        &self.qs
    }
    fn fifth_bits(&self) -> Option<&[[u8; 4 * LANE_ROWS]; QK_K / 32]> {
        None
    }
}

impl K45Lanes for Q5Kx16 {
    fn d(&self) -> &[f16; LANE_ROWS] {
        &self.d
    }
    fn dmin(&self) -> &[f16; LANE_ROWS] {
        &self.dmin
    }
    fn scale_words(&self) -> &[[u32; LANE_ROWS]; K_SCALE_SIZE / 4] {
        &self.scales
    }
    fn nibbles(&self) -> &[[u8; 4 * LANE_ROWS]; VECTORS] {
        &self.qs
    }
    fn fifth_bits(&self) -> Option<&[[u8; 4 * LANE_ROWS]; QK_K / 32]> {
        Some(&self.qh)
    }
}

impl LaneGroup for Q5Kx16 {
    type Block = BlockQ5K;
    fn gather(rows: &[BlockQ5K; LANE_ROWS]) -> Self {
        Q5Kx16 {
            d: rows.map(|r| r.d),
            dmin: rows.map(|r| r.dmin),
            scales: words(rows, |r| &r.scales),
            qh: chunked(rows, |r| &r.qh),
            qs: chunked(rows, |r| &r.qs),
        }
    }
    fn block(&self, i: usize) -> BlockQ5K {
        BlockQ5K {
            d: self.d[i],
            dmin: self.dmin[i],
            scales: unworded(&self.scales, i),
            qh: unchunked(&self.qh, i),
            qs: unchunked(&self.qs, i),
        }
    }
}

impl LaneGroup for Q4Kx16 {
    type Block = BlockQ4K;
    fn gather(rows: &[BlockQ4K; LANE_ROWS]) -> Self {
        Q4Kx16 {
            d: rows.map(|r| r.d),
            dmin: rows.map(|r| r.dmin),
            scales: words(rows, |r| &r.scales),
            qs: chunked(rows, |r| &r.qs),
        }
    }
    fn block(&self, i: usize) -> BlockQ4K {
        BlockQ4K {
            d: self.d[i],
            dmin: self.dmin[i],
            scales: unworded(&self.scales, i),
            qs: unchunked(&self.qs, i),
        }
    }
}

/// The scalar reference of the Q4_K and Q5_K lane kernel: one group's 16 rows × one token (`a`:
/// its Q8_K blocks, `terms` theirs), with the arithmetic in the module doc.
pub fn reference<G: K45Lanes>(w: &[G], a: &[BlockQ8K], terms: &[ActTerms]) -> [f32; LANE_ROWS] {
    std::array::from_fn(|i| {
        let (mut acc, mut acc_m) = (0f32, 0f32);
        for ((g, a), t) in w.iter().zip(a).zip(terms) {
            let scales = unworded(g.scale_words(), i);
            let qs: [u8; QK_K / 2] = unchunked(g.nibbles(), i);
            let qh: Option<[u8; QK_K / 8]> = g.fifth_bits().map(|f| unchunked(f, i));
            let (mut s, mut m) = (0i32, 0i32);
            for k in 0..8 {
                let (sc, mk) = get_scale_min_k4(k, &scales);
                let dot: i32 = (0..32)
                    .map(|l| {
                        let byte = qs[32 * (k / 2) + l];
                        let low = if k % 2 == 0 { byte & 15 } else { byte >> 4 };
                        let fifth = qh.map_or(0, |h| ((h[l] >> k) & 1) << 4);
                        i32::from(low | fifth) * i32::from(a.qs[32 * k + l])
                    })
                    .sum();
                s += i32::from(sc) * dot;
                m += i32::from(mk) * (i32::from(a.bsums[2 * k]) + i32::from(a.bsums[2 * k + 1]));
            }
            acc = (s as f32).mul_add(g.d()[i].to_f32() * t.d, acc);
            acc_m = (m as f32).mul_add(g.dmin()[i].to_f32() * t.d, acc_m);
        }
        acc - acc_m
    })
}

#[cfg(test)]
mod tests {
    use super::super::lanes::{assert_gather_round_trips, gather_rows};
    use super::super::lanes_k::terms_q8_k;
    use super::super::test_blocks::random;
    use super::super::tile_k::tests::exact_acts;
    use super::super::tile_k::vec_dot_q4_k_scalar;
    use super::super::tile_k235::vec_dot_q5_k_scalar;
    use super::*;

    #[test]
    fn gather_keeps_every_block() {
        assert_gather_round_trips::<Q4Kx16>();
        assert_gather_round_trips::<Q5Kx16>();
    }

    /// The reference against the per-row scalar product (the same integers; unit scales and
    /// activation codes within ±7 keep every sum below 2^24, every float step exact, so the two
    /// agree bit for bit). `unit` sets a block's `d` and `dmin` to 1.
    fn check_reference<G: K45Lanes>(
        unit: fn(&mut G::Block),
        per_row: fn(&[G::Block], &[BlockQ8K]) -> f32,
    ) {
        let bpr = 3;
        let mut blocks = random::<G::Block>(LANE_ROWS * bpr, 8);
        blocks.iter_mut().for_each(unit);
        let mut groups = vec![G::zeroed(); bpr];
        gather_rows(&blocks, bpr, &mut groups);
        let a = exact_acts(bpr, 9);
        let terms: Vec<ActTerms> = a.iter().map(terms_q8_k).collect();
        let got = reference(&groups, &a, &terms);
        for (i, &g) in got.iter().enumerate() {
            let want = per_row(&blocks[i * bpr..(i + 1) * bpr], &a);
            assert_eq!(g, want, "row {i}");
        }
    }

    #[test]
    fn reference_equals_the_per_row_product() {
        check_reference::<Q4Kx16>(
            |b| (b.d, b.dmin) = (f16::ONE, f16::ONE),
            vec_dot_q4_k_scalar,
        );
        check_reference::<Q5Kx16>(
            |b| (b.d, b.dmin) = (f16::ONE, f16::ONE),
            vec_dot_q5_k_scalar,
        );
    }
}

//! Round-to-nearest group quantization with a searched range, for the two layouts the runtimes read:
//! MLX's affine groups (`w ≈ scale · q + bias`, a free offset) and ONNX Runtime's `MatMulNBits` groups
//! (`w ≈ scale · (q − zero_point)`, an integer offset).
//!
//! Both runtimes' own converters take each group's plain min and max (mlx) or its largest magnitude
//! (onnxruntime's default symmetric quantizer). Here each group tries a range of shrunken ranges, refits
//! scale and offset by least squares for the codes each range gives, and keeps the fit with the smallest
//! squared error — the search llama.cpp's k-quants use — so the same bits carry less error. Written here
//! because no crate quantizes to these two layouts.

/// The codes of one group and how to map them back.
#[derive(Debug, Clone, PartialEq)]
pub struct AffineGroup {
    /// One code per weight, in `0..=2^bits - 1`.
    pub codes: Vec<u8>,
    /// Step between codes.
    pub scale: f32,
    /// Value of code 0.
    pub bias: f32,
}

/// The codes of one group with an integer zero point.
#[derive(Debug, Clone, PartialEq)]
pub struct ZeroPointGroup {
    /// One code per weight, in `0..=2^bits - 1`.
    pub codes: Vec<u8>,
    /// Step between codes.
    pub scale: f32,
    /// The code that means 0.
    pub zero_point: u8,
}

/// How many shrink steps the range search tries on each side of the plain min/max range.
const SEARCH_STEPS: i32 = 10;
/// How far a step moves the first code, in code units.
const STEP: f32 = 0.1;

fn quantize_codes(w: &[f32], scale: f32, bias: f32, nmax: f32, codes: &mut [u8]) {
    let inv = if scale != 0.0 { 1.0 / scale } else { 0.0 };
    for (c, &x) in codes.iter_mut().zip(w) {
        *c = ((x - bias) * inv).round().clamp(0.0, nmax) as u8;
    }
}

fn squared_error(w: &[f32], codes: &[u8], scale: f32, bias: f32) -> f32 {
    w.iter()
        .zip(codes)
        .map(|(&x, &q)| {
            let d = scale * q as f32 + bias - x;
            d * d
        })
        .sum()
}

/// Least-squares `scale, bias` for fixed codes; `None` when the codes are all equal.
fn refit(w: &[f32], codes: &[u8]) -> Option<(f32, f32)> {
    let n = w.len() as f64;
    let (mut sq, mut sqq, mut sw, mut sqw) = (0f64, 0f64, 0f64, 0f64);
    for (&x, &q) in w.iter().zip(codes) {
        let (q, x) = (q as f64, x as f64);
        sq += q;
        sqq += q * q;
        sw += x;
        sqw += q * x;
    }
    let det = n * sqq - sq * sq;
    if det <= 0.0 {
        return None;
    }
    let scale = (n * sqw - sq * sw) / det;
    let bias = (sw - scale * sq) / n;
    Some((scale as f32, bias as f32))
}

/// Quantizes one group to `bits` with a free offset; `round` maps a scale or bias to what the file stores
/// (f16 rounding for f16 scales), so the codes are chosen for the stored values.
pub fn affine(w: &[f32], bits: u32, round: impl Fn(f32) -> f32) -> AffineGroup {
    let nmax = ((1u32 << bits) - 1) as f32;
    let (lo, hi) = w
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &x| {
            (a.min(x), b.max(x))
        });
    let mut codes = vec![0u8; w.len()];
    if w.is_empty() || hi <= lo {
        // A constant group (all zero, often: padding) is exact with scale 0.
        let bias = if w.is_empty() { 0.0 } else { round(lo) };
        return AffineGroup {
            codes,
            scale: 0.0,
            bias,
        };
    }
    let mut best = (f32::INFINITY, 0.0f32, 0.0f32);
    let mut trial = vec![0u8; w.len()];
    for step in -SEARCH_STEPS..=SEARCH_STEPS {
        // Widen or shrink the range by moving its end points by `step · STEP` codes.
        let scale = (hi - lo) / (nmax + step as f32 * STEP * 2.0);
        if scale <= 0.0 {
            continue;
        }
        let bias = lo + (hi - lo - scale * nmax) / 2.0;
        quantize_codes(w, scale, bias, nmax, &mut trial);
        let (scale, bias) = refit(w, &trial).unwrap_or((scale, bias));
        let (scale, bias) = (round(scale), round(bias));
        quantize_codes(w, scale, bias, nmax, &mut trial);
        let err = squared_error(w, &trial, scale, bias);
        if err < best.0 {
            best = (err, scale, bias);
            codes.copy_from_slice(&trial);
        }
    }
    AffineGroup {
        codes,
        scale: best.1,
        bias: best.2,
    }
}

/// Codes of `w` for `scale` (of either sign) around the zero point `z`.
fn codes_around(w: &[f32], scale: f32, z: f32, nmax: f32, codes: &mut [u8]) {
    for (c, &x) in codes.iter_mut().zip(w) {
        *c = (x / scale + z).round().clamp(0.0, nmax) as u8;
    }
}

/// The least-squares scale for fixed codes around `z` (`Σ w(q − z) / Σ (q − z)²`); `None` when every
/// code is `z`.
fn refit_scale(w: &[f32], codes: &[u8], z: f32) -> Option<f32> {
    let (num, den) = w.iter().zip(codes).fold((0f64, 0f64), |(a, b), (&x, &q)| {
        let d = q as f64 - z as f64;
        (a + d * x as f64, b + d * d)
    });
    (den > 0.0).then(|| (num / den) as f32)
}

/// A zero-point fit kept while searching: the best squared error so far and its group.
struct BestZeroPoint(Option<(f32, ZeroPointGroup)>);

impl BestZeroPoint {
    /// Refits `scale` for the codes around `z` twice, then keeps the result if it beats the best.
    fn try_scale(
        &mut self,
        w: &[f32],
        mut scale: f32,
        z: f32,
        nmax: f32,
        round: &impl Fn(f32) -> f32,
    ) {
        let mut codes = vec![0u8; w.len()];
        for _ in 0..2 {
            codes_around(w, scale, z, nmax, &mut codes);
            match refit_scale(w, &codes, z) {
                Some(s) if s != 0.0 && s.is_finite() && s.signum() == scale.signum() => {
                    scale = round(s)
                }
                _ => break,
            }
        }
        codes_around(w, scale, z, nmax, &mut codes);
        let err = squared_error(w, &codes, scale, -z * scale);
        if self.0.as_ref().is_none_or(|(e, _)| err < *e) {
            self.0 = Some((
                err,
                ZeroPointGroup {
                    codes,
                    scale,
                    zero_point: z as u8,
                },
            ));
        }
    }

    fn finish(self, n: usize, z: u8) -> ZeroPointGroup {
        self.0.map(|(_, g)| g).unwrap_or(ZeroPointGroup {
            codes: vec![z; n],
            scale: 0.0,
            zero_point: z,
        })
    }
}

/// Quantizes one group to `bits` with an integer zero point (`w ≈ scale · (q − z)`), scale stored as
/// `round(scale)`.
pub fn zero_point(w: &[f32], bits: u32, round: impl Fn(f32) -> f32) -> ZeroPointGroup {
    let nmax = ((1u32 << bits) - 1) as f32;
    let (lo, hi) = w
        .iter()
        .fold((0f32, 0f32), |(a, b), &x| (a.min(x), b.max(x)));
    let mut best = BestZeroPoint(None);
    // The representable range always contains 0, so the group's range is extended to it.
    if hi > lo {
        for step in -SEARCH_STEPS..=SEARCH_STEPS {
            let scale = (hi - lo) / (nmax + step as f32 * STEP * 2.0);
            if scale > 0.0 {
                let z = (-lo / scale).round().clamp(0.0, nmax);
                best.try_scale(w, round(scale), z, nmax, &round);
            }
        }
    }
    best.finish(w.len(), 0)
}

/// Quantizes one group with the zero point fixed at the middle code, `w ≈ scale · (q − 2^(bits−1))`
/// (`MatMulNBits` without zero points). The scale's sign is free, so the group's largest magnitude can take
/// the extra negative code, as onnxruntime's own quantizer does; the search tries scales around that
/// choice and around the opposite one and refits each by least squares.
pub fn symmetric(w: &[f32], bits: u32) -> ZeroPointGroup {
    let mid = (1u32 << (bits - 1)) as f32;
    let nmax = ((1u32 << bits) - 1) as f32;
    let edge = w
        .iter()
        .fold(0f32, |e, &x| if x.abs() > e.abs() { x } else { e });
    let mut best = BestZeroPoint(None);
    if edge != 0.0 {
        // The edge maps to code 0 (divisor −mid) or to the top code (divisor mid − 1).
        for base in [-mid, mid - 1.0] {
            for step in -SEARCH_STEPS..=SEARCH_STEPS {
                let divisor = base + step as f32 * STEP;
                if divisor != 0.0 {
                    best.try_scale(w, edge / divisor, mid, nmax, &|x| x);
                }
            }
        }
    }
    best.finish(w.len(), mid as u8)
}

/// Packs codes of `bits` (4 or 8) into little-endian u32 words, first code in the lowest bits (MLX).
pub fn pack_u32(codes: &[u8], bits: u32) -> Vec<u32> {
    let per_word = (32 / bits) as usize;
    codes
        .chunks(per_word)
        .map(|chunk| {
            chunk
                .iter()
                .enumerate()
                .fold(0u32, |word, (i, &c)| word | (c as u32) << (i as u32 * bits))
        })
        .collect()
}

/// Packs codes of `bits` (4 or 8) into bytes, first code in the low nibble (ONNX `MatMulNBits`).
pub fn pack_u8(codes: &[u8], bits: u32) -> Vec<u8> {
    match bits {
        4 => codes
            .chunks(2)
            .map(|p| p[0] | p.get(1).copied().unwrap_or(0) << 4)
            .collect(),
        _ => codes.to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f16_round(x: f32) -> f32 {
        half::f16::from_f32(x).to_f32()
    }

    fn sample(seed: u64, n: usize) -> Vec<f32> {
        let mut rng = shuku_testkit::TestRng(seed);
        (0..n).map(|_| rng.normal() * 0.05).collect()
    }

    /// The plain min/max quantizer both runtimes' converters start from.
    fn min_max_error(w: &[f32], bits: u32) -> f32 {
        let nmax = ((1u32 << bits) - 1) as f32;
        let lo = w.iter().cloned().fold(f32::INFINITY, f32::min);
        let hi = w.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        let scale = (hi - lo) / nmax;
        let mut codes = vec![0u8; w.len()];
        quantize_codes(w, scale, lo, nmax, &mut codes);
        squared_error(w, &codes, scale, lo)
    }

    #[test]
    fn the_search_beats_min_max_and_stays_in_range() {
        let mut ours = 0.0;
        let mut plain = 0.0;
        for seed in 0..200 {
            let w = sample(seed, 64);
            let g = affine(&w, 4, f16_round);
            assert!(g.codes.iter().all(|&c| c <= 15));
            ours += squared_error(&w, &g.codes, g.scale, g.bias);
            plain += min_max_error(&w, 4);
        }
        assert!(ours < 0.9 * plain, "searched {ours} vs min/max {plain}");
    }

    #[test]
    fn zero_points_reconstruct_and_keep_zero_exact() {
        for seed in 0..50 {
            let mut w = sample(seed, 32);
            w[3] = 0.0;
            let g = zero_point(&w, 4, |x| x);
            assert!(g.zero_point <= 15);
            let deq = |q: u8| g.scale * (q as f32 - g.zero_point as f32);
            let err: f32 = w
                .iter()
                .zip(&g.codes)
                .map(|(&x, &q)| (deq(q) - x).powi(2))
                .sum();
            // The plain range with an integer zero point, what a min/max quantizer of this layout gives.
            let (lo, hi) = (
                w.iter().cloned().fold(0f32, f32::min),
                w.iter().cloned().fold(0f32, f32::max),
            );
            let s = (hi - lo) / 15.0;
            let z = (-lo / s).round();
            let plain: f32 = w
                .iter()
                .map(|&x| (s * ((x / s + z).round().clamp(0.0, 15.0) - z) - x).powi(2))
                .sum();
            assert!(err <= plain, "{err} vs {plain}");
            // 0 maps to the zero point exactly.
            assert_eq!(deq(g.codes[3]), 0.0);
        }
        let g8 = zero_point(&sample(7, 128), 8, |x| x);
        assert!(g8.scale > 0.0);
    }

    #[test]
    fn symmetric_groups_beat_the_absmax_rule() {
        let (mut ours, mut plain) = (0.0, 0.0);
        for seed in 0..200 {
            let w = sample(seed, 32);
            let g = symmetric(&w, 4);
            assert_eq!(g.zero_point, 8);
            let deq = |q: u8, s: f32| s * (q as f32 - 8.0);
            ours += w
                .iter()
                .zip(&g.codes)
                .map(|(&x, &q)| (deq(q, g.scale) - x).powi(2))
                .sum::<f32>();
            // onnxruntime's rule: scale = edge / −8, codes round(w / scale) + 8.
            let edge = w
                .iter()
                .fold(0f32, |e, &x| if x.abs() > e.abs() { x } else { e });
            let s = edge / -8.0;
            plain += w
                .iter()
                .map(|&x| (deq((x / s + 8.0).round().clamp(0.0, 15.0) as u8, s) - x).powi(2))
                .sum::<f32>();
        }
        assert!(ours < 0.9 * plain, "searched {ours} vs absmax {plain}");
        assert_eq!(symmetric(&[0.0; 32], 4).scale, 0.0);
    }

    #[test]
    fn constant_and_zero_groups_are_exact() {
        let g = affine(&[0.0; 32], 4, f16_round);
        assert_eq!((g.scale, g.bias), (0.0, 0.0));
        let g = affine(&[0.25; 32], 8, f16_round);
        assert_eq!(g.scale * g.codes[0] as f32 + g.bias, 0.25);
        let g = zero_point(&[0.0; 32], 4, |x| x);
        assert_eq!(g.scale, 0.0);
        for c in [0.5f32, -0.5] {
            let g = zero_point(&[c; 32], 4, |x| x);
            let v = g.scale * (g.codes[0] as f32 - g.zero_point as f32);
            assert!((v - c).abs() < 1e-6, "{c}: {v}");
        }
    }

    #[test]
    fn packing_puts_the_first_code_lowest() {
        let codes: Vec<u8> = (0..8).collect();
        assert_eq!(pack_u32(&codes, 4), vec![0x7654_3210]);
        assert_eq!(pack_u32(&[1, 2, 3, 4], 8), vec![0x0403_0201]);
        assert_eq!(pack_u8(&[1, 2, 3, 4], 4), vec![0x21, 0x43]);
        assert_eq!(pack_u8(&[1, 2], 8), vec![1, 2]);
    }
}

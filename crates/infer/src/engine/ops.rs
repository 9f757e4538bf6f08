//! Element-wise building blocks: RMSNorm, RoPE, activations — each computed the way ggml's CPU
//! backend computes it, so rounding differences stay at the level of summation order.

use half::f16;

use super::kernels::pool;

use super::config::RopeStyle;

/// Values from which these operations split over the pool (a prompt's batch): the kernels'
/// threshold. Every value is computed as alone either way.
use super::kernels::PARALLEL_ITEMS as PARALLEL_FROM;

/// Values per task of the element-wise operations.
const CHUNK: usize = 1 << 12;

/// `f` on each `width`-wide row of `x`, rows in parallel for large inputs.
fn each_row(x: &mut [f32], width: usize, f: impl Fn(usize, &mut [f32]) + Sync) {
    if x.len() >= PARALLEL_FROM {
        pool::for_each_chunk(x, width, f);
    } else {
        x.chunks_mut(width).enumerate().for_each(|(i, r)| f(i, r));
    }
}

/// `f` on matching chunks of `x` and `y`, in parallel for large inputs.
fn each_pair(x: &mut [f32], y: &[f32], f: impl Fn(&mut [f32], &[f32]) + Sync) {
    if x.len() >= PARALLEL_FROM {
        pool::for_each_chunk(x, CHUNK, |i, a| f(a, &y[i * CHUNK..][..a.len()]));
    } else {
        f(x, y);
    }
}

/// RMSNorm of each `w.len()`-wide row of `x`, in place, times `w`.
///
/// ggml accumulates the squares in double and takes `1/sqrt(mean + eps)` in float.
pub fn rms_norm(x: &mut [f32], w: &[f32], eps: f32) {
    let n = w.len();
    each_row(x, n, |_, row| {
        let sum: f64 = row.iter().map(|&v| f64::from(v * v)).sum();
        let mean = (sum / n as f64) as f32;
        let scale = 1.0 / (mean + eps).sqrt();
        for (v, &wi) in row.iter_mut().zip(w) {
            *v = (*v * scale) * wi;
        }
    });
}

/// `x[i] += b[i % b.len()]` for every row.
pub fn add_bias(x: &mut [f32], b: &[f32]) {
    for row in x.chunks_exact_mut(b.len()) {
        for (v, bi) in row.iter_mut().zip(b) {
            *v += bi;
        }
    }
}

/// `x += y`.
pub fn add_in_place(x: &mut [f32], y: &[f32]) {
    each_pair(x, y, |x, y| {
        for (a, b) in x.iter_mut().zip(y) {
            *a += b;
        }
    });
}

/// `gate ← silu(gate) · up` (llama, qwen2).
pub fn swiglu(gate: &mut [f32], up: &[f32]) {
    each_pair(gate, up, |gate, up| {
        for (g, &u) in gate.iter_mut().zip(up) {
            *g = *g / (1.0 + (-*g).exp()) * u;
        }
    });
}

/// GELU (tanh approximation) in f32, as `ggml_gelu_f32`.
fn gelu_f32(x: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    const COEF_A: f32 = 0.044_715;
    0.5 * x * (1.0 + (SQRT_2_OVER_PI * x * (1.0 + COEF_A * x * x)).tanh())
}

/// `gate ← gelu(gate) · up` (gemma3). ggml's CPU backend evaluates GELU through an f16 table:
/// the input is rounded to f16 and the result is the f16-rounded GELU of that, except beyond ±10.
/// The table is built once (65 536 entries, 128 KiB), as ggml's `ggml_table_gelu_f16`.
pub fn geglu(gate: &mut [f32], up: &[f32]) {
    let table = gelu_table();
    each_pair(gate, up, |gate, up| {
        for (g, &u) in gate.iter_mut().zip(up) {
            let x = *g;
            let y = if x <= -10.0 {
                0.0
            } else if x >= 10.0 {
                x
            } else {
                f16::from_bits(table[usize::from(f16::from_f32(x).to_bits())]).to_f32()
            };
            *g = y * u;
        }
    });
}

/// `fp16(gelu(h))` for every f16 bit pattern `h`.
fn gelu_table() -> &'static [u16] {
    static TABLE: std::sync::OnceLock<Vec<u16>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        (0..=u16::MAX)
            .map(|h| f16::from_f32(gelu_f32(f16::from_bits(h).to_f32())).to_bits())
            .collect()
    })
}

/// Rotary embedding tables for a run of positions: `cos`/`sin` per position and pair.
///
/// Computed per call for the positions in the batch, never as a table over the whole trained
/// context. The angle follows ggml: `θ = pos · base^(-2i/n_rot)` built by repeated multiplication
/// in f32, divided by the optional per-pair frequency factor, times the linear scale; cos and sin
/// are then multiplied by `mscale` (`rope.scaling.attn_factor`, 1 for most models).
pub struct Rope {
    half: usize,
    cos: Vec<f32>,
    sin: Vec<f32>,
}

impl Rope {
    /// Tables for positions `pos0 .. pos0 + n`.
    pub fn new(
        pos0: usize,
        n: usize,
        n_rot: usize,
        base: f32,
        freq_scale: f32,
        freq_factors: Option<&[f32]>,
        mscale: f32,
    ) -> Rope {
        let half = n_rot / 2;
        let theta_scale = base.powf(-2.0 / n_rot as f32);
        let mut cos = Vec::with_capacity(n * half);
        let mut sin = Vec::with_capacity(n * half);
        for p in pos0..pos0 + n {
            let mut theta = p as f32;
            for i in 0..half {
                let ff = freq_factors.and_then(|f| f.get(i)).copied().unwrap_or(1.0);
                let t = freq_scale * (theta / ff);
                cos.push(t.cos() * mscale);
                sin.push(t.sin() * mscale);
                theta *= theta_scale;
            }
        }
        Rope { half, cos, sin }
    }

    /// [`Rope::apply`] to each `width`-wide row of `x`, row `i` at the table's position `i`.
    pub fn apply_rows(&self, x: &mut [f32], width: usize, head_dim: usize, style: RopeStyle) {
        each_row(x, width, |i, row| self.apply(row, i, head_dim, style));
    }

    /// Rotates the first `2·half` dimensions of every head of token `t` (`x` holds that token's
    /// heads back to back, each `head_dim` wide).
    pub fn apply(&self, x: &mut [f32], t: usize, head_dim: usize, style: RopeStyle) {
        let h = self.half;
        let cos = &self.cos[t * h..(t + 1) * h];
        let sin = &self.sin[t * h..(t + 1) * h];
        for head in x.chunks_exact_mut(head_dim) {
            for i in 0..h {
                let (a, b) = match style {
                    RopeStyle::Normal => (2 * i, 2 * i + 1),
                    RopeStyle::Neox => (i, i + h),
                };
                let (x0, x1) = (head[a], head[b]);
                head[a] = x0 * cos[i] - x1 * sin[i];
                head[b] = x0 * sin[i] + x1 * cos[i];
            }
        }
    }
}

/// Soft-caps logits: `c · tanh(x / c)`.
pub fn softcap(x: &mut [f32], c: f32) {
    for v in x {
        *v = c * (*v / c).tanh();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rms_norm_unit_weights_gives_unit_rms() {
        let mut x = vec![1.0, 2.0, 3.0, 4.0, -1.0, 0.5, 0.0, 2.0];
        rms_norm(&mut x, &[1.0; 4], 0.0);
        for row in x.chunks(4) {
            let ms: f32 = row.iter().map(|v| v * v).sum::<f32>() / 4.0;
            assert!((ms - 1.0).abs() < 1e-5);
        }
    }

    #[test]
    fn rope_position_zero_is_identity_and_rotation_preserves_norm() {
        let r = Rope::new(0, 2, 4, 10000.0, 1.0, None, 1.0);
        let mut x = vec![1.0, 2.0, 3.0, 4.0];
        r.apply(&mut x, 0, 4, RopeStyle::Normal);
        assert_eq!(x, [1.0, 2.0, 3.0, 4.0]);
        for style in [RopeStyle::Normal, RopeStyle::Neox] {
            let mut y = vec![1.0, 2.0, 3.0, 4.0];
            r.apply(&mut y, 1, 4, style);
            let n: f32 = y.iter().map(|v| v * v).sum();
            assert!((n - 30.0).abs() < 1e-4);
            assert_ne!(y, [1.0, 2.0, 3.0, 4.0]);
        }
    }

    #[test]
    fn activations() {
        let mut g = vec![0.0, 1.0, -20.0, 20.0];
        swiglu(&mut g, &[1.0, 2.0, 1.0, 1.0]);
        assert!((g[1] - 2.0 * 0.731_058_6).abs() < 1e-5);
        let mut g = vec![0.0, 1.0, -20.0, 20.0];
        geglu(&mut g, &[1.0; 4]);
        assert_eq!(g[0], 0.0);
        assert!((g[1] - 0.8412).abs() < 1e-3);
        assert_eq!(g[2], 0.0);
        assert_eq!(g[3], 20.0);
    }
}

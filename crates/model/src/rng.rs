//! A tiny deterministic normal generator for `Llama::random`, so test models are identical on every machine
//! and candle version (candle's own RNG is neither seedable per call nor stable across backends).

use shuku_math::SplitMix64;

pub(crate) struct Normal {
    bits: SplitMix64,
    spare: Option<f64>,
}

impl Normal {
    pub fn new(seed: u64) -> Self {
        Self {
            bits: SplitMix64::new(seed ^ 0x9E37_79B9_7F4A_7C15),
            spare: None,
        }
    }

    /// Uniform in (0, 1] (never 0, whose logarithm Box–Muller takes).
    fn uniform(&mut self) -> f64 {
        ((self.bits.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    }

    /// Standard normal by Box–Muller.
    pub fn sample(&mut self) -> f64 {
        if let Some(s) = self.spare.take() {
            return s;
        }
        let r = (-2.0 * self.uniform().ln()).sqrt();
        let a = std::f64::consts::TAU * self.uniform();
        self.spare = Some(r * a.sin());
        r * a.cos()
    }

    pub fn vec(&mut self, n: usize, std: f64) -> Vec<f32> {
        (0..n).map(|_| (self.sample() * std) as f32).collect()
    }
}

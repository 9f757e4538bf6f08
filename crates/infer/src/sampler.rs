//! Token sampling with llama.cpp's default chain.
//!
//! The stages run in llama.cpp's default order: **penalties → top-k → top-p → min-p → temperature →
//! random draw**. With a temperature ≤ 0 the last two are replaced by greedy selection (the first
//! maximum after penalties), so `temperature: 0.0` with neutral penalties equals
//! [`argmax`](crate::engine::argmax).
//!
//! * Penalties look at the last `penalty_last_n` tokens (prompt included, as llama.cpp's tools
//!   feed it): a token seen `c > 0` times has its logit divided by `repeat_penalty` when positive
//!   and multiplied by it when negative, then lowered by `c · frequency_penalty + presence_penalty`.
//! * top-k keeps the `k` largest logits (`k = 0`: all); top-p keeps the smallest prefix of the
//!   sorted distribution whose probability reaches `p`; min-p keeps tokens whose probability is at
//!   least `min_p` times the largest. top-p and min-p see the distribution before temperature, as
//!   in llama.cpp.
//! * The draw uses [`Rng`], xoshiro256** seeded through SplitMix64: the same seed and the same
//!   logits give the same tokens on every platform.

use std::collections::VecDeque;

/// Sampling settings; [`Default`] is llama.cpp's default.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplerConfig {
    /// Temperature; ≤ 0 selects greedily.
    pub temperature: f32,
    /// Keep the `top_k` most likely tokens (0: no limit).
    pub top_k: usize,
    /// Nucleus sampling threshold (1.0: off).
    pub top_p: f32,
    /// Minimum probability relative to the most likely token (0.0: off).
    pub min_p: f32,
    /// Repetition penalty (1.0: off).
    pub repeat_penalty: f32,
    /// Subtracted once per occurrence in the window (0.0: off).
    pub frequency_penalty: f32,
    /// Subtracted once for any occurrence in the window (0.0: off).
    pub presence_penalty: f32,
    /// How many recent tokens the penalties look at (0: none).
    pub penalty_last_n: usize,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        SamplerConfig {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repeat_penalty: 1.0,
            frequency_penalty: 0.0,
            presence_penalty: 0.0,
            penalty_last_n: 64,
        }
    }
}

impl SamplerConfig {
    /// Greedy decoding without penalties.
    pub fn greedy() -> Self {
        SamplerConfig {
            temperature: 0.0,
            ..SamplerConfig::default()
        }
    }

    /// Whether sampling ignores the random generator.
    pub fn is_greedy(&self) -> bool {
        self.temperature <= 0.0
    }

    /// Whether the penalties change any logit.
    pub(crate) fn penalties_active(&self) -> bool {
        self.penalty_last_n > 0
            && (self.repeat_penalty != 1.0
                || self.frequency_penalty != 0.0
                || self.presence_penalty != 0.0)
    }
}

/// A small, fast, seedable generator: xoshiro256** (Blackman and Vigna), its state filled from the
/// seed by SplitMix64. Not for cryptography.
#[derive(Debug, Clone)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    /// A generator whose whole sequence is determined by `seed`.
    pub fn new(seed: u64) -> Rng {
        let mut seeding = shuku_math::SplitMix64::new(seed);
        Rng {
            s: std::array::from_fn(|_| seeding.next_u64()),
        }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// A uniform number in `[0, 1)` with 53 random bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// One candidate token and its (transformed) logit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    /// Token id.
    pub id: u32,
    /// Logit after the stages applied so far.
    pub logit: f32,
}

/// The sampler chain with its state: the penalty window and the random generator.
#[derive(Debug, Clone)]
pub struct Sampler {
    config: SamplerConfig,
    rng: Rng,
    recent: VecDeque<u32>,
}

impl Sampler {
    /// A sampler with `config`, drawing from a generator seeded with `seed`.
    pub fn new(config: SamplerConfig, seed: u64) -> Sampler {
        Sampler {
            config,
            rng: Rng::new(seed),
            recent: VecDeque::new(),
        }
    }

    /// The settings.
    pub fn config(&self) -> &SamplerConfig {
        &self.config
    }

    /// Records a token in the penalty window (prompt tokens and sampled tokens alike).
    pub fn accept(&mut self, id: u32) {
        if self.config.penalty_last_n == 0 {
            return;
        }
        if self.recent.len() == self.config.penalty_last_n {
            self.recent.pop_front();
        }
        self.recent.push_back(id);
    }

    /// Picks the next token from a row of logits (the window is not updated: call
    /// [`accept`](Self::accept) with the result).
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        let cfg = self.config;
        let mut c = penalised_candidates(logits, &cfg, self.recent.iter().copied());
        if cfg.is_greedy() {
            return greedy(&c);
        }
        top_k(&mut c, cfg.top_k);
        top_p(&mut c, cfg.top_p);
        min_p(&mut c, cfg.min_p);
        temperature(&mut c, cfg.temperature);
        draw(&c, &mut self.rng)
    }
}

/// One candidate per token of `logits`, with the penalties applied over `window` (the recent
/// tokens) when `config` switches them on.
pub(crate) fn penalised_candidates(
    logits: &[f32],
    config: &SamplerConfig,
    window: impl Iterator<Item = u32>,
) -> Vec<Candidate> {
    let mut c: Vec<Candidate> = logits
        .iter()
        .enumerate()
        .map(|(i, &logit)| Candidate {
            id: i as u32,
            logit,
        })
        .collect();
    if config.penalties_active() {
        apply_penalties(&mut c, window, config);
    }
    c
}

/// llama.cpp's repetition, frequency and presence penalties over the tokens in `window`.
pub fn apply_penalties(
    c: &mut [Candidate],
    window: impl Iterator<Item = u32>,
    cfg: &SamplerConfig,
) {
    let mut counts: rustc_hash::FxHashMap<u32, u32> = Default::default();
    for id in window {
        *counts.entry(id).or_default() += 1;
    }
    for cand in c.iter_mut() {
        let Some(&n) = counts.get(&cand.id) else {
            continue;
        };
        if cand.logit <= 0.0 {
            cand.logit *= cfg.repeat_penalty;
        } else {
            cand.logit /= cfg.repeat_penalty;
        }
        cand.logit -= n as f32 * cfg.frequency_penalty + cfg.presence_penalty;
    }
}

/// The first candidate with the largest logit.
pub fn greedy(c: &[Candidate]) -> u32 {
    let mut best = 0;
    for (i, cand) in c.iter().enumerate() {
        if cand.logit > c[best].logit {
            best = i;
        }
    }
    c.get(best).map_or(0, |b| b.id)
}

/// Sorts by decreasing logit (stable: equal logits keep id order).
fn sort_desc(c: &mut [Candidate]) {
    c.sort_by(|a, b| b.logit.total_cmp(&a.logit));
}

/// Keeps the `k` largest logits, sorted in decreasing order (`k = 0` sorts and keeps all).
pub fn top_k(c: &mut Vec<Candidate>, k: usize) {
    if k > 0 && k < c.len() {
        c.select_nth_unstable_by(k - 1, |a, b| {
            b.logit.total_cmp(&a.logit).then(a.id.cmp(&b.id))
        });
        c.truncate(k);
    }
    sort_desc(c);
}

/// Softmax of the candidates' logits (in their order).
pub fn probabilities(c: &[Candidate]) -> Vec<f32> {
    let max = c.iter().map(|x| x.logit).fold(f32::NEG_INFINITY, f32::max);
    let mut p: Vec<f32> = c.iter().map(|x| (x.logit - max).exp()).collect();
    let sum: f32 = p.iter().sum();
    p.iter_mut().for_each(|v| *v /= sum);
    p
}

/// Keeps the smallest set of most likely candidates whose probability reaches `p` (≥ 1 kept).
/// Expects candidates sorted by decreasing logit.
pub fn top_p(c: &mut Vec<Candidate>, p: f32) {
    if p >= 1.0 || c.is_empty() {
        return;
    }
    let probs = probabilities(c);
    let mut cum = 0.0;
    let mut keep = c.len();
    for (i, q) in probs.iter().enumerate() {
        cum += q;
        if cum >= p {
            keep = i + 1;
            break;
        }
    }
    c.truncate(keep.max(1));
}

/// Keeps candidates whose probability is at least `min_p` times the largest (≥ 1 kept).
pub fn min_p(c: &mut Vec<Candidate>, min_p: f32) {
    if min_p <= 0.0 || c.is_empty() {
        return;
    }
    let max = c.iter().map(|x| x.logit).fold(f32::NEG_INFINITY, f32::max);
    let threshold = max + min_p.ln();
    c.retain(|x| x.logit >= threshold);
}

/// Divides the logits by `t`.
pub fn temperature(c: &mut [Candidate], t: f32) {
    c.iter_mut().for_each(|x| x.logit /= t);
}

/// Draws one candidate from the softmax of their logits.
pub fn draw(c: &[Candidate], rng: &mut Rng) -> u32 {
    let probs = probabilities(c);
    let r = rng.next_f64() as f32;
    let mut cum = 0.0;
    for (cand, p) in c.iter().zip(&probs) {
        cum += p;
        if r < cum {
            return cand.id;
        }
    }
    c.last().map_or(0, |x| x.id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cands(logits: &[f32]) -> Vec<Candidate> {
        logits
            .iter()
            .enumerate()
            .map(|(i, &logit)| Candidate {
                id: i as u32,
                logit,
            })
            .collect()
    }

    fn ids(c: &[Candidate]) -> Vec<u32> {
        c.iter().map(|x| x.id).collect()
    }

    #[test]
    fn greedy_is_the_first_maximum() {
        let logits = [1.0, 3.0, -2.0, 3.0, 0.5];
        let mut s = Sampler::new(SamplerConfig::greedy(), 1);
        assert_eq!(s.sample(&logits), 1);
        assert_eq!(s.sample(&logits), crate::engine::argmax(&logits));
    }

    #[test]
    fn repeat_penalty_divides_positive_and_multiplies_negative_logits() {
        let cfg = SamplerConfig {
            repeat_penalty: 2.0,
            frequency_penalty: 0.5,
            presence_penalty: 0.25,
            ..SamplerConfig::default()
        };
        let mut c = cands(&[4.0, -1.0, 3.0]);
        apply_penalties(&mut c, [0, 1, 1].into_iter(), &cfg);
        // 4 / 2 − 1·0.5 − 0.25; −1 · 2 − 2·0.5 − 0.25; untouched.
        assert_eq!(c[0].logit, 2.0 - 0.75);
        assert_eq!(c[1].logit, -2.0 - 1.25);
        assert_eq!(c[2].logit, 3.0);
    }

    #[test]
    fn penalty_window_holds_the_last_n_tokens() {
        let cfg = SamplerConfig {
            temperature: 0.0,
            repeat_penalty: 10.0,
            penalty_last_n: 2,
            ..SamplerConfig::default()
        };
        let mut s = Sampler::new(cfg, 0);
        for t in [0, 1, 2] {
            s.accept(t);
        }
        // 0 fell out of the window: it wins; 1 and 2 are penalised.
        assert_eq!(s.sample(&[1.0, 5.0, 5.0]), 0);
    }

    #[test]
    fn top_k_keeps_the_k_largest_sorted() {
        let mut c = cands(&[0.1, 0.9, 0.5, 0.7, 0.3]);
        top_k(&mut c, 3);
        assert_eq!(ids(&c), [1, 3, 2]);
        let mut all = cands(&[0.1, 0.9]);
        top_k(&mut all, 0);
        assert_eq!(ids(&all), [1, 0]);
    }

    #[test]
    fn top_p_keeps_the_smallest_nucleus() {
        // Probabilities 0.5, 0.25, 0.125, 0.125.
        let l = [0.5f32.ln(), 0.25f32.ln(), 0.125f32.ln(), 0.125f32.ln()];
        let mut c = cands(&l);
        top_k(&mut c, 0);
        top_p(&mut c, 0.7);
        assert_eq!(ids(&c), [0, 1]);
        let mut c = cands(&l);
        top_k(&mut c, 0);
        top_p(&mut c, 0.1);
        assert_eq!(ids(&c), [0]);
    }

    #[test]
    fn min_p_is_relative_to_the_most_likely() {
        let l = [0.5f32.ln(), 0.3f32.ln(), 0.2f32.ln()];
        let mut c = cands(&l);
        min_p(&mut c, 0.5);
        assert_eq!(ids(&c), [0, 1]);
    }

    #[test]
    fn temperature_sharpens_and_flattens() {
        let mut c = cands(&[2.0, 1.0]);
        temperature(&mut c, 0.5);
        assert_eq!(c[0].logit, 4.0);
        assert_eq!(c[1].logit, 2.0);
    }

    #[test]
    fn draws_follow_the_distribution_and_the_seed() {
        let l = [0.7f32.ln(), 0.3f32.ln()];
        let c = cands(&l);
        let mut rng = Rng::new(42);
        let n = 20_000;
        let zeros = (0..n).filter(|_| draw(&c, &mut rng) == 0).count();
        let f = zeros as f64 / n as f64;
        assert!((f - 0.7).abs() < 0.02, "{f}");
        let cfg = SamplerConfig {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            ..SamplerConfig::default()
        };
        let logits: Vec<f32> = (0..50).map(|i| (i as f32 * 0.37).sin()).collect();
        let run = |seed| {
            let mut s = Sampler::new(cfg, seed);
            (0..64).map(|_| s.sample(&logits)).collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
    }

    #[test]
    fn rng_is_uniform_in_unit_interval() {
        let mut r = Rng::new(0);
        let xs: Vec<f64> = (0..10_000).map(|_| r.next_f64()).collect();
        assert!(xs.iter().all(|&x| (0.0..1.0).contains(&x)));
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        assert!((mean - 0.5).abs() < 0.01);
    }
}

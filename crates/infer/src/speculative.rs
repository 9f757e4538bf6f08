//! Speculative decoding: a cheap drafter proposes the next few tokens, the model checks them all in
//! one forward pass and keeps the longest prefix it agrees with.
//!
//! Why it pays: checking `k` drafted tokens costs one forward pass of the model over `k + 1`
//! positions instead of `k + 1` single-token passes. Where the matrix products of decoding are
//! memory-bound (every weight is read once per pass whatever the number of rows), a pass over a
//! handful of positions costs little more than a pass over one, and each accepted draft token is
//! nearly free. The gain is bounded by that ratio, a single-token pass against one row of a
//! verification pass (which needs the output projection of every row): where the dot products,
//! not memory, bound a pass (a small model on few cores) a row costs nearly a whole pass, so
//! speculation gains little and every rejected draft token costs a row for nothing (`shuku bench
//! -p K` against `-n` shows roughly which case a machine is in). Two drafters are provided:
//!
//! * [`DraftModel`]: a second, smaller [`Engine`] with the same vocabulary, keeping its own
//!   [`Session`] (rolled back to what the model accepted before every draft);
//! * [`PromptLookup`]: no model at all; it drafts what followed the most recent earlier occurrence
//!   of the last n-gram, which wins when the output copies from the input (summaries, edits,
//!   code, quotes).
//!
//! The output does not depend on the drafter:
//!
//! * greedy sampling ([`SamplerConfig::greedy`], any temperature ≤ 0) gives exactly the tokens of
//!   [`Engine::generate_greedy`] (and of [`Engine::generate`] with the same parameters): a draft
//!   token is kept when it is the model's first maximum at its position. Drafts are limited to
//!   [`MAX_DRAFT_TOKENS`] so every verification pass evaluates fewer than 64 positions, where the
//!   engine computes each position with the same per-row kernels as a single-token pass, so the
//!   logits are bitwise those of plain decoding;
//! * with sampling, the tokens follow the model's distribution exactly, by the speculative
//!   sampling rule of Leviathan et al. (2023) and Chen et al. (2023), see [`verify_token`]. `p`
//!   and `q` are the distributions the sampler chain leaves (penalties, top-k, top-p, min-p,
//!   temperature), built by [`TokenDist::from_logits`] with the functions of [`sampler`]. The
//!   tokens drawn differ from [`Engine::generate`]'s for the same seed (the random numbers are
//!   used differently), their distribution does not;
//! * repetition, frequency and presence penalties are handled exactly: the penalty window of each
//!   verified position is the history followed by the draft tokens before it, which are the
//!   tokens plain decoding would have seen there had it produced them.
//!
//! Stop strings, end-of-generation tokens, `max_tokens` and a full context end generation as they
//! do for [`Engine::generate`].
//!
//! ```no_run
//! use shuku_infer::{Engine, EngineOptions, GenerationParams, PromptLookup, SamplerConfig};
//! let engine = Engine::load("model.gguf", EngineOptions::default())?;
//! let params = GenerationParams {
//!     max_tokens: 128,
//!     sampler: SamplerConfig::greedy(),
//!     ..Default::default()
//! };
//! let mut session = engine.new_session();
//! let prompt = "Repeat after me: the quick brown fox jumps over the lazy dog.";
//! let out = engine.generate_speculative(
//!     &mut session,
//!     prompt,
//!     &params,
//!     &mut PromptLookup::new(3),
//!     8,
//! )?;
//! println!("{}\n{}", out.text, out.stats);
//! # Ok::<(), shuku_infer::SpeculativeError>(())
//! ```

use std::fmt;
use std::time::{Duration, Instant};

use crate::engine::{argmax, Engine, EngineError, Session};
use crate::generate::{FinishReason, Generation, GenerationParams, Prompt};
use crate::sampler::{self, Candidate, Rng, SamplerConfig};
use crate::sequence::Sequence;
use crate::tokenizer::Tokenizer;

/// Most tokens one draft may hold. A verification pass evaluates the draft and the token before
/// it; keeping that under 64 positions keeps the engine on the attention path it uses for single
/// tokens, which is what makes greedy output bitwise equal to plain decoding.
pub const MAX_DRAFT_TOKENS: usize = 32;

/// Why speculative generation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpeculativeError {
    /// The model (target or draft) refused a request.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The draft model's vocabulary differs from the target's: its tokens would mean other text.
    #[error("the draft model has {draft} tokens in its vocabulary, the target {target}: speculative decoding needs the same vocabulary")]
    VocabMismatch {
        /// Vocabulary size of the target model.
        target: usize,
        /// Vocabulary size of the draft model.
        draft: usize,
    },
    /// More draft tokens per step than [`MAX_DRAFT_TOKENS`].
    #[error("a draft of {requested} tokens is longer than the {max} allowed")]
    DraftTooLong {
        /// Draft length asked for.
        requested: usize,
        /// [`MAX_DRAFT_TOKENS`].
        max: usize,
    },
    /// Rolling the session back past rejected draft tokens lost positions that sliding-window
    /// layers had already dropped (the micro-batch is shorter than a draft).
    #[error("cannot roll the session back to {wanted} positions (it kept {kept}); use a micro-batch longer than the draft")]
    Rollback {
        /// Positions that should have been kept.
        wanted: usize,
        /// Positions the session kept.
        kept: usize,
    },
}

/// A distribution over token ids: the candidates the sampler chain keeps and their probabilities
/// (every other token has probability 0). Kept sorted by id so lookups and the residual
/// `max(0, p − q)` are cheap even over a whole vocabulary.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenDist {
    ids: Vec<u32>,
    probs: Vec<f64>,
}

impl TokenDist {
    /// The distribution [`Sampler::sample`](crate::Sampler::sample) draws from for `logits` under
    /// `config`, with `recent` the tokens so far (its last `penalty_last_n` form the penalty
    /// window). A greedy configuration gives a one-hot distribution on the token it picks.
    pub fn from_logits(logits: &[f32], config: &SamplerConfig, recent: &[u32]) -> TokenDist {
        if config.is_greedy() {
            return TokenDist::one_hot(greedy_pick(logits, config, recent));
        }
        let mut c = candidates(logits, config, recent);
        sampler::top_k(&mut c, config.top_k);
        sampler::top_p(&mut c, config.top_p);
        sampler::min_p(&mut c, config.min_p);
        sampler::temperature(&mut c, config.temperature);
        let probs = sampler::probabilities(&c);
        let mut pairs: Vec<(u32, f64)> = c
            .iter()
            .zip(probs)
            .map(|(cand, p)| (cand.id, f64::from(p)))
            .collect();
        pairs.sort_unstable_by_key(|&(id, _)| id);
        let (ids, probs) = pairs.into_iter().unzip();
        TokenDist { ids, probs }
    }

    /// Probability 1 on `id`.
    pub fn one_hot(id: u32) -> TokenDist {
        TokenDist {
            ids: vec![id],
            probs: vec![1.0],
        }
    }

    /// A distribution from `(token, weight)` pairs, normalised to sum to 1 (weights of a repeated
    /// token add up). `None` when a weight is negative or not finite, or none is positive.
    pub fn from_weights(pairs: impl IntoIterator<Item = (u32, f64)>) -> Option<TokenDist> {
        let mut pairs: Vec<(u32, f64)> = pairs.into_iter().collect();
        if pairs.iter().any(|&(_, w)| !w.is_finite() || w < 0.0) {
            return None;
        }
        pairs.sort_unstable_by_key(|&(id, _)| id);
        let mut ids: Vec<u32> = Vec::with_capacity(pairs.len());
        let mut probs: Vec<f64> = Vec::with_capacity(pairs.len());
        for (id, w) in pairs {
            match (ids.last(), probs.last_mut()) {
                (Some(&last), Some(p)) if last == id => *p += w,
                _ => {
                    ids.push(id);
                    probs.push(w);
                }
            }
        }
        let sum: f64 = probs.iter().sum();
        if !(sum > 0.0 && sum.is_finite()) {
            return None;
        }
        probs.iter_mut().for_each(|p| *p /= sum);
        Some(TokenDist { ids, probs })
    }

    /// Probability of `id`.
    pub fn prob(&self, id: u32) -> f64 {
        self.ids
            .binary_search(&id)
            .map_or(0.0, |i| self.probs.get(i).copied().unwrap_or(0.0))
    }

    /// The tokens with a probability (some may be 0 after underflow) and their probabilities, by
    /// increasing id.
    pub fn iter(&self) -> impl Iterator<Item = (u32, f64)> + Clone + '_ {
        self.ids.iter().copied().zip(self.probs.iter().copied())
    }

    /// Draws one token.
    pub fn sample(&self, rng: &mut Rng) -> u32 {
        let total = self.probs.iter().sum();
        draw_weighted(self.iter(), total, rng).unwrap_or(0)
    }
}

/// Draws from non-negative `weights` summing to `total`; `None` when no weight is positive.
fn draw_weighted(
    weights: impl Iterator<Item = (u32, f64)> + Clone,
    total: f64,
    rng: &mut Rng,
) -> Option<u32> {
    let r = rng.next_f64() * total;
    let mut cum = 0.0;
    let mut last = None;
    for (id, w) in weights {
        if w <= 0.0 {
            continue;
        }
        cum += w;
        last = Some(id);
        if r < cum {
            return Some(id);
        }
    }
    // Rounding left `r` above the running sum: the last token with weight.
    last
}

/// The verdict on one draft token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The draft token is kept.
    Accept,
    /// The draft token is rejected; this token takes its place and the rest of the draft is
    /// dropped.
    Replace(u32),
}

/// The speculative sampling rule for one draft token `x` drawn from `q` (`None`: chosen
/// deterministically, `q` one-hot on `x`), with `p` the model's distribution at its position:
/// keep `x` with probability `min(1, p(x)/q(x))`, otherwise draw a replacement from
/// `normalize(max(0, p − q))`. Whatever `q`, the token this yields is distributed as `p`
/// (Leviathan et al. 2023, Chen et al. 2023). With a one-hot `q` that is: keep `x` with
/// probability `p(x)`, else draw from `p` without `x`.
///
/// A `q` that gives `x` no probability did not draw it; `x` is then treated as chosen
/// deterministically.
pub fn verify_token(p: &TokenDist, q: Option<&TokenDist>, x: u32, rng: &mut Rng) -> Verdict {
    let px = p.prob(x);
    let q = q.filter(|q| q.prob(x) > 0.0);
    let qx = q.map_or(1.0, |q| q.prob(x));
    if rng.next_f64() * qx < px {
        return Verdict::Accept;
    }
    let q_of = |id: u32| match q {
        Some(q) => q.prob(id),
        None => f64::from(u8::from(id == x)),
    };
    let residual = p.iter().map(|(id, pid)| (id, (pid - q_of(id)).max(0.0)));
    let total: f64 = residual.clone().map(|(_, r)| r).sum();
    // p ≤ q everywhere means p = q, where rejection has probability 0: only rounding gets here.
    let replacement = if total > 0.0 {
        draw_weighted(residual, total, rng)
    } else {
        None
    };
    Verdict::Replace(replacement.unwrap_or_else(|| p.sample(rng)))
}

/// What a drafter is asked for.
#[derive(Debug)]
pub struct DraftRequest<'a> {
    /// Every token so far: what the session held, the prompt and the tokens generated (the last
    /// one not yet evaluated by the model). The draft continues it.
    pub history: &'a [u32],
    /// Most tokens to propose (at least 1).
    pub max_tokens: usize,
    /// The model's sampling chain; a drafter that samples should draw from the same chain over its
    /// own logits, which makes its `q` close to `p`.
    pub sampler: &'a SamplerConfig,
    /// The generation's random generator, for drafters that sample.
    pub rng: &'a mut Rng,
}

/// Proposed tokens, with how each was chosen.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Draft {
    tokens: Vec<u32>,
    dists: Option<Vec<TokenDist>>,
}

impl Draft {
    /// Tokens chosen deterministically (by lookup, or greedily): their `q` is one-hot.
    pub fn deterministic(tokens: Vec<u32>) -> Draft {
        Draft {
            tokens,
            dists: None,
        }
    }

    /// Tokens each drawn from the distribution beside it.
    pub fn sampled(steps: Vec<(u32, TokenDist)>) -> Draft {
        let (tokens, dists) = steps.into_iter().unzip();
        Draft {
            tokens,
            dists: Some(dists),
        }
    }

    /// The proposed tokens.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// Number of proposed tokens.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Whether nothing is proposed.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The distribution token `i` was drawn from (`None`: one-hot).
    fn q(&self, i: usize) -> Option<&TokenDist> {
        self.dists.as_ref().and_then(|d| d.get(i))
    }

    fn truncate(&mut self, n: usize) {
        self.tokens.truncate(n);
        if let Some(d) = &mut self.dists {
            d.truncate(n);
        }
    }
}

/// A source of draft tokens.
pub trait Drafter {
    /// Proposes up to `request.max_tokens` tokens to follow `request.history` (fewer, or none,
    /// when it has nothing worth proposing; extra tokens are ignored).
    fn draft(&mut self, request: DraftRequest<'_>) -> Result<Draft, SpeculativeError>;

    /// Forward passes of the drafter's own model so far (0 for a drafter without one).
    fn forward_passes(&self) -> usize {
        0
    }
}

/// A smaller model with the target's vocabulary drafts, one token per pass. Greedy generation
/// drafts its most likely tokens; sampling draws them from the draft model's sampler chain.
/// Drafting stops early at a token the draft model gives less than
/// [`min_probability`](Self::with_min_probability): such tokens are rarely accepted, and each
/// costs a draft pass and a verified position.
#[derive(Debug)]
pub struct DraftModel<'e> {
    engine: &'e Engine,
    session: Session,
    forwards: usize,
    min_probability: f32,
}

impl<'e> DraftModel<'e> {
    /// `draft` as the drafter of `target`; refused when the vocabularies differ in size.
    pub fn new(draft: &'e Engine, target: &Engine) -> Result<DraftModel<'e>, SpeculativeError> {
        if draft.vocab_size() != target.vocab_size() {
            return Err(SpeculativeError::VocabMismatch {
                target: target.vocab_size(),
                draft: draft.vocab_size(),
            });
        }
        Ok(DraftModel {
            engine: draft,
            session: draft.new_session(),
            forwards: 0,
            min_probability: 0.0,
        })
    }

    /// Stops each draft before the first token whose probability under the draft model (its
    /// softmax when greedy, its sampler chain's `q` when sampling) is below `p` (0: never;
    /// llama.cpp's `--draft-p-min`).
    pub fn with_min_probability(mut self, p: f32) -> DraftModel<'e> {
        self.min_probability = p;
        self
    }

    /// The draft model.
    pub fn engine(&self) -> &Engine {
        self.engine
    }
}

impl Drafter for DraftModel<'_> {
    fn draft(&mut self, request: DraftRequest<'_>) -> Result<Draft, SpeculativeError> {
        let DraftRequest {
            history,
            max_tokens,
            sampler: config,
            rng,
        } = request;
        if history.is_empty() || max_tokens == 0 {
            return Ok(Draft::default());
        }
        // The draft session holds the history and its own last draft; it keeps what the model
        // accepted and evaluates the rest. The last draft token is never evaluated.
        let needed = history.len() + max_tokens - 1;
        if needed > self.session.context() {
            let n_ctx = needed
                .max(self.engine.context())
                .max(2 * self.session.context());
            self.session = self.engine.new_session_with_context(n_ctx);
        }
        let kept = self.session.reuse_prefix(history);
        let mut logits = self
            .engine
            .forward(&mut self.session, &history[kept..], false)?;
        self.forwards += 1;
        let greedy = config.is_greedy();
        let mut recent = history.to_vec();
        let mut tokens = Vec::with_capacity(max_tokens);
        let mut dists = Vec::with_capacity(max_tokens);
        loop {
            let (x, q) = if greedy {
                (greedy_pick(&logits, config, &recent), None)
            } else {
                let q = TokenDist::from_logits(&logits, config, &recent);
                (q.sample(rng), Some(q))
            };
            if self.min_probability > 0.0 {
                let px = match &q {
                    Some(q) => q.prob(x),
                    None => softmax_prob(&logits, x),
                };
                if px < f64::from(self.min_probability) {
                    break;
                }
            }
            dists.extend(q);
            tokens.push(x);
            recent.push(x);
            if tokens.len() == max_tokens || self.engine.tokenizer().is_eog(x) {
                break;
            }
            logits = self.engine.forward(&mut self.session, &[x], false)?;
            self.forwards += 1;
        }
        Ok(if greedy {
            Draft::deterministic(tokens)
        } else {
            Draft::sampled(tokens.into_iter().zip(dists).collect())
        })
    }

    fn forward_passes(&self) -> usize {
        self.forwards
    }
}

/// Prompt lookup decoding: drafts what followed the most recent earlier occurrence of the last
/// n-gram of the history, trying n from `ngram_max` down to 1. No model, so a draft costs almost
/// nothing; it pays when the output repeats its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PromptLookup {
    ngram_max: usize,
}

impl PromptLookup {
    /// Looks up n-grams of up to `ngram_max` tokens (0 is taken as 1).
    pub fn new(ngram_max: usize) -> PromptLookup {
        PromptLookup {
            ngram_max: ngram_max.max(1),
        }
    }

    /// The longest n-gram looked up.
    pub fn ngram_max(&self) -> usize {
        self.ngram_max
    }

    /// Up to `max_tokens` tokens that followed the most recent earlier occurrence of the longest
    /// suffix of `history` (at most `ngram_max` tokens) found earlier in it; empty when even the
    /// last token never occurred before.
    pub fn lookup(&self, history: &[u32], max_tokens: usize) -> Vec<u32> {
        let len = history.len();
        if max_tokens == 0 || len < 2 {
            return Vec::new();
        }
        for n in (1..=self.ngram_max.min(len - 1)).rev() {
            let pattern = &history[len - n..];
            // Occurrences that end before the last token, latest first.
            if let Some(start) = (0..len - n).rev().find(|&j| &history[j..j + n] == pattern) {
                let from = start + n;
                return history[from..(from + max_tokens).min(len)].to_vec();
            }
        }
        Vec::new()
    }
}

impl Drafter for PromptLookup {
    fn draft(&mut self, request: DraftRequest<'_>) -> Result<Draft, SpeculativeError> {
        Ok(Draft::deterministic(
            self.lookup(request.history, request.max_tokens),
        ))
    }
}

/// Counts and timings of a speculative generation.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SpeculativeStats {
    /// Prompt tokens evaluated.
    pub prompt_tokens: usize,
    /// Tokens generated (the end-of-generation token excluded).
    pub generated_tokens: usize,
    /// Draft tokens proposed and verified.
    pub drafted_tokens: usize,
    /// Draft tokens the model kept.
    pub accepted_tokens: usize,
    /// Forward passes of the model, the prompt's included.
    pub target_forwards: usize,
    /// Forward passes of the draft model (0 for prompt lookup).
    pub draft_forwards: usize,
    /// Time evaluating the prompt.
    pub prefill: Duration,
    /// Wall time of the whole generation, prefill included.
    pub total: Duration,
}

impl SpeculativeStats {
    /// Share of the draft tokens the model kept (0 when nothing was drafted).
    pub fn acceptance_rate(&self) -> f64 {
        if self.drafted_tokens == 0 {
            0.0
        } else {
            self.accepted_tokens as f64 / self.drafted_tokens as f64
        }
    }

    /// Generated tokens per second after the prefill (drafting and verification included).
    pub fn tokens_per_second(&self) -> f64 {
        let t = self.total.saturating_sub(self.prefill).as_secs_f64();
        if t > 0.0 {
            self.generated_tokens as f64 / t
        } else {
            0.0
        }
    }

    /// Generated tokens per forward pass of the model after the prefill (1 without speculation).
    pub fn tokens_per_target_forward(&self) -> f64 {
        let decode = self.target_forwards.saturating_sub(1);
        if decode == 0 {
            self.generated_tokens as f64
        } else {
            self.generated_tokens as f64 / decode as f64
        }
    }
}

impl fmt::Display for SpeculativeStats {
    /// One line, e.g. `prompt 40 tok | drafted 120, accepted 96 (80.0 %) | target forwards 33
    /// (3.9 tok each) | draft forwards 0 | decode 52.3 tok/s (128 tok)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "prompt {} tok | drafted {}, accepted {} ({:.1} %) | target forwards {} ({:.2} tok each) | draft forwards {} | decode {:.1} tok/s ({} tok)",
            self.prompt_tokens,
            self.drafted_tokens,
            self.accepted_tokens,
            100.0 * self.acceptance_rate(),
            self.target_forwards,
            self.tokens_per_target_forward(),
            self.draft_forwards,
            self.tokens_per_second(),
            self.generated_tokens,
        )
    }
}

/// The result of [`Engine::generate_speculative`].
#[derive(Debug, Clone, PartialEq)]
pub struct SpeculativeOutput {
    /// The generated token ids (the end-of-generation token excluded).
    pub tokens: Vec<u32>,
    /// The generated text (a stop string and what follows it excluded).
    pub text: String,
    /// Why generation ended.
    pub finish_reason: FinishReason,
    /// Counts and timings.
    pub stats: SpeculativeStats,
}

impl Engine {
    /// Generates after `prompt` in `session` like [`Engine::generate`], with up to `max_draft`
    /// tokens proposed by `drafter` and verified per forward pass (0: plain decoding). Every
    /// rejected draft token costs a verified position for nothing, so the draft length adapts:
    /// after a rejection the next draft asks for one token more than were accepted, after a fully
    /// accepted draft for twice as many, never more than `max_draft`. The output
    /// is the same as without a drafter: identical for greedy sampling, identically distributed
    /// otherwise (see the [module documentation](crate::speculative)). The session ends up
    /// holding the prompt and the generated tokens the model evaluated (rejected draft tokens are
    /// rolled back).
    pub fn generate_speculative(
        &self,
        session: &mut Session,
        prompt: impl Into<Prompt>,
        params: &GenerationParams,
        drafter: &mut dyn Drafter,
        max_draft: usize,
    ) -> Result<SpeculativeOutput, SpeculativeError> {
        self.generate_speculative_with(session, prompt, params, drafter, max_draft, |_| {})
    }

    /// [`Engine::generate_speculative`] that hands each piece of text to `on_text` as soon as it
    /// is final (complete UTF-8 that cannot start a stop string).
    pub fn generate_speculative_with(
        &self,
        session: &mut Session,
        prompt: impl Into<Prompt>,
        params: &GenerationParams,
        drafter: &mut dyn Drafter,
        max_draft: usize,
        on_text: impl FnMut(&str),
    ) -> Result<SpeculativeOutput, SpeculativeError> {
        if max_draft > MAX_DRAFT_TOKENS {
            return Err(SpeculativeError::DraftTooLong {
                requested: max_draft,
                max: MAX_DRAFT_TOKENS,
            });
        }
        let start = Instant::now();
        let prompt = match prompt.into() {
            Prompt::Tokens(t) => t,
            Prompt::Text(s) => self
                .tokenizer()
                .encode(&s, session.is_empty(), true)
                .map_err(EngineError::from)?,
        };
        if prompt.is_empty() {
            return Err(EngineError::InvalidRequest("empty prompt".into()).into());
        }
        let config = params.sampler;
        let greedy = config.is_greedy();
        let mut rng = Rng::new(params.seed.unwrap_or_else(crate::sequence::clock_seed));
        let tok = self.tokenizer();
        let mut out = Emitter {
            sequence: Sequence::new(tok, session.tokens(), &prompt, params.clone()),
            tokenizer: tok,
            on_text,
        };
        let mut stats = SpeculativeStats {
            prompt_tokens: prompt.len(),
            ..SpeculativeStats::default()
        };
        if params.max_tokens == 0 {
            stats.total = start.elapsed();
            out.sequence.end(FinishReason::Length);
            return Ok(out.finish(stats));
        }
        let draft_forwards_before = drafter.forward_passes();
        let mut history: Vec<u32> = session.tokens().to_vec();
        history.extend_from_slice(&prompt);

        let logits = self.forward(session, &prompt, false)?;
        stats.target_forwards = 1;
        stats.prefill = start.elapsed();
        let pick = |row: &[f32], recent: &[u32], rng: &mut Rng| {
            if greedy {
                greedy_pick(row, &config, recent)
            } else {
                TokenDist::from_logits(row, &config, recent).sample(rng)
            }
        };
        let vocab = self.vocab_size();
        // The token sampled last, not yet evaluated, and its log-probability.
        let mut next = pick(&logits, &history, &mut rng);
        let mut next_lp = log_prob(&logits, next);
        let mut draft_len = max_draft;
        'gen: loop {
            let full = session.len() >= session.context();
            if out.push(next, next_lp, full) {
                break;
            }
            history.push(next);

            let room = draft_len
                .min(params.max_tokens - out.sequence.generated().len() - 1)
                .min(session.context() - session.len() - 1);
            let mut draft = if room == 0 {
                Draft::default()
            } else {
                drafter.draft(DraftRequest {
                    history: &history,
                    max_tokens: room,
                    sampler: &config,
                    rng: &mut rng,
                })?
            };
            draft.truncate(room);
            let base = session.len();
            let mut batch = Vec::with_capacity(draft.len() + 1);
            batch.push(next);
            batch.extend_from_slice(draft.tokens());
            let logits = self.forward(session, &batch, !draft.is_empty())?;
            stats.target_forwards += 1;
            stats.drafted_tokens += draft.len();

            let mut kept = 0;
            let mut replacement = None;
            for (i, &x) in draft.tokens().iter().enumerate() {
                let row = &logits[i * vocab..(i + 1) * vocab];
                let verdict = if greedy {
                    match greedy_pick(row, &config, &history) {
                        g if g == x => Verdict::Accept,
                        g => Verdict::Replace(g),
                    }
                } else {
                    let p = TokenDist::from_logits(row, &config, &history);
                    verify_token(&p, draft.q(i), x, &mut rng)
                };
                match verdict {
                    Verdict::Accept => {
                        stats.accepted_tokens += 1;
                        kept += 1;
                        if out.push(x, log_prob(row, x), false) {
                            // An end-of-generation token is not evaluated; any other last token is.
                            let end = if self.tokenizer().is_eog(x) {
                                base + kept
                            } else {
                                base + 1 + kept
                            };
                            rollback(session, end)?;
                            break 'gen;
                        }
                        history.push(x);
                    }
                    Verdict::Replace(t) => {
                        replacement = Some((t, log_prob(row, t)));
                        break;
                    }
                }
            }
            if !draft.is_empty() {
                draft_len = if kept == draft.len() {
                    (2 * draft_len).min(max_draft)
                } else {
                    (kept + 1).min(max_draft)
                };
            }
            (next, next_lp) = match replacement {
                Some(t) => t,
                None => {
                    let row = &logits[draft.len() * vocab..(draft.len() + 1) * vocab];
                    let t = pick(row, &history, &mut rng);
                    (t, log_prob(row, t))
                }
            };
            rollback(session, base + 1 + kept)?;
        }
        stats.draft_forwards = drafter
            .forward_passes()
            .saturating_sub(draft_forwards_before);
        stats.total = start.elapsed();
        Ok(out.finish(stats))
    }
}

/// The generated tokens and their text: a [`Sequence`] fed the tokens the verification chose, so
/// stop strings, streaming and the end of generation follow the one definition
/// [`Engine::generate`] uses; each released piece goes to `on_text`.
struct Emitter<'t, F> {
    sequence: Sequence,
    tokenizer: &'t Tokenizer,
    on_text: F,
}

impl<F: FnMut(&str)> Emitter<'_, F> {
    /// Appends a token; true when generation ends with it. `context_full`: the session cannot
    /// evaluate it.
    fn push(&mut self, id: u32, logprob: f32, context_full: bool) -> bool {
        let step = self
            .sequence
            .push_token(self.tokenizer, id, logprob, context_full);
        if let Some(t) = &step.token {
            if !t.text_piece.is_empty() {
                (self.on_text)(&t.text_piece);
            }
        }
        step.next.is_none()
    }

    fn finish(mut self, stats: SpeculativeStats) -> SpeculativeOutput {
        let g = self.sequence.take_summary().unwrap_or_else(|| Generation {
            finish_reason: FinishReason::Length,
            tokens: Vec::new(),
            text: String::new(),
            metrics: Default::default(),
        });
        SpeculativeOutput {
            stats: SpeculativeStats {
                generated_tokens: g.tokens.len(),
                ..stats
            },
            tokens: g.tokens,
            text: g.text,
            finish_reason: g.finish_reason,
        }
    }
}

/// Natural log of `softmax(logits)[id]`.
fn log_prob(logits: &[f32], id: u32) -> f32 {
    softmax_prob(logits, id).ln() as f32
}

/// Forgets the positions after `len` (rejected draft tokens), refusing a session that cannot.
fn rollback(session: &mut Session, len: usize) -> Result<(), SpeculativeError> {
    session.truncate(len);
    if session.len() == len {
        Ok(())
    } else {
        Err(SpeculativeError::Rollback {
            wanted: len,
            kept: session.len(),
        })
    }
}

/// The sampler's candidates for `logits`, penalised when the configuration asks for it.
fn candidates(logits: &[f32], config: &SamplerConfig, recent: &[u32]) -> Vec<Candidate> {
    let window = &recent[recent.len().saturating_sub(config.penalty_last_n)..];
    sampler::penalised_candidates(logits, config, window.iter().copied())
}

/// The token greedy sampling picks: the first maximum after penalties, as
/// [`Sampler::sample`](crate::Sampler::sample) with a temperature ≤ 0.
fn greedy_pick(logits: &[f32], config: &SamplerConfig, recent: &[u32]) -> u32 {
    if config.penalties_active() {
        sampler::greedy(&candidates(logits, config, recent))
    } else {
        argmax(logits)
    }
}

/// `softmax(logits)[id]`.
fn softmax_prob(logits: &[f32], id: u32) -> f64 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().map(|&l| f64::from(l - max).exp()).sum();
    logits
        .get(id as usize)
        .map_or(0.0, |&l| f64::from(l - max).exp() / sum)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Draws `n` tokens through the speculative rule (`x ~ q`, then [`verify_token`]) and returns
    /// the chi-square statistic of the counts against `p`.
    fn chi_square(p: &TokenDist, q: Option<&TokenDist>, draft: impl Fn(&mut Rng) -> u32) -> f64 {
        let n = 200_000;
        let mut rng = Rng::new(7);
        let mut counts = [0usize; 8];
        for _ in 0..n {
            let x = draft(&mut rng);
            let t = match verify_token(p, q, x, &mut rng) {
                Verdict::Accept => x,
                Verdict::Replace(t) => t,
            };
            counts[t as usize] += 1;
        }
        let mut chi = 0.0;
        for (id, c) in counts.iter().enumerate() {
            let expected = p.prob(id as u32) * n as f64;
            if expected == 0.0 {
                assert_eq!(*c, 0, "token {id} has probability 0 under p");
            } else {
                chi += (*c as f64 - expected).powi(2) / expected;
            }
        }
        chi
    }

    // Five tokens with probability under p: 4 degrees of freedom. P(χ²₄ > 30) ≈ 5·10⁻⁶, so a
    // correct rule fails with that probability for an arbitrary seed (the seed is fixed); a rule
    // off by 0.01 in one probability gives χ² ≈ 200 000 · 0.01² / 0.2 ≈ 100 and fails.
    const CHI2_4DF_LIMIT: f64 = 30.0;

    fn p() -> TokenDist {
        TokenDist::from_weights([(0, 0.4), (1, 0.3), (2, 0.15), (3, 0.1), (5, 0.05)]).unwrap()
    }

    #[test]
    fn accepted_or_replaced_tokens_follow_p_for_a_sampled_draft() {
        let p = p();
        // q puts mass where p has none (token 4), too much on 2 and too little on 0.
        let q =
            TokenDist::from_weights([(0, 0.1), (1, 0.3), (2, 0.35), (4, 0.2), (5, 0.05)]).unwrap();
        let chi = chi_square(&p, Some(&q), |rng| q.sample(rng));
        assert!(chi < CHI2_4DF_LIMIT, "χ² = {chi}");
    }

    #[test]
    fn accepted_or_replaced_tokens_follow_p_for_a_deterministic_draft() {
        let p = p();
        for x in [0, 2, 4] {
            let chi = chi_square(&p, None, |_| x);
            assert!(chi < CHI2_4DF_LIMIT, "draft {x}: χ² = {chi}");
        }
    }

    #[test]
    fn verification_keeps_sure_tokens_and_replaces_impossible_ones() {
        let mut rng = Rng::new(1);
        let p = TokenDist::one_hot(3);
        assert_eq!(verify_token(&p, None, 3, &mut rng), Verdict::Accept);
        assert_eq!(verify_token(&p, None, 1, &mut rng), Verdict::Replace(3));
        let q = TokenDist::one_hot(1);
        assert_eq!(verify_token(&p, Some(&q), 1, &mut rng), Verdict::Replace(3));
        // Equal distributions always accept.
        let p = TokenDist::from_weights([(0, 0.5), (1, 0.5)]).unwrap();
        for _ in 0..1000 {
            let x = p.sample(&mut rng);
            assert_eq!(verify_token(&p, Some(&p), x, &mut rng), Verdict::Accept);
        }
    }

    #[test]
    fn token_dist_follows_the_sampler_chain() {
        let logits = [1.0f32, 3.0, 2.0, 3.0, -1.0];
        let greedy = TokenDist::from_logits(&logits, &SamplerConfig::greedy(), &[]);
        assert_eq!(greedy, TokenDist::one_hot(1));
        let cfg = SamplerConfig {
            temperature: 1.0,
            top_k: 3,
            top_p: 1.0,
            min_p: 0.0,
            ..SamplerConfig::default()
        };
        let d = TokenDist::from_logits(&logits, &cfg, &[]);
        let ids: Vec<u32> = d.iter().map(|(id, _)| id).collect();
        assert_eq!(ids, [1, 2, 3]);
        let z = 2.0 * 3f64.exp() + 2f64.exp();
        assert!((d.prob(1) - 3f64.exp() / z).abs() < 1e-6);
        assert_eq!(d.prob(0), 0.0);
        // Penalties see the window: token 1 divided by 3 falls below 2 and 3.
        let pen = SamplerConfig {
            repeat_penalty: 3.0,
            ..SamplerConfig::greedy()
        };
        assert_eq!(greedy_pick(&logits, &pen, &[1]), 3);
        assert_eq!(greedy_pick(&logits, &pen, &[1, 3]), 2);
        assert!(TokenDist::from_weights([(0, -1.0)]).is_none());
        assert!(TokenDist::from_weights([(0, 0.0)]).is_none());
        assert_eq!(
            TokenDist::from_weights([(2, 1.0), (2, 1.0)]),
            Some(TokenDist::one_hot(2))
        );
    }

    #[test]
    fn prompt_lookup_continues_the_latest_longest_match() {
        let l = PromptLookup::new(3);
        // "1 2 3 4" then "9 1 2 3 5" then "1 2 3": the latest occurrence of 1 2 3 is followed by 5.
        let h = [1, 2, 3, 4, 9, 1, 2, 3, 5, 7, 1, 2, 3];
        assert_eq!(l.lookup(&h, 3), [5, 7, 1]);
        assert_eq!(l.lookup(&h, 1), [5]);
        // No earlier 8 3: falls back to the last token alone.
        let h = [3, 6, 1, 8, 3];
        assert_eq!(l.lookup(&h, 4), [6, 1, 8, 3]);
        assert_eq!(l.lookup(&[1, 2, 3], 4), Vec::<u32>::new());
        assert_eq!(l.lookup(&[5], 4), Vec::<u32>::new());
        // A repeated token drafts its own run.
        assert_eq!(PromptLookup::new(2).lookup(&[7, 7, 7], 5), [7]);
        assert_eq!(PromptLookup::new(0).ngram_max(), 1);
    }

    #[test]
    fn stats_rates() {
        let s = SpeculativeStats {
            generated_tokens: 12,
            drafted_tokens: 10,
            accepted_tokens: 8,
            target_forwards: 5,
            ..SpeculativeStats::default()
        };
        assert!((s.acceptance_rate() - 0.8).abs() < 1e-12);
        assert!((s.tokens_per_target_forward() - 3.0).abs() < 1e-12);
        assert_eq!(SpeculativeStats::default().acceptance_rate(), 0.0);
    }
}

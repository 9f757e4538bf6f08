//! One sequence's side of generation, apart from the model: sampling (optionally under a JSON
//! schema), stop strings, streamed text, log-probabilities and metrics.
//!
//! Whoever runs the model feeds a [`Sequence`] the logits of its last evaluated position and
//! evaluates the token it returns. [`Engine::generate`](crate::Engine::generate) does so for one
//! sequence; a server's scheduler does so for many at once with
//! [`Engine::forward_batch`](crate::Engine::forward_batch). Both share this one definition of how
//! text is released, so a stop string split across tokens is caught the same way everywhere.
//!
//! Text is released as complete UTF-8 (a token ending inside a character waits for the next one).
//! Generation ends at an end-of-generation token (not emitted), at a stop string (neither it nor
//! what follows it is emitted), when a JSON-schema constraint's document is complete, after
//! `max_tokens`, or when the context is full. Text that could be the beginning of a stop string is
//! held back until the following tokens decide it.

use std::time::{Duration, Instant};

use crate::engine::{EngineError, Result};
use crate::generate::{FinishReason, GeneratedToken, Generation, GenerationParams};
use crate::grammar::JsonSchemaConstraint;
use crate::metrics::GenerationMetrics;
use crate::sampler::Sampler;
use crate::tokenizer::{StreamDecoder, Tokenizer};

/// What one [`Sequence::step`] produced.
#[derive(Debug, Clone, PartialEq)]
pub struct SequenceStep {
    /// The token sampled, with the text it releases; `None` when the sequence ended without
    /// releasing anything (an end-of-generation token with nothing held back).
    pub token: Option<GeneratedToken>,
    /// The token to evaluate next, whose logits the following step needs; `None` once the sequence
    /// has ended.
    pub next: Option<u32>,
}

/// The state of one generated sequence. See the [module documentation](self).
pub struct Sequence {
    params: GenerationParams,
    sampler: Sampler,
    decoder: StreamDecoder,
    constraint: Option<JsonSchemaConstraint>,
    /// Decoded text not yet released (could start a stop string).
    held: String,
    text: String,
    tokens: Vec<u32>,
    max_stop_len: usize,
    start: Instant,
    last_emit: Instant,
    metrics: GenerationMetrics,
    latencies: Vec<Duration>,
    summary: Option<Generation>,
}

impl std::fmt::Debug for Sequence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sequence")
            .field("params", &self.params)
            .field("generated", &self.tokens.len())
            .field("constrained", &self.constraint.is_some())
            .field("finished", &self.summary.is_some())
            .finish()
    }
}

impl Sequence {
    /// A sequence that continues `history` (what its session already holds) and `prompt` (what
    /// will be evaluated before the first step). Both feed the sampler's penalty window. The clock
    /// of its metrics starts now.
    pub fn new(
        tokenizer: &Tokenizer,
        history: &[u32],
        prompt: &[u32],
        params: GenerationParams,
    ) -> Sequence {
        let seed = params.seed.unwrap_or_else(clock_seed);
        let mut sampler = Sampler::new(params.sampler, seed);
        for &t in history.iter().chain(prompt) {
            sampler.accept(t);
        }
        let decoder = tokenizer.stream_decoder(history.is_empty() && prompt.len() <= 1, false);
        let max_stop_len = params.stop.iter().map(String::len).max().unwrap_or(0);
        let now = Instant::now();
        let metrics = GenerationMetrics {
            reused_tokens: history.len(),
            ..GenerationMetrics::default()
        };
        Sequence {
            params,
            sampler,
            decoder,
            constraint: None,
            held: String::new(),
            text: String::new(),
            tokens: Vec::new(),
            max_stop_len,
            start: now,
            last_emit: now,
            metrics,
            latencies: Vec::new(),
            summary: None,
        }
    }

    /// Samples only tokens that keep the output a prefix of a document valid under `constraint`
    /// (a fresh constraint), and ends the sequence when the document is complete.
    pub fn with_constraint(mut self, constraint: JsonSchemaConstraint) -> Sequence {
        self.constraint = Some(constraint);
        self
    }

    /// The parameters it was started with.
    pub fn params(&self) -> &GenerationParams {
        &self.params
    }

    /// Tokens generated so far.
    pub fn generated(&self) -> &[u32] {
        &self.tokens
    }

    /// Whether the sequence has ended (its [`summary`](Self::summary) is set).
    pub fn is_finished(&self) -> bool {
        self.summary.is_some()
    }

    /// The summary, once the sequence has ended.
    pub fn summary(&self) -> Option<&Generation> {
        self.summary.as_ref()
    }

    /// Takes the summary out, once the sequence has ended.
    pub fn take_summary(&mut self) -> Option<Generation> {
        self.summary.take()
    }

    /// Records the prefill: `tokens` prompt tokens evaluated in `elapsed`.
    pub fn record_prefill(&mut self, tokens: usize, elapsed: Duration) {
        self.metrics.prompt_tokens += tokens;
        self.metrics.prefill += elapsed;
    }

    /// Records one decoding forward pass (the token fed back) that took `elapsed`.
    pub fn record_decode(&mut self, elapsed: Duration) {
        self.metrics.decode += elapsed;
        self.metrics.decode_tokens += 1;
    }

    /// Ends the sequence now with `reason` (a request cancelled or out of time, a prompt with
    /// nothing to generate), releasing the text held back.
    pub fn end(&mut self, reason: FinishReason) -> Option<GeneratedToken> {
        if self.summary.is_some() {
            return None;
        }
        let mut tail = std::mem::take(&mut self.held);
        tail.push_str(&self.decoder.finish());
        self.text.push_str(&tail);
        self.close(reason);
        (!tail.is_empty()).then(|| GeneratedToken {
            id: self.tokens.last().copied().unwrap_or(0),
            text_piece: tail,
            logprob: 0.0,
            top_logprobs: Vec::new(),
            is_eog: false,
        })
    }

    fn close(&mut self, reason: FinishReason) {
        let m = &mut self.metrics;
        m.generated_tokens = self.tokens.len();
        m.total = self.start.elapsed();
        m.set_latencies(&mut self.latencies);
        m.peak_rss_bytes = crate::metrics::peak_rss_bytes();
        self.summary = Some(Generation {
            finish_reason: reason,
            tokens: std::mem::take(&mut self.tokens),
            text: std::mem::take(&mut self.text),
            metrics: self.metrics.clone(),
        });
    }

    /// Samples the next token from `logits` (those of the last evaluated position) and releases
    /// its text. `context_full` says that the session cannot take another position, so the
    /// sequence must end after this token.
    pub fn step(
        &mut self,
        tokenizer: &Tokenizer,
        logits: &[f32],
        context_full: bool,
    ) -> Result<SequenceStep> {
        if self.summary.is_some() {
            return Ok(SequenceStep {
                token: None,
                next: None,
            });
        }
        let id = match &mut self.constraint {
            Some(c) => {
                let mut masked = logits.to_vec();
                c.mask(&mut masked).map_err(EngineError::from)?;
                let id = self.sampler.sample(&masked);
                c.accept(id).map_err(EngineError::from)?;
                id
            }
            None => self.sampler.sample(logits),
        };
        let (lp, top) = log_probabilities(logits, id, self.params.top_logprobs);
        Ok(self.emit(tokenizer, id, lp, top, context_full))
    }

    /// Appends `id`, a token chosen elsewhere (speculative decoding verifies drafted tokens
    /// itself), with its log-probability: the same text release and stopping rules as
    /// [`step`](Self::step). The sequence's own sampler and constraint are not consulted.
    pub fn push_token(
        &mut self,
        tokenizer: &Tokenizer,
        id: u32,
        logprob: f32,
        context_full: bool,
    ) -> SequenceStep {
        if self.summary.is_some() {
            return SequenceStep {
                token: None,
                next: None,
            };
        }
        self.emit(tokenizer, id, logprob, Vec::new(), context_full)
    }

    fn emit(
        &mut self,
        tokenizer: &Tokenizer,
        id: u32,
        lp: f32,
        top: Vec<(u32, f32)>,
        context_full: bool,
    ) -> SequenceStep {
        if tokenizer.is_eog(id) {
            let mut tail = std::mem::take(&mut self.held);
            tail.push_str(&self.decoder.finish());
            self.text.push_str(&tail);
            self.close(FinishReason::EndOfGeneration);
            let token = (!tail.is_empty()).then_some(GeneratedToken {
                id,
                text_piece: tail,
                logprob: lp,
                top_logprobs: top,
                is_eog: true,
            });
            return SequenceStep { token, next: None };
        }
        self.sampler.accept(id);
        self.tokens.push(id);
        let piece = tokenizer.decode_next(&mut self.decoder, id);
        self.held.push_str(&piece);

        // A stop string ends the text before it.
        let found = self
            .params
            .stop
            .iter()
            .filter(|s| !s.is_empty())
            .filter_map(|s| self.held.find(s.as_str()))
            .min();
        let document_done = self.constraint.as_ref().is_some_and(|c| c.is_stopped());
        let mut reason = None;
        let released = if let Some(at) = found {
            reason = Some(FinishReason::Stop);
            self.held.truncate(at);
            std::mem::take(&mut self.held)
        } else if document_done || self.tokens.len() >= self.params.max_tokens || context_full {
            reason = Some(if document_done {
                FinishReason::EndOfGeneration
            } else if self.tokens.len() >= self.params.max_tokens {
                FinishReason::Length
            } else {
                FinishReason::ContextFull
            });
            let mut all = std::mem::take(&mut self.held);
            all.push_str(&self.decoder.finish());
            all
        } else {
            let keep = held_suffix_len(&self.held, &self.params.stop, self.max_stop_len);
            let cut = self.held.len() - keep;
            let rest = self.held.split_off(cut);
            std::mem::replace(&mut self.held, rest)
        };
        self.text.push_str(&released);
        let token = GeneratedToken {
            id,
            text_piece: released,
            logprob: lp,
            top_logprobs: top,
            is_eog: false,
        };
        let now = Instant::now();
        if self.tokens.len() == 1 {
            self.metrics.time_to_first_token = now - self.start;
        } else {
            self.latencies.push(now - self.last_emit);
        }
        self.last_emit = now;
        let next = match reason {
            Some(r) => {
                self.close(r);
                None
            }
            None => Some(id),
        };
        SequenceStep {
            token: Some(token),
            next,
        }
    }
}

/// A seed from the clock, for unseeded sampling.
pub(crate) fn clock_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Natural log of `softmax(logits)[id]`, and the `top` most likely tokens with theirs (most likely
/// first), under the model's unmodified distribution.
fn log_probabilities(logits: &[f32], id: u32, top: usize) -> (f32, Vec<(u32, f32)>) {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().map(|&l| ((l - max) as f64).exp()).sum();
    let log_z = sum.ln();
    let lp = |l: f32| ((l - max) as f64 - log_z) as f32;
    let mut best = Vec::new();
    if top > 0 {
        let mut order: Vec<u32> = (0..logits.len() as u32).collect();
        let k = top.min(order.len());
        order.select_nth_unstable_by(k - 1, |&a, &b| {
            logits[b as usize].total_cmp(&logits[a as usize])
        });
        order.truncate(k);
        order.sort_by(|&a, &b| {
            logits[b as usize]
                .total_cmp(&logits[a as usize])
                .then(a.cmp(&b))
        });
        best = order
            .into_iter()
            .map(|t| (t, lp(logits[t as usize])))
            .collect();
    }
    (lp(logits[id as usize]), best)
}

/// Length of the longest suffix of `text` that is a proper prefix of one of `stops`, at a char
/// boundary.
fn held_suffix_len(text: &str, stops: &[String], max_stop_len: usize) -> usize {
    let lo = text.len().saturating_sub(max_stop_len.saturating_sub(1));
    (lo..text.len())
        .filter(|&i| text.is_char_boundary(i))
        .find(|&i| {
            let tail = &text[i..];
            stops
                .iter()
                .any(|s| s.len() > tail.len() && s.starts_with(tail))
        })
        .map_or(0, |i| text.len() - i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_suffix_is_the_longest_possible_stop_prefix() {
        let stops = vec!["</s>".to_string(), "\n\n".to_string()];
        assert_eq!(held_suffix_len("abc</", &stops, 4), 2);
        assert_eq!(held_suffix_len("abc<", &stops, 4), 1);
        assert_eq!(held_suffix_len("abc\n", &stops, 4), 1);
        assert_eq!(held_suffix_len("abc", &stops, 4), 0);
        assert_eq!(held_suffix_len("é</s", &stops, 4), 3);
        assert_eq!(held_suffix_len("x", &[], 0), 0);
    }

    #[test]
    fn logprob_is_a_log_softmax_and_top_is_sorted() {
        let l = [0.0f32, 0.0];
        assert!((log_probabilities(&l, 1, 0).0 - 0.5f32.ln()).abs() < 1e-6);
        let l = [1.0f32, 3.0, 2.0, 3.0];
        let (lp, top) = log_probabilities(&l, 2, 3);
        let z: f32 = l.iter().map(|x| x.exp()).sum();
        assert!((lp - (2f32.exp() / z).ln()).abs() < 1e-5);
        let ids: Vec<u32> = top.iter().map(|t| t.0).collect();
        assert_eq!(ids, [1, 3, 2], "most likely first, ties by id");
        assert_eq!(log_probabilities(&l, 0, 10).1.len(), 4);
    }
}

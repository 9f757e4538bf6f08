//! Streaming text generation: [`Engine::generate`] returns an iterator of tokens with their text.
//!
//! ```no_run
//! use shuku_infer::{Engine, EngineOptions, GenerationParams, SamplerConfig};
//! let engine = Engine::load("model.gguf", EngineOptions::default())?;
//! let mut session = engine.new_session();
//! let params = GenerationParams {
//!     max_tokens: 64,
//!     sampler: SamplerConfig::greedy(),
//!     stop: vec!["\n\n".into()],
//!     seed: Some(1),
//! };
//! let mut stream = engine.generate(&mut session, "Once upon a time", params)?;
//! for token in &mut stream {
//!     print!("{}", token?.text_piece);
//! }
//! println!("\n{}", stream.summary().expect("finished").metrics);
//! # Ok::<(), shuku_infer::EngineError>(())
//! ```
//!
//! Text is streamed as complete UTF-8 (a token ending inside a character waits for the next one).
//! Generation ends at an end-of-generation token (not emitted), at a stop string (neither it nor
//! what follows it is emitted), or after `max_tokens`. Text that could be the beginning of a stop
//! string is held back until the following tokens decide it, so a stop string split across tokens
//! is still caught and never partly printed.

use std::time::{Duration, Instant};

use crate::engine::{Engine, EngineError, Result, Session};
use crate::metrics::GenerationMetrics;
use crate::sampler::{Sampler, SamplerConfig};
use crate::tokenizer::StreamDecoder;

/// What to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationParams {
    /// Upper bound on generated tokens.
    pub max_tokens: usize,
    /// The sampling chain.
    pub sampler: SamplerConfig,
    /// Generation stops before the first occurrence of any of these strings.
    pub stop: Vec<String>,
    /// Seed of the sampler's generator; `None` draws one from the clock. Greedy sampling ignores it.
    pub seed: Option<u64>,
}

impl Default for GenerationParams {
    fn default() -> Self {
        GenerationParams {
            max_tokens: 128,
            sampler: SamplerConfig::default(),
            stop: Vec::new(),
            seed: None,
        }
    }
}

impl GenerationParams {
    /// Whether the same prompt always gives the same output (greedy, or a fixed seed).
    pub fn is_deterministic(&self) -> bool {
        self.sampler.is_greedy() || self.seed.is_some()
    }
}

/// A prompt: text (tokenized with special tokens parsed, BOS added when the session is empty and
/// the model asks for it) or token ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prompt {
    /// Text to tokenize.
    Text(String),
    /// Token ids, used as they are.
    Tokens(Vec<u32>),
}

impl From<&str> for Prompt {
    fn from(s: &str) -> Self {
        Prompt::Text(s.to_string())
    }
}

impl From<String> for Prompt {
    fn from(s: String) -> Self {
        Prompt::Text(s)
    }
}

impl From<&[u32]> for Prompt {
    fn from(t: &[u32]) -> Self {
        Prompt::Tokens(t.to_vec())
    }
}

impl From<Vec<u32>> for Prompt {
    fn from(t: Vec<u32>) -> Self {
        Prompt::Tokens(t)
    }
}

/// One streamed token.
#[derive(Debug, Clone, PartialEq)]
pub struct GeneratedToken {
    /// Token id.
    pub id: u32,
    /// Text released with this token: complete UTF-8, possibly empty (bytes of an unfinished
    /// character, or text held back while it could still start a stop string), possibly longer
    /// than the token's own piece (text held back earlier).
    pub text_piece: String,
    /// Natural log of the token's probability under the model's unmodified distribution.
    pub logprob: f32,
    /// Set on the one item that releases held-back text when an end-of-generation token ends the
    /// stream; `id` is then that end-of-generation token, which is not part of the output and not
    /// counted. Absent when nothing was held back.
    pub is_eog: bool,
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// The model produced an end-of-generation token.
    EndOfGeneration,
    /// A stop string was found.
    Stop,
    /// `max_tokens` were generated.
    Length,
    /// The session's context is full.
    ContextFull,
}

impl std::fmt::Display for FinishReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FinishReason::EndOfGeneration => "eog",
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::ContextFull => "context",
        })
    }
}

/// Summary of a finished generation.
#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    /// Why it ended.
    pub finish_reason: FinishReason,
    /// The generated token ids (the end-of-generation token excluded).
    pub tokens: Vec<u32>,
    /// The generated text (stop string excluded).
    pub text: String,
    /// Counts and timings.
    pub metrics: GenerationMetrics,
}

enum State {
    /// The prompt is not evaluated yet.
    Prefill(Vec<u32>),
    /// Logits of the last evaluated position, waiting to be sampled.
    Decode(Vec<f32>),
    Done,
}

/// The iterator [`Engine::generate`] returns. After it yields `None`,
/// [`summary`](Self::summary) holds the [`Generation`].
pub struct Generate<'e, 's> {
    engine: &'e Engine,
    session: &'s mut Session,
    params: GenerationParams,
    sampler: Sampler,
    decoder: StreamDecoder,
    state: State,
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

impl std::fmt::Debug for Generate<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Generate")
            .field("params", &self.params)
            .field("generated", &self.tokens.len())
            .finish()
    }
}

impl Engine {
    /// Generates after `prompt` in `session` (which keeps what it held: the prompt continues it).
    /// Evaluation starts at the first call to `next`; the session ends up holding the prompt and
    /// every generated token that was fed back.
    ///
    /// An empty prompt is refused: the first token needs the logits of a just-evaluated position.
    pub fn generate<'e, 's>(
        &'e self,
        session: &'s mut Session,
        prompt: impl Into<Prompt>,
        params: GenerationParams,
    ) -> Result<Generate<'e, 's>> {
        let tokens = match prompt.into() {
            Prompt::Tokens(t) => t,
            Prompt::Text(s) => self.tokenizer().encode(&s, session.is_empty(), true)?,
        };
        if tokens.is_empty() {
            return Err(EngineError::InvalidRequest("empty prompt".into()));
        }
        let seed = params.seed.unwrap_or_else(clock_seed);
        let mut sampler = Sampler::new(params.sampler, seed);
        for &t in session.tokens().iter().chain(&tokens) {
            sampler.accept(t);
        }
        let decoder = self
            .tokenizer()
            .stream_decoder(session.is_empty() && tokens.len() <= 1, false);
        let max_stop_len = params.stop.iter().map(String::len).max().unwrap_or(0);
        let now = Instant::now();
        let metrics = GenerationMetrics {
            reused_tokens: session.len(),
            ..GenerationMetrics::default()
        };
        Ok(Generate {
            engine: self,
            session,
            params,
            sampler,
            decoder,
            state: State::Prefill(tokens),
            held: String::new(),
            text: String::new(),
            tokens: Vec::new(),
            max_stop_len,
            start: now,
            last_emit: now,
            metrics,
            latencies: Vec::new(),
            summary: None,
        })
    }
}

/// A seed from the clock, for unseeded sampling.
fn clock_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Natural log of `softmax(logits)[id]`.
fn logprob(logits: &[f32], id: u32) -> f32 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().map(|&l| ((l - max) as f64).exp()).sum();
    ((logits[id as usize] - max) as f64 - sum.ln()) as f32
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

impl Generate<'_, '_> {
    /// The summary, once the iterator has ended.
    pub fn summary(&self) -> Option<&Generation> {
        self.summary.as_ref()
    }

    /// Runs to the end and returns the summary.
    pub fn finish(mut self) -> Result<Generation> {
        for item in &mut self {
            item?;
        }
        self.summary
            .take()
            .ok_or_else(|| EngineError::InvalidRequest("generation did not finish".into()))
    }

    fn end(&mut self, reason: FinishReason) {
        self.state = State::Done;
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

    fn step(&mut self) -> Result<Option<GeneratedToken>> {
        let logits = match std::mem::replace(&mut self.state, State::Done) {
            State::Done => return Ok(None),
            State::Prefill(prompt) => {
                if self.params.max_tokens == 0 {
                    self.end(FinishReason::Length);
                    return Ok(None);
                }
                let t = Instant::now();
                let logits = self.engine.forward(self.session, &prompt, false)?;
                self.metrics.prompt_tokens = prompt.len();
                self.metrics.prefill = t.elapsed();
                logits
            }
            State::Decode(logits) => logits,
        };
        let id = self.sampler.sample(&logits);
        let lp = logprob(&logits, id);
        if self.engine.tokenizer().is_eog(id) {
            let mut tail = std::mem::take(&mut self.held);
            tail.push_str(&self.decoder.finish());
            self.text.push_str(&tail);
            self.end(FinishReason::EndOfGeneration);
            return Ok((!tail.is_empty()).then_some(GeneratedToken {
                id,
                text_piece: tail,
                logprob: lp,
                is_eog: true,
            }));
        }
        self.sampler.accept(id);
        self.tokens.push(id);
        let piece = self.engine.tokenizer().decode_next(&mut self.decoder, id);
        self.held.push_str(&piece);

        // A stop string ends the text before it.
        let found = self
            .params
            .stop
            .iter()
            .filter(|s| !s.is_empty())
            .filter_map(|s| self.held.find(s.as_str()))
            .min();
        let mut reason = None;
        let released = if let Some(at) = found {
            reason = Some(FinishReason::Stop);
            self.held.truncate(at);
            std::mem::take(&mut self.held)
        } else if self.tokens.len() >= self.params.max_tokens
            || self.session.len() >= self.session.context()
        {
            reason = Some(if self.tokens.len() >= self.params.max_tokens {
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
            is_eog: false,
        };
        let now = Instant::now();
        if self.tokens.len() == 1 {
            self.metrics.time_to_first_token = now - self.start;
        } else {
            self.latencies.push(now - self.last_emit);
        }
        self.last_emit = now;
        match reason {
            Some(r) => self.end(r),
            None => {
                let t = Instant::now();
                let next = self.engine.forward(self.session, &[id], false)?;
                self.metrics.decode += t.elapsed();
                self.metrics.decode_tokens += 1;
                self.state = State::Decode(next);
            }
        }
        Ok(Some(token))
    }
}

impl Iterator for Generate<'_, '_> {
    type Item = Result<GeneratedToken>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.step() {
            Ok(t) => t.map(Ok),
            Err(e) => {
                self.state = State::Done;
                Some(Err(e))
            }
        }
    }
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
    fn logprob_is_a_log_softmax() {
        let l = [0.0f32, 0.0];
        assert!((logprob(&l, 1) - 0.5f32.ln()).abs() < 1e-6);
    }
}

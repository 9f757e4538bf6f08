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
//!     ..Default::default()
//! };
//! let mut stream = engine.generate(&mut session, "Once upon a time", params)?;
//! for token in &mut stream {
//!     print!("{}", token?.text_piece);
//! }
//! println!("\n{}", stream.summary().expect("finished").metrics);
//! # Ok::<(), shuku_infer::EngineError>(())
//! ```
//!
//! How text is released and when generation ends is [`Sequence`]'s job (see
//! [`crate::sequence`]): complete UTF-8 only, stop strings caught even across tokens and never
//! partly printed. [`Generate::with_constraint`] keeps the output valid under a JSON schema.

use std::time::Instant;

use crate::engine::{Engine, EngineError, Result, Session};
use crate::grammar::JsonSchemaConstraint;
use crate::metrics::GenerationMetrics;
use crate::sampler::SamplerConfig;
use crate::sequence::Sequence;

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
    /// How many of the most likely tokens to report with each generated token
    /// ([`GeneratedToken::top_logprobs`]); 0 reports none.
    pub top_logprobs: usize,
}

impl Default for GenerationParams {
    fn default() -> Self {
        GenerationParams {
            max_tokens: 128,
            sampler: SamplerConfig::default(),
            stop: Vec::new(),
            seed: None,
            top_logprobs: 0,
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
    /// The most likely tokens at this position with their log-probabilities (most likely first),
    /// as many as [`GenerationParams::top_logprobs`] asks for.
    pub top_logprobs: Vec<(u32, f32)>,
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

/// The iterator [`Engine::generate`] returns. After it yields `None`,
/// [`summary`](Self::summary) holds the [`Generation`].
pub struct Generate<'e, 's> {
    engine: &'e Engine,
    session: &'s mut Session,
    sequence: Sequence,
    /// The prompt, until it is evaluated; then the token to feed back, if any.
    pending: Pending,
}

enum Pending {
    Prompt(Vec<u32>),
    Token(u32),
    Done,
}

impl std::fmt::Debug for Generate<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Generate")
            .field("sequence", &self.sequence)
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
        let sequence = Sequence::new(self.tokenizer(), session.tokens(), &tokens, params);
        Ok(Generate {
            engine: self,
            session,
            sequence,
            pending: Pending::Prompt(tokens),
        })
    }
}

impl Generate<'_, '_> {
    /// Constrains the output to a document valid under `constraint`'s JSON schema (a fresh
    /// constraint): tokens that would break it are never sampled, and generation ends when the
    /// document is complete.
    pub fn with_constraint(mut self, constraint: JsonSchemaConstraint) -> Self {
        self.sequence = self.sequence.with_constraint(constraint);
        self
    }

    /// The summary, once the iterator has ended.
    pub fn summary(&self) -> Option<&Generation> {
        self.sequence.summary()
    }

    /// Runs to the end and returns the summary.
    pub fn finish(mut self) -> Result<Generation> {
        for item in &mut self {
            item?;
        }
        self.sequence
            .take_summary()
            .ok_or_else(|| EngineError::InvalidRequest("generation did not finish".into()))
    }

    fn step(&mut self) -> Result<Option<GeneratedToken>> {
        let logits = match std::mem::replace(&mut self.pending, Pending::Done) {
            Pending::Done => return Ok(None),
            Pending::Prompt(prompt) => {
                if self.sequence.params().max_tokens == 0 {
                    self.sequence.end(FinishReason::Length);
                    return Ok(None);
                }
                let t = Instant::now();
                let logits = self.engine.forward(self.session, &prompt, false)?;
                self.sequence.record_prefill(prompt.len(), t.elapsed());
                logits
            }
            Pending::Token(id) => {
                let t = Instant::now();
                let logits = self.engine.forward(self.session, &[id], false)?;
                self.sequence.record_decode(t.elapsed());
                logits
            }
        };
        let full = self.session.len() >= self.session.context();
        let step = self.sequence.step(self.engine.tokenizer(), &logits, full)?;
        if let Some(next) = step.next {
            self.pending = Pending::Token(next);
        }
        Ok(step.token)
    }
}

impl Iterator for Generate<'_, '_> {
    type Item = Result<GeneratedToken>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.step() {
            Ok(t) => t.map(Ok),
            Err(e) => {
                self.pending = Pending::Done;
                Some(Err(e))
            }
        }
    }
}

//! llama.cpp's `llama-perplexity` chunking, reproduced so our numbers and llama.cpp's agree.
//!
//! The text is tokenized once; it is cut into `n_chunk = min(requested, tokens / n_ctx)` disjoint windows of
//! `n_ctx` tokens; each window is evaluated in a fresh context, optionally with its first token replaced by BOS
//! (llama.cpp does this when the vocabulary adds BOS; the targets keep the original tokens); only the second half
//! of each window is scored (positions `n_ctx/2 .. n_ctx-1`, the logit at `j` predicting token `j+1`), so every
//! scored token has at least half a window of context.

use crate::error::EvalError;

/// How a text is cut into windows and which positions are scored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PerplexityProtocol {
    /// Window length in tokens (llama.cpp's `-c`).
    pub n_ctx: usize,
    /// Upper bound on the number of windows (llama.cpp's `--chunks`); `None` uses every full window.
    pub n_chunks: Option<usize>,
    /// Token that replaces the first token of each window for the forward pass (llama.cpp does this when the
    /// model's vocabulary adds BOS). `None` leaves the window as is.
    pub bos: Option<u32>,
}

impl PerplexityProtocol {
    /// A protocol with a context of `n_ctx`, all chunks, no BOS replacement.
    pub fn new(n_ctx: usize) -> Self {
        Self {
            n_ctx,
            n_chunks: None,
            bos: None,
        }
    }

    /// First scored position of a window (`n_ctx / 2`).
    pub fn first_scored(&self) -> usize {
        self.n_ctx / 2
    }

    /// Scored positions per window (`n_ctx - 1 - n_ctx/2`).
    pub fn scored_per_chunk(&self) -> usize {
        self.n_ctx.saturating_sub(1 + self.first_scored())
    }

    /// Number of windows evaluated for a text of `n_tokens` tokens, after the same checks llama.cpp makes.
    pub fn n_chunks_for(&self, n_tokens: usize) -> Result<usize, EvalError> {
        if self.scored_per_chunk() == 0 {
            return Err(EvalError::InvalidProtocol(format!(
                "n_ctx = {} leaves no position to score (need at least 3)",
                self.n_ctx
            )));
        }
        if self.n_chunks == Some(0) {
            return Err(EvalError::InvalidProtocol(
                "n_chunks must be at least 1".into(),
            ));
        }
        if n_tokens < 2 * self.n_ctx {
            return Err(EvalError::TooFewTokens {
                needed: 2 * self.n_ctx,
                found: n_tokens,
                n_ctx: self.n_ctx,
            });
        }
        let max = n_tokens / self.n_ctx;
        Ok(self.n_chunks.map_or(max, |n| n.min(max)))
    }

    /// The tokens of window `chunk` as they are fed to the model (BOS-replaced) and as they are scored
    /// (original).
    pub fn window<'t>(&self, tokens: &'t [u32], chunk: usize) -> (Vec<u32>, &'t [u32]) {
        let original = &tokens[chunk * self.n_ctx..(chunk + 1) * self.n_ctx];
        let mut input = original.to_vec();
        if let Some(bos) = self.bos {
            input[0] = bos;
        }
        (input, original)
    }

    /// Iterates over the scored `(logit row index, target token)` pairs of one window.
    pub fn scored_positions<'t>(
        &self,
        original: &'t [u32],
    ) -> impl Iterator<Item = (usize, u32)> + 't {
        let first = self.first_scored();
        (first..self.n_ctx - 1).map(move |j| (j, original[j + 1]))
    }
}

//! Perplexity over the [`PerplexityProtocol`], with llama.cpp's uncertainty estimate.

use std::fmt;

use crate::error::EvalError;
use crate::protocol::PerplexityProtocol;
use crate::softmax::log_sum_exp;
use crate::source::{checked_logits, LogitsSource};

/// Progress callback: `(chunks done, total chunks, running value)`; lets callers drive a progress bar.
pub type Progress<'a> = &'a mut dyn FnMut(usize, usize, f64);

/// Result of a perplexity run.
#[derive(Debug, Clone, PartialEq)]
pub struct PerplexityReport {
    /// `exp(mean negative log-likelihood)` over every scored token.
    pub ppl: f64,
    /// llama.cpp's standard error of `ppl`: `ppl * sqrt(var(nll) / (count - 1))`.
    pub ppl_stderr: f64,
    /// Window length.
    pub n_ctx: usize,
    /// Windows evaluated.
    pub chunks: usize,
    /// Positions scored in total.
    pub tokens_scored: usize,
    /// Perplexity of each window on its own.
    pub per_chunk_ppl: Vec<f64>,
}

impl fmt::Display for PerplexityReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ctx {}, {} chunks, second half of each chunk scored: PPL = {:.4} ± {:.4}",
            self.n_ctx, self.chunks, self.ppl, self.ppl_stderr
        )
    }
}

/// Running sums of negative log-likelihood, in f64 as llama.cpp keeps them.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct NllSums {
    pub nll: f64,
    pub nll2: f64,
    pub count: usize,
}

impl NllSums {
    pub fn add(&mut self, nll: f64) {
        self.nll += nll;
        self.nll2 += nll * nll;
        self.count += 1;
    }

    pub fn ppl(&self) -> f64 {
        (self.nll / self.count as f64).exp()
    }

    /// llama.cpp's final estimate: mean = nll/n, var = nll2/n - mean², err = sqrt(var/(n-1)) * ppl.
    pub fn ppl_stderr(&self) -> f64 {
        let n = self.count as f64;
        let mean = self.nll / n;
        let var = self.nll2 / n - mean * mean;
        if var > 0.0 && self.count > 1 {
            (var / (n - 1.0)).sqrt() * self.ppl()
        } else {
            0.0
        }
    }
}

/// Negative log-likelihood of `target` under one logits row.
pub(crate) fn nll_of(row: &[f32], target: u32) -> Result<f64, EvalError> {
    let t = target as usize;
    let logit = *row.get(t).ok_or(EvalError::TokenOutOfRange {
        token: target,
        vocab: row.len(),
    })?;
    let (lse, _) = log_sum_exp(row);
    Ok(lse - f64::from(logit))
}

/// Runs the protocol on `tokens` (the whole tokenized text) and reports perplexity.
pub fn perplexity(
    source: &mut dyn LogitsSource,
    tokens: &[u32],
    protocol: &PerplexityProtocol,
    mut progress: Option<Progress<'_>>,
) -> Result<PerplexityReport, EvalError> {
    let n_chunks = protocol.n_chunks_for(tokens.len())?;
    let vocab = source.vocab_size();
    let mut total = NllSums::default();
    let mut per_chunk_ppl = Vec::with_capacity(n_chunks);
    for chunk in 0..n_chunks {
        let (input, original) = protocol.window(tokens, chunk);
        let logits = checked_logits(source, &input)?;
        let mut this = NllSums::default();
        for (j, target) in protocol.scored_positions(original) {
            let nll = nll_of(&logits[j * vocab..(j + 1) * vocab], target)?;
            this.add(nll);
            total.add(nll);
        }
        per_chunk_ppl.push(this.ppl());
        if let Some(cb) = progress.as_mut() {
            cb(chunk + 1, n_chunks, total.ppl());
        }
    }
    Ok(PerplexityReport {
        ppl: total.ppl(),
        ppl_stderr: total.ppl_stderr(),
        n_ctx: protocol.n_ctx,
        chunks: n_chunks,
        tokens_scored: total.count,
        per_chunk_ppl,
    })
}

//! `Llama` as a `shuku_eval::LogitsSource`, so the trainer's model is scored by the same protocol as GGUF
//! inference.

use candle_core::Tensor;
use shuku_eval::{LogitsSource, PerplexityProtocol, PerplexityReport, SourceError};

use crate::error::Result;
use crate::model::Llama;

impl Llama {
    /// Logits `[tokens.len() * vocab]` (row-major) of one fresh sequence.
    pub fn logits_vec(&self, tokens: &[u32]) -> Result<Vec<f32>> {
        let t = Tensor::from_vec(tokens.to_vec(), (1, tokens.len()), self.device())?;
        Ok(self
            .forward_inference(&t)?
            .flatten_all()?
            .to_vec1::<f32>()?)
    }

    /// llama.cpp-protocol perplexity of `tokens` (the whole tokenized text).
    pub fn perplexity(
        &self,
        tokens: &[u32],
        protocol: &PerplexityProtocol,
    ) -> Result<PerplexityReport> {
        let mut source = self;
        Ok(shuku_eval::perplexity(&mut source, tokens, protocol, None)?)
    }
}

impl LogitsSource for &Llama {
    fn vocab_size(&self) -> usize {
        self.config().vocab_size
    }

    fn logits(&mut self, tokens: &[u32]) -> Result<Vec<f32>, SourceError> {
        Ok(self.logits_vec(tokens)?)
    }
}

impl LogitsSource for Llama {
    fn vocab_size(&self) -> usize {
        self.config().vocab_size
    }

    fn logits(&mut self, tokens: &[u32]) -> Result<Vec<f32>, SourceError> {
        Ok(self.logits_vec(tokens)?)
    }
}

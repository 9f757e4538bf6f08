//! The one thing an evaluator needs from a model: logits for a token window.

use crate::error::{EvalError, SourceError};

/// Anything that turns a token window into next-token logits.
///
/// Implemented by the trainer's model (through `shuku-model`) and by the GGUF inference engine, so both are
/// scored by exactly the same code.
pub trait LogitsSource {
    /// Number of logits per position.
    fn vocab_size(&self) -> usize;

    /// Row-major `[tokens.len(), vocab_size()]` logits for `tokens` evaluated in a fresh context: position 0
    /// sits at position 0 and nothing is carried over from a previous call.
    fn logits(&mut self, tokens: &[u32]) -> Result<Vec<f32>, SourceError>;
}

impl<T: LogitsSource + ?Sized> LogitsSource for &mut T {
    fn vocab_size(&self) -> usize {
        (**self).vocab_size()
    }
    fn logits(&mut self, tokens: &[u32]) -> Result<Vec<f32>, SourceError> {
        (**self).logits(tokens)
    }
}

/// Calls the source and checks the buffer length, so the statistics never index out of bounds.
pub(crate) fn checked_logits(
    source: &mut dyn LogitsSource,
    tokens: &[u32],
) -> Result<Vec<f32>, EvalError> {
    let vocab = source.vocab_size();
    let logits = source.logits(tokens).map_err(EvalError::Source)?;
    let expected = tokens.len() * vocab;
    if logits.len() != expected {
        return Err(EvalError::BadLogitsLength {
            expected,
            found: logits.len(),
            tokens: tokens.len(),
            vocab,
        });
    }
    Ok(logits)
}

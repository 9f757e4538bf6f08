//! Bridges to shuku-model: its `Llama` is [`Trainable`] and its `Tokenizer` a [`TextTokenizer`].

use candle_core::{Tensor, Var};

use crate::data::TextTokenizer;
use crate::error::{DistillError, Result};
use crate::trainer::Trainable;

impl Trainable for shuku_model::Llama {
    fn parameters(&self) -> Vec<(String, Var)> {
        shuku_model::Llama::parameters(self)
    }

    /// Full-sequence forward without a KV cache (training sees whole sequences).
    fn forward_logits(&self, tokens: &Tensor) -> candle_core::Result<Tensor> {
        self.forward(tokens, None).map_err(candle_core::Error::wrap)
    }

    /// One layer's activations alive at a time ([`shuku_model::Llama::forward_inference`]).
    fn inference_logits(&self, tokens: &Tensor) -> candle_core::Result<Tensor> {
        self.forward_inference(tokens)
            .map_err(candle_core::Error::wrap)
    }

    fn forward_head_input(&self, tokens: &Tensor) -> candle_core::Result<Option<(Tensor, Tensor)>> {
        shuku_model::Llama::forward_head_input(self, tokens)
            .map(Some)
            .map_err(candle_core::Error::wrap)
    }

    fn checkpointed_gradients(
        &self,
        tokens: &Tensor,
        loss: &mut shuku_model::HeadInputLoss<'_>,
    ) -> candle_core::Result<Option<candle_core::backprop::GradStore>> {
        shuku_model::Llama::checkpointed_gradients(self, tokens, loss)
            .map(Some)
            .map_err(candle_core::Error::wrap)
    }
}

impl TextTokenizer for shuku_model::Tokenizer {
    /// Ids without special tokens: documents are packed back to back, and a BOS/EOS between them
    /// is added through [`crate::DataConfig::separator`] instead.
    fn encode(&self, text: &str) -> Result<Vec<u32>> {
        shuku_model::Tokenizer::encode(self, text, false)
            .map_err(|e| DistillError::Tokenizer(e.to_string()))
    }

    fn vocab_size(&self) -> usize {
        shuku_model::Tokenizer::vocab_size(self)
    }
}

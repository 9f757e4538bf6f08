//! Sequential layer-by-layer passes over calibration samples.
//!
//! Wanda, SparseGPT and OWL look at one decoder layer at a time, on the hidden states that *the
//! layers before it, as already pruned,* produce. Holding the hidden states of every sample between
//! layers costs `samples × seq × hidden` floats, far less than running the whole model again for
//! each layer.
//!
//! The papers' code runs each layer twice: once to observe the inputs of all its linears, and once
//! more, after pruning them, to compute the next layer's input. [`LayerwisePass::advance_staged`]
//! runs it once: the layer is computed one group of linears at a time over all samples, and each
//! group is pruned as soon as its inputs are known, so the groups after it see its pruned outputs
//! (the order the GPTQ and SparseGPT authors call "true sequential"). Half the forward work, and
//! every linear is fitted to the inputs it will actually receive.

use candle_core::Tensor;
use shuku_model::{BeforeGroup, LinearObserver, Llama};

use crate::error::{PruneError, Result};

/// Sequences run together through one layer call: larger batches make the matrix products more
/// efficient; the activations of one batch are a few tens of MB for small models.
const BATCH_TOKENS: usize = 4096;

/// The hidden states of every calibration sample at the input of the current layer.
pub struct LayerwisePass<'m> {
    model: &'m Llama,
    /// `(hidden [batch*seq, H], batch, seq)` per batch of equal-length samples.
    batches: Vec<(Tensor, usize, usize)>,
    /// The layer whose input `batches` holds.
    layer: usize,
}

impl<'m> LayerwisePass<'m> {
    /// Embeds `samples` (each one sequence from position 0), batching equal lengths together.
    pub fn new(model: &'m Llama, samples: &[Vec<u32>], method: &'static str) -> Result<Self> {
        if samples.is_empty() || samples.iter().any(Vec::is_empty) {
            return Err(PruneError::NoCalibration { method });
        }
        let mut batches = Vec::new();
        let mut start = 0;
        while start < samples.len() {
            let seq = samples[start].len();
            let per_batch = (BATCH_TOKENS / seq).max(1);
            let mut end = start + 1;
            while end < samples.len() && end - start < per_batch && samples[end].len() == seq {
                end += 1;
            }
            let tokens: Vec<u32> = samples[start..end].concat();
            let b = end - start;
            let tokens = Tensor::from_vec(tokens, (b, seq), model.device())?;
            batches.push((model.embed(&tokens)?.detach(), b, seq));
            start = end;
        }
        Ok(LayerwisePass {
            model,
            batches,
            layer: 0,
        })
    }

    /// Runs the current layer (with its weights as they are now) and moves to the next one. With
    /// `observer`, the layer's inputs are observed in the same run.
    pub fn advance(&mut self, mut observer: Option<&mut dyn LinearObserver>) -> Result<()> {
        for (x, b, seq) in &mut self.batches {
            let obs = observer
                .as_mut()
                .map(|o| &mut **o as &mut dyn LinearObserver);
            // Detached: the weights are autograd variables and a kept graph would hold every layer.
            let y = shuku_model::ops::without_gradients(|| {
                self.model.forward_block(self.layer, x, *b, *seq, obs)
            })?;
            *x = y.detach();
        }
        self.layer += 1;
        Ok(())
    }

    /// Runs the current layer one group of linears at a time ([`Llama::forward_block_staged`]):
    /// `before_group(names, inputs)` sees each group's inputs for every sample and may replace the
    /// group's weights before they are applied; then moves to the next layer.
    pub fn advance_staged(&mut self, before_group: &mut BeforeGroup<'_>) -> Result<()> {
        self.model
            .forward_block_staged(self.layer, &mut self.batches, before_group)?;
        for (x, _, _) in &mut self.batches {
            *x = x.detach();
        }
        self.layer += 1;
        Ok(())
    }

    /// The current hidden states, one tensor `[batch*seq, H]` per batch.
    pub fn hidden(&self) -> impl Iterator<Item = &Tensor> {
        self.batches.iter().map(|(x, _, _)| x)
    }
}

//! Activation checkpointing per decoder layer: the parameter gradients of a loss with one layer's
//! activations alive at a time instead of every layer's.
//!
//! A backward pass through the whole graph keeps every layer's intermediate tensors (normed inputs,
//! queries, keys, values, the FFN's `[N, F]` products) from the forward pass until it reaches them,
//! memory that grows with layers × tokens. Here a first pass keeps only each layer's input; the
//! backward pass then goes from the last layer to the first, running each layer's forward again on its
//! saved input and differentiating it alone, seeded with the gradient of its output. That costs one more
//! forward pass of the layers (about a third more compute) and holds the layer inputs plus one layer's
//! activations. candle has no checkpointing of its own; this chains its `backward` per layer through
//! the surrogate `Σ output ⊙ seed`, whose gradient is exactly `seed`.
//!
//! The recomputed forward is the same computation on the same values (the kernels are deterministic,
//! no dropout), so the gradients equal those of the full graph: to the bit for every layer input and
//! weight (none has more than two uses, whose gradients add in either order to the same value) but a
//! tied embedding, whose head gradient the full graph adds into before the lookup's rows of repeated
//! tokens and this pass after them, the same sum in another order.

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};

use super::Llama;
use crate::error::{ModelError, Result};

/// A loss of the output head's input: given the final hidden states `[B·T, H]` (after the final norm)
/// and the head's weight `[V, H]`, the scalar to differentiate.
pub type HeadInputLoss<'a> = dyn FnMut(&Tensor, &Tensor) -> candle_core::Result<Tensor> + 'a;

impl Llama {
    /// The gradients of `loss` (applied to [`Llama::forward_head_input`]'s outputs for `tokens` `[B, T]`
    /// u32, no cache) with respect to every parameter, computed with activation checkpointing per
    /// decoder layer: see the module's documentation. Holds about `layers × B·T × H` values of layer
    /// inputs and one layer's activations, where a plain `backward` holds every layer's; runs each
    /// layer's forward twice.
    ///
    /// The store holds a gradient for each parameter [`Llama::parameters`] lists that the loss reaches
    /// (the tied embeddings get the sum of both uses), keyed by the parameter's tensor as candle's
    /// `backward` keys it.
    pub fn checkpointed_gradients(
        &self,
        tokens: &Tensor,
        loss: &mut HeadInputLoss<'_>,
    ) -> Result<GradStore> {
        let (b, t) = self.check_tokens(tokens)?;
        let ctx = self.pass_context(b, t, 0)?;
        let mut inputs = Vec::with_capacity(self.blocks.len());
        let mut x = self.embed_checked(tokens)?.detach();
        for blk in &self.blocks {
            let y = blk.forward(&x, &ctx, None, None)?.detach();
            inputs.push(std::mem::replace(&mut x, y));
        }

        let top = Var::from_tensor(&x)?;
        let value = loss(&self.final_norm(top.as_tensor())?, self.head_weight())?;
        let mut grads = value.backward()?;
        let mut seed = take_input_gradient(&mut grads, &top, "the final norm")?;

        let parameters = self.parameters();
        for (layer, (blk, input)) in self.blocks.iter().zip(inputs).enumerate().rev() {
            let input = Var::from_tensor(&input)?;
            let output = blk.forward(input.as_tensor(), &ctx, None, None)?;
            let mut layer_grads = seeded(&output, &seed)?.backward()?;
            seed = take_input_gradient(&mut layer_grads, &input, &format!("layer {layer}"))?;
            move_parameter_gradients(&mut grads, layer_grads, &parameters)?;
        }

        let embedded = self.embed_checked(tokens)?;
        move_parameter_gradients(
            &mut grads,
            seeded(&embedded, &seed)?.backward()?,
            &parameters,
        )?;
        Ok(grads)
    }
}

/// `Σ output ⊙ seed`: a scalar whose gradient with respect to `output` is `seed` (detached).
fn seeded(output: &Tensor, seed: &Tensor) -> Result<Tensor> {
    Ok((output * seed.detach())?.sum_all()?)
}

/// Removes and returns the gradient of the pass's input `input` from `grads`.
fn take_input_gradient(grads: &mut GradStore, input: &Var, what: &str) -> Result<Tensor> {
    grads.remove(input.as_tensor()).ok_or_else(|| {
        ModelError::InvalidInput(format!(
            "checkpointed backward: the loss does not depend on the input of {what}"
        ))
    })
}

/// Moves the gradients of `parameters` out of `from` into `into`, adding them to any already there (a
/// tied weight's two uses). What else `from` holds is dropped with it: the gradients candle's
/// `backward` also leaves for the constants an op read (here the seed), which can hold the pass's
/// graph alive.
fn move_parameter_gradients(
    into: &mut GradStore,
    mut from: GradStore,
    parameters: &[(String, Var)],
) -> Result<()> {
    for (_, var) in parameters {
        let Some(grad) = from.remove(var.as_tensor()) else {
            continue;
        };
        let grad = match into.remove(var.as_tensor()) {
            Some(earlier) => (earlier + grad)?,
            None => grad,
        };
        into.insert(var.as_tensor(), grad);
    }
    Ok(())
}

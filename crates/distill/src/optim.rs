//! AdamW with decoupled weight decay, global-norm clipping and gradient accumulation.
//!
//! candle-nn 0.11 has an `AdamW`, but its moments are private (no way to checkpoint them, so a
//! resumed run would restart Adam's statistics), it decays every parameter alike (norm gains
//! and biases should not be decayed), and candle-nn has no gradient clipping and no
//! accumulation. This module keeps named parameters and their moments in the open so
//! [`crate::checkpoint`] can save and restore them exactly. On f32 CPU tensors the update runs in
//! place (the crate's `adamw_kernels`); elsewhere, and inside `shuku_model::ops::composed_only`, as
//! tensor ops.

use candle_core::{backprop::GradStore, DType, Tensor, Var};
use serde::{Deserialize, Serialize};

use crate::adamw_kernels::{MovingAverage, ParameterStep};
use crate::error::{DistillError, Result};

/// AdamW hyper-parameters (the learning rate comes from the schedule at each step).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AdamWConfig {
    /// First-moment decay.
    pub beta1: f64,
    /// Second-moment decay.
    pub beta2: f64,
    /// Denominator epsilon.
    pub eps: f64,
    /// Decoupled weight decay coefficient (multiplied by the learning rate).
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: 0.1,
        }
    }
}

/// Default decay filter: decay matrices, skip biases, norm gains and any rank-1 tensor.
///
/// Decaying a norm gain pulls it towards 0 (not its natural value 1) and decaying biases only
/// hurts fit; this matches the usual GPT/llama training recipes.
pub fn decay_matrices_only(name: &str, var: &Var) -> bool {
    let lower = name.to_ascii_lowercase();
    var.rank() >= 2 && !lower.contains("norm") && !lower.ends_with("bias")
}

/// One parameter and its Adam state.
#[derive(Debug)]
pub struct ParamState {
    /// Parameter name (also its checkpoint key).
    pub name: String,
    /// The parameter.
    pub var: Var,
    /// First moment `m`.
    pub m: Tensor,
    /// Second moment `v`.
    pub v: Tensor,
    /// Whether weight decay applies.
    pub decay: bool,
}

/// Gradients aligned with an optimizer's parameter order (`None`: no gradient this step).
#[derive(Debug, Clone)]
pub struct Gradients(pub Vec<Option<Tensor>>);

/// AdamW over a named parameter list.
#[derive(Debug)]
pub struct AdamW {
    params: Vec<ParamState>,
    step: u64,
    config: AdamWConfig,
}

impl AdamW {
    /// Build over `params` with zero moments; `decay(name, var)` selects decayed parameters.
    ///
    /// Non-float parameters are rejected; duplicate names are an error because names are the
    /// checkpoint keys.
    pub fn new(
        params: Vec<(String, Var)>,
        config: AdamWConfig,
        decay: impl Fn(&str, &Var) -> bool,
    ) -> Result<Self> {
        let mut seen = std::collections::HashSet::new();
        let mut states = Vec::with_capacity(params.len());
        for (name, var) in params {
            if !seen.insert(name.clone()) {
                return Err(DistillError::InvalidConfig(format!(
                    "duplicate parameter name {name:?}"
                )));
            }
            if !var.dtype().is_float() {
                return Err(DistillError::InvalidConfig(format!(
                    "parameter {name:?} is not floating point ({:?})",
                    var.dtype()
                )));
            }
            let m = var.zeros_like()?;
            let v = var.zeros_like()?;
            let d = decay(&name, &var);
            states.push(ParamState {
                name,
                var,
                m,
                v,
                decay: d,
            });
        }
        Ok(Self {
            params: states,
            step: 0,
            config,
        })
    }

    /// Parameters and moments, in order.
    pub fn params(&self) -> &[ParamState] {
        &self.params
    }

    /// Number of updates applied so far (Adam's `t`).
    pub fn step_count(&self) -> u64 {
        self.step
    }

    /// Hyper-parameters.
    pub fn config(&self) -> &AdamWConfig {
        &self.config
    }

    /// Restore moments and the step counter (used by checkpoint loading; shapes are checked
    /// by the caller).
    pub(crate) fn restore(&mut self, step: u64, moments: Vec<(Tensor, Tensor)>) {
        for (p, (m, v)) in self.params.iter_mut().zip(moments) {
            p.m = m;
            p.v = v;
        }
        self.step = step;
    }

    /// Pull this optimizer's gradients out of a backward pass.
    pub fn gradients(&self, grads: &GradStore) -> Gradients {
        Gradients(
            self.params
                .iter()
                .map(|p| grads.get(p.var.as_tensor()).cloned())
                .collect(),
        )
    }

    /// One AdamW update at learning rate `lr`:
    /// `θ ← θ − lr·λ·θ` (if decayed), `m ← β₁m + (1−β₁)g`, `v ← β₂v + (1−β₂)g²`,
    /// `θ ← θ − lr · m̂ / (√v̂ + ε)` with bias-corrected `m̂ = m/(1−β₁ᵗ)`, `v̂ = v/(1−β₂ᵗ)`.
    ///
    /// Parameters without a gradient are left untouched (moments included).
    pub fn step(&mut self, grads: &Gradients, lr: f64) -> Result<()> {
        if grads.0.len() != self.params.len() {
            return Err(DistillError::InvalidConfig(format!(
                "{} gradients for {} parameters",
                grads.0.len(),
                self.params.len()
            )));
        }
        self.step += 1;
        let c = self.config;
        let t = self.step as i32;
        let bc1 = 1.0 - c.beta1.powi(t);
        let bc2 = 1.0 - c.beta2.powi(t);
        for (p, g) in self.params.iter_mut().zip(&grads.0) {
            let Some(g) = g else { continue };
            let g = g.to_dtype(p.var.dtype())?;
            if shuku_model::ops::fused_for(p.var.as_tensor()) {
                let g = g.contiguous()?;
                let moment = |beta, squared| MovingAverage { beta, squared };
                p.m.inplace_op2(&g, &moment(c.beta1, false))?;
                p.v.inplace_op2(&g, &moment(c.beta2, true))?;
                let decay = if p.decay { lr * c.weight_decay } else { 0.0 };
                p.var.as_tensor().inplace_op3(
                    &p.m,
                    &p.v,
                    &ParameterStep {
                        lr,
                        decay,
                        bias_correction1: bc1,
                        bias_correction2: bc2,
                        eps: c.eps,
                    },
                )?;
                continue;
            }
            let m = ((&p.m * c.beta1)? + (&g * (1.0 - c.beta1))?)?;
            let v = ((&p.v * c.beta2)? + (g.sqr()? * (1.0 - c.beta2))?)?;
            let m_hat = (&m / bc1)?;
            let v_hat = (&v / bc2)?;
            let update = (m_hat / (v_hat.sqrt()? + c.eps)?)?;
            let theta = p.var.as_tensor();
            let theta = if p.decay && c.weight_decay != 0.0 {
                (theta * (1.0 - lr * c.weight_decay))?
            } else {
                theta.clone()
            };
            p.var.set(&(theta - (update * lr)?)?)?;
            p.m = m;
            p.v = v;
        }
        Ok(())
    }
}

/// Global L2 norm of all gradients (accumulated in f64).
pub fn global_norm(grads: &Gradients) -> Result<f64> {
    let mut sq = 0f64;
    for g in grads.0.iter().flatten() {
        if shuku_model::ops::fused_for(g) {
            sq += shuku_model::fused::sum_of_squares(g)?;
            continue;
        }
        sq += g
            .to_dtype(DType::F64)?
            .sqr()?
            .sum_all()?
            .to_scalar::<f64>()?;
    }
    Ok(sq.sqrt())
}

/// Scale all gradients so their global norm is at most `max_norm`; returns the pre-clip norm.
///
/// A non-finite norm is returned as is and the gradients are left alone, so the caller can
/// decide to skip the step.
pub fn clip_grad_norm(grads: &mut Gradients, max_norm: f64) -> Result<f64> {
    let norm = global_norm(grads)?;
    if norm.is_finite() && norm > max_norm && norm > 0.0 {
        let scale = max_norm / norm;
        for g in grads.0.iter_mut().flatten() {
            *g = (&*g * scale)?;
        }
    }
    Ok(norm)
}

/// Sums gradients over `k` micro-batches and hands back their mean.
///
/// Averaging (scale `1/k`) makes `k` micro-batches of size `b` equivalent to one batch of size
/// `k·b` with a mean loss, so the learning rate does not depend on the accumulation factor.
#[derive(Debug, Default)]
pub struct GradAccumulator {
    sums: Vec<Option<Tensor>>,
    count: usize,
}

impl GradAccumulator {
    /// An empty accumulator.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add one micro-batch's gradients.
    pub fn add(&mut self, grads: Gradients) -> Result<()> {
        if self.sums.is_empty() {
            self.sums = vec![None; grads.0.len()];
        }
        if self.sums.len() != grads.0.len() {
            return Err(DistillError::InvalidConfig(
                "gradient lists of different lengths".into(),
            ));
        }
        for (s, g) in self.sums.iter_mut().zip(grads.0) {
            if let Some(g) = g {
                *s = Some(match s.take() {
                    Some(prev) => (prev + g)?,
                    None => g,
                });
            }
        }
        self.count += 1;
        Ok(())
    }

    /// Micro-batches added since the last [`GradAccumulator::finish`].
    pub fn count(&self) -> usize {
        self.count
    }

    /// Mean gradients; resets the accumulator.
    pub fn finish(&mut self) -> Result<Gradients> {
        let k = self.count.max(1) as f64;
        let sums = std::mem::take(&mut self.sums);
        self.count = 0;
        let out = sums
            .into_iter()
            .map(|s| s.map(|t| if k == 1.0 { Ok(t) } else { t / k }).transpose())
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Gradients(out))
    }
}

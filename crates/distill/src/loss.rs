//! Training and distillation losses built only from differentiable candle primitives.
//!
//! Cross-entropy and forward KL, the two losses of nearly every run, use shuku-model's fused kernels
//! (one pass per row, gradient written directly) on f32 CPU tensors ([`shuku_model::ops::fused_for`]);
//! the composed versions below are their reference and run everywhere else.
//!
//! candle-nn 0.11 ships `loss::cross_entropy`/`nll`/`mse` but no KL, reverse-KL or JSD, no
//! ignore-index, and its fused `ops::softmax_last_dim` is registered with `apply_op1_no_bwd`,
//! i.e. it silently drops gradients. Everything here is therefore written with `exp`, `log`,
//! `sum_keepdim`, `gather`, … whose backward passes candle implements.
//!
//! All losses accept logits of shape `[.., C]` (any leading dims: an image classifier's `[B, C]`
//! or a language model's `[B, T, V]`) and flatten them to `[N, C]`; the result is averaged over
//! the `N` positions. Teacher logits are always detached, so a teacher never receives gradients.

use candle_core::{DType, Tensor, Var};
use serde::{Deserialize, Serialize};

use crate::error::{DistillError, Result};
use crate::schedule::{cosine_interp, linear_interp};
use shuku_math::SplitMix64;

/// Flatten `[.., C]` to `[N, C]`.
fn flatten_classes(x: &Tensor) -> Result<Tensor> {
    let dims = x.dims();
    let Some(&c) = dims.last() else {
        return Err(DistillError::ShapeMismatch {
            what: "logits must have at least one dimension".into(),
            left: vec![],
            right: vec![],
        });
    };
    let n = x.elem_count().checked_div(c).unwrap_or(0);
    Ok(x.reshape((n, c))?)
}

/// Numerically stable log-softmax over the last dimension (the row maximum subtracted, detached):
/// shuku-model's, the one definition the composed losses here and the model's share.
pub use shuku_model::ops::log_softmax_last_dim as log_softmax;

fn check_temperature(t: f64) -> Result<()> {
    if !(t.is_finite() && t > 0.0) {
        return Err(DistillError::InvalidConfig(format!(
            "temperature must be finite and > 0, got {t}"
        )));
    }
    Ok(())
}

/// Flatten a student/teacher pair and check they describe the same positions and classes.
fn paired(student: &Tensor, teacher: &Tensor) -> Result<(Tensor, Tensor)> {
    let s = flatten_classes(student)?;
    let t = flatten_classes(&teacher.detach())?;
    let (ns, cs) = s.dims2()?;
    let (nt, ct) = t.dims2()?;
    if cs != ct {
        return Err(DistillError::VocabMismatch {
            what: "student vs teacher logits",
            left: cs,
            right: ct,
        });
    }
    if ns != nt {
        return Err(DistillError::ShapeMismatch {
            what: "student vs teacher logits".into(),
            left: student.dims().to_vec(),
            right: teacher.dims().to_vec(),
        });
    }
    let t = t.to_dtype(s.dtype())?;
    Ok((s, t))
}

/// The targets of `n` positions over `c` classes (from `logits_dims`, for the error), each checked
/// against the vocabulary; `None` where it equals `ignore_index`.
fn target_ids(
    targets: &Tensor,
    (n, c): (usize, usize),
    logits_dims: &[usize],
    ignore_index: Option<u32>,
) -> Result<Vec<Option<u32>>> {
    let ids = targets
        .flatten_all()?
        .to_dtype(DType::U32)?
        .to_vec1::<u32>()?;
    if ids.len() != n {
        return Err(DistillError::ShapeMismatch {
            what: "logits positions vs targets".into(),
            left: logits_dims.to_vec(),
            right: targets.dims().to_vec(),
        });
    }
    ids.into_iter()
        .map(|id| match id {
            _ if Some(id) == ignore_index => Ok(None),
            _ if (id as usize) < c => Ok(Some(id)),
            _ => Err(DistillError::TokenOutOfVocab {
                token: id,
                vocab: c,
            }),
        })
        .collect()
}

/// `mean_n Σ_c p[n,c] (a[n,c] − b[n,c])` — KL(p‖q) with `a = log p`, `b = log q`.
fn kl_rows(p: &Tensor, log_p: &Tensor, log_q: &Tensor) -> candle_core::Result<Tensor> {
    (p * (log_p - log_q)?)?.sum(1)?.mean_all()
}

/// Cross-entropy of logits `[.., C]` against integer targets with the same leading shape.
///
/// Positions whose target equals `ignore_index` contribute nothing and are excluded from the
/// mean; if every position is ignored the loss is 0 (not NaN), so an all-padding micro-batch
/// cannot poison the run. Targets are validated on the host: an id `>= C` is a typed error.
pub fn cross_entropy(
    logits: &Tensor,
    targets: &Tensor,
    ignore_index: Option<u32>,
) -> Result<Tensor> {
    let flat = flatten_classes(logits)?;
    let (n, c) = flat.dims2()?;
    let ids = target_ids(targets, (n, c), logits.dims(), ignore_index)?;
    if shuku_model::ops::fused_for(&flat) {
        return Ok(shuku_model::fused::cross_entropy(&flat, &ids)?);
    }
    let lp = log_softmax(&flat)?;
    let count = ids.iter().flatten().count().max(1) as f64;
    let safe: Vec<u32> = ids.iter().map(|id| id.unwrap_or(0)).collect();
    let mask: Vec<f64> = ids
        .iter()
        .map(|id| f64::from(u8::from(id.is_some())))
        .collect();
    let dev = lp.device();
    let idx = Tensor::from_vec(safe, (n, 1), dev)?;
    let mask = Tensor::from_vec(mask, n, dev)?.to_dtype(lp.dtype())?;
    let picked = lp.gather(&idx, 1)?.squeeze(1)?;
    Ok((picked * mask)?.sum_all()?.affine(-1.0 / count, 0.0)?)
}

/// Hinton's distillation loss: `T² · KL(p_T^teacher ‖ p_T^student)`, averaged over positions.
///
/// Forward KL is mean-seeking: the student is pushed to cover every mode of the teacher. The
/// `T²` factor keeps gradient magnitudes comparable across temperatures (soft-target gradients
/// scale as `1/T²`).
pub fn forward_kl(student: &Tensor, teacher: &Tensor, temperature: f64) -> Result<Tensor> {
    check_temperature(temperature)?;
    let (s, t) = paired(student, teacher)?;
    if shuku_model::ops::fused_for(&s) {
        return Ok(shuku_model::fused::forward_kl(&s, &t, temperature)?);
    }
    let ls = log_softmax(&(s / temperature)?)?;
    let lt = log_softmax(&(t / temperature)?)?;
    let kl = kl_rows(&lt.exp()?, &lt, &ls)?;
    Ok(kl.affine(temperature * temperature, 0.0)?)
}

/// Reverse KL: `T² · KL(p_T^student ‖ p_T^teacher)`, averaged over positions.
///
/// Mode-seeking: the student may ignore low-probability teacher modes, which suits a much
/// smaller student on generative text (MiniLLM).
pub fn reverse_kl(student: &Tensor, teacher: &Tensor, temperature: f64) -> Result<Tensor> {
    check_temperature(temperature)?;
    let (s, t) = paired(student, teacher)?;
    let ls = log_softmax(&(s / temperature)?)?;
    let lt = log_softmax(&(t / temperature)?)?;
    let kl = kl_rows(&ls.exp()?, &ls, &lt)?;
    Ok(kl.affine(temperature * temperature, 0.0)?)
}

/// Generalized Jensen–Shannon divergence (GKD, Agarwal et al. 2024), times `T²`.
///
/// With `M = β p_t + (1−β) p_s`, `JSD_β = β KL(p_t‖M) + (1−β) KL(p_s‖M)`. It is bounded (by
/// `ln 2` at β = ½, T = 1) and symmetric at β = ½, interpolating between the mass-covering and
/// mode-seeking behaviours of the two KLs. `log M` is computed as a log-add-exp of the two
/// log-probabilities so it never takes `log 0`. Requires `0 < β < 1` (at the endpoints it is 0).
pub fn generalized_jsd(
    student: &Tensor,
    teacher: &Tensor,
    beta: f64,
    temperature: f64,
) -> Result<Tensor> {
    check_temperature(temperature)?;
    if !(beta > 0.0 && beta < 1.0) {
        return Err(DistillError::InvalidConfig(format!(
            "JSD beta must be in (0, 1), got {beta}"
        )));
    }
    let (s, t) = paired(student, teacher)?;
    let ls = log_softmax(&(s / temperature)?)?;
    let lt = log_softmax(&(t / temperature)?)?;
    // log M = logaddexp(ln β + lt, ln(1−β) + ls), stably.
    let a = lt.affine(1.0, beta.ln())?;
    let b = ls.affine(1.0, (1.0 - beta).ln())?;
    let hi = a.maximum(&b)?;
    let lo = a.minimum(&b)?;
    let log_m = (&hi + ((lo - &hi)?.exp()?.affine(1.0, 1.0)?.log()?))?;
    let kl_t = kl_rows(&lt.exp()?, &lt, &log_m)?;
    let kl_s = kl_rows(&ls.exp()?, &ls, &log_m)?;
    let jsd = ((kl_t * beta)? + (kl_s * (1.0 - beta))?)?;
    Ok(jsd.affine(temperature * temperature, 0.0)?)
}

/// Mean over positions of the teacher's entropy divided by `ln C`, in `[0, 1]`.
pub fn mean_normalized_entropy(logits: &Tensor) -> Result<f64> {
    let lp = log_softmax(&flatten_classes(&logits.detach())?.to_dtype(DType::F64)?)?;
    let c = lp.dims2()?.1;
    if c < 2 {
        return Ok(0.0);
    }
    let h = (lp.exp()? * &lp)?
        .sum(1)?
        .neg()?
        .mean_all()?
        .to_scalar::<f64>()?;
    Ok((h / (c as f64).ln()).clamp(0.0, 1.0))
}

/// How the distillation temperature evolves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TemperatureSchedule {
    /// A fixed temperature.
    Constant(f64),
    /// Linear from `from` (step 0) to `to` (step `steps` and after).
    Linear {
        /// Start temperature.
        from: f64,
        /// End temperature.
        to: f64,
        /// Length of the ramp in optimizer steps.
        steps: usize,
    },
    /// Half-cosine from `from` to `to` over `steps`.
    Cosine {
        /// Start temperature.
        from: f64,
        /// End temperature.
        to: f64,
        /// Length of the ramp in optimizer steps.
        steps: usize,
    },
    /// "Dynamic temperature": chosen per batch from how confident the teacher is.
    ///
    /// Rule: with `H` the teacher's mean normalized entropy (entropy / ln C at T = 1, in
    /// `[0, 1]`), `T = clamp(base · (1.5 − H), min, max)`. A confident teacher (`H → 0`) has
    /// nearly one-hot targets that carry little "dark knowledge", so it is softened more
    /// (`1.5 · base`); an uncertain teacher (`H → 1`) is already soft and is sharpened
    /// (`0.5 · base`); `H = ½` gives exactly `base`.
    AdaptiveEntropy {
        /// Temperature at medium teacher entropy.
        base: f64,
        /// Lower clamp.
        min: f64,
        /// Upper clamp.
        max: f64,
    },
}

impl Default for TemperatureSchedule {
    fn default() -> Self {
        TemperatureSchedule::Constant(2.0)
    }
}

impl TemperatureSchedule {
    /// Temperature for `step`; the adaptive schedule looks at the (detached) teacher logits.
    pub fn temperature(&self, step: usize, teacher_logits: &Tensor) -> Result<f64> {
        let t = match *self {
            TemperatureSchedule::Constant(t) => t,
            TemperatureSchedule::Linear { from, to, steps } => linear_interp(from, to, step, steps),
            TemperatureSchedule::Cosine { from, to, steps } => cosine_interp(from, to, step, steps),
            TemperatureSchedule::AdaptiveEntropy { base, min, max } => {
                if min.is_nan() || max.is_nan() || min > max {
                    return Err(DistillError::InvalidConfig(format!(
                        "adaptive temperature needs min <= max, got {min} > {max}"
                    )));
                }
                let h = mean_normalized_entropy(teacher_logits)?;
                (base * (1.5 - h)).clamp(min, max)
            }
        };
        check_temperature(t)?;
        Ok(t)
    }
}

/// Which divergence the soft term uses.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DivergenceKind {
    /// [`forward_kl`].
    Forward,
    /// [`reverse_kl`].
    Reverse,
    /// [`generalized_jsd`] with mixture weight `beta` on the teacher.
    Jsd {
        /// Teacher weight in the mixture, in `(0, 1)`.
        beta: f64,
    },
}

/// `alpha · soft + (1 − alpha) · hard`: the classic knowledge-distillation objective.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DistillLoss {
    /// Divergence for the soft (teacher) term.
    pub kind: DivergenceKind,
    /// Weight of the soft term in `[0, 1]`; `1 − alpha` weighs the hard cross-entropy.
    pub alpha: f64,
    /// Temperature of the soft term.
    pub temperature: TemperatureSchedule,
    /// Target id excluded from the hard term (padding).
    pub ignore_index: Option<u32>,
}

impl Default for DistillLoss {
    fn default() -> Self {
        Self {
            kind: DivergenceKind::Forward,
            alpha: 0.7,
            temperature: TemperatureSchedule::default(),
            ignore_index: None,
        }
    }
}

/// A loss value plus its parts, for logging.
#[derive(Debug, Clone)]
pub struct LossOutput {
    /// The scalar to differentiate.
    pub total: Tensor,
    /// Soft (teacher) term, if a teacher was given.
    pub soft: Option<f64>,
    /// Hard cross-entropy term.
    pub hard: f64,
    /// Temperature used for the soft term, if any.
    pub temperature: Option<f64>,
}

impl DistillLoss {
    /// Check `alpha` and the divergence parameters.
    pub fn validate(&self) -> Result<()> {
        if !(0.0..=1.0).contains(&self.alpha) {
            return Err(DistillError::InvalidConfig(format!(
                "alpha must be in [0, 1], got {}",
                self.alpha
            )));
        }
        if let DivergenceKind::Jsd { beta } = self.kind {
            if !(beta > 0.0 && beta < 1.0) {
                return Err(DistillError::InvalidConfig(format!(
                    "JSD beta must be in (0, 1), got {beta}"
                )));
            }
        }
        Ok(())
    }

    /// The soft term alone at temperature `t`.
    pub fn soft(&self, student: &Tensor, teacher: &Tensor, t: f64) -> Result<Tensor> {
        match self.kind {
            DivergenceKind::Forward => forward_kl(student, teacher, t),
            DivergenceKind::Reverse => reverse_kl(student, teacher, t),
            DivergenceKind::Jsd { beta } => generalized_jsd(student, teacher, beta, t),
        }
    }

    /// Full loss for one micro-batch at optimizer step `step`.
    ///
    /// Without a teacher this is plain cross-entropy (alpha is ignored), so the same call serves
    /// pre-training, fine-tuning and distillation.
    pub fn compute(
        &self,
        student: &Tensor,
        teacher: Option<&Tensor>,
        targets: &Tensor,
        step: usize,
    ) -> Result<LossOutput> {
        self.validate()?;
        let hard = cross_entropy(student, targets, self.ignore_index)?;
        let hard_v = hard.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        let Some(teacher) = teacher else {
            return Ok(LossOutput {
                total: hard,
                soft: None,
                hard: hard_v,
                temperature: None,
            });
        };
        let teacher = teacher.detach();
        let t = self.temperature.temperature(step, &teacher)?;
        let soft = self.soft(student, &teacher, t)?;
        let soft_v = soft.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        let total = ((&soft * self.alpha)? + (&hard * (1.0 - self.alpha))?)?;
        Ok(LossOutput {
            total,
            soft: Some(soft_v),
            hard: hard_v,
            temperature: Some(t),
        })
    }
}

impl DistillLoss {
    /// Whether [`DistillLoss::compute_from_head`] fuses the head with this loss: the cross-entropy
    /// alone, or with a teacher through the forward KL (the other divergences run on logits).
    pub fn fuses_with_head(&self, with_teacher: bool) -> bool {
        !with_teacher || self.kind == DivergenceKind::Forward
    }

    /// [`DistillLoss::compute`] on the logits `hidden · weightᵀ` (`hidden` `[N, H]`, the output head's
    /// `weight` `[V, H]`; positions in the order of `targets` and `teacher`'s leading dimensions).
    ///
    /// Where the fused kernels apply ([`shuku_model::ops::fused_for`] and
    /// [`DistillLoss::fuses_with_head`]) the head's product and the loss run as one op
    /// ([`shuku_model::fused::head_loss`]) that never builds the `[N, V]` logits or their gradient;
    /// elsewhere the logits are built and passed to [`DistillLoss::compute`].
    pub fn compute_from_head(
        &self,
        hidden: &Tensor,
        weight: &Tensor,
        teacher: Option<&Tensor>,
        targets: &Tensor,
        step: usize,
    ) -> Result<LossOutput> {
        self.validate()?;
        if !(shuku_model::ops::fused_for(hidden) && self.fuses_with_head(teacher.is_some())) {
            let logits = shuku_model::ops::linear(hidden, weight)?;
            return self.compute(&logits, teacher, targets, step);
        }
        let (n, _) = hidden.dims2()?;
        let (v, _) = weight.dims2()?;
        let ids = target_ids(targets, (n, v), &[n, v], self.ignore_index)?;
        let soft = match teacher {
            Some(teacher) => {
                let teacher = flatten_classes(&teacher.detach())?.to_dtype(DType::F32)?;
                let (nt, vt) = teacher.dims2()?;
                if vt != v {
                    return Err(DistillError::VocabMismatch {
                        what: "student head vs teacher logits",
                        left: v,
                        right: vt,
                    });
                }
                if nt != n {
                    return Err(DistillError::ShapeMismatch {
                        what: "student positions vs teacher logits".into(),
                        left: hidden.dims().to_vec(),
                        right: teacher.dims().to_vec(),
                    });
                }
                let temperature = self.temperature.temperature(step, &teacher)?;
                Some(shuku_model::fused::SoftTargets {
                    teacher,
                    temperature,
                    alpha: self.alpha,
                })
            }
            None => None,
        };
        let out = shuku_model::fused::head_loss(hidden, weight, &ids, soft.as_ref())?;
        Ok(LossOutput {
            total: out.total,
            soft: out.soft,
            hard: out.hard,
            temperature: soft.map(|s| s.temperature),
        })
    }
}

/// Hidden-state distillation: MSE between a (projected) student hidden state and the teacher's.
///
/// When the widths differ a learned `Linear` (student width → teacher width) maps the student
/// state first (TinyBERT / DistilBERT-style); its parameters must be handed to the optimizer via
/// [`HiddenMse::parameters`]. Teacher states are detached.
#[derive(Debug, Clone)]
pub struct HiddenMse {
    /// Projection, `None` when the widths already match.
    pub proj: Option<candle_nn::Linear>,
    params: Vec<(String, Var)>,
}

impl HiddenMse {
    /// Build for the given widths; the projection (if any) is initialised uniformly in
    /// `±1/√student_dim` from `seed`, deterministically.
    pub fn new(
        student_dim: usize,
        teacher_dim: usize,
        seed: u64,
        dtype: DType,
        device: &candle_core::Device,
    ) -> Result<Self> {
        if student_dim == teacher_dim {
            return Ok(Self {
                proj: None,
                params: vec![],
            });
        }
        let mut rng = SplitMix64::new(seed);
        let bound = 1.0 / (student_dim.max(1) as f64).sqrt();
        let w: Vec<f64> = (0..student_dim * teacher_dim)
            .map(|_| (rng.next_f64() * 2.0 - 1.0) * bound)
            .collect();
        let w = Var::from_tensor(
            &Tensor::from_vec(w, (teacher_dim, student_dim), device)?.to_dtype(dtype)?,
        )?;
        let b = Var::zeros(teacher_dim, dtype, device)?;
        let proj = candle_nn::Linear::new(w.as_tensor().clone(), Some(b.as_tensor().clone()));
        Ok(Self {
            proj: Some(proj),
            params: vec![
                ("hidden_proj.weight".into(), w),
                ("hidden_proj.bias".into(), b),
            ],
        })
    }

    /// Trainable parameters of the projection (empty when widths match).
    pub fn parameters(&self) -> Vec<(String, Var)> {
        self.params.clone()
    }

    /// Mean squared error between `proj(student)` and `teacher` (`[.., width]` each).
    pub fn loss(&self, student: &Tensor, teacher: &Tensor) -> Result<Tensor> {
        let s = match &self.proj {
            Some(p) => candle_core::Module::forward(p, student)?,
            None => student.clone(),
        };
        let t = teacher.detach().to_dtype(s.dtype())?;
        if s.dims() != t.dims() {
            return Err(DistillError::ShapeMismatch {
                what: "projected student vs teacher hidden states".into(),
                left: s.dims().to_vec(),
                right: t.dims().to_vec(),
            });
        }
        Ok((s - t)?.sqr()?.mean_all()?)
    }
}

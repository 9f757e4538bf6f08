//! The training loop: micro-batches → loss → accumulated, clipped gradients → AdamW.
//!
//! The loop is generic over [`Trainable`], so the same code trains a test MLP, a pruned
//! shuku-model `Llama` student against its dense teacher, or anything else that maps token ids
//! to logits. Every source of randomness and every schedule is a function of checkpointed state,
//! so `N` steps straight and `N/2 + save + load + N/2` produce identical bits.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var};
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use shuku_model::HeadInputLoss;

use crate::checkpoint::{load_checkpoint, save_checkpoint, TrainingState};
use crate::data::{Batch, BatchState, TokenDataset};
use crate::error::{DistillError, Result};
use crate::loss::{cross_entropy, DistillLoss, LossOutput};
use crate::optim::{
    clip_grad_norm, decay_matrices_only, global_norm, AdamW, AdamWConfig, GradAccumulator,
};
use crate::schedule::LrSchedule;

/// A model the trainer can optimise. `Sync` because [`Trainer::fit`] and [`evaluate`] run their passes
/// on a thread of rayon's pool ([`shuku_model::threads::on_pool`]).
pub trait Trainable: Sync {
    /// Named trainable parameters; names are checkpoint keys and must be unique and stable.
    fn parameters(&self) -> Vec<(String, Var)>;
    /// Logits `[B, T, V]` for token ids `[B, T]` (`u32`).
    fn forward_logits(&self, tokens: &Tensor) -> candle_core::Result<Tensor>;

    /// [`Trainable::forward_logits`] for passes that never differentiate (evaluation, a teacher's
    /// targets), free to keep no autograd graph. The default detaches `forward_logits`' result, which
    /// holds every intermediate until the pass ends; a model that can drop each layer's activations
    /// as it goes overrides it.
    fn inference_logits(&self, tokens: &Tensor) -> candle_core::Result<Tensor> {
        Ok(self.forward_logits(tokens)?.detach())
    }

    /// What the output head multiplies, when the logits are exactly `hidden · weightᵀ`: the hidden
    /// states `[B·T, H]` (rows batch-major) and the head's weight `[V, H]`. The trainer then fuses the
    /// head with the loss ([`DistillLoss::compute_from_head`]) and the `[B·T, V]` logits are never
    /// built. `None` (the default) keeps [`Trainable::forward_logits`].
    fn forward_head_input(&self, tokens: &Tensor) -> candle_core::Result<Option<(Tensor, Tensor)>> {
        let _ = tokens;
        Ok(None)
    }

    /// The parameter gradients of `loss`, a function of what [`Trainable::forward_head_input`]
    /// returns (the head's input `[B·T, H]` and weight `[V, H]`), computed with activation
    /// checkpointing ([`TrainConfig::checkpoint_activations`]). `None` (the default): the model has
    /// no checkpointed pass.
    fn checkpointed_gradients(
        &self,
        tokens: &Tensor,
        loss: &mut HeadInputLoss<'_>,
    ) -> candle_core::Result<Option<GradStore>> {
        let _ = (tokens, loss);
        Ok(None)
    }
}

/// Format of the training-curve log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// One JSON object per line.
    #[default]
    Jsonl,
    /// Comma-separated values with a header row.
    Csv,
}

/// Everything that defines a training run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Optimizer steps to run in total.
    pub steps: usize,
    /// Sequences per micro-batch.
    pub batch_size: usize,
    /// Tokens per sequence (must match the dataset).
    pub seq_len: usize,
    /// Micro-batches accumulated per optimizer step.
    pub grad_accum: usize,
    /// Learning-rate schedule.
    pub lr: LrSchedule,
    /// Decoupled weight decay (skipped for norms, biases and vectors).
    pub weight_decay: f64,
    /// Adam `(β₁, β₂)`.
    pub betas: (f64, f64),
    /// Adam ε.
    pub eps: f64,
    /// Clip the global gradient norm to this value (`None`: no clipping).
    pub clip_norm: Option<f64>,
    /// Seed of the batch order.
    pub seed: u64,
    /// Validate every this many steps (0: only at the end).
    pub eval_every: usize,
    /// Cap on validation batches per evaluation (`None`: the whole validation set).
    pub eval_batches: Option<usize>,
    /// Where to append the training curve.
    pub log_path: Option<PathBuf>,
    /// Format of [`TrainConfig::log_path`].
    pub log_format: LogFormat,
    /// Save a checkpoint every this many steps (0: only at the end, if a path is set).
    pub checkpoint_every: usize,
    /// Checkpoint file (overwritten atomically each time).
    pub checkpoint_path: Option<PathBuf>,
    /// Show an indicatif progress bar.
    pub progress: bool,
    /// Recompute each decoder layer's activations in the backward pass instead of keeping them
    /// ([`Trainable::checkpointed_gradients`]): the memory of one layer's activations instead of
    /// every layer's, for a second forward pass of the layers. Models without it are rejected.
    #[serde(default)]
    pub checkpoint_activations: bool,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            steps: 1000,
            batch_size: 8,
            seq_len: 256,
            grad_accum: 1,
            lr: LrSchedule::WarmupCosine {
                max_lr: 3e-4,
                min_lr: 3e-5,
                warmup_steps: 100,
                total_steps: 1000,
            },
            weight_decay: 0.1,
            betas: (0.9, 0.95),
            eps: 1e-8,
            clip_norm: Some(1.0),
            seed: 0,
            eval_every: 100,
            eval_batches: Some(20),
            log_path: None,
            log_format: LogFormat::Jsonl,
            checkpoint_every: 0,
            checkpoint_path: None,
            progress: true,
            checkpoint_activations: false,
        }
    }
}

impl TrainConfig {
    /// Reject configurations that cannot run.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(DistillError::InvalidConfig(m));
        if self.batch_size == 0 || self.seq_len == 0 || self.grad_accum == 0 {
            return bad("batch_size, seq_len and grad_accum must be > 0".into());
        }
        if let Some(c) = self.clip_norm {
            if !(c.is_finite() && c > 0.0) {
                return bad(format!("clip_norm must be finite and > 0, got {c}"));
            }
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return bad(format!(
                "weight_decay must be >= 0, got {}",
                self.weight_decay
            ));
        }
        let (b1, b2) = self.betas;
        if !((0.0..1.0).contains(&b1) && (0.0..1.0).contains(&b2)) {
            return bad(format!(
                "Adam betas must be in [0, 1), got {:?}",
                self.betas
            ));
        }
        self.lr.validate()
    }

    fn adam(&self) -> AdamWConfig {
        AdamWConfig {
            beta1: self.betas.0,
            beta2: self.betas.1,
            eps: self.eps,
            weight_decay: self.weight_decay,
        }
    }
}

/// One line of the training curve.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// Optimizer steps completed.
    pub step: usize,
    /// Mean total loss over the step's micro-batches.
    pub loss: f64,
    /// Mean hard cross-entropy.
    pub hard: f64,
    /// Mean soft (teacher) term, when distilling.
    pub soft: Option<f64>,
    /// Temperature of the last micro-batch, when distilling.
    pub temperature: Option<f64>,
    /// Learning rate used.
    pub lr: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Training throughput.
    pub tokens_per_s: f64,
    /// Validation cross-entropy (nats/token), when evaluated at this step.
    pub val_loss: Option<f64>,
    /// Validation perplexity `exp(val_loss)`.
    pub val_ppl: Option<f64>,
}

const CSV_HEADER: &str =
    "step,loss,hard,soft,temperature,lr,grad_norm,tokens_per_s,val_loss,val_ppl";

fn opt(x: Option<f64>) -> String {
    x.map(|v| v.to_string()).unwrap_or_default()
}

struct CurveLog {
    out: BufWriter<File>,
    format: LogFormat,
    path: PathBuf,
}

impl CurveLog {
    /// Open for appending (a resumed run continues the same curve).
    fn open(path: &Path, format: LogFormat) -> Result<Self> {
        let io = |e| DistillError::io(path, e);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(io)?;
        let empty = file.metadata().map_err(io)?.len() == 0;
        let mut out = BufWriter::new(file);
        if format == LogFormat::Csv && empty {
            writeln!(out, "{CSV_HEADER}").map_err(io)?;
        }
        Ok(Self {
            out,
            format,
            path: path.to_path_buf(),
        })
    }

    fn write(&mut self, r: &StepRecord) -> Result<()> {
        let line = match self.format {
            LogFormat::Jsonl => serde_json::to_string(r)?,
            LogFormat::Csv => format!(
                "{},{},{},{},{},{},{},{},{},{}",
                r.step,
                r.loss,
                r.hard,
                opt(r.soft),
                opt(r.temperature),
                r.lr,
                r.grad_norm,
                r.tokens_per_s,
                opt(r.val_loss),
                opt(r.val_ppl)
            ),
        };
        let io = |e| DistillError::io(&self.path, e);
        writeln!(self.out, "{line}").map_err(io)?;
        self.out.flush().map_err(io)
    }
}

/// Validation result.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EvalResult {
    /// Mean cross-entropy per token (nats).
    pub loss: f64,
    /// `exp(loss)`.
    pub perplexity: f64,
    /// Tokens evaluated.
    pub tokens: usize,
}

/// Token-weighted cross-entropy and perplexity of `model` on `data`'s validation sequences, at
/// most `max_batches` batches of `batch_size` (`None` without validation data).
///
/// A free function so a shipped model can be scored without building a [`Trainer`] (which
/// allocates optimizer state).
pub fn evaluate<M: Trainable + ?Sized>(
    model: &M,
    data: &mut TokenDataset,
    batch_size: usize,
    max_batches: Option<usize>,
    device: &Device,
) -> Result<Option<EvalResult>> {
    shuku_model::threads::on_pool(|| evaluate_here(model, data, batch_size, max_batches, device))
}

/// [`evaluate`] on the calling thread.
fn evaluate_here<M: Trainable + ?Sized>(
    model: &M,
    data: &mut TokenDataset,
    batch_size: usize,
    max_batches: Option<usize>,
    device: &Device,
) -> Result<Option<EvalResult>> {
    let batches = data.validation_batches(batch_size, max_batches, device)?;
    let (mut sum, mut tokens) = (0f64, 0usize);
    for b in &batches {
        let logits = model.inference_logits(&b.inputs)?;
        let n = b.targets.elem_count();
        let ce = cross_entropy(&logits, &b.targets, None)?
            .to_dtype(DType::F64)?
            .to_scalar::<f64>()?;
        sum += ce * n as f64;
        tokens += n;
    }
    Ok((tokens > 0).then(|| {
        let loss = sum / tokens as f64;
        EvalResult {
            loss,
            perplexity: loss.exp(),
            tokens,
        }
    }))
}

/// One micro-batch's loss at optimizer step `step`, and with activation checkpointing its gradients,
/// which the checkpointed pass computes with the loss (`None`: the caller differentiates the loss).
fn micro_batch_loss<M: Trainable + ?Sized>(
    model: &M,
    teacher: Option<&dyn Trainable>,
    batch: &Batch,
    loss: &DistillLoss,
    step: usize,
    checkpointed: bool,
) -> Result<(LossOutput, Option<GradStore>)> {
    let teacher_logits = || -> candle_core::Result<Option<Tensor>> {
        teacher
            .map(|t| t.inference_logits(&batch.inputs))
            .transpose()
    };
    let targets = &batch.targets;
    if checkpointed {
        let t = teacher_logits()?;
        let mut out = None;
        let grads = model
            .checkpointed_gradients(&batch.inputs, &mut |h, w| {
                let o = loss
                    .compute_from_head(h, w, t.as_ref(), targets, step)
                    .map_err(candle_core::Error::wrap)?;
                Ok(out.insert(o).total.clone())
            })?
            .ok_or_else(|| {
                DistillError::InvalidConfig(
                    "checkpoint_activations: the model has no checkpointed pass".into(),
                )
            })?;
        let out = out.ok_or_else(|| {
            DistillError::InvalidConfig(
                "checkpoint_activations: the model's pass computed no loss".into(),
            )
        })?;
        return Ok((out, Some(grads)));
    }
    let head = match loss.fuses_with_head(teacher.is_some()) {
        true => model.forward_head_input(&batch.inputs)?,
        false => None,
    };
    let out = match head {
        Some((h, w)) => {
            let t = teacher_logits()?;
            loss.compute_from_head(&h, &w, t.as_ref(), targets, step)?
        }
        None => {
            let logits = model.forward_logits(&batch.inputs)?;
            loss.compute(&logits, teacher_logits()?.as_ref(), targets, step)?
        }
    };
    Ok((out, None))
}

/// What [`Trainer::fit`] returns.
#[derive(Debug, Clone)]
pub struct FitReport {
    /// Steps completed in total (including before a resume).
    pub step: usize,
    /// Curve records of this call.
    pub records: Vec<StepRecord>,
    /// Last validation result, if any.
    pub last_eval: Option<EvalResult>,
}

/// Owns the optimizer state and the step counter of one run.
#[derive(Debug)]
pub struct Trainer {
    config: TrainConfig,
    optimizer: AdamW,
    step: usize,
    device: Device,
}

impl Trainer {
    /// A fresh run over `model`'s parameters (AdamW moments at zero, step 0).
    pub fn new<M: Trainable + ?Sized>(model: &M, config: TrainConfig) -> Result<Self> {
        Self::with_extra_parameters(model, Vec::new(), config)
    }

    /// Like [`Trainer::new`], also optimising `extra` parameters (e.g. a
    /// [`crate::loss::HiddenMse`] projection used in a custom loss).
    pub fn with_extra_parameters<M: Trainable + ?Sized>(
        model: &M,
        extra: Vec<(String, Var)>,
        config: TrainConfig,
    ) -> Result<Self> {
        config.validate()?;
        let mut params = model.parameters();
        params.extend(extra);
        let device = params
            .first()
            .map(|(_, v)| v.device().clone())
            .ok_or_else(|| DistillError::InvalidConfig("model has no parameters".into()))?;
        let optimizer = AdamW::new(params, config.adam(), decay_matrices_only)?;
        Ok(Self {
            config,
            optimizer,
            step: 0,
            device,
        })
    }

    /// Steps completed.
    pub fn step(&self) -> usize {
        self.step
    }

    /// The optimizer (parameters and moments).
    pub fn optimizer(&self) -> &AdamW {
        &self.optimizer
    }

    /// The run's configuration.
    pub fn config(&self) -> &TrainConfig {
        &self.config
    }

    /// Save weights, moments, step and sampler state.
    pub fn save_checkpoint(&self, path: &Path, data: &TokenDataset) -> Result<()> {
        let state = TrainingState {
            step: self.step as u64,
            batch: data.batch_state(),
            config_json: serde_json::to_string(&self.config)?,
        };
        save_checkpoint(path, &self.optimizer, &state)
    }

    /// Restore a checkpoint written by [`Trainer::save_checkpoint`] into the model, the
    /// optimizer and the dataset's sampler.
    pub fn resume(&mut self, path: &Path, data: &mut TokenDataset) -> Result<()> {
        let state = load_checkpoint(path, &mut self.optimizer)?;
        data.set_batch_state(state.batch)?;
        self.step = usize::try_from(state.step).map_err(|_| DistillError::CorruptCheckpoint {
            path: path.to_path_buf(),
            reason: "step out of range".into(),
        })?;
        Ok(())
    }

    /// Token-weighted validation cross-entropy and perplexity (`None` without validation data).
    pub fn evaluate<M: Trainable + ?Sized>(
        &self,
        model: &M,
        data: &mut TokenDataset,
    ) -> Result<Option<EvalResult>> {
        evaluate(
            model,
            data,
            self.config.batch_size,
            self.config.eval_batches,
            &self.device,
        )
    }

    fn progress_bar(&self) -> ProgressBar {
        if !self.config.progress {
            return ProgressBar::hidden();
        }
        let pb = ProgressBar::new(self.config.steps as u64);
        if let Ok(style) = ProgressStyle::with_template(
            "{bar:30} {pos}/{len} [{elapsed_precise}<{eta_precise}] {msg}",
        ) {
            pb.set_style(style);
        }
        pb.set_position(self.step as u64);
        pb
    }

    /// Train `model` until [`TrainConfig::steps`], distilling from `teacher` when given.
    ///
    /// `model` must be the model this trainer was built over (the optimizer holds its
    /// parameters). A fresh run (step 0) re-seeds the sampler from [`TrainConfig::seed`]; a
    /// resumed run keeps the sampler state restored by [`Trainer::resume`].
    ///
    /// The steps run on a thread of rayon's pool ([`shuku_model::threads::on_pool`]), where their
    /// parallel kernels run without a hand-off per kernel.
    pub fn fit<M: Trainable + ?Sized>(
        &mut self,
        model: &M,
        teacher: Option<&dyn Trainable>,
        data: &mut TokenDataset,
        loss: &DistillLoss,
    ) -> Result<FitReport> {
        shuku_model::threads::on_pool(|| self.fit_here(model, teacher, data, loss))
    }

    /// [`Trainer::fit`] on the calling thread.
    fn fit_here<M: Trainable + ?Sized>(
        &mut self,
        model: &M,
        teacher: Option<&dyn Trainable>,
        data: &mut TokenDataset,
        loss: &DistillLoss,
    ) -> Result<FitReport> {
        loss.validate()?;
        let cfg = self.config.clone();
        if data.seq_len() != cfg.seq_len {
            return Err(DistillError::InvalidConfig(format!(
                "dataset seq_len {} differs from training seq_len {}",
                data.seq_len(),
                cfg.seq_len
            )));
        }
        if self.step == 0 {
            data.set_batch_state(BatchState {
                seed: cfg.seed,
                epoch: 0,
                cursor: 0,
            })?;
        }
        let mut log = match &cfg.log_path {
            Some(p) => Some(CurveLog::open(p, cfg.log_format)?),
            None => None,
        };
        let pb = self.progress_bar();
        let mut records = Vec::new();
        let mut last_eval = None;
        let tokens_per_step = (cfg.batch_size * cfg.seq_len * cfg.grad_accum) as f64;

        while self.step < cfg.steps {
            let started = Instant::now();
            let mut acc = GradAccumulator::new();
            let (mut total, mut hard, mut soft, mut temp) = (0f64, 0f64, None::<f64>, None);
            for _ in 0..cfg.grad_accum {
                let batch = data.next_batch(cfg.batch_size, &self.device)?;
                let (out, backward) = micro_batch_loss(
                    model,
                    teacher,
                    &batch,
                    loss,
                    self.step,
                    cfg.checkpoint_activations,
                )?;
                let value = out.total.to_dtype(DType::F64)?.to_scalar::<f64>()?;
                if !value.is_finite() {
                    return Err(DistillError::Diverged {
                        step: self.step,
                        what: format!("loss is {value}"),
                    });
                }
                total += value;
                hard += out.hard;
                if let Some(s) = out.soft {
                    *soft.get_or_insert(0.0) += s;
                }
                temp = out.temperature;
                let grads = match backward {
                    Some(grads) => grads,
                    None => out.total.backward()?,
                };
                acc.add(self.optimizer.gradients(&grads))?;
            }
            let mut grads = acc.finish()?;
            let grad_norm = match cfg.clip_norm {
                Some(c) => clip_grad_norm(&mut grads, c)?,
                None => global_norm(&grads)?,
            };
            if !grad_norm.is_finite() {
                return Err(DistillError::Diverged {
                    step: self.step,
                    what: format!("gradient norm is {grad_norm}"),
                });
            }
            let lr = cfg.lr.lr_at(self.step);
            self.optimizer.step(&grads, lr)?;
            self.step += 1;

            let k = cfg.grad_accum as f64;
            let mut rec = StepRecord {
                step: self.step,
                loss: total / k,
                hard: hard / k,
                soft: soft.map(|s| s / k),
                temperature: temp,
                lr,
                grad_norm,
                tokens_per_s: tokens_per_step / started.elapsed().as_secs_f64().max(1e-9),
                val_loss: None,
                val_ppl: None,
            };
            let done = self.step == cfg.steps;
            if (cfg.eval_every > 0 && self.step.is_multiple_of(cfg.eval_every)) || done {
                if let Some(ev) = self.evaluate(model, data)? {
                    rec.val_loss = Some(ev.loss);
                    rec.val_ppl = Some(ev.perplexity);
                    last_eval = Some(ev);
                }
            }
            if let Some(path) = &cfg.checkpoint_path {
                if (cfg.checkpoint_every > 0 && self.step.is_multiple_of(cfg.checkpoint_every))
                    || done
                {
                    self.save_checkpoint(path, data)?;
                }
            }
            if let Some(l) = log.as_mut() {
                l.write(&rec)?;
            }
            pb.set_position(self.step as u64);
            pb.set_message(format!(
                "loss {:.4} lr {:.2e} {:.0} tok/s{}",
                rec.loss,
                rec.lr,
                rec.tokens_per_s,
                rec.val_loss
                    .map(|v| format!(" val {v:.4}"))
                    .unwrap_or_default()
            ));
            records.push(rec);
        }
        pb.finish();
        Ok(FitReport {
            step: self.step,
            records,
            last_eval,
        })
    }
}

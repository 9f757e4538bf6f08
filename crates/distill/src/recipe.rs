//! A distillation run in one call: the [`TrainConfig`], [`DistillLoss`] and [`TokenDataset`] a short
//! run on already-tokenized text needs, chosen from a handful of numbers.
//!
//! Recovery after pruning, the `shuku distill` command and the pipeline's distil stage all train a
//! student on a token stream, optionally against a teacher, with a warm-up + cosine schedule and a
//! held-out tail for validation; [`Distillation`] is that recipe, so each caller states only what
//! differs (steps, batch, learning rate, the KD mix).

use crate::data::{DataConfig, TokenDataset};
use crate::error::{DistillError, Result};
use crate::loss::{DistillLoss, DivergenceKind, TemperatureSchedule};
use crate::schedule::LrSchedule;
use shuku_model::Llama;

use crate::trainer::{FitReport, LogFormat, TrainConfig, Trainable, Trainer};

/// A short distillation (or, without a teacher, fine-tuning) run on a token stream.
///
/// ```no_run
/// use shuku_distill::Distillation;
/// # fn demo(student: &shuku_model::Llama, teacher: &shuku_model::Llama, tokens: &[u32]) -> shuku_distill::Result<()> {
/// let report = Distillation::new(200, 128).lr(3e-4).run(student, Some(teacher), tokens)?;
/// println!("validation loss {:?}", report.last_eval.map(|e| e.loss));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Distillation {
    /// Optimizer steps.
    pub steps: usize,
    /// Tokens per training sequence.
    pub seq_len: usize,
    /// Sequences per step.
    pub batch_size: usize,
    /// Peak learning rate (warm-up over the first tenth of the steps, cosine to a tenth of it).
    pub lr: f64,
    /// Weight of the divergence from the teacher; `1 - alpha` weighs the hard-label cross-entropy.
    pub alpha: f64,
    /// Softmax temperature of the divergence.
    pub temperature: f64,
    /// Which divergence from the teacher.
    pub divergence: DivergenceKind,
    /// Decoupled weight decay.
    pub weight_decay: f64,
    /// Seed of the batch order.
    pub seed: u64,
    /// Fraction of the tokens (from the end) held out for the validation loss.
    pub held_out: f64,
    /// Show a progress bar.
    pub progress: bool,
    /// Recompute each layer's activations in the backward pass
    /// ([`TrainConfig::checkpoint_activations`]).
    pub checkpoint_activations: bool,
}

impl Distillation {
    /// `steps` steps on sequences of `seq_len` tokens, batch 8, peak learning rate 1e-4, half KD
    /// (forward KL at temperature 1) and half hard labels, no weight decay, 5 % held out.
    pub fn new(steps: usize, seq_len: usize) -> Self {
        Self {
            steps,
            seq_len,
            batch_size: 8,
            lr: 1e-4,
            alpha: 0.5,
            temperature: 1.0,
            divergence: DivergenceKind::Forward,
            weight_decay: 0.0,
            seed: 0,
            held_out: 0.05,
            progress: true,
            checkpoint_activations: false,
        }
    }

    /// Sets the peak learning rate.
    pub fn lr(mut self, lr: f64) -> Self {
        self.lr = lr;
        self
    }

    /// Sets the sequences per step.
    pub fn batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size;
        self
    }

    /// Sets the weight of the teacher's divergence against hard labels (1.0: pure KD).
    pub fn alpha(mut self, alpha: f64) -> Self {
        self.alpha = alpha;
        self
    }

    /// Recomputes each layer's activations in the backward pass instead of keeping them: one layer's
    /// activations in memory instead of every layer's, for a second forward pass of the layers.
    pub fn checkpoint_activations(mut self, yes: bool) -> Self {
        self.checkpoint_activations = yes;
        self
    }

    /// Sets the seed of the batch order.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Sets the softmax temperature of the divergence.
    pub fn temperature(mut self, temperature: f64) -> Self {
        self.temperature = temperature;
        self
    }

    /// Sets the divergence from the teacher.
    pub fn divergence(mut self, divergence: DivergenceKind) -> Self {
        self.divergence = divergence;
        self
    }

    /// Tokens of an `n_tokens` stream held out for validation: the last [`Distillation::held_out`]
    /// fraction, at least one sequence.
    pub fn held_out_len(&self, n_tokens: usize) -> usize {
        ((n_tokens as f64 * self.held_out) as usize).max(self.seq_len + 1)
    }

    /// The fewest tokens a run needs: one training sequence and the held-out tail.
    pub fn min_tokens(&self, n_tokens: usize) -> usize {
        self.held_out_len(n_tokens) + self.seq_len + 1
    }

    /// Shows or hides the progress bar.
    pub fn progress(mut self, yes: bool) -> Self {
        self.progress = yes;
        self
    }

    /// The trainer configuration of this recipe.
    pub fn train_config(&self) -> TrainConfig {
        let steps = self.steps;
        TrainConfig {
            steps,
            batch_size: self.batch_size,
            seq_len: self.seq_len,
            grad_accum: 1,
            lr: LrSchedule::WarmupCosine {
                max_lr: self.lr,
                min_lr: self.lr / 10.0,
                warmup_steps: (steps / 10).max(1).min(steps),
                total_steps: steps,
            },
            weight_decay: self.weight_decay,
            betas: (0.9, 0.95),
            eps: 1e-8,
            clip_norm: Some(1.0),
            seed: self.seed,
            eval_every: 0,
            eval_batches: Some(4),
            log_path: None,
            log_format: LogFormat::Jsonl,
            checkpoint_every: 0,
            checkpoint_path: None,
            progress: self.progress,
            checkpoint_activations: self.checkpoint_activations,
        }
    }

    /// The loss of this recipe (hard labels only when there is no teacher).
    pub fn loss(&self, with_teacher: bool) -> DistillLoss {
        DistillLoss {
            kind: self.divergence,
            alpha: if with_teacher { self.alpha } else { 0.0 },
            temperature: TemperatureSchedule::Constant(self.temperature),
            ignore_index: None,
        }
    }

    /// Splits `tokens` into training sequences and a held-out tail of at least one sequence.
    pub fn dataset(&self, tokens: &[u32], vocab_size: usize) -> Result<TokenDataset> {
        if !(0.0..1.0).contains(&self.held_out) {
            return Err(DistillError::InvalidConfig(format!(
                "held-out fraction {} is not in [0, 1)",
                self.held_out
            )));
        }
        let held = self.held_out_len(tokens.len());
        if tokens.len() < self.min_tokens(tokens.len()) {
            return Err(DistillError::InvalidConfig(format!(
                "{} tokens of training text are too few for sequences of {} tokens and a held-out tail",
                tokens.len(),
                self.seq_len
            )));
        }
        let (train, val) = tokens.split_at(tokens.len() - held);
        TokenDataset::from_token_split(train, val, &DataConfig::new(self.seq_len, vocab_size))
    }

    /// Trains `student` in place on `tokens`, against `teacher` when given.
    pub fn run(
        &self,
        student: &Llama,
        teacher: Option<&Llama>,
        tokens: &[u32],
    ) -> Result<FitReport> {
        let mut data = self.dataset(tokens, student.config().vocab_size)?;
        let mut trainer = Trainer::new(student, self.train_config())?;
        let teacher = teacher.map(|t| t as &dyn Trainable);
        trainer.fit(student, teacher, &mut data, &self.loss(teacher.is_some()))
    }
}

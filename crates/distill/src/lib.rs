//! Training and knowledge distillation for shuku, on candle.
//!
//! candle provides autograd (`Tensor::backward`) and candle-nn 0.11 an `AdamW`, but a
//! distillation run needs more than that, so this crate hand-writes it:
//!
//! * **Losses** ([`loss`]): candle-nn has `cross_entropy`/`nll`/`mse` only — no forward/reverse
//!   KL, no (generalized) JSD, no ignore-index. Worse, its fused kernels
//!   `ops::softmax_last_dim`, `ops::rms_norm`, `ops::layer_norm`, `rotary_emb::rope`/`rope_i`
//!   are registered with `apply_op*_no_bwd` and silently drop gradients, so every loss here is
//!   built from basic differentiable ops (max-shifted log-sum-exp).
//! * **Optimizer** ([`optim`]): candle-nn's `AdamW` keeps its moments private (they cannot be
//!   checkpointed), decays every parameter including norms and biases, and candle-nn has no
//!   gradient clipping and no gradient accumulation.
//! * **Schedules** ([`schedule`]): candle-nn only has `set_learning_rate`; warmup + cosine,
//!   linear and constant schedules are here, plus temperature schedules in [`loss`].
//! * **Data** ([`data`]): streaming tokenization and packing with a checkpointable sampler.
//! * **Checkpoints** ([`checkpoint`]): weights + Adam moments + step + sampler state in one
//!   safetensors file, written atomically, so a resumed run continues bit for bit.
//! * **Trainer** ([`trainer`]): the loop tying these together, over any [`Trainable`] model;
//!   shuku-model's `Llama` implements it (and its `Tokenizer` implements [`TextTokenizer`]).
//! * **Students** ([`student`]): a student from a teacher by dropping layers or from a fresh
//!   config, with the teacher's weights copied wherever shapes allow.
//! * **The base model's kit**: a byte-level BPE trainer shaped for llama.cpp ([`bpe`]), a
//!   contiguous held-out tail ([`corpus`]) and an f16 HF-folder writer ([`export`]), used by the
//!   `train_base` and `distill` examples.
//!
//! Distilling a half-depth student from its teacher, in one call ([`Distillation`]); a tiny
//! random teacher and made-up tokens stand in for `Llama::from_hf_dir` and a tokenized corpus:
//!
//! ```
//! use candle_core::Device;
//! use shuku_distill::{drop_layers, Distillation, LayerSelection};
//! use shuku_model::{Llama, LlamaConfig};
//!
//! let config = LlamaConfig::from_json_str(r#"{"model_type": "llama", "vocab_size": 32,
//!     "hidden_size": 16, "num_hidden_layers": 4, "num_attention_heads": 4,
//!     "num_key_value_heads": 2, "intermediate_size": 24}"#, "config.json")?;
//! let teacher = Llama::random(config, 0, &Device::Cpu)?;
//! // Every other layer, always ending with the teacher's last: layers 0 and 3, weights copied.
//! assert_eq!(LayerSelection::EveryOther.indices(4)?, [0, 3]);
//! let student = drop_layers(&teacher, &LayerSelection::EveryOther)?;
//! assert_eq!(student.config().num_hidden_layers(), 2);
//!
//! let tokens: Vec<u32> = (0..2048).map(|i| (i * 7 % 32) as u32).collect();
//! let report = Distillation::new(4, 16)
//!     .batch_size(2)
//!     .lr(1e-3)
//!     .progress(false)
//!     .run(&student, Some(&teacher), &tokens)?; // trains `student` in place
//! assert_eq!(report.step, 4);
//! let last = report.records.last().unwrap();
//! assert!(last.soft.is_some()); // the KL term from the teacher was part of the loss
//! println!("validation loss {:.3}", report.last_eval.unwrap().loss);
//! # Ok::<(), shuku_distill::DistillError>(())
//! ```
//!
//! For more control, build a [`TrainConfig`] and a [`DistillLoss`] and drive a [`Trainer`]
//! directly (with checkpoints, logs and resumption).

mod adamw_kernels;
pub mod bpe;
pub mod checkpoint;
pub mod corpus;
pub mod data;
pub mod error;
pub mod export;
mod llama;
pub mod loss;
pub mod optim;
pub mod recipe;
pub mod rng;
pub mod schedule;
pub mod student;
pub mod trainer;

pub use checkpoint::{load_checkpoint, save_checkpoint, TrainingState};
pub use data::{Batch, BatchState, ByteTokenizer, DataConfig, TextTokenizer, TokenDataset};
pub use error::{DistillError, Result};
pub use loss::{
    cross_entropy, forward_kl, generalized_jsd, reverse_kl, DistillLoss, DivergenceKind, HiddenMse,
    LossOutput, TemperatureSchedule,
};
pub use optim::{clip_grad_norm, AdamW, AdamWConfig, GradAccumulator, Gradients};
pub use recipe::Distillation;
pub use rng::SplitMix64;
pub use schedule::LrSchedule;
pub use student::{drop_layers, from_teacher, CopyReport, LayerSelection};
pub use trainer::{
    evaluate, EvalResult, FitReport, LogFormat, StepRecord, TrainConfig, Trainable, Trainer,
};

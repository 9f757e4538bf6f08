//! [`Pruner`]: the library entry point, configured in a few lines.

use std::time::Instant;

use shuku_model::{LayerDims, Llama};

use crate::error::{PruneError, Result};
use crate::mask::NmPattern;
use crate::owl::Owl;
use crate::report::{parameter_count, SparsityReport};
use crate::structured::allocate::Scope;
use crate::structured::importance::Importance;
use crate::structured::{plan_structured, GqaPolicy, StructuredConfig, StructuredSpec};
use crate::unstructured::{prune_unstructured, Method, UnstructuredConfig};

/// Called between structured steps with the pruned model and the step (1-based), e.g. to run a short
/// distillation from the unpruned model; an `Err` stops the run.
pub type RecoverFn<'a> = dyn FnMut(&Llama, usize) -> std::result::Result<(), String> + 'a;

/// Called with a stage name, units done and units in all.
pub type ProgressFn<'a> = dyn FnMut(&str, usize, usize) + 'a;

enum Mode {
    Unstructured(UnstructuredConfig),
    Structured {
        config: StructuredConfig,
        steps: usize,
    },
}

/// Prunes a model: unstructured or `N:M` sparsity in place, or structured removal into a smaller
/// model.
///
/// ```
/// use candle_core::Device;
/// use shuku_model::{Llama, LlamaConfig};
/// use shuku_prune::{calibration_samples, Method, NmPattern, Pruner};
///
/// let config = LlamaConfig::from_json_str(r#"{"model_type": "llama", "vocab_size": 64,
///     "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
///     "num_key_value_heads": 2, "intermediate_size": 48}"#, "config.json")?;
/// let text: Vec<u32> = (0..512).map(|i| (i * 7 % 64) as u32).collect();
/// let samples = calibration_samples(&text, 4, 64)?;
///
/// // 2:4 sparsity with SparseGPT.
/// let model = Llama::random(config.clone(), 0, &Device::Cpu)?;
/// let sparse = Pruner::unstructured(Method::SparseGpt, 0.5)
///     .pattern(NmPattern::new(2, 4)?)
///     .calibration(samples.clone())
///     .run(model)?;
/// assert!((sparse.report.sparsity.unwrap().overall() - 0.5).abs() < 1e-9);
///
/// // A quarter of the FFN channels and heads, physically removed.
/// let model = Llama::random(config, 0, &Device::Cpu)?;
/// let small = Pruner::structured("ffn=0.25,heads=0.25".parse()?)
///     .calibration(samples)
///     .run(model)?;
/// assert!(small.report.params_after < small.report.params_before);
/// assert_eq!(small.model.config().layers[0].intermediate_size, 36);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Pruner<'a> {
    mode: Mode,
    samples: Vec<Vec<u32>>,
    recover: Option<Box<RecoverFn<'a>>>,
    progress: Option<Box<ProgressFn<'a>>>,
}

/// What a run did.
#[derive(Debug, Clone, PartialEq)]
pub struct PruneReport {
    /// Parameters before (a tied head counted once).
    pub params_before: usize,
    /// Parameters after; equal to before for unstructured pruning (zeros are still stored).
    pub params_after: usize,
    /// Zeros per pruned weight (unstructured runs).
    pub sparsity: Option<SparsityReport>,
    /// Source layers removed (structured runs).
    pub layers_removed: Vec<usize>,
    /// Per-layer widths after the run.
    pub widths: Vec<LayerDims>,
    /// Wall time of the pruning (not of recovery), seconds.
    pub prune_seconds: f64,
    /// Wall time of the recovery steps, seconds.
    pub recover_seconds: f64,
}

/// The pruned model and what was done to it.
#[derive(Debug)]
pub struct Pruned {
    /// The pruned model.
    pub model: Llama,
    /// What was done.
    pub report: PruneReport,
}

impl<'a> Pruner<'a> {
    /// Unstructured pruning of `sparsity` of every block linear's weights with `method`.
    pub fn unstructured(method: Method, sparsity: f64) -> Self {
        Self::new(Mode::Unstructured(UnstructuredConfig::new(
            method, sparsity,
        )))
    }

    /// Structured removal of `spec` (FFN channels, heads, layers).
    pub fn structured(spec: StructuredSpec) -> Self {
        Self::new(Mode::Structured {
            config: StructuredConfig::new(spec),
            steps: 1,
        })
    }

    fn new(mode: Mode) -> Self {
        Pruner {
            mode,
            samples: Vec::new(),
            recover: None,
            progress: None,
        }
    }

    /// Calibration token sequences (each run from position 0); see [`crate::calibration_samples`].
    pub fn calibration(mut self, samples: Vec<Vec<u32>>) -> Self {
        self.samples = samples;
        self
    }

    /// `N:M` sparsity instead of a fraction (unstructured).
    pub fn pattern(mut self, pattern: NmPattern) -> Self {
        if let Mode::Unstructured(c) = &mut self.mode {
            c.pattern = Some(pattern);
            c.sparsity = pattern.sparsity();
        }
        self
    }

    /// Layer sparsities shaped by outlier ratios (unstructured).
    pub fn owl(mut self, owl: Owl) -> Self {
        if let Mode::Unstructured(c) = &mut self.mode {
            c.owl = Some(owl);
        }
        self
    }

    /// The full unstructured configuration.
    pub fn unstructured_config(mut self, config: UnstructuredConfig) -> Self {
        self.mode = Mode::Unstructured(config);
        self
    }

    /// How heads and channels are scored (structured).
    pub fn importance(mut self, importance: Importance) -> Self {
        if let Mode::Structured { config, .. } = &mut self.mode {
            config.importance = importance;
        }
        self
    }

    /// Same share per layer or competition across layers (structured).
    pub fn scope(mut self, scope: Scope) -> Self {
        if let Mode::Structured { config, .. } = &mut self.mode {
            config.scope = scope;
        }
        self
    }

    /// How heads leave GQA groups (structured).
    pub fn gqa(mut self, gqa: GqaPolicy) -> Self {
        if let Mode::Structured { config, .. } = &mut self.mode {
            config.gqa = gqa;
        }
        self
    }

    /// Round kept FFN widths to multiples of `n` (structured).
    pub fn round_to(mut self, n: usize) -> Self {
        if let Mode::Structured { config, .. } = &mut self.mode {
            config.round_to = n;
        }
        self
    }

    /// Reach the structured target in `k` equal steps, re-scoring (and recovering) after each.
    pub fn steps(mut self, k: usize) -> Self {
        if let Mode::Structured { steps, .. } = &mut self.mode {
            *steps = k;
        }
        self
    }

    /// Run `recover` after each structured step.
    pub fn recover(
        mut self,
        recover: impl FnMut(&Llama, usize) -> std::result::Result<(), String> + 'a,
    ) -> Self {
        self.recover = Some(Box::new(recover));
        self
    }

    /// Report progress through `progress(stage, done, total)`.
    pub fn progress(mut self, progress: impl FnMut(&str, usize, usize) + 'a) -> Self {
        self.progress = Some(Box::new(progress));
        self
    }

    /// Prunes `model`. Unstructured pruning changes it in place and returns it; structured pruning
    /// returns a smaller model.
    pub fn run(mut self, model: Llama) -> Result<Pruned> {
        let params_before = parameter_count(&model);
        let started = Instant::now();
        let mut progress = self.progress.take();
        let mut tick = |stage: &str, done: usize, total: usize| {
            if let Some(p) = progress.as_mut() {
                p(stage, done, total)
            }
        };
        match &self.mode {
            Mode::Unstructured(config) => {
                let stage = format!("{} pruning", config.method.name());
                let report = prune_unstructured(&model, config, &self.samples, &mut |d, t| {
                    tick(&stage, d, t)
                })?;
                Ok(Pruned {
                    report: PruneReport {
                        params_before,
                        params_after: params_before,
                        sparsity: Some(report),
                        layers_removed: vec![],
                        widths: model.config().layers.clone(),
                        prune_seconds: started.elapsed().as_secs_f64(),
                        recover_seconds: 0.0,
                    },
                    model,
                })
            }
            Mode::Structured { config, steps } => {
                let steps = (*steps).max(1);
                let spec = config.spec;
                spec.validate()?;
                let n_layers = model.config().num_hidden_layers();
                if spec.layers >= n_layers {
                    return Err(PruneError::TooManyLayers {
                        asked: spec.layers,
                        available: n_layers,
                    });
                }
                let mut current = model;
                // Source layer index of each current layer, to report removals in the input's terms.
                let mut origin: Vec<usize> = (0..n_layers).collect();
                let (mut prune_s, mut recover_s) = (0.0, 0.0);
                for step in 1..=steps {
                    let t0 = Instant::now();
                    let step_config = StructuredConfig {
                        spec: step_spec(spec, step, steps),
                        ..config.clone()
                    };
                    let plan = plan_structured(&current, &step_config, &self.samples)?;
                    origin = plan.layers.iter().map(|k| origin[k.source]).collect();
                    current = current.shrink(&plan)?;
                    prune_s += t0.elapsed().as_secs_f64();
                    tick("structured pruning", step, steps);
                    if let Some(recover) = self.recover.as_mut() {
                        let t1 = Instant::now();
                        recover(&current, step)
                            .map_err(|message| PruneError::Recovery { step, message })?;
                        recover_s += t1.elapsed().as_secs_f64();
                    }
                }
                let layers_removed = (0..n_layers).filter(|l| !origin.contains(l)).collect();
                Ok(Pruned {
                    report: PruneReport {
                        params_before,
                        params_after: parameter_count(&current),
                        sparsity: None,
                        layers_removed,
                        widths: current.config().layers.clone(),
                        prune_seconds: prune_s,
                        recover_seconds: recover_s,
                    },
                    model: current,
                })
            }
        }
    }
}

/// The part of `spec` that step `step` of `steps` removes from the model as the previous steps left
/// it, so that after every step the cumulative removal is `step/steps` of the target.
fn step_spec(spec: StructuredSpec, step: usize, steps: usize) -> StructuredSpec {
    let (i, k) = (step as f64, steps as f64);
    let relative = |r: f64| {
        let before = 1.0 - r * (i - 1.0) / k;
        let after = 1.0 - r * i / k;
        1.0 - after / before
    };
    let layers_by = |s: usize| (spec.layers * s + steps / 2) / steps;
    StructuredSpec {
        ffn: relative(spec.ffn),
        heads: relative(spec.heads),
        layers: layers_by(step) - layers_by(step - 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_compound_to_the_target() {
        let spec = StructuredSpec {
            ffn: 0.4,
            heads: 0.25,
            layers: 3,
        };
        let (mut ffn_left, mut heads_left, mut layers) = (1.0, 1.0, 0);
        for step in 1..=4 {
            let s = step_spec(spec, step, 4);
            ffn_left *= 1.0 - s.ffn;
            heads_left *= 1.0 - s.heads;
            layers += s.layers;
        }
        assert!((ffn_left - 0.6f64).abs() < 1e-12);
        assert!((heads_left - 0.75f64).abs() < 1e-12);
        assert_eq!(layers, 3);
        assert_eq!(step_spec(spec, 1, 1), spec);
    }
}

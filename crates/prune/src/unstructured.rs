//! Unstructured and `N:M` sparsity: magnitude, Wanda and SparseGPT, uniform or OWL-shaped by layer.
//!
//! * **Magnitude** prunes the smallest `|W|` of each weight matrix; it needs no data.
//! * **Wanda** (Sun et al., *A Simple and Effective Pruning Approach for Large Language Models*,
//!   2023) scores `|W_ij| · ‖x_j‖₂`, the weight times the norm of the input feature it multiplies on
//!   calibration text, and compares scores only within each output row.
//! * **SparseGPT** (Frantar & Alistarh, *SparseGPT: Massive Language Models Can Be Accurately Pruned
//!   in One-Shot*, 2023) sweeps the input columns in order, choosing each block's mask by
//!   `w² / [H⁻¹]_jj²` and pushing every pruned weight's error onto the columns still to come (the
//!   Optimal Brain Surgeon update), so the layer's outputs on calibration text move as little as
//!   possible. The sweep is shuku-model's [`obs_sweep`], shared with GPTQ.
//!
//! Wanda and SparseGPT go layer by layer and, within a layer, one group of
//! linears at a time: each group's statistics are gathered on inputs computed by the layers and
//! groups before it *as already pruned*, so one forward pass per layer does what the papers' code
//! does in two (observe, then recompute after pruning).
//! Embeddings, norms and the output head are never pruned.

use shuku_model::linalg::{damped_cholesky_inverse_upper, obs_sweep, zero_dead_columns};
use shuku_model::{Calibration, CalibrationOptions, LinearObserver, LinearStats, Llama};

use crate::error::{PruneError, Result};
use crate::layerwise::LayerwisePass;
use crate::mask::{apply_mask, prune_mask, NmPattern, Selection};
use crate::owl::{owl_layer_sparsities, Owl};
use crate::report::SparsityReport;
use crate::weights::{read_weight, write_weight};

/// How weights are scored and removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// Smallest `|W|` per matrix; no calibration.
    Magnitude,
    /// `|W|·‖x‖₂` per output row, from calibration inputs.
    Wanda,
    /// Optimal Brain Surgeon reconstruction with the calibration Hessian.
    SparseGpt,
}

impl Method {
    /// The method's name as the CLI spells it.
    pub fn name(self) -> &'static str {
        match self {
            Method::Magnitude => "magnitude",
            Method::Wanda => "wanda",
            Method::SparseGpt => "sparsegpt",
        }
    }

    /// Whether the method reads calibration data.
    pub fn needs_calibration(self) -> bool {
        !matches!(self, Method::Magnitude)
    }
}

impl std::str::FromStr for Method {
    type Err = PruneError;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "magnitude" => Ok(Method::Magnitude),
            "wanda" => Ok(Method::Wanda),
            "sparsegpt" => Ok(Method::SparseGpt),
            _ => Err(PruneError::BadSpec {
                spec: s.to_string(),
                reason: "the methods are magnitude, wanda and sparsegpt".into(),
            }),
        }
    }
}

/// Settings of an unstructured (or `N:M`) pruning run.
#[derive(Debug, Clone, PartialEq)]
pub struct UnstructuredConfig {
    /// Scoring and removal.
    pub method: Method,
    /// Fraction of each linear's weights to prune, in `[0, 1)`; ignored with a pattern.
    pub sparsity: f64,
    /// Prune `N` of every `M` instead of a fraction.
    pub pattern: Option<NmPattern>,
    /// Shape the sparsity by layer from outlier ratios (unstructured only).
    pub owl: Option<Owl>,
    /// SparseGPT's diagonal damping, a fraction of the mean of `diag(H)` (the paper's 1 %).
    pub percdamp: f64,
    /// SparseGPT's mask block (columns whose mask is chosen together; the paper's 128).
    pub block: usize,
}

impl UnstructuredConfig {
    /// `method` at `sparsity` with the papers' other settings.
    pub fn new(method: Method, sparsity: f64) -> Self {
        UnstructuredConfig {
            method,
            sparsity,
            pattern: None,
            owl: None,
            percdamp: 0.01,
            block: 128,
        }
    }

    /// Refuses settings that cannot run.
    pub fn validate(&self) -> Result<()> {
        if !(0.0..1.0).contains(&self.sparsity) {
            return Err(PruneError::Ratio {
                what: "sparsity",
                value: self.sparsity,
            });
        }
        if self.pattern.is_some() && self.owl.is_some() {
            return Err(PruneError::BadSpec {
                spec: "owl with an N:M pattern".into(),
                reason: "a pattern fixes every layer's sparsity; OWL varies it".into(),
            });
        }
        if self.block == 0 || !(self.percdamp.is_finite() && self.percdamp >= 0.0) {
            return Err(PruneError::BadSpec {
                spec: format!("block {} percdamp {}", self.block, self.percdamp),
                reason: "the block must be positive and the damping finite and >= 0".into(),
            });
        }
        if let Some(owl) = &self.owl {
            owl.validate()?;
        }
        Ok(())
    }

    /// The selection rule for one linear at `sparsity`.
    fn selection(&self, sparsity: f64) -> Selection {
        match (self.pattern, self.method) {
            (Some(p), _) => Selection::Pattern(p),
            (None, Method::Magnitude) => Selection::WholeMatrix(sparsity),
            (None, _) => Selection::PerRow(sparsity),
        }
    }
}

/// Checks that a pattern tiles every linear of `model`, before anything is changed.
fn check_pattern(model: &Llama, pattern: Option<NmPattern>) -> Result<()> {
    let Some(p) = pattern else { return Ok(()) };
    for layer in 0..model.config().num_hidden_layers() {
        for name in model.block_linear_names(layer)?.concat() {
            let (_, _, cols) = read_weight(model, &name)?;
            p.check_width(&name, cols)?;
        }
    }
    Ok(())
}

/// Prunes every block linear of `model` in place and reports the sparsity reached. `samples` are
/// calibration token sequences (ignored by magnitude); `progress(done, total)` is called per layer.
pub fn prune_unstructured(
    model: &Llama,
    config: &UnstructuredConfig,
    samples: &[Vec<u32>],
    progress: &mut dyn FnMut(usize, usize),
) -> Result<SparsityReport> {
    config.validate()?;
    check_pattern(model, config.pattern)?;
    let n_layers = model.config().num_hidden_layers();
    let layer_sparsity = match &config.owl {
        Some(owl) => owl_layer_sparsities(model, samples, config.sparsity, owl)?,
        None => vec![config.sparsity; n_layers],
    };
    let mut report = SparsityReport::default();
    if config.method == Method::Magnitude {
        for (layer, &s) in layer_sparsity.iter().enumerate() {
            for name in model.block_linear_names(layer)?.concat() {
                let (mut w, rows, cols) = read_weight(model, &name)?;
                let scores: Vec<f32> = w.iter().map(|v| v.abs()).collect();
                apply_mask(
                    &mut w,
                    &prune_mask(&scores, rows, cols, config.selection(s)),
                );
                write_weight(model, &name, w, rows, cols)?;
                report.push(&name, model)?;
            }
            progress(layer + 1, n_layers);
        }
        return Ok(report);
    }
    let mut pass = LayerwisePass::new(model, samples, config.method.name())?;
    let options = CalibrationOptions {
        hessian: config.method == Method::SparseGpt,
    };
    for (layer, &s) in layer_sparsity.iter().enumerate() {
        // The model's callback speaks ModelError; keep the pruning error itself to return it as is.
        let mut failure = None;
        let staged = pass.advance_staged(&mut |names, inputs| {
            let mut cal = Calibration::default();
            {
                let mut observer = cal.observer(options);
                for x in inputs {
                    observer.observe(names, x)?;
                }
            }
            let result: Result<()> = names.iter().try_for_each(|name| {
                let stats = cal.get(name).ok_or(PruneError::NoCalibration {
                    method: config.method.name(),
                })?;
                match config.method {
                    Method::Wanda => wanda(model, name, stats, config.selection(s))?,
                    _ => sparsegpt(model, name, stats, config, s)?,
                }
                report.push(name, model)
            });
            result.map_err(|e| {
                let message = e.to_string();
                failure = Some(e);
                shuku_model::ModelError::InvalidInput(message)
            })
        });
        if let Some(e) = failure {
            return Err(e);
        }
        staged?;
        progress(layer + 1, n_layers);
    }
    Ok(report)
}

/// Wanda's score of every weight: `|W_ij| · ‖x_j‖₂`.
pub fn wanda_scores(w: &[f32], cols: usize, sum_sq: &[f64]) -> Vec<f32> {
    let norms: Vec<f32> = sum_sq.iter().map(|s| s.sqrt() as f32).collect();
    w.chunks(cols)
        .flat_map(|row| row.iter().zip(&norms).map(|(w, n)| w.abs() * n))
        .collect()
}

/// Wanda on one linear.
fn wanda(model: &Llama, name: &str, stats: &LinearStats, selection: Selection) -> Result<()> {
    let (mut w, rows, cols) = read_weight(model, name)?;
    wanda_prune(&mut w, rows, cols, &stats.sum_sq, selection);
    write_weight(model, name, w, rows, cols)
}

/// Wanda on a `rows × cols` weight whose inputs have `sum_sq` (Σx² per input column).
pub fn wanda_prune(w: &mut [f32], rows: usize, cols: usize, sum_sq: &[f64], selection: Selection) {
    let scores = wanda_scores(w, cols, sum_sq);
    apply_mask(w, &prune_mask(&scores, rows, cols, selection));
}

/// SparseGPT on one linear.
fn sparsegpt(
    model: &Llama,
    name: &str,
    stats: &LinearStats,
    config: &UnstructuredConfig,
    sparsity: f64,
) -> Result<()> {
    let (mut w, rows, cols) = read_weight(model, name)?;
    let h: Vec<f64> = stats
        .hessian
        .as_ref()
        .ok_or(PruneError::NoCalibration {
            method: "sparsegpt",
        })?
        .flatten_all()?
        .to_vec1::<f32>()?
        .into_iter()
        .map(f64::from)
        .collect();
    sparsegpt_prune(&mut w, rows, cols, &h, config, sparsity)?;
    write_weight(model, name, w, rows, cols)
}

/// SparseGPT on a `rows × cols` weight with calibration Hessian `h = XᵀX` (`cols × cols`): the OBS
/// sweep with masks chosen per block of [`UnstructuredConfig::block`] columns (over all rows at
/// once, as the paper does) or per `M` columns of each row for a pattern.
pub fn sparsegpt_prune(
    w: &mut [f32],
    rows: usize,
    cols: usize,
    h: &[f64],
    config: &UnstructuredConfig,
    sparsity: f64,
) -> Result<()> {
    let (u, dead) = damped_cholesky_inverse_upper(h, config.percdamp)?;
    zero_dead_columns(w, cols, &dead);
    let group = match config.pattern {
        Some(p) => p.m,
        None => config.block,
    };
    let rule = match config.pattern {
        Some(p) => Selection::Pattern(p),
        None => Selection::WholeMatrix(sparsity),
    };
    // The mask of the current group of columns, `rows × width` row-major.
    let mut mask = Vec::new();
    let mut width = 0;
    let mut values = Vec::new();
    obs_sweep(w, rows, cols, &u, config.block, |j, view, chosen| {
        if j % group == 0 {
            width = group.min(cols - j);
            values.resize(rows * width, 0.0);
            view.read_columns(j..j + width, &mut values);
            let scores: Vec<f32> = values
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    let d = view.u_diag(j + i % width);
                    (f64::from(*v).powi(2) / (d * d)) as f32
                })
                .collect();
            mask = prune_mask(&scores, rows, width, rule);
        }
        let k = j % group;
        for (r, c) in chosen.iter_mut().enumerate() {
            if mask[r * width + k] {
                *c = 0.0;
            }
        }
    })?;
    Ok(())
}

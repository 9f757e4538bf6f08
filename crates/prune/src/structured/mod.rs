//! Structured pruning: removing whole attention heads, FFN channels and decoder layers, so that the
//! model itself gets smaller and faster (GGUF runtimes have no sparse kernels; only removed rows and
//! columns save bytes and time).
//!
//! [`plan_structured`] decides what goes and returns a [`ShrinkPlan`]; shuku-model's
//! [`Llama::shrink`] carries it out, copying the kept rows and columns into a smaller dense model
//! with per-layer widths (the same surgery shuku-distill uses to drop layers).
//! * Layers go by lowest [block influence](influence).
//! * Heads and channels go by lowest [importance], with the counts per layer set by
//!   [`allocate`](allocate::allocate): the same share of every layer, or a global competition.
//! * Grouped-query attention stays ordinary GQA: by default every KV group loses the same number of
//!   its query heads ([`GqaPolicy::EvenPerGroup`]); [`GqaPolicy::WholeGroups`] removes KV heads
//!   together with their whole query group (which also shrinks the KV cache).

pub mod allocate;
pub mod importance;
pub mod influence;

use shuku_model::{KeptLayer, Llama, ShrinkPlan};

use crate::error::{PruneError, Result};
use allocate::{allocate, LayerUnits, Scope};
use importance::{Importance, LayerScores, ScoreInputs};
use influence::{block_influence, least_influential};

/// How much of each kind to remove.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct StructuredSpec {
    /// Fraction of FFN channels, in `[0, 1)`.
    pub ffn: f64,
    /// Fraction of attention (query) heads, in `[0, 1)`.
    pub heads: f64,
    /// Whole layers.
    pub layers: usize,
}

impl StructuredSpec {
    /// Refuses ratios outside `[0, 1)`.
    pub fn validate(&self) -> Result<()> {
        for (what, value) in [("ffn ratio", self.ffn), ("heads ratio", self.heads)] {
            if !(0.0..1.0).contains(&value) {
                return Err(PruneError::Ratio { what, value });
            }
        }
        Ok(())
    }

    /// Whether anything is to be removed.
    pub fn is_empty(&self) -> bool {
        self.ffn == 0.0 && self.heads == 0.0 && self.layers == 0
    }
}

impl std::str::FromStr for StructuredSpec {
    type Err = PruneError;

    /// Parses `ffn=0.3,heads=0.25,layers=2` (any subset, any order).
    fn from_str(s: &str) -> Result<Self> {
        let bad = |reason: String| PruneError::BadSpec {
            spec: s.to_string(),
            reason,
        };
        let mut spec = StructuredSpec::default();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (key, value) = part
                .split_once('=')
                .ok_or_else(|| bad(format!("`{part}` is not key=value")))?;
            let ratio = || {
                value
                    .trim()
                    .parse::<f64>()
                    .map_err(|_| bad(format!("`{value}` is not a number")))
            };
            match key.trim() {
                "ffn" => spec.ffn = ratio()?,
                "heads" => spec.heads = ratio()?,
                "layers" => {
                    spec.layers = value
                        .trim()
                        .parse()
                        .map_err(|_| bad(format!("`{value}` is not a layer count")))?
                }
                other => return Err(bad(format!("unknown key `{other}` (ffn, heads, layers)"))),
            }
        }
        spec.validate()?;
        Ok(spec)
    }
}

/// How heads leave a grouped-query attention layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GqaPolicy {
    /// Every KV group loses the same number of query heads; KV heads stay. Layers whose groups have
    /// a single query head (multi-head attention) lose whole groups instead.
    #[default]
    EvenPerGroup,
    /// KV heads leave with their whole query group.
    WholeGroups,
}

/// Settings of a structured pruning step.
#[derive(Debug, Clone, PartialEq)]
pub struct StructuredConfig {
    /// What to remove.
    pub spec: StructuredSpec,
    /// How heads and channels are scored.
    pub importance: Importance,
    /// Same share per layer, or competition across layers.
    pub scope: Scope,
    /// How heads leave GQA groups.
    pub gqa: GqaPolicy,
    /// Kept FFN widths are rounded to a multiple of this (e.g. 64 or 256 so K-quants still apply);
    /// 1 keeps exact counts.
    pub round_to: usize,
}

impl StructuredConfig {
    /// Removes `spec` with activation importance, uniform scope, even GQA removal, no rounding.
    pub fn new(spec: StructuredSpec) -> Self {
        StructuredConfig {
            spec,
            importance: Importance::default(),
            scope: Scope::default(),
            gqa: GqaPolicy::default(),
            round_to: 1,
        }
    }
}

/// Decides which layers, heads and channels of `model` to remove; `samples` are calibration token
/// sequences (needed for layer removal and data-driven importance).
pub fn plan_structured(
    model: &Llama,
    config: &StructuredConfig,
    samples: &[Vec<u32>],
) -> Result<ShrinkPlan> {
    let spec = config.spec;
    spec.validate()?;
    if config.round_to == 0 {
        return Err(PruneError::BadSpec {
            spec: "round_to 0".into(),
            reason: "round_to must be at least 1".into(),
        });
    }
    let cfg = model.config();
    let n_layers = cfg.num_hidden_layers();
    if spec.layers >= n_layers {
        return Err(PruneError::TooManyLayers {
            asked: spec.layers,
            available: n_layers,
        });
    }
    let removed = if spec.layers > 0 {
        least_influential(&block_influence(model, samples)?, spec.layers)
    } else {
        vec![]
    };
    let kept: Vec<usize> = (0..n_layers).filter(|l| !removed.contains(l)).collect();
    let mut plan: Vec<KeptLayer> = kept
        .iter()
        .map(|&l| KeptLayer::all(l, &cfg.layers[l]))
        .collect();
    if spec.heads == 0.0 && spec.ffn == 0.0 {
        return Ok(ShrinkPlan { layers: plan });
    }
    let inputs = ScoreInputs::gather(model, config.importance, samples)?;
    let scores = kept
        .iter()
        .map(|&l| inputs.layer_scores(model, l))
        .collect::<Result<Vec<_>>>()?;
    if spec.heads > 0.0 {
        remove_heads(&mut plan, &scores, model, config)?;
    }
    if spec.ffn > 0.0 {
        remove_channels(&mut plan, &scores, config)?;
    }
    Ok(ShrinkPlan { layers: plan })
}

/// Indices of `scores` in ascending score order (ties by index).
fn ascending(scores: &[f64]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]).then(a.cmp(&b)));
    order
}

/// Maps allocate's error (which counts only the layers it was given) to the model's layer index.
fn in_model_layers<T>(r: Result<T>, plan: &[KeptLayer]) -> Result<T> {
    r.map_err(|e| match e {
        PruneError::RemovesEverything { layer, what, ratio } => PruneError::RemovesEverything {
            layer: plan.get(layer).map_or(layer, |k| k.source),
            what,
            ratio,
        },
        other => other,
    })
}

/// One layer's heads as removal units.
struct HeadUnits {
    /// The query heads of each KV group, each sorted by ascending score.
    groups: Vec<Vec<usize>>,
    /// Whether a unit is one head from every group (else one whole group).
    per_group: bool,
    /// KV groups by ascending score (whole-group removal goes in this order).
    group_order: Vec<usize>,
}

fn remove_heads(
    plan: &mut [KeptLayer],
    scores: &[LayerScores],
    model: &Llama,
    config: &StructuredConfig,
) -> Result<()> {
    let cfg = model.config();
    let mut layers = Vec::new();
    let mut units = Vec::new();
    for (k, s) in plan.iter().zip(scores) {
        let dims = cfg.layers[k.source];
        let g = dims.n_heads / dims.n_kv_heads;
        let groups: Vec<Vec<usize>> = (0..dims.n_kv_heads)
            .map(|j| {
                let mut heads: Vec<usize> = (j * g..(j + 1) * g).collect();
                heads.sort_by(|&a, &b| s.heads[a].total_cmp(&s.heads[b]).then(a.cmp(&b)));
                heads
            })
            .collect();
        let per_group = config.gqa == GqaPolicy::EvenPerGroup && g > 1;
        let group_scores: Vec<f64> = groups
            .iter()
            .enumerate()
            .map(|(j, grp)| grp.iter().map(|&h| s.heads[h]).sum::<f64>() + s.kv_heads[j])
            .collect();
        let group_order = ascending(&group_scores);
        let unit_scores: Vec<f64> = if per_group {
            (0..g)
                .map(|i| groups.iter().map(|grp| s.heads[grp[i]]).sum())
                .collect()
        } else {
            group_order.iter().map(|&j| group_scores[j]).collect()
        };
        units.push(LayerUnits {
            scores: unit_scores,
            size: if per_group { dims.n_kv_heads } else { g },
            min_keep: 1,
        });
        layers.push(HeadUnits {
            groups,
            per_group,
            group_order,
        });
    }
    let counts = in_model_layers(
        allocate(&units, config.spec.heads, config.scope, "heads"),
        plan,
    )?;
    for ((k, h), &n) in plan.iter_mut().zip(&layers).zip(&counts) {
        if n == 0 {
            continue;
        }
        if h.per_group {
            k.heads = h
                .groups
                .iter()
                .flat_map(|grp| grp[n..].iter().copied())
                .collect();
        } else {
            let mut kept_groups = h.group_order[n..].to_vec();
            kept_groups.sort_unstable();
            k.heads = kept_groups
                .iter()
                .flat_map(|&j| h.groups[j].iter().copied())
                .collect();
            k.kv_heads = kept_groups;
        }
        k.heads.sort_unstable();
    }
    Ok(())
}

/// `keep` rounded to the nearest multiple of `round_to`, within `[round_to, width]` (unchanged
/// when the layer is narrower than `round_to`).
fn rounded_keep(keep: usize, width: usize, round_to: usize) -> usize {
    if round_to <= 1 || width < round_to {
        return keep;
    }
    let r = ((keep as f64 / round_to as f64).round() as usize * round_to).max(round_to);
    r.min(width)
}

fn remove_channels(
    plan: &mut [KeptLayer],
    scores: &[LayerScores],
    config: &StructuredConfig,
) -> Result<()> {
    let orders: Vec<Vec<usize>> = scores.iter().map(|s| ascending(&s.channels)).collect();
    let units: Vec<LayerUnits> = scores
        .iter()
        .zip(&orders)
        .map(|(s, order)| LayerUnits {
            scores: order.iter().map(|&c| s.channels[c]).collect(),
            size: 1,
            min_keep: config.round_to.min(s.channels.len()).max(1),
        })
        .collect();
    let counts = in_model_layers(
        allocate(&units, config.spec.ffn, config.scope, "FFN channels"),
        plan,
    )?;
    for ((k, order), &n) in plan.iter_mut().zip(&orders).zip(&counts) {
        let width = order.len();
        let keep = rounded_keep(width - n, width, config.round_to);
        let mut kept = order[width - keep..].to_vec();
        kept.sort_unstable();
        k.channels = kept;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse() {
        let s: StructuredSpec = "ffn=0.3, heads=0.25,layers=2".parse().unwrap();
        assert_eq!((s.ffn, s.heads, s.layers), (0.3, 0.25, 2));
        assert!("ffn=1.0".parse::<StructuredSpec>().is_err());
        assert!("ffn=-0.1".parse::<StructuredSpec>().is_err());
        assert!("mlp=0.3".parse::<StructuredSpec>().is_err());
        assert!("ffn".parse::<StructuredSpec>().is_err());
        assert!("".parse::<StructuredSpec>().unwrap().is_empty());
    }

    #[test]
    fn kept_widths_round_to_multiples() {
        assert_eq!(rounded_keep(1152, 1536, 256), 1280);
        assert_eq!(rounded_keep(1100, 1536, 256), 1024);
        assert_eq!(rounded_keep(10, 1536, 256), 256);
        assert_eq!(rounded_keep(300, 341, 512), 300);
        assert_eq!(rounded_keep(577, 768, 1), 577);
    }
}

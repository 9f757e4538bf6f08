//! Model surgery: physically removing attention heads, FFN channels and whole layers from a [`Llama`].
//!
//! Structured pruning decides *what* to remove (by importance scores) and distillation decides which
//! layers a student keeps; both end in the same operation, slicing the weight matrices so the smaller
//! model is a real, smaller dense model (fewer FLOPs, a smaller file) rather than one full of zeros.
//! This module is that one operation, so the two cannot disagree about tensor layouts.
//!
//! A [`ShrinkPlan`] lists, per layer of the new model, which source layer it comes from and which KV heads,
//! query heads and FFN channels of that layer survive. Removal is exact: the shrunk model computes what
//! the source model computes with the removed pieces' contributions zeroed, which
//! [`Llama::masked_copy`] builds in the source's own shape so tests can compare the two.
//!
//! # Which rows and columns
//! HF stores linear weights `[out, in]`. Query head `h` owns rows `h*head_dim..(h+1)*head_dim` of `q_proj`
//! (and of its bias) and the same columns of `o_proj`; KV head `j` owns those rows of `k_proj`/`v_proj`.
//! The rotary halves live inside each head in HF layout, so a head is copied as one block and needs no
//! permutation. FFN channel `c` is row `c` of `gate_proj`/`up_proj` and column `c` of `down_proj`. The
//! norms, embeddings and head are copied whole; `head_dim` never changes.
//!
//! # Grouped-query attention
//! Query head `h` reads KV head `h / (n_heads / n_kv_heads)`. A shrunk layer must again be ordinary GQA, in
//! which new query head `i` reads new KV head `i / new_group`. So a plan may only keep query heads whose KV
//! head is kept, and must keep the same number of query heads (at least one) for every kept KV head. With
//! both lists ascending the kept query heads are then already ordered by (new index of their KV head,
//! original index), which is exactly the order GQA needs; no further reordering is done.

use std::collections::HashMap;

use candle_core::{Device, Tensor};

use crate::config::{LayerDims, LlamaConfig};
use crate::error::{ModelError, Result};
use crate::layout::{layer_prefix, SliceBy};
use crate::model::Llama;

/// What one layer of a shrunk model keeps from a layer of the source model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeptLayer {
    /// Index of the source layer this layer is copied from.
    pub source: usize,
    /// Source KV heads kept, strictly ascending.
    pub kv_heads: Vec<usize>,
    /// Source query heads kept, strictly ascending. Each belongs to the group of a kept KV head
    /// (query head h reads KV head h / (n_heads / n_kv_heads)), and every kept KV head keeps the same
    /// number (>= 1) of its query heads, so the shrunk layer is ordinary GQA again.
    pub heads: Vec<usize>,
    /// Source FFN (SwiGLU intermediate) channels kept, strictly ascending, at least one.
    pub channels: Vec<usize>,
}

impl KeptLayer {
    /// Keeps every head and channel of source layer `source`, whose widths are `dims` (e.g. to drop or
    /// reorder whole layers).
    pub fn all(source: usize, dims: &LayerDims) -> Self {
        Self {
            source,
            kv_heads: (0..dims.n_kv_heads).collect(),
            heads: (0..dims.n_heads).collect(),
            channels: (0..dims.intermediate_size).collect(),
        }
    }

    /// The shape of the layer this keeps from `source` (whose attention kind it inherits).
    fn dims(&self, source: &LayerDims) -> LayerDims {
        LayerDims {
            n_heads: self.heads.len(),
            n_kv_heads: self.kv_heads.len(),
            intermediate_size: self.channels.len(),
            sliding: source.sliding,
        }
    }
}

/// The layers of a shrunk model, in order: `layers[i]` is what new layer `i` keeps from its source layer.
///
/// Source layers may be skipped (dropping layers), and for [`Llama::shrink`] also reordered or repeated;
/// [`Llama::masked_copy`] needs them in source order without repeats.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShrinkPlan {
    /// One entry per layer of the shrunk model; at least one.
    pub layers: Vec<KeptLayer>,
}

fn invalid(layer: usize, problem: impl Into<String>) -> ModelError {
    ModelError::InvalidPlan {
        layer,
        problem: problem.into(),
    }
}

/// Checks that `indices` is non-empty, strictly ascending and below `bound`; `what` names them in errors.
fn check_indices(layer: usize, what: &str, indices: &[usize], bound: usize) -> Result<()> {
    if indices.is_empty() {
        return Err(invalid(layer, format!("keeps no {what}")));
    }
    if let Some(w) = indices.windows(2).find(|w| w[0] >= w[1]) {
        return Err(invalid(
            layer,
            format!(
                "{what} must be strictly ascending, but {} is followed by {}",
                w[0], w[1]
            ),
        ));
    }
    if let Some(&bad) = indices.iter().find(|&&i| i >= bound) {
        return Err(invalid(
            layer,
            format!("{what} index {bad} is out of range (the source layer has {bound})"),
        ));
    }
    Ok(())
}

impl ShrinkPlan {
    /// Keeps every layer, head and channel of `config`: shrinking with it copies the model unchanged.
    pub fn identity(config: &LlamaConfig) -> Self {
        Self {
            layers: config
                .layers
                .iter()
                .enumerate()
                .map(|(i, dims)| KeptLayer::all(i, dims))
                .collect(),
        }
    }

    /// Checks the plan against the source model's `config`: at least one layer, existing source layers,
    /// non-empty, strictly ascending, in-range index lists, and the GQA rules of [`KeptLayer::heads`].
    /// Errors are [`ModelError::InvalidPlan`] naming the plan layer at fault.
    pub fn validate(&self, config: &LlamaConfig) -> Result<()> {
        if self.layers.is_empty() {
            return Err(invalid(
                0,
                "the plan keeps no layers (a model needs at least one)",
            ));
        }
        let n_source = config.layers.len();
        for (i, kept) in self.layers.iter().enumerate() {
            let dims = config.layers.get(kept.source).ok_or_else(|| {
                invalid(
                    i,
                    format!(
                        "source layer {} does not exist (the model has {n_source})",
                        kept.source
                    ),
                )
            })?;
            check_indices(i, "KV heads", &kept.kv_heads, dims.n_kv_heads)?;
            check_indices(i, "query heads", &kept.heads, dims.n_heads)?;
            check_indices(i, "FFN channels", &kept.channels, dims.intermediate_size)?;

            let group = dims.n_heads / dims.n_kv_heads;
            let mut per_kv: HashMap<usize, usize> =
                kept.kv_heads.iter().map(|&kv| (kv, 0)).collect();
            for &h in &kept.heads {
                let kv = h / group;
                match per_kv.get_mut(&kv) {
                    Some(n) => *n += 1,
                    None => {
                        return Err(invalid(
                            i,
                            format!("query head {h} reads KV head {kv}, which is not kept"),
                        ))
                    }
                }
            }
            let first = kept.kv_heads[0];
            let expected = per_kv[&first];
            if let Some(&kv) = kept.kv_heads.iter().find(|kv| per_kv[kv] != expected) {
                return Err(invalid(
                    i,
                    format!(
                        "KV head {kv} keeps {} query heads but KV head {first} keeps {expected}; \
                         every kept KV head must keep the same number (at least one)",
                        per_kv[&kv]
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The config of the shrunk model: `config` with one [`LayerDims`] per plan layer (the kept counts).
    /// `head_dim` is unchanged and stays explicit, since after removing heads it is in general no longer
    /// `hidden_size / num_attention_heads`. Validates the plan first.
    pub fn shrunk_config(&self, config: &LlamaConfig) -> Result<LlamaConfig> {
        self.validate(config)?;
        let mut out = config.clone();
        out.explicit_head_dim = true;
        out.layers = self
            .layers
            .iter()
            .map(|k| k.dims(&config.layers[k.source]))
            .collect();
        out.validate()?;
        Ok(out)
    }

    /// For [`Llama::masked_copy`]: which plan layer (if any) keeps each source layer. Fails unless the
    /// sources are strictly increasing, since a model of unchanged shape cannot reorder or repeat layers.
    fn by_source(&self, n_source: usize) -> Result<Vec<Option<&KeptLayer>>> {
        if let Some(i) =
            (1..self.layers.len()).find(|&i| self.layers[i].source <= self.layers[i - 1].source)
        {
            return Err(invalid(
                i,
                format!(
                    "a masked copy keeps layers in source order without repeats, but source layer {} \
                     follows source layer {}",
                    self.layers[i].source,
                    self.layers[i - 1].source
                ),
            ));
        }
        let mut out = vec![None; n_source];
        for kept in &self.layers {
            out[kept.source] = Some(kept);
        }
        Ok(out)
    }
}

/// Rows (or columns) `h*head_dim..(h+1)*head_dim` for every head `h` of `heads`, as an index tensor.
fn head_index(heads: &[usize], head_dim: usize, device: &Device) -> Result<Tensor> {
    let rows: Vec<u32> = heads
        .iter()
        .flat_map(|&h| h * head_dim..(h + 1) * head_dim)
        .map(to_u32)
        .collect::<Result<_>>()?;
    let n = rows.len();
    Ok(Tensor::from_vec(rows, n, device)?)
}

/// `indices` as an index tensor.
fn index(indices: &[usize], device: &Device) -> Result<Tensor> {
    let rows: Vec<u32> = indices.iter().copied().map(to_u32).collect::<Result<_>>()?;
    let n = rows.len();
    Ok(Tensor::from_vec(rows, n, device)?)
}

fn to_u32(i: usize) -> Result<u32> {
    u32::try_from(i)
        .map_err(|_| ModelError::InvalidInput(format!("index {i} does not fit a u32 index tensor")))
}

/// A `[len]` f32 mask: 1 at `kept` (repeated `block` times per entry), 0 elsewhere.
fn keep_mask(kept: &[usize], block: usize, len: usize, device: &Device) -> Result<Tensor> {
    let mut mask = vec![0f32; len];
    for &k in kept {
        mask[k * block..(k + 1) * block].fill(1.0);
    }
    Ok(Tensor::from_vec(mask, len, device)?)
}

/// A copy that shares no storage with `t` (and carries no autograd history), so the new model's `Var`s never
/// alias the source's: training or `set_weight` on one cannot move the other.
fn deep_copy(t: &Tensor) -> Result<Tensor> {
    Ok(t.detach().copy()?)
}

impl Llama {
    /// A new model with only the kept layers, heads and channels; weights deep-copied (the result never
    /// aliases self).
    ///
    /// Layer `i` of the result is [`ShrinkPlan::layers`]`[i]` applied to its source layer (see the module
    /// docs for which rows and columns); source layers may be dropped, reordered or repeated. The config is
    /// [`ShrinkPlan::shrunk_config`]. An invalid plan is [`ModelError::InvalidPlan`].
    pub fn shrink(&self, plan: &ShrinkPlan) -> Result<Llama> {
        let src = self.config();
        let config = plan.shrunk_config(src)?;
        let device = self.device();
        let hd = src.head_dim;
        let tensors: HashMap<String, Tensor> = self.named_tensors().into_iter().collect();
        let src_specs = src.tensor_specs();
        let get = |name: &str| {
            tensors.get(name).ok_or_else(|| ModelError::MissingTensor {
                file: "<model>".into(),
                tensor: name.to_string(),
            })
        };

        let mut out = HashMap::with_capacity(tensors.len());
        for (name, t) in &tensors {
            if !name.starts_with("model.layers.") {
                out.insert(name.clone(), deep_copy(t)?);
            }
        }
        for (i, kept) in plan.layers.iter().enumerate() {
            let (sp, dp) = (layer_prefix(kept.source), layer_prefix(i));
            let q = head_index(&kept.heads, hd, device)?;
            let kv = head_index(&kept.kv_heads, hd, device)?;
            let ch = index(&kept.channels, device)?;
            let source_prefix = sp.clone();
            let parts = src_specs
                .iter()
                .filter_map(|spec| {
                    spec.name
                        .strip_prefix(&source_prefix)
                        .map(|s| (s, spec.sliced))
                })
                .map(|(suffix, sliced)| {
                    let slice = sliced.map(|(dim, by)| {
                        let idx = match by {
                            SliceBy::QueryHeads => &q,
                            SliceBy::KvHeads => &kv,
                            SliceBy::Channels => &ch,
                        };
                        (dim, idx)
                    });
                    (suffix, slice)
                });
            for (suffix, slice) in parts {
                let t = get(&format!("{sp}{suffix}"))?;
                let new = match slice {
                    // index_select writes fresh storage; detach drops any autograd history.
                    Some((dim, idx)) => t.detach().index_select(idx, dim)?,
                    None => deep_copy(t)?,
                };
                out.insert(format!("{dp}{suffix}"), new);
            }
        }
        Llama::from_tensor_map(config, out, "<shrink>", device)
    }

    /// The same removal expressed as zeros in a model of unchanged shape (o_proj columns of removed query
    /// heads, down_proj columns of removed channels, and o_proj + down_proj entirely for source layers that
    /// no plan layer uses), for checking that shrink is exact. Only for plans whose layers keep source order
    /// without repeats.
    ///
    /// A removed query head's output reaches the residual stream only through its `o_proj` columns, and a
    /// removed channel only through its `down_proj` column; a block whose `o_proj` and `down_proj` are zero
    /// is the identity. So this model's logits equal those of [`Llama::shrink`] with the same plan, up to
    /// rounding. Weights are deep-copied. A plan that reorders or repeats layers is
    /// [`ModelError::InvalidPlan`].
    pub fn masked_copy(&self, plan: &ShrinkPlan) -> Result<Llama> {
        let config = self.config();
        plan.validate(config)?;
        let by_source = plan.by_source(config.layers.len())?;
        let device = self.device();
        let mut out = HashMap::new();
        for (name, t) in self.named_tensors() {
            let t = deep_copy(&t)?;
            out.insert(name, t);
        }
        for (l, kept) in by_source.iter().enumerate() {
            let p = layer_prefix(l);
            let dims = config.layers[l];
            let o_name = format!("{p}self_attn.o_proj.weight");
            let down_name = format!("{p}mlp.down_proj.weight");
            let (o_mask, down_mask) = match kept {
                None => (
                    keep_mask(&[], 1, dims.n_heads * config.head_dim, device)?,
                    keep_mask(&[], 1, dims.intermediate_size, device)?,
                ),
                Some(k) => (
                    keep_mask(
                        &k.heads,
                        config.head_dim,
                        dims.n_heads * config.head_dim,
                        device,
                    )?,
                    keep_mask(&k.channels, 1, dims.intermediate_size, device)?,
                ),
            };
            for (name, mask) in [(o_name, o_mask), (down_name, down_mask)] {
                let w = out.get(&name).ok_or_else(|| ModelError::MissingTensor {
                    file: "<model>".into(),
                    tensor: name.clone(),
                })?;
                let masked = w.broadcast_mul(&mask.unsqueeze(0)?)?;
                out.insert(name, masked);
            }
        }
        Llama::from_tensor_map(config.clone(), out, "<masked>", device)
    }
}

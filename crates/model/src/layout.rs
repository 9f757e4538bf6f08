//! The HF tensor names and shapes a config implies: the single source of truth for loading, saving, random
//! initialisation, shape checking and model surgery.
//!
//! The model always holds separate q/k/v and gate/up projections, so that every compressor sees one linear
//! per weight. Phi-3's HF files fuse them (`qkv_proj`, `gate_up_proj`); [`LlamaConfig::file_tensor_specs`]
//! describes that file layout and [`LlamaConfig::fused_parts`] how a fused tensor splits into the model's.

use crate::config::{LlamaConfig, ModelType};

/// Kind of a tensor, which decides its random initialisation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TensorRole {
    /// Embedding or linear weight.
    Weight,
    /// Linear bias.
    Bias,
    /// RMSNorm gain (stored as `w` applied as `1 + w` for Gemma, see [`ModelType::norm_plus_one`]).
    Norm,
}

/// Which structure a dimension of a tensor is indexed by, so that removing heads or channels knows what to
/// slice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SliceBy {
    /// Query heads (`head_dim` rows or columns each).
    QueryHeads,
    /// Key/value heads (`head_dim` each).
    KvHeads,
    /// FFN channels (one each).
    Channels,
}

/// One tensor a config requires: HF name, shape, role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpec {
    /// HF name, e.g. `model.layers.0.self_attn.q_proj.weight`.
    pub name: String,
    /// Expected shape (PyTorch `[out, in]` for linears).
    pub shape: Vec<usize>,
    /// What it is.
    pub role: TensorRole,
    /// The dimension that heads or channels index, for tensors that removing them shrinks.
    pub sliced: Option<(usize, SliceBy)>,
}

/// Prefix of layer `i`'s tensors.
pub fn layer_prefix(i: usize) -> String {
    format!("model.layers.{i}.")
}

fn spec(name: String, shape: Vec<usize>, role: TensorRole) -> TensorSpec {
    TensorSpec {
        name,
        shape,
        role,
        sliced: None,
    }
}

fn sliced(name: String, shape: Vec<usize>, role: TensorRole, by: (usize, SliceBy)) -> TensorSpec {
    TensorSpec {
        sliced: Some(by),
        ..spec(name, shape, role)
    }
}

/// Suffixes of the tensors that a layer's fused file tensors hold, in row order.
const QKV_PARTS: [&str; 3] = [
    "self_attn.q_proj.weight",
    "self_attn.k_proj.weight",
    "self_attn.v_proj.weight",
];
const GATE_UP_PARTS: [&str; 2] = ["mlp.gate_proj.weight", "mlp.up_proj.weight"];

impl LlamaConfig {
    /// Every tensor the model holds, in HF order (q/k/v and gate/up always separate).
    pub fn tensor_specs(&self) -> Vec<TensorSpec> {
        use SliceBy::*;
        use TensorRole::*;
        let (v, h, hd) = (self.vocab_size, self.hidden_size, self.head_dim);
        let mut out = vec![spec("model.embed_tokens.weight".into(), vec![v, h], Weight)];
        for (i, l) in self.layers.iter().enumerate() {
            let p = layer_prefix(i);
            let (q, kv, ffn) = (l.n_heads * hd, l.n_kv_heads * hd, l.intermediate_size);
            let norm = |suffix: &str| spec(format!("{p}{suffix}"), vec![h], Norm);
            out.push(norm("input_layernorm.weight"));
            for (proj, rows, by) in [
                ("q_proj", q, QueryHeads),
                ("k_proj", kv, KvHeads),
                ("v_proj", kv, KvHeads),
            ] {
                out.push(sliced(
                    format!("{p}self_attn.{proj}.weight"),
                    vec![rows, h],
                    Weight,
                    (0, by),
                ));
                if self.attention_bias {
                    out.push(sliced(
                        format!("{p}self_attn.{proj}.bias"),
                        vec![rows],
                        Bias,
                        (0, by),
                    ));
                }
            }
            if self.model_type.has_qk_norm() {
                for n in ["q_norm", "k_norm"] {
                    out.push(spec(format!("{p}self_attn.{n}.weight"), vec![hd], Norm));
                }
            }
            out.push(sliced(
                format!("{p}self_attn.o_proj.weight"),
                vec![h, q],
                Weight,
                (1, QueryHeads),
            ));
            out.push(norm("post_attention_layernorm.weight"));
            if self.model_type.has_post_norms() {
                out.push(norm("pre_feedforward_layernorm.weight"));
                out.push(norm("post_feedforward_layernorm.weight"));
            }
            for proj in ["gate_proj", "up_proj"] {
                out.push(sliced(
                    format!("{p}mlp.{proj}.weight"),
                    vec![ffn, h],
                    Weight,
                    (0, Channels),
                ));
            }
            out.push(sliced(
                format!("{p}mlp.down_proj.weight"),
                vec![h, ffn],
                Weight,
                (1, Channels),
            ));
        }
        out.push(spec("model.norm.weight".into(), vec![h], Norm));
        if !self.tie_word_embeddings {
            out.push(spec("lm_head.weight".into(), vec![v, h], Weight));
        }
        out
    }

    /// Every tensor of the HF files, in order: [`LlamaConfig::tensor_specs`] with Phi-3's fused
    /// `qkv_proj` and `gate_up_proj` in place of their parts.
    pub fn file_tensor_specs(&self) -> Vec<TensorSpec> {
        let specs = self.tensor_specs();
        if !self.model_type.fused_projections() {
            return specs;
        }
        let mut out = Vec::with_capacity(specs.len());
        for s in specs {
            let Some((layer, suffix)) = split_layer_name(&s.name) else {
                out.push(s);
                continue;
            };
            let p = layer_prefix(layer);
            if suffix == QKV_PARTS[0] {
                out.push(self.fused_spec(&p, "self_attn.qkv_proj.weight", &QKV_PARTS, &s));
            } else if suffix == GATE_UP_PARTS[0] {
                out.push(self.fused_spec(&p, "mlp.gate_up_proj.weight", &GATE_UP_PARTS, &s));
            } else if !QKV_PARTS.contains(&suffix) && !GATE_UP_PARTS.contains(&suffix) {
                out.push(s);
            }
        }
        out
    }

    fn fused_spec(
        &self,
        prefix: &str,
        name: &str,
        parts: &[&str],
        first: &TensorSpec,
    ) -> TensorSpec {
        let rows: usize = self
            .fused_parts(&format!("{prefix}{name}"))
            .unwrap_or_default()
            .iter()
            .map(|(_, r)| r)
            .sum();
        debug_assert!(first.name.ends_with(parts[0]));
        spec(
            format!("{prefix}{name}"),
            vec![rows, first.shape[1]],
            TensorRole::Weight,
        )
    }

    /// For a fused file tensor (Phi-3's `qkv_proj` / `gate_up_proj`), the model tensors it stacks and
    /// their row counts, in row order; `None` for any other name or family.
    pub fn fused_parts(&self, file_name: &str) -> Option<Vec<(String, usize)>> {
        if !self.model_type.fused_projections() {
            return None;
        }
        let (layer, suffix) = split_layer_name(file_name)?;
        let dims = self.layers.get(layer)?;
        let p = layer_prefix(layer);
        let hd = self.head_dim;
        let parts: Vec<(&str, usize)> = match suffix {
            "self_attn.qkv_proj.weight" => vec![
                (QKV_PARTS[0], dims.n_heads * hd),
                (QKV_PARTS[1], dims.n_kv_heads * hd),
                (QKV_PARTS[2], dims.n_kv_heads * hd),
            ],
            "mlp.gate_up_proj.weight" => GATE_UP_PARTS
                .iter()
                .map(|s| (*s, dims.intermediate_size))
                .collect(),
            _ => return None,
        };
        Some(
            parts
                .into_iter()
                .map(|(s, r)| (format!("{p}{s}"), r))
                .collect(),
        )
    }

    /// The HF file tensor that holds the model tensor `model_name`: itself, or for Phi-3's q/k/v and
    /// gate/up the fused matrix that stacks it.
    pub fn file_name_of(&self, model_name: &str) -> String {
        if self.model_type.fused_projections() {
            if let Some((layer, suffix)) = split_layer_name(model_name) {
                let fused = if QKV_PARTS.contains(&suffix) {
                    Some("self_attn.qkv_proj.weight")
                } else if GATE_UP_PARTS.contains(&suffix) {
                    Some("mlp.gate_up_proj.weight")
                } else {
                    None
                };
                if let Some(f) = fused {
                    return format!("{}{f}", layer_prefix(layer));
                }
            }
        }
        model_name.to_string()
    }

    /// Number of parameters (tied embeddings counted once).
    pub fn n_params(&self) -> usize {
        self.tensor_specs()
            .iter()
            .map(|s| s.shape.iter().product::<usize>())
            .sum()
    }
}

/// `model.layers.N.rest` → `(N, rest)`.
pub(crate) fn split_layer_name(name: &str) -> Option<(usize, &str)> {
    let rest = name.strip_prefix("model.layers.")?;
    let (n, rest) = rest.split_once('.')?;
    Some((n.parse().ok()?, rest))
}

/// Whether `model_type`'s norm gains start at zero in a fresh model (they are applied as `1 + w`).
pub(crate) fn norm_init(model_type: ModelType) -> f32 {
    if model_type.norm_plus_one() {
        0.0
    } else {
        1.0
    }
}
